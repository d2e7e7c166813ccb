"""How many tokens one window of a transformers model can hold, from its config alone (no weights loaded)."""

from __future__ import annotations

from typing import Any

# Models whose position ids count from the padding id + 1 (fairseq's convention): the first pad_token_id + 1 rows of
# their position table are never used for tokens, so RoBERTa's 514 positions hold 512 tokens.
_POSITIONS_AFTER_PADDING = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "roberta-prelayernorm",
                            "data2vec-text", "longformer", "ibert"}


def usable_positions(config: Any) -> int | None:
    """How many tokens one window of the model with this `PretrainedConfig` can hold; None when it does not say."""
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and config.model_type in _POSITIONS_AFTER_PADDING:
        positions -= (config.pad_token_id or 0) + 1
    return positions

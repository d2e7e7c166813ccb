"""BERT's masked-LM objective: the augmentation's candidate model, for users without a pretrained one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from distill.features import FlatFeatures
from distill.models import ModelCheckError, ModelRef, load_config, load_tokenizer
from distill.objectives.common import INPUT_COLUMNS, model_inputs, save_model, takes_token_types
from distill.trainer import TrainPlan


@dataclass(frozen=True)
class MaskedLMOptions:
    base: ModelRef
    mask_prob: float

    def build(self, plan: TrainPlan, device: torch.device) -> MaskedLMObjective:
        """The objective on `device`, for a worker of `plan`."""
        from transformers import AutoModelForMaskedLM

        base = self.base
        if base.init == "random":
            model = AutoModelForMaskedLM.from_config(load_config(base), trust_remote_code=base.trust_remote_code)
        else:
            model = AutoModelForMaskedLM.from_pretrained(base.name_or_path, trust_remote_code=base.trust_remote_code)
        spec = {"model": base.name_or_path, "init": base.init}
        return MaskedLMObjective(model.train(), load_tokenizer(base), self.mask_prob, spec).to(device)


class MaskedLMObjective(nn.Module):
    """BERT's masked-LM objective: forward returns `mlm`, the cross-entropy at the masked positions.

    Each real, non-special wordpiece is chosen with probability `mask_prob` (at least one per batch); a chosen
    piece becomes the mask token 80% of the time, a random token 10%, and stays 10%. Masks come from the torch
    RNG, which checkpoints restore, so a resumed run masks as an uninterrupted one. The LM head runs only at the
    chosen positions (`augment.candidates.lm_head_only_at`), not over the whole vocabulary at every token.
    """

    find_unused_parameters = False

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, mask_prob: float,
                 spec: dict[str, Any]):
        super().__init__()
        if tokenizer.mask_token_id is None:
            raise ModelCheckError(f"the tokenizer of {spec['model']} has no mask token; give a masked LM's folder")
        self.model = model
        self.tokenizer = tokenizer
        self.pad_token_id = tokenizer.pad_token_id
        self.mask_prob = mask_prob
        self.columns = INPUT_COLUMNS
        self.term_weights = {"mlm": 1.0}
        self.register_buffer("special_ids", torch.tensor(sorted(tokenizer.all_special_ids)), persistent=False)
        self._spec = spec

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        from augment.candidates import lm_head_only_at

        ids, real = batch["input_ids"], batch["attention_mask"].bool()  # (B, T)
        maskable = real & ~torch.isin(ids, self.special_ids)
        chosen = (torch.rand(ids.shape, device=ids.device) < self.mask_prob) & maskable
        if not chosen.any():  # a batch of very short texts: mask its first maskable piece, if it has one
            chosen.view(-1)[maskable.view(-1).nonzero()[:1]] = True
        roll = torch.rand(ids.shape, device=ids.device)
        random_ids = torch.randint(self.model.get_output_embeddings().weight.shape[0], ids.shape, device=ids.device)
        inputs = torch.where(chosen & (roll < 0.8), self.tokenizer.mask_token_id, ids)
        inputs = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), random_ids, inputs)
        rows, cols = chosen.nonzero(as_tuple=True)
        with lm_head_only_at(self.model, rows, cols):
            logits = self.model(**model_inputs({**batch, "input_ids": inputs}, takes_token_types(self.model))).logits
        if not len(rows):  # only special tokens (empty texts): nothing to learn, but every parameter in the graph
            return {"mlm": logits.sum() * 0.0}
        return {"mlm": nn.functional.cross_entropy(logits[0].float(), ids[rows, cols])}

    def check_features(self, data: FlatFeatures) -> None:
        pass  # inputs only: the schema has them on every row

    def settings(self) -> dict[str, Any]:
        return {**self._spec, "losses": {"mlm": {"weight": 1.0, "mask_prob": self.mask_prob,
                                                 "replacement": "80% mask token, 10% random token, 10% kept",
                                                 "reduction": "mean over masked positions"}}}

    def save_outputs(self, out_dir: Path) -> dict[str, str | None]:
        return {"model_dir": save_model(self.model, self.tokenizer, out_dir / "model"), "projections": None}

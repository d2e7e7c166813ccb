"""Attention probabilities before dropout, handed out by chosen layers only: what phase 1's attention term compares.

transformers' eager kernel returns each layer's attention weights after dropout, so with `output_attentions=True`
a student in train mode hands over maps with entries zeroed and the rest scaled by 1 / (1 - p): a student identical
to its teacher would show a positive attention loss. Eager attention also hands out every layer's maps, where phase 1
needs only the mapped ones (all 12 of a BERT-base teacher are 2.2 GB in fp32 at batch 26, length 384).

`PRE_DROPOUT_ATTENTION` is the BERT-family eager kernel registered under its own name: dropout still applies to the
probabilities that weight the values, so training is unchanged, but the probabilities handed out are the ones
before dropout, and only by the attention modules `keep_attention_maps` marked. transformers collects what attention
modules hand out into `outputs.attentions` and skips the None of the others. The choice is an attribute of each
attention module, fixed when the objective is built, so a forward under torch.compile (`resources.compile`) reads
no global state and traces as one graph.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from transformers import AttentionInterface, AttentionMaskInterface, PreTrainedModel
from transformers.masking_utils import eager_mask
from transformers.modeling_outputs import ModelOutput

from distill.models import ModelCheckError

PRE_DROPOUT_ATTENTION = "distill_pre_dropout"
_KEEPS_MAP = "distill_keeps_attention_map"  # set on the attention modules whose maps phase 1 compares


def _pre_dropout_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                           **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """transformers' BERT `eager_attention_forward`, handing out the probabilities before dropout where the module
    is marked to keep them (None elsewhere).

    query, key, value: (B, H, L, D); attention_mask: additive (B, 1, L, L) from `eager_mask`, or None.
    Returns the output (B, L, H, D) and the probabilities (B, H, L, L) or None.
    """
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = nn.functional.softmax(scores, dim=-1)
    output = torch.matmul(nn.functional.dropout(probs, p=dropout, training=module.training), value)
    return output.transpose(1, 2).contiguous(), probs if getattr(module, _KEEPS_MAP, False) else None


AttentionInterface.register(PRE_DROPOUT_ATTENTION, _pre_dropout_attention)
# transformers builds a mask only for kernels with a registered mask function; without one it would pass None and
# padding would be attended to
AttentionMaskInterface.register(PRE_DROPOUT_ATTENTION, eager_mask)


def _attention_modules(model: PreTrainedModel) -> list[nn.Module]:
    """The modules whose second output transformers collects as `outputs.attentions`, in layer order."""
    recorded = (getattr(model, "_can_record_outputs", None) or {}).get("attentions")
    target = getattr(recorded, "target_class", recorded)  # a class, or an OutputRecorder naming one
    return [module for module in model.modules() if isinstance(target, type) and isinstance(module, target)]


def keep_attention_maps(model: PreTrainedModel, layers: Iterable[int]) -> None:
    """Switch `model` to `PRE_DROPOUT_ATTENTION`, handing out the maps of the 0-based `layers` only; refuse a model
    whose attention does not go through transformers' AttentionInterface and output collection."""
    model.set_attn_implementation(PRE_DROPOUT_ATTENTION)
    modules = _attention_modules(model)
    if model.config._attn_implementation != PRE_DROPOUT_ATTENTION or len(modules) != model.config.num_hidden_layers:
        raise ModelCheckError(f"{type(model).__name__} cannot switch its attention kernel (it does not use "
                              "transformers' AttentionInterface and output collection), so its attention maps cannot "
                              "be distilled; drop 'attention' from distill.intermediate.losses")
    kept = frozenset(layers)
    for index, module in enumerate(modules):
        setattr(module, _KEEPS_MAP, index in kept)


def attention_maps(model: PreTrainedModel, outputs: ModelOutput, layers: Iterable[int]) -> dict[int, torch.Tensor]:
    """{layer: (B, H, L, L) attention probabilities before dropout} from a forward with `output_attentions=True` of a
    model that `keep_attention_maps` set up for the same 0-based `layers`."""
    kept = sorted(frozenset(layers))
    maps = outputs.attentions or ()
    if model.config._attn_implementation != PRE_DROPOUT_ATTENTION or len(maps) != len(kept):
        raise ModelCheckError(f"{type(model).__name__} handed out {len(maps)} attention maps for the layers {kept}; "
                              "call keep_attention_maps on it with those layers and run its forward with "
                              "output_attentions=True")
    return dict(zip(kept, maps))

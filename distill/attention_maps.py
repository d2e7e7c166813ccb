"""Attention probabilities before dropout, kept for chosen layers only: what phase 1's attention term compares.

transformers' eager kernel returns each layer's attention weights after dropout, so with `output_attentions=True`
a student in train mode hands over maps with entries zeroed and the rest scaled by 1 / (1 - p): a student identical
to its teacher would show a positive attention loss. `output_attentions` also keeps every layer's maps, where phase 1
needs only the mapped ones (all 12 of a BERT-base teacher are 2.2 GB in fp32 at batch 26, length 384).

`PRE_DROPOUT_ATTENTION` is the BERT-family eager kernel registered under its own name: dropout still applies to the
probabilities that weight the values, so training is unchanged, but the probabilities handed out are the ones
before dropout. Inside `recorded_attention`, a model switched to it keeps the maps of the layers asked for.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import torch
from torch import nn
from transformers import AttentionInterface, AttentionMaskInterface, PreTrainedModel
from transformers.masking_utils import eager_mask

from distill.models import ModelCheckError

PRE_DROPOUT_ATTENTION = "distill_pre_dropout"


@dataclass
class _Recording:
    layers: frozenset[int]                                     # 0-based layers whose maps are kept
    maps: dict[int, torch.Tensor] = field(default_factory=dict)
    calls: int = 0  # attention calls so far in this forward: an encoder runs layer k's self-attention k-th


_recording: ContextVar[_Recording | None] = ContextVar("attention_recording", default=None)


def _pre_dropout_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                           **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' BERT `eager_attention_forward`, returning (and recording) the probabilities before dropout.

    query, key, value: (B, H, L, D); attention_mask: additive (B, 1, L, L) from `eager_mask`, or None.
    Returns the output (B, L, H, D) and the probabilities (B, H, L, L).
    """
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = nn.functional.softmax(scores, dim=-1)
    recording = _recording.get()
    if recording is not None:
        if recording.calls in recording.layers:
            recording.maps[recording.calls] = probs
        recording.calls += 1
    output = torch.matmul(nn.functional.dropout(probs, p=dropout, training=module.training), value)
    return output.transpose(1, 2).contiguous(), probs


AttentionInterface.register(PRE_DROPOUT_ATTENTION, _pre_dropout_attention)
# transformers builds a mask only for kernels with a registered mask function; without one it would pass None and
# padding would be attended to
AttentionMaskInterface.register(PRE_DROPOUT_ATTENTION, eager_mask)


def use_pre_dropout_attention(model: PreTrainedModel) -> None:
    """Switch `model` to `PRE_DROPOUT_ATTENTION`; refuse a model whose attention does not go through the interface."""
    model.set_attn_implementation(PRE_DROPOUT_ATTENTION)
    if model.config._attn_implementation != PRE_DROPOUT_ATTENTION:
        raise ModelCheckError(f"{type(model).__name__} cannot switch its attention kernel (it does not use "
                              "transformers' AttentionInterface), so its attention maps cannot be distilled; drop "
                              "'attention' from distill.intermediate.losses")


@contextlib.contextmanager
def recorded_attention(model: PreTrainedModel, layers: Iterable[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Yields {layer: (B, H, L, L) attention probabilities before dropout}, filled by one forward of `model`
    (switched by `use_pre_dropout_attention`) inside the block, for the 0-based `layers` only. With no layers asked
    for, nothing is recorded or checked."""
    recording = _Recording(frozenset(layers))
    token = _recording.set(recording)
    try:
        yield recording.maps
    finally:
        _recording.reset(token)
    layer_count = model.config.num_hidden_layers
    if recording.layers and (recording.calls != layer_count or len(recording.maps) != len(recording.layers)):
        raise ModelCheckError(f"{type(model).__name__} ran the pre-dropout attention kernel {recording.calls} "
                              f"times for {layer_count} layers and gave maps for layers {sorted(recording.maps)} "
                              f"of {sorted(recording.layers)}; call use_pre_dropout_attention on it and run one "
                              "forward inside recorded_attention")

"""Combining several teachers' logits into one target: the ensemble rule shared by labelling and online phase 2."""

from __future__ import annotations

import torch


def mix_teacher_logits(logits: list[torch.Tensor], weights: torch.Tensor, mode: str, mask: torch.Tensor | None) -> torch.Tensor:
    """The ensemble of K teachers' logits, each (B, N), over the last dim; `mask` (B, N) marks real positions.

    probs: log(sum_k w_k softmax(z_k)), computed as logsumexp_k(log w_k + log_softmax(z_k)) for stability.
    logits: sum_k w_k z_k. Positions outside `mask` come back as garbage the caller drops.
    """
    stacked = torch.stack(logits)                                        # (K, B, N)
    if mode == "logits":
        return torch.einsum("k,kbn->bn", weights, stacked)
    if mask is not None:
        stacked = stacked.masked_fill(~mask[None], float("-inf"))
    log_probs = torch.log_softmax(stacked, dim=-1)
    mixed = torch.logsumexp(torch.log(weights)[:, None, None] + log_probs, dim=0)   # (B, N)
    if mask is not None:
        mixed = mixed.masked_fill(~mask, 0.0)
    return mixed

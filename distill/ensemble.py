"""Combining several teachers' logits into one target: the ensemble rule shared by labelling and online phase 2.

The target is what `SoftTargetKL` makes of the mixed values at temperature T, softmax(mixed / T):

    probs   sum_k w_k softmax(z_k / T), the mix of the softened teachers
    logits  softmax(sum_k w_k z_k / T), the mean logits softened

so a probs mix of several teachers depends on T and is computed for it; one teacher's target does not.
"""

from __future__ import annotations

import torch


def mix_teacher_logits(logits: list[torch.Tensor], weights: torch.Tensor, mode: str, mask: torch.Tensor | None,
                       temperature: float) -> torch.Tensor:
    """The ensemble of K teachers' logits, each (B, N), over the last dim; `mask` (B, N) marks real positions.

    probs: T * log(sum_k w_k softmax(z_k / T)), computed as T * logsumexp_k(log w_k + log_softmax(z_k / T)) for
    stability, so that softmax(mixed / T) is the mix of softened teachers. One teacher gets log_softmax(z) whatever
    T: softmax(log_softmax(z) / T) = softmax(z / T), so its labels stay the same bytes at every temperature.
    logits: sum_k w_k z_k, which the loss divides by T. Positions outside `mask` come back as garbage the caller
    drops.
    """
    stacked = torch.stack(logits)                                        # (K, B, N)
    if mode == "logits":
        return torch.einsum("k,kbn->bn", weights, stacked)
    if len(logits) == 1:  # T changes nothing in its target, so it is left out of the stored bytes
        temperature = 1.0
    if mask is not None:
        stacked = stacked.masked_fill(~mask[None], float("-inf"))
    log_probs = torch.log_softmax(stacked / temperature, dim=-1)
    mixed = temperature * torch.logsumexp(torch.log(weights)[:, None, None] + log_probs, dim=0)   # (B, N)
    if mask is not None:
        mixed = mixed.masked_fill(~mask, 0.0)
    return mixed


def labels_depend_on_temperature(mode: str, teachers: int) -> bool:
    """Whether labelled ensemble logits change with the distillation temperature: a probs mix of several."""
    return mode == "probs" and teachers > 1

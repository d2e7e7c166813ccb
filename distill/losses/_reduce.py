"""Reduction shared by the losses: a mean over the examples (or rows) that have something to compare."""

from __future__ import annotations

import torch


def mean_over_present(values: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Mean of `values` where `present` (same shape, bool); 0, still attached to the graph, when none is.

    `torch.where` rather than a product, so that a NaN computed for an absent row (a softmax over no positions)
    never reaches the result or the gradient.
    """
    kept = torch.where(present, values, torch.zeros_like(values))
    return kept.sum() / present.sum().clamp(min=1)

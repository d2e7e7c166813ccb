"""Mean squared error between predicted and target scores: regression's soft (teacher) and hard (gold) term."""

from __future__ import annotations

import torch
from torch import nn


class ScoreMSE(nn.Module):
    """Mean over examples of the squared difference between the student's score and a target score.

    A regression head gives one score per example, laid out (B, 1, 1) like other tasks' logits (one distribution
    of one entry). Its target is the teachers' score (phase 2's soft term: a score has no distribution to soften,
    so no temperature applies) or the gold score (fine-tuning, and phase 2's hard term).

    Inputs:
        scores: (B, G, 1) predicted scores
        targets: (B, G, 1) teacher scores or (B, G) gold scores
        mask: unused (every score takes part); accepted so the loss is called as the other tasks' losses are

    Returns:
        scalar: the mean over the B x G scores of (score - target)^2, in float32.

    Example:
        >>> ScoreMSE()(torch.tensor([[[1.0]], [[3.0]]]), torch.tensor([[2.0], [3.0]])).item()
        0.5
    """

    def forward(self, scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if scores.dim() != 3 or scores.shape[2] != 1 or targets.numel() != scores.numel():
            raise ValueError(f"expected scores (B, G, 1) and targets of as many values, got scores "
                             f"{tuple(scores.shape)}, targets {tuple(targets.shape)}")
        return (scores.float() - targets.reshape(scores.shape).float()).pow(2).mean()

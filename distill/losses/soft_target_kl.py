"""KL(teacher || student) between temperature-softened output distributions, x T^2 (Hinton et al.; TinyBERT)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distill.losses._reduce import mean_over_present


class SoftTargetKL(nn.Module):
    """KL divergence from the teacher's softened distribution to the student's, scaled by T^2.

    Each row of logits is one distribution: for QA, the start (or end) position over the L tokens of a window,
    so a batch is (B, 2, L); for classification, the class over C labels, (B, 1, C). Masked entries (padding)
    are removed from both softmaxes, so they carry no probability and no gradient. The T^2 factor keeps the
    gradient's size independent of T.

    Inputs:
        student_logits: (B, G, N) student logits, G distributions of N entries per example
        teacher_logits: (B, G, N) teacher logits (or log-probabilities: any shift per row is irrelevant)
        mask: (B, N) or None, 1 for entries that take part (QA: real tokens), 0 for padding

    Returns:
        scalar: T^2 x the mean over (example, distribution) rows that have at least one unmasked entry of
        sum_n p_t(n) (log p_t(n) - log p_s(n)), where p = softmax(logits / T) over the unmasked entries. A row
        with one entry gives 0; a batch of only padding gives 0.

    Related: `HardLabelCE` (the gold-label term mixed with this one in phase 2); teacher ensembles are mixed
    into one set of logits before they reach this loss, for its temperature (`distill.ensemble`).

    Example:
        >>> loss = SoftTargetKL(temperature=2.0)
        >>> logits = torch.randn(4, 2, 7)
        >>> loss(logits, logits, torch.ones(4, 7)).item()
        0.0
    """

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        if student_logits.dim() != 3 or teacher_logits.shape != student_logits.shape:
            raise ValueError(f"logits: expected student and teacher of one shape (B, G, N), got student "
                             f"{tuple(student_logits.shape)}, teacher {tuple(teacher_logits.shape)}")
        batch, groups, entries = student_logits.shape
        if mask is None:
            keep = torch.ones(batch, 1, entries, dtype=torch.bool, device=student_logits.device)
        elif mask.shape == (batch, entries):
            keep = mask.bool()[:, None, :]  # (B, 1, N)
        else:
            raise ValueError(f"mask: expected {(batch, entries)} (B, N), got {tuple(mask.shape)}")
        t = self.temperature
        # the lowest finite float rather than -inf: a row with no entry left then stays finite, and no NaN can
        # reach the gradient through the masked branch
        lowest = torch.tensor(torch.finfo(torch.float32).min, device=student_logits.device)
        student_log_p = F.log_softmax(torch.where(keep, student_logits.float() / t, lowest), -1)  # (B, G, N)
        teacher_log_p = F.log_softmax(torch.where(keep, teacher_logits.float() / t, lowest), -1)  # (B, G, N)
        pointwise = teacher_log_p.exp() * (teacher_log_p - student_log_p)  # (B, G, N)
        per_row = torch.where(keep, pointwise, torch.zeros_like(pointwise)).sum(-1)  # (B, G)
        present = keep.any(-1).expand(batch, groups)  # (B, G)
        return t * t * mean_over_present(per_row, present)

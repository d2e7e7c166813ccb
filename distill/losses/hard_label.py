"""Cross-entropy against gold labels: QA start and end positions, or classes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distill.losses._reduce import mean_over_present

IGNORE_INDEX = -100


class HardLabelCE(nn.Module):
    """Mean cross-entropy of each distribution against its gold entry.

    For QA the two distributions of an example are start and end over its L tokens, so the loss is the mean of
    the start and end cross-entropies, as BERT's SQuAD head; for classification there is one distribution over
    C classes. Masked entries (padding) are removed from the softmax.

    Inputs:
        logits: (B, G, N) logits, G distributions of N entries per example (QA: G=2, N=L; classification: G=1)
        targets: (B, G) int64 gold entry per distribution, in [0, N); IGNORE_INDEX (-100) leaves a row out
        mask: (B, N) or None, 1 for entries that take part (QA: real tokens), 0 for padding; a gold entry must
            be unmasked

    Returns:
        scalar: mean over (example, distribution) rows that have a target and an unmasked entry of
        -log softmax(logits)[target]; 0 when there is no such row. A single class gives 0.

    Related: `SoftTargetKL` (the teacher term mixed with this one in phase 2).

    Example:
        >>> loss = HardLabelCE()
        >>> round(loss(torch.zeros(3, 2, 4), torch.tensor([[0, 1], [2, 3], [1, 1]])).item(), 4)  # log 4
        1.3863
    """

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if logits.dim() != 3 or targets.shape != logits.shape[:2]:
            raise ValueError(f"expected logits (B, G, N) and targets (B, G), got logits {tuple(logits.shape)}, "
                             f"targets {tuple(targets.shape)}")
        batch, groups, entries = logits.shape
        logits = logits.float()
        if mask is not None:
            if mask.shape != (batch, entries):
                raise ValueError(f"mask: expected {(batch, entries)} (B, N), got {tuple(mask.shape)}")
            keep = mask.bool()[:, None, :]  # (B, 1, N)
            lowest = torch.tensor(torch.finfo(torch.float32).min, device=logits.device)
            logits = torch.where(keep, logits, lowest)
            has_entry = keep.any(-1).expand(batch, groups)  # (B, G)
        else:
            has_entry = torch.ones(batch, groups, dtype=torch.bool, device=logits.device)
        targets = targets.long()
        present = has_entry & (targets != IGNORE_INDEX)  # (B, G)
        per_row = F.cross_entropy(logits.reshape(batch * groups, entries),
                                  torch.where(present, targets, 0).reshape(-1),
                                  reduction="none").reshape(batch, groups)  # (B, G)
        return mean_over_present(per_row, present)

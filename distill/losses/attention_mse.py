"""MSE between student and teacher attention matrices, head by head, padding masked out (TinyBERT L_attn)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from distill.losses._reduce import mean_over_present


class HeadCountMismatch(ValueError):
    """Attention distillation pairs heads one to one, so student and teacher need the same number of heads."""


class AttentionMSE(nn.Module):
    """Mean squared error between student and teacher attention matrices over real query/key pairs.

    TinyBERT compares attention head by head, so the head counts must agree; the constructor refuses a mismatch
    before any training starts. The matrices compared are post-softmax probabilities before dropout
    (`distill.attention_maps`; TinyBERT's reference code used the pre-softmax scores, which transformers does not
    expose). The squared difference is recomputed in backward rather than stored: summed over mapped layers, the
    stored differences would each be as large as an attention map.

    Inputs:
        student: (B, H, L, L) student attention, [batch, head, query, key]
        teacher: (B, H, L, L) teacher attention
        attention_mask: (B, L), 1 for real tokens, 0 for padding

    Returns:
        scalar: per example, the squared error summed over heads and over query/key pairs where both tokens are
        real, divided by (H x real tokens^2); then the mean over examples with a real token. Rows of padded
        queries and columns of padded keys contribute nothing; a batch of only padding gives 0.

    Related: `HiddenStateMSE` (the hidden-state and embedding terms of the same phase).

    Example:
        >>> loss = AttentionMSE(student_heads=12, teacher_heads=12)
        >>> attn = torch.softmax(torch.randn(2, 12, 5, 5), -1)
        >>> loss(attn, attn, torch.ones(2, 5)).item()
        0.0
    """

    def __init__(self, student_heads: int, teacher_heads: int):
        super().__init__()
        if student_heads <= 0 or teacher_heads <= 0:
            raise ValueError(f"head counts must be positive, got student {student_heads}, teacher {teacher_heads}")
        if student_heads != teacher_heads:
            raise HeadCountMismatch(
                f"attention distillation pairs heads one to one, but the student has {student_heads} heads and "
                f"the teacher {teacher_heads}; give the student {teacher_heads} heads "
                "(student.architecture.num_attention_heads) or drop 'attention' from "
                "distill.intermediate.losses")
        self.heads = student_heads

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        batch, length = attention_mask.shape
        expected = (batch, self.heads, length, length)
        if student.shape != expected or teacher.shape != expected:
            raise ValueError(f"attention: expected student and teacher of shape {expected} (B, H, L, L) to match "
                             f"attention_mask {tuple(attention_mask.shape)}, got student {tuple(student.shape)}, "
                             f"teacher {tuple(teacher.shape)}")
        mask = attention_mask.float()  # (B, L)
        squared = checkpoint(_masked_squared_error, student, teacher, mask, use_reentrant=False)  # (B,)
        tokens = mask.sum(-1)  # (B,)
        per_example = squared / (self.heads * tokens.pow(2)).clamp(min=1)  # (B,)
        return mean_over_present(per_example, tokens > 0)


def _masked_squared_error(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) squared error summed over heads and real query/key pairs; mask (B, L) is 1 for real tokens."""
    pairs = mask[:, None, :, None] * mask[:, None, None, :]  # (B, 1, L_query, L_key)
    return ((student.float() - teacher.float()).pow(2) * pairs).sum((1, 2, 3))

"""MSE between student and teacher hidden states (or embeddings), padding masked out (TinyBERT L_hidn, L_embd)."""

from __future__ import annotations

import torch
from torch import nn

from distill.losses._reduce import mean_over_present


class HiddenStateMSE(nn.Module):
    """Mean squared error between student and teacher token vectors over real (unpadded) tokens.

    When the student is narrower than the teacher, a learned linear map W (student_size -> teacher_size) lifts
    the student's vectors first, as TinyBERT's W_h / W_e; W is a parameter of this module, so it belongs in the
    optimizer and in checkpoints. With equal sizes there is no projection and no parameter.

    Inputs:
        student: (B, L, student_size) student vectors
        teacher: (B, L, teacher_size) teacher vectors (no gradient needed)
        attention_mask: (B, L), 1 for real tokens, 0 for padding

    Returns:
        scalar: per example, the squared error summed over its real tokens and the teacher's dimensions,
        divided by (real tokens x teacher_size); then the mean over examples that have a real token. Padded
        positions contribute nothing; an all-padding example is left out; a batch of only padding gives 0.

    Related: `AttentionMSE` (the attention term of the same phase).

    Example:
        >>> loss = HiddenStateMSE(student_size=312, teacher_size=768)
        >>> loss(torch.randn(2, 5, 312), torch.randn(2, 5, 768), torch.ones(2, 5)).shape
        torch.Size([])
    """

    def __init__(self, student_size: int, teacher_size: int):
        super().__init__()
        if student_size <= 0 or teacher_size <= 0:
            raise ValueError(f"hidden sizes must be positive, got student {student_size}, teacher {teacher_size}")
        self.student_size = student_size
        self.teacher_size = teacher_size
        self.projection = nn.Linear(student_size, teacher_size) if student_size != teacher_size else None

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if student.dim() != 3 or student.shape[-1] != self.student_size:
            raise ValueError(f"student vectors: expected (B, L, {self.student_size}), got {tuple(student.shape)}")
        if teacher.shape != (*student.shape[:2], self.teacher_size):
            raise ValueError(f"teacher vectors: expected {(*student.shape[:2], self.teacher_size)} to match the "
                             f"student's (B, L), got {tuple(teacher.shape)}")
        if attention_mask.shape != student.shape[:2]:
            raise ValueError(f"attention_mask: expected {tuple(student.shape[:2])}, got {tuple(attention_mask.shape)}")
        if self.projection is not None:
            student = self.projection(student)  # (B, L, teacher_size)
        mask = attention_mask.float()  # (B, L)
        squared = (student.float() - teacher.float()).pow(2).sum(-1) * mask  # (B, L)
        tokens = mask.sum(-1)  # (B,)
        per_example = squared.sum(-1) / (tokens.clamp(min=1) * self.teacher_size)  # (B,)
        return mean_over_present(per_example, tokens > 0)


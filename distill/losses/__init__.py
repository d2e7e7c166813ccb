"""Distillation losses: one small `nn.Module` per file, tensor shapes in each docstring.

Every loss reduces to a mean over *examples* (or example x head rows), never over tokens of the whole batch:
that way a global batch split across workers, each averaging its own slice, gives the same gradient as one
worker over the whole batch (the trainer weights each slice by its share of the batch).

| loss | phase | compares |
| --- | --- | --- |
| `HiddenStateMSE` | 1 | embeddings or hidden states, with a learned projection when widths differ |
| `AttentionMSE` | 1 | attention probabilities, head by head |
| `SoftTargetKL` | 2 | temperature-softened output distributions, KL(teacher \\|\\| student) x T^2 |
| `HardLabelCE` | finetune, 2 | output logits against gold positions or classes |
| `ScoreMSE` | finetune, 2 | regression: the student's score against the teachers' or the gold score |
"""

from distill.losses.attention_mse import AttentionMSE, HeadCountMismatch
from distill.losses.hard_label import HardLabelCE
from distill.losses.hidden_mse import HiddenStateMSE
from distill.losses.score_mse import ScoreMSE
from distill.losses.soft_target_kl import SoftTargetKL

__all__ = ["AttentionMSE", "HardLabelCE", "HeadCountMismatch", "HiddenStateMSE", "ScoreMSE", "SoftTargetKL"]

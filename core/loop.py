"""The settings every training loop takes (`distill.trainer`): declared once here, and extended by each training
section (fine-tuning a teacher, the masked LM, the two distillation phases) with its own defaults and fields."""

from __future__ import annotations

from pydantic import Field

from core.config import StrictModel


class LoopSpec(StrictModel):
    epochs: float = Field(5.0, gt=0)
    batch_size: int = Field(
        26, gt=0, description="global batch: with N training workers each computes batch_size / N features of every "
                              "micro-batch, so the steps, the learning rate and the result do not depend on N; a "
                              "worker with fewer than 8 features is warned about in the log")
    learning_rate: float = Field(5e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="share of steps with linear warm-up")
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    grad_accum_steps: int = Field(1, gt=0)
    log_every: int | None = Field(
        None, gt=0, description="steps between metric and progress lines; null: about 200 lines per phase, at most "
                                "50 steps apart")
    checkpoint_minutes: float | None = Field(
        30.0, gt=0, description="minutes of training between resumable checkpoints (also at each epoch's end; the "
                                "last 2 are kept); null: none by time")
    checkpoint_every: int | None = Field(None, gt=0, description="also checkpoint every this many steps; null: off")

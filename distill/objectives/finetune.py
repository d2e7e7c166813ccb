"""Fine-tuning a teacher (or any model with the task's head) on the gold labels alone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from core.tasks import Task
from distill.features import FlatFeatures
from distill.models import ModelRef, load_tokenizer
from distill.objectives.common import INPUT_COLUMNS, model_inputs, save_model, takes_token_types
from distill.student import load_for_training
from distill.tasks import task_kind
from distill.trainer import TrainPlan, require_filled


@dataclass(frozen=True)
class FinetuneOptions:
    base: ModelRef               # a base model (a fresh head is added) or one with the task's head
    num_labels: int | None

    def build(self, plan: TrainPlan, device: torch.device) -> FinetuneObjective:
        """The objective on `device`, for a worker of `plan`."""
        model = load_for_training(self.base, plan.task, self.num_labels).train()
        spec = {"model": self.base.name_or_path, "tokenizer": self.base.name_or_path}
        return FinetuneObjective(model, load_tokenizer(self.base), plan.task, spec).to(device)


class FinetuneObjective(nn.Module):
    """forward returns `hard`: the task's hard loss (HardLabelCE of the start/end logits over real tokens or of the
    class logits; regression's ScoreMSE of the score) against the gold positions, classes or scores."""

    find_unused_parameters = False

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: Task, spec: dict[str, Any]):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.pad_token_id = tokenizer.pad_token_id
        self.task, self.kind = task, task_kind(task)
        self.hard = self.kind.hard_loss()
        self.columns = (*INPUT_COLUMNS, *self.kind.traits.label_columns)
        self.term_weights = {"hard": 1.0}
        self._spec = spec

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.kind.logits(self.model(**model_inputs(batch, takes_token_types(self.model))))  # (B, G, N)
        return {"hard": self.hard(logits, self.kind.gold(batch), self.kind.distribution_mask(batch))}

    def check_features(self, data: FlatFeatures) -> None:
        for column in self.kind.traits.label_columns:
            require_filled(data, column, "fine-tuning needs the gold labels of every example")

    def settings(self) -> dict[str, Any]:
        return {**self._spec, "losses": {"hard": {"weight": 1.0, "reduction": "mean over (example, distribution) "
                                                                              "rows, padding masked"}}}

    def save_outputs(self, out_dir: Path) -> dict[str, str | None]:
        return {"model_dir": save_model(self.model, self.tokenizer, out_dir / "model"), "projections": None}

"""Phase 2: the student learns the teachers' output distributions at a temperature, mixed with the gold labels."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from core.tasks import Task
from distill.features import FlatFeatures
from distill.losses import SoftTargetKL
from distill.models import ModelRef, load_tokenizer
from distill.objectives.common import (INPUT_COLUMNS, Frozen, check_vocabularies, load_teacher, model_inputs,
                                       save_model, takes_token_types)
from distill.spec import PredictionSpec, StudentSpec
from distill.student import build_student, load_for_training, tokenizer_source
from distill.tasks import task_kind
from distill.trainer import TrainingError, TrainPlan, require_filled

Ensemble = Literal["probs", "logits"]


@dataclass(frozen=True)
class PredictionOptions:
    student: StudentSpec | None          # build fresh from this spec ...
    base: ModelRef | None                # ... or load this folder / base model
    teachers: tuple[ModelRef, ...]
    ensemble: Ensemble
    num_labels: int | None

    def build(self, plan: TrainPlan, device: torch.device) -> PredictionObjective:
        """The objective on `device`, for a worker of `plan`."""
        config: PredictionSpec = plan.config  # type: ignore[assignment]
        distill_weight, temperature, source = config.distill_weight, config.temperature, config.teacher_logits
        first_teacher = self.teachers[0] if self.teachers else None
        if self.student is not None:
            student = build_student(self.student, first_teacher, plan.task, self.num_labels)
            token_source = tokenizer_source(self.student, first_teacher)
        else:
            student = load_for_training(self.base, plan.task, self.num_labels).train()
            token_source = self.base
        online = distill_weight > 0 and source == "online"
        if online and not self.teachers:
            raise TrainingError("distill.prediction.teacher_logits is online and distill_weight > 0, but no teacher "
                                "was given; add one or use labelled logits")
        teachers = [load_teacher(ref, plan.task, self.num_labels, device) for ref in self.teachers] if online else []
        if teachers:
            check_vocabularies(token_source, self.teachers)
        spec = {"student": (self.student.model_dump(mode="json") if self.student is not None
                            else self.base.name_or_path),
                "teachers": [asdict(t) for t in self.teachers], "tokenizer": token_source.name_or_path}
        objective = PredictionObjective(student, load_tokenizer(token_source), plan.task, distill_weight, temperature,
                                        source, teachers, [t.weight for t in self.teachers] if online else [],
                                        self.ensemble, spec)
        return objective.to(device)


class PredictionObjective(nn.Module):
    """Phase 2: forward returns the task's teacher term (when w > 0) and `hard` (when w < 1).

    The teacher term (the task's `soft_term`): `kl`, SoftTargetKL at the configured temperature between the
    student's and the teachers' output distributions (QA: start and end over real tokens, averaged;
    classification: over classes); regression's `mse`, ScoreMSE between the student's and the teachers' score.
    Teacher logits come from the batch ("labelled") or from running the teachers ("online", combined by
    `ensemble`). hard: the task's hard loss against the gold positions, classes or scores.
    Loss = w * teacher term + (1 - w) * hard.
    """

    find_unused_parameters = False

    def __init__(self, student: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: Task,
                 distill_weight: float, temperature: float, teacher_logits: Literal["labelled", "online"],
                 teachers: list[PreTrainedModel], teacher_weights: list[float], ensemble: Ensemble,
                 spec: dict[str, Any]):
        super().__init__()
        if distill_weight > 0 and teacher_logits == "online" and not teachers:
            raise TrainingError("distill_weight > 0 with online teacher logits needs at least one teacher")
        self.student = student
        self.tokenizer = tokenizer
        self.pad_token_id = tokenizer.pad_token_id
        self.task, self.kind = task, task_kind(task)
        self.source = teacher_logits
        self._teachers = Frozen(*teachers)
        self.teacher_weights = teacher_weights
        self.ensemble = ensemble
        self._spec = spec
        self.temperature = temperature
        self.soft_term = self.kind.soft_term
        self.soft = self.kind.soft_loss(temperature)
        self.hard = self.kind.hard_loss()
        self.term_weights = {name: w for name, w in ((self.soft_term, distill_weight), ("hard", 1.0 - distill_weight))
                             if w > 0}
        columns = [*INPUT_COLUMNS, *self.kind.traits.label_columns]
        if self.soft_term in self.term_weights and teacher_logits == "labelled":
            columns += self.kind.traits.teacher_columns
        self.columns = tuple(columns)

    @property
    def teachers(self) -> tuple[PreTrainedModel, ...]:
        return self._teachers.models

    def teacher_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, G, N) soft-target logits for `batch`, from the features or from the teachers."""
        if self.source == "labelled":
            return self.kind.teacher_logits(batch)
        with torch.no_grad():
            each = [self.kind.logits(teacher(**model_inputs(batch, takes_token_types(teacher))))
                    for teacher in self.teachers]  # K x (B, G, N)
        mask = self.kind.distribution_mask(batch)
        mask = None if mask is None else mask.bool()
        weights = torch.tensor(self.teacher_weights, device=each[0].device)
        weights = weights / weights.sum()
        return torch.stack([self.kind.mix_teachers([t[:, g].float() for t in each], weights, self.ensemble, mask,
                                                   self.temperature)
                            for g in range(each[0].shape[1])], 1)  # (B, G, N)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.kind.logits(self.student(**model_inputs(batch, takes_token_types(self.student))))  # (B, G, N)
        mask = self.kind.distribution_mask(batch)
        terms = {}
        if self.soft_term in self.term_weights:
            terms[self.soft_term] = self.soft(logits, self.teacher_logits(batch), mask)
        if "hard" in self.term_weights:
            terms["hard"] = self.hard(logits, self.kind.gold(batch), mask)
        return terms

    def check_features(self, data: FlatFeatures) -> None:
        if "hard" in self.term_weights:
            for column in self.kind.traits.label_columns:
                require_filled(data, column, "hard labels are needed while distill_weight < 1; label the data or "
                                             "set distill_weight: 1")
        if self.soft_term in self.term_weights and self.source == "labelled":
            for column in self.kind.traits.teacher_columns:
                require_filled(data, column, "run the label stage on these features, set "
                                              "distill.prediction.teacher_logits: online, or distill_weight: 0")

    def settings(self) -> dict[str, Any]:
        return {**self._spec,
                "losses": {self.soft_term: {"weight": self.term_weights.get(self.soft_term, 0.0),
                                            "loss": type(self.soft).__name__, "temperature": self.temperature,
                                            "scaled_by_t_squared": isinstance(self.soft, SoftTargetKL),
                                            "teacher_logits": self.source,
                                            "ensemble": self.ensemble if self.source == "online" else "as labelled",
                                            "reduction": "mean over (example, distribution) rows, padding masked"},
                           "hard": {"weight": self.term_weights.get("hard", 0.0),
                                    "reduction": "mean over (example, distribution) rows, padding masked"}}}

    def save_outputs(self, out_dir: Path) -> dict[str, str | None]:
        return {"model_dir": save_model(self.student, self.tokenizer, out_dir / "student"), "projections": None}

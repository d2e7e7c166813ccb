"""What a task is to the model side of a job: one small protocol, implemented once per task.

Labelling, training, evaluation and export ask the job's `TaskKind` (`distill.tasks.task_kind(name)`) instead of
branching on the task's name: which head a model has, how examples become features, which feature columns hold
the gold labels and the teachers' logits, how a model's outputs and a batch's targets line up for the losses, and
how predictions are scored. A new task is an entry in `core.tasks.TRAITS` (its name, flags and columns), a new
module here with its `TaskKind`, and one line in `distill.tasks.TASKS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

import pyarrow as pa
import torch
from transformers import PreTrainedTokenizerBase

from core.tasks import Task, TaskTraits
from distill.ensemble import labels_depend_on_temperature, mix_teacher_logits
from distill.losses import HardLabelCE, SoftTargetKL
from distill.spec import EvaluateSpec, FeaturesSpec


class EvaluationError(ValueError):
    """Evaluation that cannot run as asked: no models or examples, unlabelled examples, mismatched labels."""


class Answers(Protocol):
    """A model's predictions on evaluation examples, gathered chunk by chunk and scored at the end."""

    def add(self, examples: pa.Table, table: pa.Table, outputs: Any) -> None:
        """One chunk: `examples`, their features `table` and the model's outputs for those features in row order
        (QA: a (start, end) pair of arrays per feature; otherwise an (N, C) array)."""

    def score(self, predictions_path: Path | None = None, null_odds_path: Path | None = None) -> dict[str, Any]:
        """The scores (numbers, plus `degenerate`); the predictions (and for a task with `null_odds`, the null
        odds) written where paths are given."""


class TaskKind(ABC):
    """One task's answers to what the stages ask. Logits of every task are laid out (B, G, N): G distributions of
    N entries per feature (QA: start and end over the tokens; classification: one over the classes)."""

    #: the task's name and flags (core.tasks): classes, windows, metrics, columns
    traits: ClassVar[TaskTraits]
    #: the transformers Auto class of the task's head, and what a config's `architectures` entry ends with
    head: ClassVar[type]
    architecture_suffix: ClassVar[str]
    #: the attributes of a model's output that hold its logits, one per teacher column
    output_names: ClassVar[tuple[str, ...]]
    #: predictions come with null odds (the SQuAD 2.0 na_prob file), and scoring may be squad_v2 or mrqa
    null_odds: ClassVar[bool]
    feature_schema: ClassVar[pa.Schema]
    #: the name of phase 2's teacher term in the logs
    soft_term: ClassVar[str] = "kl"

    @property
    def name(self) -> Task:
        return self.traits.name

    @abstractmethod
    def build_features(self, examples: Sequence[Mapping[str, Any]] | pa.Table, tokenizer: PreTrainedTokenizerBase,
                       features: FeaturesSpec) -> pa.Table:
        """Examples as features in `feature_schema`, teacher columns null."""

    @abstractmethod
    def logits(self, outputs: Any) -> torch.Tensor:
        """(B, G, N) logits of a model's outputs."""

    @abstractmethod
    def gold(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, G) gold entries matching `logits`."""

    @abstractmethod
    def teacher_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, G, N) teacher logits read from a batch of labelled features."""

    @abstractmethod
    def distribution_mask(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """(B, N) entries that take part in a distribution, or None when all do."""

    @abstractmethod
    def answers(self, config: EvaluateSpec, scoring: str, label_names: list[str] | None) -> Answers:
        """An empty gatherer of predictions for evaluation or validation."""

    @abstractmethod
    def degenerate(self, predictions: list[Any]) -> str | None:
        """What is wrong with a model that gives one answer to everything (its scores then measure the data), or
        None."""

    def recognizes(self, config: Any) -> bool:
        """Whether a model config has this task's head (its `architectures`)."""
        return any(head.endswith(self.architecture_suffix) for head in config.architectures or [])

    def head_config(self, num_labels: int | None) -> dict[str, Any]:
        """Config settings a model of this task's head needs (classification: the number of classes)."""
        return {}

    def soft_loss(self, temperature: float) -> torch.nn.Module:
        """Phase 2's teacher term: KL between output distributions softened at `temperature`."""
        return SoftTargetKL(temperature)

    def hard_loss(self) -> torch.nn.Module:
        """The gold-label term of fine-tuning and phase 2: cross-entropy against the gold entries."""
        return HardLabelCE()

    def mix_teachers(self, logits: list[torch.Tensor], weights: torch.Tensor, ensemble: str,
                     mask: torch.Tensor | None, temperature: float) -> torch.Tensor:
        """Several teachers' (B, N) logits as one target (`distill.ensemble`)."""
        return mix_teacher_logits(logits, weights, ensemble, mask, temperature)

    def labels_depend_on_temperature(self, ensemble: str, teachers: int) -> bool:
        """Whether labelled teacher logits change with the distillation temperature (`distill.ensemble`)."""
        return labels_depend_on_temperature(ensemble, teachers)

    def teacher_bytes_per_feature(self, max_seq_len: int, num_labels: int | None) -> int:
        """What float32 teacher logits at full length would take per feature (the label stage's size record)."""
        per_output = max_seq_len if self.traits.windows else self.head_config(num_labels).get("num_labels", 0)
        return 4 * per_output * len(self.output_names)


def regression_head(config: Any) -> bool:
    """Whether a sequence classification config is a regression head: said so, or one output and no problem type
    (how hub STS-B models are saved)."""
    problem = getattr(config, "problem_type", None)
    return problem == "regression" or (problem is None and getattr(config, "num_labels", None) == 1)


def stack_outputs(outputs: Any, names: Sequence[str]) -> torch.Tensor:
    """(B, len(names), N) of the named (B, N) output tensors."""
    return torch.stack([getattr(outputs, name) for name in names], 1)

"""The model side of the task registry: each task of `core.tasks.TRAITS` is one `TaskKind` (`distill.tasks.base`)
in its own module.

    kind = task_kind(spec.task)
    table = kind.build_features(examples, tokenizer, spec.features)
    loss = SoftTargetKL(t)(kind.logits(student(**inputs)), kind.teacher_logits(batch), kind.distribution_mask(batch))
"""

from __future__ import annotations

from core.tasks import Task, task_traits
from distill.tasks.base import Answers, EvaluationError, TaskKind
from distill.tasks.classification import CLASSIFICATION
from distill.tasks.qa import QA
from distill.tasks.regression import REGRESSION

TASKS: dict[str, TaskKind] = {kind.name: kind for kind in (QA, CLASSIFICATION, REGRESSION)}


def task_kind(task: Task) -> TaskKind:
    """The TaskKind of a task name; an unknown name is refused with the known ones."""
    return TASKS[task_traits(task).name]


__all__ = ["Answers", "EvaluationError", "TASKS", "TaskKind", "task_kind"]

"""The tasks a job can run, named once, and what every layer may know of each without importing a model library.

`TRAITS` is the closed registry of names: the data side (`augment`), the command line and the report read it, and
`distill.tasks` registers each task's model side (heads, features, losses' inputs, scoring) under the same names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Task = Literal["qa", "classification", "regression"]


@dataclass(frozen=True)
class TaskTraits:
    """What a task is, in names and flags only: cheap to import anywhere (no torch, no pyarrow)."""

    name: Task
    #: examples carry a class out of named labels (`label_names`), and models have `num_labels` of them
    classes: bool
    #: features are windows over a context with logits per token (QA), rather than one feature per example
    windows: bool
    #: the score that picks the best checkpoint and heads reports, and those averaged over several sets
    headline_metric: str
    macro_metrics: tuple[str, ...]
    #: scores are percentages (the SQuAD metric's convention) rather than fractions 0-1
    percent_scores: bool
    #: what a model of the task does, for model cards
    description: str
    #: the transformers pipeline that serves it (a regression head: text-classification, function_to_apply none)
    pipeline_task: str
    #: the scores a model card lists, and of those the ones in its model-index with their display names
    card_metrics: tuple[str, ...]
    indexed_metrics: tuple[tuple[str, str], ...]
    #: example columns features are built from (`core.schema`; optional ones are read where present)
    example_columns: tuple[str, ...]
    #: feature columns: the gold labels; the ensemble's teacher logits; each teacher's own (keep_teacher_logits)
    label_columns: tuple[str, ...]
    teacher_columns: tuple[str, ...]
    per_teacher_columns: tuple[str, ...]


TRAITS: dict[str, TaskTraits] = {traits.name: traits for traits in (
    TaskTraits(name="qa", classes=False, windows=True, headline_metric="f1", macro_metrics=("exact", "f1"),
               percent_scores=True,
               description="extractive question answering (SQuAD 2.0 style: a span of the context, or no answer)",
               pipeline_task="question-answering",
               card_metrics=("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "best_exact",
                             "best_f1"),
               indexed_metrics=(("exact", "Exact match"), ("f1", "F1"), ("HasAns_exact", "Exact match (answerable)"),
                                ("HasAns_f1", "F1 (answerable)"), ("NoAns_exact", "Exact match (unanswerable)"),
                                ("NoAns_f1", "F1 (unanswerable)")),
               example_columns=("id", "question", "context", "answers", "is_impossible"),
               label_columns=("start_position", "end_position"),
               teacher_columns=("teacher_start_logits", "teacher_end_logits"),
               per_teacher_columns=("teachers_start_logits", "teachers_end_logits")),
    TaskTraits(name="classification", classes=True, windows=False, headline_metric="accuracy",
               macro_metrics=("accuracy", "macro_f1"), percent_scores=False, description="text classification",
               pipeline_task="text-classification",
               card_metrics=("accuracy", "macro_f1", "macro_precision", "macro_recall"),
               indexed_metrics=(("accuracy", "Accuracy"), ("macro_f1", "Macro F1")),
               example_columns=("id", "text", "text_pair", "label"),
               label_columns=("label",), teacher_columns=("teacher_logits",), per_teacher_columns=("teachers_logits",)),
    TaskTraits(name="regression", classes=False, windows=False, headline_metric="pearson",
               macro_metrics=("pearson", "spearman"), percent_scores=False,
               description="text regression (a score for a text or a pair of texts, e.g. their similarity)",
               pipeline_task="text-classification", card_metrics=("pearson", "spearman", "mse"),
               indexed_metrics=(("pearson", "Pearson correlation"), ("spearman", "Spearman correlation")),
               example_columns=("id", "text", "text_pair", "label"), label_columns=("label",),
               teacher_columns=("teacher_logits",), per_teacher_columns=("teachers_logits",)),
)}


def task_traits(task: str) -> TaskTraits:
    """The traits of a task name; an unknown name is refused with the known ones."""
    try:
        return TRAITS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; the tasks are {', '.join(TRAITS)}") from None

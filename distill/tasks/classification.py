"""Text classification (SST-2, emotion, MASSIVE; single texts or pairs): one feature per example, class logits,
scored by accuracy and macro precision, recall and F1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from core.shards import write_json
from core.tasks import TRAITS
from distill.classification_metrics import classification_report
from distill.features import CLASSIFICATION_FEATURE_SCHEMA
from distill.spec import EvaluateSpec
from distill.tasks.base import regression_head
from distill.tasks.text import LabelledText


class Classification(LabelledText):
    traits = TRAITS["classification"]
    feature_schema = CLASSIFICATION_FEATURE_SCHEMA

    def recognizes(self, config: Any) -> bool:
        return super().recognizes(config) and not regression_head(config)

    def head_config(self, num_labels: int | None) -> dict[str, Any]:
        return {} if num_labels is None else {"num_labels": num_labels}

    def answers(self, config: EvaluateSpec, scoring: str, label_names: list[str] | None) -> ClassAnswers:
        return ClassAnswers(label_names or [])


CLASSIFICATION = Classification()


class ClassAnswers:
    """Each classification example's id, gold label and argmax prediction, gathered chunk by chunk."""

    def __init__(self, label_names: list[str]) -> None:
        self.label_names = label_names
        self.ids: list[str] = []
        self.labels: list[np.ndarray] = []
        self.predicted: list[np.ndarray] = []

    def add(self, examples: pa.Table, table: pa.Table, logits: np.ndarray) -> None:
        """One chunk: `logits` (N, C) of `examples`, one feature each (`table` is not needed)."""
        self.ids.extend(examples.column("id").to_pylist())
        self.labels.append(examples.column("label").to_numpy())  # no nulls: evaluation checks first
        self.predicted.append(logits.argmax(axis=1))  # (N,)

    def score(self, predictions_path: Path | None = None, null_odds_path: None = None) -> dict[str, Any]:
        """Score accuracy, macro scores and the per-class report; write {id: label name} where a path is given
        (there are no null odds)."""
        names = self.label_names
        predicted = np.concatenate(self.predicted)
        predicted_names = [names[int(p)] for p in predicted]
        if predictions_path is not None:
            write_json(predictions_path, dict(zip(self.ids, predicted_names)))
        report = classification_report(np.concatenate(self.labels).astype(np.int64), predicted, len(names), names)
        return {
            "accuracy": report.accuracy, "macro_f1": report.macro_f1, "macro_precision": report.macro_precision,
            "macro_recall": report.macro_recall, "total": report.total,
            "per_class": {c.name: {"precision": c.precision, "recall": c.recall, "f1": c.f1, "support": c.support}
                          for c in report.per_class},
            "degenerate": CLASSIFICATION.degenerate(predicted_names),
        }

"""Text regression (GLUE's STS-B and the like): one feature per text or pair, a single score from a sequence
classification head with one output (`problem_type: regression`), learnt by mean squared error and scored by
Pearson and Spearman correlation."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from core.shards import write_json
from core.tasks import TRAITS
from distill.ensemble import mix_teacher_logits
from distill.features import REGRESSION_FEATURE_SCHEMA
from distill.losses import ScoreMSE
from distill.spec import EvaluateSpec
from distill.tasks.base import regression_head
from distill.tasks.text import LabelledText


class Regression(LabelledText):
    traits = TRAITS["regression"]
    feature_schema = REGRESSION_FEATURE_SCHEMA
    soft_term = "mse"
    prediction_format = "{:.4g}"

    def recognizes(self, config: Any) -> bool:
        return super().recognizes(config) and regression_head(config)

    def head_config(self, num_labels: int | None) -> dict[str, Any]:
        return {"num_labels": 1, "problem_type": "regression"}

    def soft_loss(self, temperature: float) -> torch.nn.Module:
        return ScoreMSE()   # a score has no distribution to soften: the temperature does not apply

    def hard_loss(self) -> torch.nn.Module:
        return ScoreMSE()

    def mix_teachers(self, logits: list[torch.Tensor], weights: torch.Tensor, ensemble: str,
                     mask: torch.Tensor | None, temperature: float) -> torch.Tensor:
        # the weighted mean score whatever the ensemble mode: softmax over a single output would erase it
        return mix_teacher_logits(logits, weights, "logits", None, 1.0)

    def labels_depend_on_temperature(self, ensemble: str, teachers: int) -> bool:
        return False

    def answers(self, config: EvaluateSpec, scoring: str, label_names: list[str] | None) -> ScoreAnswers:
        return ScoreAnswers()


REGRESSION = Regression()


class ScoreAnswers:
    """Each regression example's id, gold score and predicted score, gathered chunk by chunk."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.gold: list[np.ndarray] = []
        self.predicted: list[np.ndarray] = []

    def add(self, examples: pa.Table, table: pa.Table, logits: np.ndarray) -> None:
        """One chunk: `logits` (N, 1) of `examples`, one feature each."""
        self.ids.extend(examples.column("id").to_pylist())
        self.gold.append(examples.column("label").to_numpy().astype(np.float64))  # no nulls: evaluation checks
        self.predicted.append(logits[:, 0].astype(np.float64))

    def score(self, predictions_path: Path | None = None, null_odds_path: None = None) -> dict[str, Any]:
        """Pearson and Spearman correlation and the mean squared error; {id: score} written where a path is given
        (there are no null odds)."""
        from scipy import stats   # evaluation alone needs it

        gold, predicted = np.concatenate(self.gold), np.concatenate(self.predicted)
        if predictions_path is not None:
            write_json(predictions_path, dict(zip(self.ids, predicted.tolist())))
        with warnings.catch_warnings():
            # constant predictions have no correlation (NaN); `degenerate` says so in the scores
            warnings.simplefilter("ignore", stats.ConstantInputWarning)
            pearson = float(stats.pearsonr(predicted, gold).statistic)
            spearman = float(stats.spearmanr(predicted, gold).statistic)   # ties take their mean rank
        return {"pearson": pearson, "spearman": spearman, "mse": float(np.mean((predicted - gold) ** 2)),
                "total": len(gold), "degenerate": REGRESSION.degenerate(predicted.tolist())}

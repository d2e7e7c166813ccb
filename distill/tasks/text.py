"""What classification and regression share: one feature per text (or pair) and a sequence classification head,
whose logits are one distribution over C outputs per feature, laid out (B, 1, C) (regression: C = 1, the score)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import torch
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerBase

from distill.features import classification_features
from distill.spec import FeaturesSpec
from distill.tasks.base import TaskKind


class LabelledText(TaskKind):
    head = AutoModelForSequenceClassification
    architecture_suffix = "ForSequenceClassification"
    output_names = ("logits",)
    null_odds = False
    prediction_format = "{!r}"   # how `degenerate` shows the one prediction


    def build_features(self, examples: Sequence[Mapping[str, Any]] | pa.Table, tokenizer: PreTrainedTokenizerBase,
                       features: FeaturesSpec) -> pa.Table:
        return classification_features(examples, tokenizer, features, self.feature_schema)

    def logits(self, outputs: Any) -> torch.Tensor:
        return outputs.logits[:, None, :]                                       # (B, 1, C)

    def gold(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch["labels"][:, None]                                         # (B, 1): class ids or scores

    def teacher_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch["teacher_logits"][:, None, :]

    def distribution_mask(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        return None                                                             # every output takes part

    def degenerate(self, predictions: list[Any]) -> str | None:
        if len(predictions) > 1 and len(set(predictions)) == 1:
            return f"predicts {self.prediction_format.format(predictions[0])} for all {len(predictions)} examples"
        return None

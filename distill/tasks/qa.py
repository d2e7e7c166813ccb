"""Extractive question answering (SQuAD 2.0 and MRQA): windows over a context, start and end logits per token,
answers post-processed from the windows and scored with the official SQuAD 2.0 metric (or MRQA's)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from transformers import AutoModelForQuestionAnswering, PreTrainedTokenizerBase

from core.tasks import TRAITS
from distill.features import CLS_INDEX, QA_FEATURE_SCHEMA, qa_features
from distill.postprocess import (QAExample, QAPrediction, QAWindow, postprocess_qa_predictions, write_null_odds,
                                 write_predictions)
from distill.spec import EvaluateSpec, FeaturesSpec
from distill.squad_metric import SquadFormatError, squad_v1_scores, squad_v2_scores
from distill.tasks.base import EvaluationError, TaskKind, stack_outputs

#: How answers are scored: the official SQuAD 2.0 metric, or MRQA's (SQuAD 1.1's, every question answerable).
Scoring = Literal["squad_v2", "mrqa"]


class QuestionAnswering(TaskKind):
    traits = TRAITS["qa"]
    head = AutoModelForQuestionAnswering
    architecture_suffix = "ForQuestionAnswering"
    output_names = ("start_logits", "end_logits")
    null_odds = True
    feature_schema = QA_FEATURE_SCHEMA

    def build_features(self, examples: Sequence[Mapping[str, Any]] | pa.Table, tokenizer: PreTrainedTokenizerBase,
                       features: FeaturesSpec) -> pa.Table:
        return qa_features(examples, tokenizer, features)

    def logits(self, outputs: Any) -> torch.Tensor:
        return stack_outputs(outputs, self.output_names)                        # (B, 2, L)

    def gold(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([batch["start_positions"], batch["end_positions"]], 1)

    def teacher_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([batch[name] for name in self.traits.teacher_columns], 1)

    def distribution_mask(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        return batch["attention_mask"]                                          # real tokens only

    def answers(self, config: EvaluateSpec, scoring: Scoring, label_names: list[str] | None) -> QAAnswers:
        return QAAnswers(config, scoring)

    def degenerate(self, predictions: list[str]) -> str | None:
        if predictions and not any(predictions):
            return f"answers no answer to all {len(predictions)} questions"
        return None


QA = QuestionAnswering()


def qa_predictions(examples: pa.Table, table: pa.Table, outputs: list[tuple[np.ndarray, np.ndarray]],
                   config: EvaluateSpec, scoring: Scoring = "squad_v2") -> dict[str, QAPrediction]:
    """{id: prediction} of `examples` from the logits `outputs` of their features `table`, in row order; under
    MRQA scoring every question has an answer, so the best span wins whatever the null score."""
    ids = examples.column("id").to_pylist()
    windows: dict[str, list[QAWindow]] = {qid: [] for qid in ids}
    rows = zip(table.column("example_id").to_pylist(), _per_row(table, "offset_start"),
               _per_row(table, "offset_end"), outputs)
    for example_id, offset_start, offset_end, (start_logits, end_logits) in rows:
        offsets = np.stack([offset_start, offset_end], axis=1)  # (T, 2), -1 outside the context
        windows[example_id].append(QAWindow(start_logits, end_logits, offsets, CLS_INDEX))
    qa_examples = [QAExample(qid, context, tuple(windows[qid]))
                   for qid, context in zip(ids, examples.column("context").to_pylist())]
    null_threshold = math.inf if scoring == "mrqa" else config.null_threshold
    return postprocess_qa_predictions(qa_examples, n_best_size=config.n_best, max_answer_length=config.max_answer_len,
                                      null_threshold=null_threshold)


def _per_row(table: pa.Table, name: str) -> list[np.ndarray]:
    """A list column of `table` as one NumPy array per row."""
    column = table.column(name)
    flat = pc.list_flatten(column).to_numpy()
    ends = np.cumsum(pc.list_value_length(column).to_numpy())
    return np.split(flat, ends[:-1])


class QAAnswers:
    """Each QA example's answer (text, null odds) and gold answers, gathered chunk by chunk.

    A chunk's windows, logits and n-best lists are dropped once its examples are answered; what is kept is a few
    strings and a float per example.
    """

    def __init__(self, config: EvaluateSpec, scoring: Scoring = "squad_v2") -> None:
        self.config, self.scoring = config, scoring
        self.predictions: dict[str, QAPrediction] = {}
        # squad_metric marks an unanswerable question with an empty gold list (as load_squad_gold does); the
        # official script's [""] is what it compares against internally.
        self.gold: dict[str, list[str]] = {}

    def add(self, examples: pa.Table, table: pa.Table, outputs: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Post-process one chunk: `table` holds the features of `examples` (all windows of each), `outputs` their
        logits in row order."""
        ids = examples.column("id").to_pylist()
        for qid, prediction in qa_predictions(examples, table, outputs, self.config, self.scoring).items():
            # postprocess_qa_predictions refuses a repeated id within a chunk; this is the check across chunks
            if qid in self.predictions:
                raise EvaluationError(f"question id {qid!r} appears in two examples; give each question one "
                                      "example holding all of its windows")
            self.predictions[qid] = replace(prediction, n_best=())
        aliases = (examples.column("gold_answers").to_pylist() if "gold_answers" in examples.column_names
                   else [None] * examples.num_rows)
        for qid, answers, impossible, gold in zip(ids, examples.column("answers").to_pylist(),
                                                  examples.column("is_impossible").to_pylist(), aliases):
            self.gold[qid] = [] if impossible else list(gold if gold is not None else answers["text"])

    def score(self, predictions_path: Path | None = None, null_odds_path: Path | None = None) -> dict[str, Any]:
        """Score with the SQuAD 2.0 metric or MRQA's, writing the official files where paths are given."""
        if predictions_path is not None:
            write_predictions(self.predictions, predictions_path)
        if null_odds_path is not None:
            write_null_odds(self.predictions, null_odds_path)
        texts = {qid: p.text for qid, p in self.predictions.items()}
        degenerate = QA.degenerate(list(texts.values()))
        if self.scoring == "mrqa":
            try:
                scores = squad_v1_scores(self.gold, texts)
            except SquadFormatError as error:
                raise EvaluationError(f"{error}: MRQA scoring needs answerable questions; score data with "
                                      "unanswerable ones with scoring: squad_v2") from None
            return {"exact": scores["exact_match"], "f1": scores["f1"], "total": len(self.gold),
                    "scoring": "mrqa", "degenerate": degenerate}
        # The predictions already say "" where the null odds exceed null_threshold; scoring with the same
        # threshold makes exact/f1 the scores of predictions.json exactly (best_* search their own threshold).
        scores = squad_v2_scores(self.gold, texts, na_probs={qid: p.null_odds for qid, p in self.predictions.items()},
                                 na_prob_thresh=self.config.null_threshold)
        return {**scores, "na_prob_thresh": self.config.null_threshold, "degenerate": degenerate}

"""Answer questions about contexts with a QA model folder, through the evaluation's own inference path.

`QuestionAnswerer` windows each (question, context) with `distill.features` (the windowing of training and
evaluation), runs the model in length-sorted batches and picks answers with `distill.postprocess`, exactly as the
evaluate stage does: an answer here is the answer evaluation scored. Settings default to the ones the folder was
exported with (`config.task_specific_params["question-answering"]`).

Example::

    answerer = QuestionAnswerer("runs/<job>/export")
    [answer] = answerer.answer([{"question": "Where is the Eiffel Tower?",
                                 "context": "The Eiffel Tower is in Paris."}])
    answer.answer, answer.null_odds  # "Paris", -3.2 ("" when the null odds exceed null_threshold)

`python -m distill answer MODEL --question Q --context C` is the command line of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow as pa

from core.devices import device_precision, pick_device
from core.positions import usable_positions
from core.tasks import task_traits
from distill.evaluate import EXAMPLES_PER_CHUNK, predict_qa
from distill.export import saved_settings
from distill.models import ModelCheckError, ModelRef, load_config, load_model, load_tokenizer, task_of
from distill.postprocess import answer_probabilities
from distill.qa_windows import DEFAULT_SETTINGS
from distill.spec import EvaluateSpec, FeaturesSpec


class AnswerError(ValueError):
    """A question that cannot be answered as given, or a model that does not answer questions."""


@dataclass(frozen=True)
class Answer:
    """The answer to one question.

    Attributes:
        id: the question's id (given, or its position in the input).
        answer: the best span's text, or "" when the null odds exceed null_threshold (unanswerable).
        score: the answer's share of the softmax over the n-best span scores and the null score.
        start: first character of the answer in the context (0 for "").
        end: one past its last character (0 for "").
        null_odds: null score - best span score; higher means more likely unanswerable.
    """

    id: str
    answer: str
    score: float
    start: int
    end: int
    null_odds: float


class QuestionAnswerer:
    """A QA model loaded once, answering batches of questions.

    Args:
        model: a model folder or hub name with a question-answering head.
        cpu: run on the CPU even when a GPU is present.
        settings: overrides of `DEFAULT_SETTINGS` keys (max_seq_len, doc_stride, max_question_len,
            max_answer_len, n_best, null_threshold); unset keys come from the folder's config.

    Raises:
        AnswerError: the model has no question-answering head, or a setting is unknown.
        OSError: no model at `model`.
    """

    def __init__(self, model: str | Path, cpu: bool = False, **settings: Any):
        unknown = sorted(set(settings) - set(DEFAULT_SETTINGS))
        if unknown:
            raise AnswerError(f"unknown settings {unknown}; valid: {sorted(DEFAULT_SETTINGS)}")
        ref = ModelRef(str(model))
        config = load_config(ref)
        try:
            task = task_of(config, ref.name_or_path)
        except ModelCheckError as err:
            raise AnswerError(str(err)) from err
        if not task_traits(task).windows:
            raise AnswerError(f"{model} is a {task} model; `distill answer` needs a question-answering head "
                              "(classify text with pipeline('text-classification', model=...))")
        self.settings = (DEFAULT_SETTINGS | saved_settings(config, "qa")
                         | {key: value for key, value in settings.items() if value is not None})
        positions = usable_positions(config)
        if positions:
            self.settings["max_seq_len"] = min(self.settings["max_seq_len"], positions)
        self.features = FeaturesSpec(max_seq_len=self.settings["max_seq_len"], doc_stride=self.settings["doc_stride"],
                                     max_query_len=self.settings["max_question_len"])
        self.config = EvaluateSpec(max_answer_len=self.settings["max_answer_len"], n_best=self.settings["n_best"],
                                   null_threshold=self.settings["null_threshold"])
        self.device = pick_device(0 if cpu else None)
        self.precision = device_precision(self.device)
        self.tokenizer = load_tokenizer(ref)
        self.model = load_model(ref, "qa").to(self.device)

    def answer(self, questions: Iterable[Mapping[str, Any]]) -> Iterator[Answer]:
        """Answers to `questions` ({"question", "context"} and optionally "id"), in order, chunk by chunk.

        Raises:
            AnswerError: a question or context that is missing, not text, or empty; an id given twice.
        """
        rows = (self._row(index, question) for index, question in enumerate(questions))
        seen: set[str] = set()
        while chunk := list(islice(rows, EXAMPLES_PER_CHUNK)):
            for row in chunk:
                if row["id"] in seen:
                    raise AnswerError(f"question id {row['id']!r} is given twice; ids must be unique")
                seen.add(row["id"])
            examples = pa.Table.from_pylist(chunk)
            predictions = predict_qa(self.model, self.tokenizer, examples, self.features, self.config, self.device,
                                     self.precision)
            for row in chunk:
                prediction = predictions[row["id"]]
                span_probabilities, null_probability = answer_probabilities(prediction)
                if prediction.text:
                    best = prediction.n_best[0]
                    yield Answer(row["id"], prediction.text, float(span_probabilities[0]), best.char_start,
                                 best.char_end, prediction.null_odds)
                else:
                    yield Answer(row["id"], "", null_probability, 0, 0, prediction.null_odds)

    @staticmethod
    def _row(index: int, question: Mapping[str, Any]) -> dict[str, Any]:
        where = f"question {index + 1}" + (f" (id {question['id']!r})" if question.get("id") is not None else "")
        for key in ("question", "context"):
            value = question.get(key)
            if not isinstance(value, str) or not value.strip():
                raise AnswerError(f"{where}: {key!r} must be non-empty text, got {value!r}")
        return {"id": str(question.get("id", index)), "question": question["question"],
                "context": question["context"], "answers": {"text": [], "answer_start": []}}

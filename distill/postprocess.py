"""Question-answering post-processing: from start/end logits over tokenized windows to SQuAD answers.

A long context is tokenized into overlapping windows; the model gives every token of every window a start and
an end logit. Per example this module picks the best span inside the context over all its windows, scores
"no answer" from the [CLS] token (the minimum over windows, as the official BERT code and the transformers
question-answering example do), and answers "" when the null score beats the best span by more than a threshold.
A span is widened to whole words, so an answer never starts or ends inside a word. Everything here is a pure
function of arrays and strings (numpy only: exported QA folders carry a copy for their standalone pipeline);
only ``write_*`` touch the disk.

Example::

    examples = examples_from_windows(qids, contexts, start_logits, end_logits, offsets, window_to_example)
    predictions = postprocess_qa_predictions(examples, n_best_size=20, max_answer_length=30)
    write_predictions(predictions, "predictions.json")  # {qid: text}, for the SQuAD metric
    write_null_odds(predictions, "null_odds.json")  # {qid: null odds}, its --na-probs
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

#: A token's characters in the context, ``(char_start, char_end)``; ``None`` or ``(-1, -1)`` for a token outside
#: the context (question, [CLS], [SEP], padding).
Offset = tuple[int, int] | None

# How a token outside the context is stored once a window is built.
_NOT_CONTEXT = (-1, -1)


class PostprocessError(ValueError):
    """Inputs to QA post-processing that do not fit together: counts, lengths, offsets or settings."""


def _offsets_array(offsets: Sequence[Offset] | np.ndarray, n_tokens: int) -> np.ndarray:
    """``offsets`` as an (n_tokens, 2) int64 array with ``(-1, -1)`` rows for tokens outside the context."""
    if not isinstance(offsets, np.ndarray):
        offsets = [_NOT_CONTEXT if offset is None else offset for offset in offsets]
    try:
        array = np.asarray(offsets, dtype=np.int64)
    except (TypeError, ValueError) as err:
        raise PostprocessError(
            f"offsets must be (char_start, char_end) pairs or None, one per token; could not read them: {err}"
        ) from err
    if array.shape != (n_tokens, 2):
        raise PostprocessError(
            f"offsets have shape {array.shape} but the logits cover {n_tokens} tokens; pass one "
            "(char_start, char_end) pair per token of the window, None for tokens outside the context"
        )
    return array


@dataclass(frozen=True, eq=False)
class QAWindow:
    """One tokenized window (feature) of an example: the question plus a stretch of its context.

    Attributes:
        start_logits: (window_len,) start score of every token of the window; stored as float64.
        end_logits: (window_len,) end score of every token of the window; stored as float64.
        offsets: window_len entries, ``(char_start, char_end)`` into the example's context for context tokens and
            ``None`` or ``(-1, -1)`` for every other token. Stored as a (window_len, 2) int64 array with
            ``(-1, -1)`` rows outside the context. A tokenizer's raw offset mapping also gives offsets to question
            tokens and ``(0, 0)`` to special tokens: mask them first, e.g. with ``sequence_ids``.
        cls_index: the token whose start + end logits score "no answer" ([CLS], 0 for BERT-style inputs).

    Raises:
        PostprocessError: logits not 1-D, of different lengths, or not finite; an offset count that differs from
            the token count; a [CLS] token inside the context; an empty or reversed context offset.
    """

    start_logits: np.ndarray
    end_logits: np.ndarray
    offsets: np.ndarray
    cls_index: int = 0

    def __post_init__(self) -> None:
        start = np.asarray(self.start_logits, dtype=np.float64)
        end = np.asarray(self.end_logits, dtype=np.float64)
        if start.ndim != 1 or end.shape != start.shape:
            raise PostprocessError(
                f"start_logits and end_logits must be 1-D with one score per token of the window; got shapes "
                f"{start.shape} and {end.shape}"
            )
        if not (np.isfinite(start).all() and np.isfinite(end).all()):
            raise PostprocessError("the window's logits contain NaN or infinity; check the model outputs")
        n_tokens = start.shape[0]
        if not 0 <= self.cls_index < n_tokens:
            raise PostprocessError(f"cls_index {self.cls_index} is outside the window's {n_tokens} tokens")
        offsets = _offsets_array(self.offsets, n_tokens)
        if tuple(offsets[self.cls_index]) != _NOT_CONTEXT:
            raise PostprocessError(
                f"the [CLS] token (index {self.cls_index}) has offset {tuple(offsets[self.cls_index])}; tokens "
                "outside the context need None or (-1, -1): mask the offset mapping with the tokenizer's sequence_ids"
            )
        in_context = (offsets != -1).any(axis=1)
        bad = np.flatnonzero(in_context & ~((offsets[:, 0] >= 0) & (offsets[:, 0] < offsets[:, 1])))
        if bad.size:
            raise PostprocessError(
                f"{bad.size} tokens have offsets that are neither a span (0 <= char_start < char_end) nor "
                f"(-1, -1) (e.g. token {bad[0]}: {tuple(offsets[bad[0]])}); tokenizers give (0, 0) to special and "
                "padding tokens, which must be None or (-1, -1) here"
            )
        object.__setattr__(self, "start_logits", start)
        object.__setattr__(self, "end_logits", end)
        object.__setattr__(self, "offsets", offsets)


@dataclass(frozen=True, eq=False)
class QAExample:
    """One question with its context and every window the context was tokenized into.

    Attributes:
        qid: the question id, the key of the predictions files.
        context: the context string that the windows' offsets index.
        windows: one or more windows, in any order.

    Raises:
        PostprocessError: no windows, no context token in any window, or an offset past the end of the context.
    """

    qid: str
    context: str
    windows: tuple[QAWindow, ...]

    def __post_init__(self) -> None:
        windows = tuple(self.windows)
        if not windows:
            raise PostprocessError(f"example {self.qid!r} has no windows; give it at least one tokenized window")
        for window_index, window in enumerate(windows):
            past_end = np.flatnonzero(window.offsets[:, 1] > len(self.context))
            if past_end.size:
                raise PostprocessError(
                    f"example {self.qid!r}, window {window_index}: token {past_end[0]} has offset "
                    f"{tuple(window.offsets[past_end[0]])}, past the context's {len(self.context)} characters; "
                    "offsets must index the context string, and question tokens must be None or (-1, -1)"
                )
        if not any((window.offsets[:, 0] >= 0).any() for window in windows):
            raise PostprocessError(
                f"example {self.qid!r} has no context token in its {len(windows)} windows; give context tokens "
                "their (char_start, char_end) offsets"
            )
        object.__setattr__(self, "windows", windows)


@dataclass(frozen=True)
class SpanCandidate:
    """One answer span proposed by one window.

    Attributes:
        text: ``context[char_start:char_end]``, whole words (see :func:`whole_words`).
        score: ``start_logit + end_logit``.
        start_logit: the start logit of the span's first token.
        end_logit: the end logit of the span's last token.
        char_start: first character of the span in the context, at the start of a word.
        char_end: one past the last character of the span in the context, at the end of a word.
        window_index: which of the example's windows proposed it.
    """

    text: str
    score: float
    start_logit: float
    end_logit: float
    char_start: int
    char_end: int
    window_index: int


@dataclass(frozen=True)
class QAPrediction:
    """The answer to one example.

    Attributes:
        qid: the question id.
        text: the best span's text, or "" when "no answer" wins.
        null_score: min over windows of the [CLS] start + end logits.
        null_odds: ``null_score - best span score`` (the SQuAD ``na_probs`` value); ``inf`` when no window
            proposed a valid span, so that the answer is "" at every threshold.
        n_best: up to n_best_size valid spans over all windows, best first (the same span may come from two
            overlapping windows).
    """

    qid: str
    text: str
    null_score: float
    null_odds: float
    n_best: tuple[SpanCandidate, ...]


def _inside_word(before: str, after: str) -> bool:
    """Whether a boundary between two characters cuts a word: both are letters or digits, and neither is a CJK
    ideograph (BERT tokenizers make each ideograph a word of its own)."""
    return before.isalnum() and after.isalnum() and not (_is_ideograph(before) or _is_ideograph(after))


def _is_ideograph(char: str) -> bool:
    code = ord(char)
    return (0x3400 <= code <= 0x4DBF or 0x4E00 <= code <= 0x9FFF or 0xF900 <= code <= 0xFAFF
            or 0x20000 <= code <= 0x2FA1F)


def whole_words(context: str, char_start: int, char_end: int) -> tuple[int, int]:
    """``[char_start, char_end)`` widened to whole words of ``context``.

    A span's first or last token can be a piece of a word ("##32" of "1632"); the answer is the words it touches,
    never a fragment. Punctuation next to a word is not pulled in.
    """
    while char_start > 0 and _inside_word(context[char_start - 1], context[char_start]):
        char_start -= 1
    while char_end < len(context) and _inside_word(context[char_end - 1], context[char_end]):
        char_end += 1
    return char_start, char_end


def _window_candidates(
    window: QAWindow, window_index: int, context: str, n_best_size: int, max_answer_length: int
) -> list[SpanCandidate]:
    """Valid spans from the ``n_best_size`` best start and end tokens of one window (context tokens only)."""
    context_tokens = np.flatnonzero(window.offsets[:, 0] >= 0)
    # Rank context tokens only: a question or [SEP] token with a high logit would otherwise take a candidate slot
    # and leave fewer valid spans (the transformers example ranks all tokens, then drops those).
    starts = context_tokens[np.argsort(-window.start_logits[context_tokens], kind="stable")[:n_best_size]]
    ends = context_tokens[np.argsort(-window.end_logits[context_tokens], kind="stable")[:n_best_size]]
    candidates = []
    for start in starts:
        for end in ends:
            if end < start or end - start + 1 > max_answer_length:
                continue
            char_start, char_end = whole_words(context, int(window.offsets[start, 0]), int(window.offsets[end, 1]))
            start_logit, end_logit = float(window.start_logits[start]), float(window.end_logits[end])
            candidates.append(
                SpanCandidate(
                    text=context[char_start:char_end],
                    score=start_logit + end_logit,
                    start_logit=start_logit,
                    end_logit=end_logit,
                    char_start=char_start,
                    char_end=char_end,
                    window_index=window_index,
                )
            )
    return candidates


def _predict(example: QAExample, n_best_size: int, max_answer_length: int, null_threshold: float) -> QAPrediction:
    """The :class:`QAPrediction` of one example (see :func:`postprocess_qa_predictions`)."""
    # The window that is most sure there is no answer in it speaks for "no answer" (official BERT, transformers).
    null_score = min(
        float(window.start_logits[window.cls_index] + window.end_logits[window.cls_index]) for window in example.windows
    )
    candidates = [
        candidate
        for window_index, window in enumerate(example.windows)
        for candidate in _window_candidates(window, window_index, example.context, n_best_size, max_answer_length)
    ]
    # sorted() is stable: equal scores keep window order, then start-rank order.
    n_best = tuple(sorted(candidates, key=lambda candidate: candidate.score, reverse=True)[:n_best_size])
    null_odds = null_score - n_best[0].score if n_best else math.inf
    text = "" if null_odds > null_threshold else n_best[0].text
    return QAPrediction(qid=example.qid, text=text, null_score=null_score, null_odds=null_odds, n_best=n_best)


def answer_probabilities(prediction: QAPrediction) -> tuple[np.ndarray, float]:
    """(probability of each n-best span, probability of no answer): a softmax over the n-best span scores and the
    null score together, as the official BERT code scores its n-best list."""
    scores = np.array([span.score for span in prediction.n_best] + [prediction.null_score])
    shifted = np.exp(scores - scores.max())
    probabilities = shifted / shifted.sum()
    return probabilities[:-1], float(probabilities[-1])


def postprocess_qa_predictions(
    examples: Sequence[QAExample],
    *,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    null_threshold: float = 0.0,
) -> dict[str, QAPrediction]:
    """Answer every example from its windows' start and end logits.

    Per window, the ``n_best_size`` highest start logits and end logits among context tokens are paired; a pair
    is a valid span when end >= start and it spans at most ``max_answer_length`` tokens. The best valid span over
    all windows competes with "no answer": the answer is "" when ``null_score - best span score`` (the null
    odds) exceeds ``null_threshold``.

    Args:
        examples: the examples, each with its context and windows (see :func:`examples_from_windows`).
        n_best_size: start and end candidates per window, and the length of each n-best list.
        max_answer_length: the longest answer, in tokens.
        null_threshold: the null odds above which the answer is "" (0.0 as in the official BERT code; tune it on
            held-out data with the metric's ``best_f1_thresh``).

    Returns:
        ``{qid: QAPrediction}`` in the order of ``examples``.

    Raises:
        PostprocessError: n_best_size or max_answer_length below 1, or a question id that repeats.
    """
    for name, value in (("n_best_size", n_best_size), ("max_answer_length", max_answer_length)):
        if value < 1:
            raise PostprocessError(f"{name} must be at least 1, got {value}")
    predictions: dict[str, QAPrediction] = {}
    for example in examples:
        if example.qid in predictions:
            raise PostprocessError(
                f"question id {example.qid!r} appears in two examples; give each question one example holding "
                "all of its windows"
            )
        predictions[example.qid] = _predict(example, n_best_size, max_answer_length, null_threshold)
    return predictions


def examples_from_windows(
    qids: Sequence[str],
    contexts: Sequence[str],
    start_logits: ArrayLike,
    end_logits: ArrayLike,
    offsets: Sequence[Sequence[Offset]],
    window_to_example: Sequence[int],
    cls_index: int = 0,
) -> list[QAExample]:
    """Group a batch of windows, as a tokenizer and model produce them, into :class:`QAExample` objects.

    Args:
        qids: one question id per example.
        contexts: one context string per example.
        start_logits: (n_windows, seq_len) start logits.
        end_logits: (n_windows, seq_len) end logits.
        offsets: n_windows lists of seq_len offsets, None or (-1, -1) outside the context (see :class:`QAWindow`).
        window_to_example: n_windows example indices, e.g. the tokenizer's ``overflow_to_sample_mapping``.
        cls_index: the [CLS] position in every window.

    Returns:
        One :class:`QAExample` per question, in the order of ``qids``, windows in batch order.

    Raises:
        PostprocessError: counts that disagree, an example index out of range, an example with no window, or an
            invalid window (see :class:`QAWindow`, :class:`QAExample`).
    """
    if len(qids) != len(contexts):
        raise PostprocessError(
            f"got {len(qids)} question ids and {len(contexts)} contexts; pass one context per question "
            "(repeat a paragraph's context for each of its questions)"
        )
    start = np.asarray(start_logits)
    end = np.asarray(end_logits)
    if start.ndim != 2 or end.shape != start.shape:
        raise PostprocessError(
            f"start_logits and end_logits must both be (n_windows, seq_len); got shapes {start.shape} and {end.shape}"
        )
    for name, values in (("offset lists", offsets), ("window_to_example entries", window_to_example)):
        if len(values) != start.shape[0]:
            raise PostprocessError(
                f"got {start.shape[0]} windows of logits but {len(values)} {name}; pass one per window, in the "
                "order the windows were tokenized"
            )
    grouped: list[list[QAWindow]] = [[] for _ in qids]
    for window_index, example_index in enumerate(window_to_example):
        if not 0 <= example_index < len(qids):
            raise PostprocessError(
                f"window {window_index} belongs to example {example_index}, but there are {len(qids)} examples "
                f"(indices 0 to {len(qids) - 1})"
            )
        window = QAWindow(start[window_index], end[window_index], offsets[window_index], cls_index)
        grouped[example_index].append(window)
    without = [qid for qid, windows in zip(qids, grouped) if not windows]
    if without:
        raise PostprocessError(
            f"got windows for {len(qids) - len(without)} of {len(qids)} examples (e.g. {without[0]!r} has none); "
            "window_to_example must name every example at least once"
        )
    return [QAExample(qid, context, tuple(windows)) for qid, context, windows in zip(qids, contexts, grouped)]


def write_predictions(predictions: Mapping[str, QAPrediction], path: str | os.PathLike[str]) -> None:
    """Write the official SQuAD predictions file, ``{qid: answer text}`` with "" for "no answer".

    Args:
        predictions: from :func:`postprocess_qa_predictions`.
        path: the JSON file to write (its folder must exist).
    """
    Path(path).write_text(json.dumps({qid: p.text for qid, p in predictions.items()}, indent=2), encoding="utf-8")


def write_null_odds(predictions: Mapping[str, QAPrediction], path: str | os.PathLike[str]) -> None:
    """Write the official SQuAD null-odds file (the metric's ``--na-probs``), ``{qid: null odds}``.

    Args:
        predictions: from :func:`postprocess_qa_predictions`.
        path: the JSON file to write (its folder must exist). An example without a valid span has null odds
            ``inf``, written as ``Infinity``, which Python's ``json`` (and the official script) reads back.
    """
    Path(path).write_text(json.dumps({qid: p.null_odds for qid, p in predictions.items()}, indent=2), encoding="utf-8")

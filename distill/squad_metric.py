"""SQuAD 1.1 and 2.0 evaluation: exact match and token F1, written from the official definitions.

The numbers match the official ``evaluate-v2.0.py`` and ``evaluate-v1.1.py`` scripts, including their quirks:
gold answers that normalise to nothing are dropped before scoring (v2.0), a prediction counts as "no answer" in
``exact``/``f1`` when its null odds exceed ``na_prob_thresh`` (1.0 by default, v2.0), and the best-threshold search
walks the questions in the order of their null odds. The one deliberate difference: a gold question without a
prediction scores 0 in every number and counts in every total. (The v1.1 script does the same; the v2.0 script
drops it from the overall total and then fails with a KeyError while building the HasAns/NoAns breakdown.)

Example::

    gold = load_squad_gold("dev-v2.0.json")
    scores = squad_v2_scores(gold, {"56ddde6b9a695914005b9628": "France", ...}, na_probs=null_odds)
    scores["exact"], scores["f1"], scores["best_f1"]
"""

from __future__ import annotations

import collections
import json
import os
import re
import string
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

#: The official v2.0 script's default for ``--na-prob-thresh``: with null odds that are probabilities in [0, 1]
#: it never turns an answer into "no answer"; with logit differences (our null odds) it can.
DEFAULT_NA_PROB_THRESH = 1.0

# How many question ids a missing-prediction warning names before it only gives the count.
_MISSING_IDS_SHOWN = 5

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)

SquadVersion = Literal["1.1", "2.0"]
SquadSource = str | os.PathLike[str] | Mapping[str, Any]


class SquadFormatError(ValueError):
    """A SQuAD dataset, predictions mapping or null-odds mapping is not in the expected shape."""


class MissingPredictionWarning(UserWarning):
    """Some gold questions have no prediction; each of them scores 0."""


def normalize_answer(text: str) -> str:
    """Normalise an answer the official way before comparing it.

    Args:
        text: a gold or predicted answer.

    Returns:
        ``text`` lower-cased, without ``string.punctuation`` characters, without the whole words a/an/the, and
        with every run of whitespace collapsed to one space (no leading or trailing space).
    """
    lowered = text.lower()
    # Punctuation goes before the articles so that "the," still loses its article.
    without_punctuation = "".join(char for char in lowered if char not in _PUNCTUATION)
    without_articles = _ARTICLES.sub(" ", without_punctuation)
    return " ".join(without_articles.split())


def exact_match(gold: str, prediction: str) -> int:
    """1 if ``gold`` and ``prediction`` are equal after :func:`normalize_answer`, else 0.

    Args:
        gold: one gold answer ("" for an unanswerable question).
        prediction: the predicted answer ("" for "no answer").
    """
    return int(normalize_answer(gold) == normalize_answer(prediction))


def token_f1(gold: str, prediction: str) -> float:
    """SQuAD 2.0 token-level F1 between one gold answer and a prediction.

    Args:
        gold: one gold answer ("" for an unanswerable question).
        prediction: the predicted answer ("" for "no answer").

    Returns:
        The harmonic mean of token precision and recall over normalised tokens (a multiset overlap). When either
        side has no tokens the answer is all-or-nothing: 1.0 if both are empty, else 0.0.
    """
    gold_tokens = normalize_answer(gold).split()
    predicted_tokens = normalize_answer(prediction).split()
    if not gold_tokens or not predicted_tokens:
        return float(gold_tokens == predicted_tokens)
    return _overlap_f1(gold_tokens, predicted_tokens)


def _v1_token_f1(gold: str, prediction: str) -> float:
    """SQuAD 1.1 token F1: like :func:`token_f1`, except that two empty answers score 0 (no shared token)."""
    gold_tokens = normalize_answer(gold).split()
    predicted_tokens = normalize_answer(prediction).split()
    return _overlap_f1(gold_tokens, predicted_tokens)


def _overlap_f1(gold_tokens: list[str], predicted_tokens: list[str]) -> float:
    """F1 of the multiset overlap of two token lists; 0.0 when they share no token."""
    shared = sum((collections.Counter(gold_tokens) & collections.Counter(predicted_tokens)).values())
    if shared == 0:
        return 0.0
    # Same arithmetic as the official scripts, so that the sums agree to the last bit.
    precision = 1.0 * shared / len(predicted_tokens)
    recall = 1.0 * shared / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def _read_dataset(source: SquadSource) -> Mapping[str, Any]:
    """The parsed dataset JSON of ``source`` (a path to the file, or the already parsed mapping)."""
    if isinstance(source, Mapping):
        return source
    path = Path(source)
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise SquadFormatError(f"{path} is not valid JSON ({err}); pass the official SQuAD dataset file") from err


def _iter_questions(dataset: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Yield ``(location, question)`` for every question, checking the nesting data/paragraphs/qas on the way."""
    if not isinstance(dataset, Mapping) or not isinstance(dataset.get("data"), list):
        if isinstance(dataset, Mapping):
            keys = list(dataset)
            found = f"an object with keys {keys[:3]}" + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
        else:
            found = f"a {type(dataset).__name__}"
        raise SquadFormatError(
            f"a SQuAD dataset is an object with a 'data' list of articles; found {found}. "
            "Pass the whole dataset file (e.g. dev-v2.0.json), not its 'data' list or a predictions file"
        )
    for article_index, article in enumerate(dataset["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, Mapping) else None
        if not isinstance(paragraphs, list):
            raise SquadFormatError(f"data[{article_index}] has no 'paragraphs' list")
        for paragraph_index, paragraph in enumerate(paragraphs):
            questions = paragraph.get("qas") if isinstance(paragraph, Mapping) else None
            if not isinstance(questions, list):
                raise SquadFormatError(f"data[{article_index}].paragraphs[{paragraph_index}] has no 'qas' list")
            for question_index, question in enumerate(questions):
                location = f"data[{article_index}].paragraphs[{paragraph_index}].qas[{question_index}]"
                if not isinstance(question, Mapping):
                    raise SquadFormatError(f"{location} is a {type(question).__name__}, expected an object")
                yield location, question


def detect_squad_version(source: SquadSource) -> SquadVersion:
    """Which metric a dataset needs: "2.0" if any question has an ``is_impossible`` field, else "1.1".

    Args:
        source: path to a SQuAD dataset JSON file, or its parsed content.
    """
    dataset = _read_dataset(source)
    return "2.0" if any("is_impossible" in question for _, question in _iter_questions(dataset)) else "1.1"


def load_squad_gold(source: SquadSource) -> dict[str, list[str]]:
    """The gold answer texts of every question of a SQuAD 1.1 or 2.0 dataset.

    Args:
        source: path to a SQuAD dataset JSON file (e.g. dev-v2.0.json), or its parsed content.

    Returns:
        ``{question id: [answer text, ...]}`` in dataset order; an unanswerable question maps to ``[]``.
        Repeated answers are kept (they do not change a max).

    Raises:
        SquadFormatError: the JSON is not a SQuAD dataset, a question lacks an id or answers, or an id repeats.
    """
    gold: dict[str, list[str]] = {}
    for location, question in _iter_questions(_read_dataset(source)):
        qid = question.get("id")
        answers = question.get("answers")
        if not isinstance(qid, str):
            raise SquadFormatError(f"{location} has no string 'id'")
        if not isinstance(answers, list) or not all(
            isinstance(answer, Mapping) and isinstance(answer.get("text"), str) for answer in answers
        ):
            raise SquadFormatError(f"{location} (id {qid!r}) needs an 'answers' list of objects with a 'text' string")
        if qid in gold:
            raise SquadFormatError(f"question id {qid!r} appears twice (again at {location}); ids must be unique")
        gold[qid] = [answer["text"] for answer in answers]
    return gold


def _check_gold(gold: Mapping[str, list[str]]) -> None:
    """Raise SquadFormatError unless ``gold`` maps at least one id to a list of answer strings."""
    if not gold:
        raise SquadFormatError("the gold answers are empty; load them with load_squad_gold(dataset)")
    for qid, answers in gold.items():
        if not isinstance(answers, list) or not all(isinstance(answer, str) for answer in answers):
            raise SquadFormatError(f"gold[{qid!r}] must be a list of answer strings, got {answers!r}")


def _check_predictions(predictions: Mapping[str, str]) -> None:
    """Raise SquadFormatError unless ``predictions`` maps question ids to answer strings."""
    if not isinstance(predictions, Mapping):
        raise SquadFormatError(
            f"predictions must map question id to answer text, got a {type(predictions).__name__}"
        )
    wrong = [qid for qid, text in predictions.items() if not isinstance(text, str)]
    if wrong:
        raise SquadFormatError(
            f"{len(wrong)} predictions are not strings (e.g. {wrong[0]!r}: {predictions[wrong[0]]!r}); "
            "predictions map question id to answer text, with \"\" for no answer"
        )


def _warn_missing(gold: Mapping[str, list[str]], predictions: Mapping[str, str]) -> None:
    """Warn once, naming a few ids, when some gold questions have no prediction (they score 0)."""
    missing = [qid for qid in gold if qid not in predictions]
    if missing:
        shown = ", ".join(missing[:_MISSING_IDS_SHOWN]) + (", ..." if len(missing) > _MISSING_IDS_SHOWN else "")
        warnings.warn(
            f"Missing prediction for {len(missing)} of {len(gold)} questions, each scored 0: {shown}",
            MissingPredictionWarning,
            stacklevel=3,
        )


def _check_na_probs(na_probs: Mapping[str, float], needed: list[str]) -> None:
    """Raise SquadFormatError unless ``na_probs`` gives a number for every id in ``needed``."""
    absent = [qid for qid in needed if qid not in na_probs]
    if absent:
        raise SquadFormatError(
            f"na_probs has no null odds for {len(absent)} of {len(needed)} predicted questions "
            f"(e.g. {absent[0]!r}); write one value per predicted question (write_null_odds does)"
        )
    wrong = [qid for qid in needed if isinstance(na_probs[qid], bool) or not isinstance(na_probs[qid], int | float)]
    if wrong:
        raise SquadFormatError(
            f"{len(wrong)} null odds are not numbers (e.g. {wrong[0]!r}: {na_probs[wrong[0]]!r})"
        )


def _summary(exact: Mapping[str, float], f1: Mapping[str, float], qids: list[str]) -> dict[str, float | int]:
    """``exact``, ``f1`` (percentages) and ``total`` over ``qids``, summed in the given order."""
    total = len(qids)
    return {
        "exact": 100.0 * sum(exact[qid] for qid in qids) / total,
        "f1": 100.0 * sum(f1[qid] for qid in qids) / total,
        "total": total,
    }


def _apply_null_threshold(
    raw: Mapping[str, float], null_odds: Mapping[str, float], has_answer: Mapping[str, bool], threshold: float
) -> dict[str, float]:
    """``raw`` with every question whose null odds exceed ``threshold`` rescored as a "no answer" prediction.

    A "no answer" prediction is right (1.0) exactly when the question has no answer. Questions without null
    odds (no prediction) keep their raw score.
    """
    return {
        qid: float(not has_answer[qid]) if qid in null_odds and null_odds[qid] > threshold else score
        for qid, score in raw.items()
    }


def _best_threshold(
    scores: Mapping[str, float],
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float],
    has_answer: Mapping[str, bool],
) -> tuple[float, float]:
    """The official ``find_best_thresh``: the best score (percent) over null-odds thresholds and that threshold.

    Start with every question answered "no answer" (the no-answer questions are right), then walk the questions
    by increasing null odds, answering each in turn: an answerable one gains its raw score, an unanswerable one
    loses its point if the raw prediction string is non-empty. Questions without a prediction stay at 0.
    """
    current = sum(1 for qid, answerable in has_answer.items() if not answerable and qid in predictions)
    best, best_threshold = current, 0.0
    # sorted() is stable, so ties keep the null-odds mapping's order, as in the official script.
    for qid in sorted(na_probs, key=lambda key: na_probs[key]):
        if qid not in scores or qid not in predictions:
            continue
        if has_answer[qid]:
            current += scores[qid]
        elif predictions[qid]:
            # The official script tests the raw string, so "." loses the point although it normalises to "".
            current -= 1
        if current > best:
            best, best_threshold = current, na_probs[qid]
    return 100.0 * best / len(scores), best_threshold


def squad_v2_scores(
    gold: Mapping[str, list[str]],
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = DEFAULT_NA_PROB_THRESH,
) -> dict[str, float | int]:
    """Official SQuAD 2.0 scores of ``predictions`` against ``gold``.

    Args:
        gold: ``{question id: [gold answer text, ...]}`` from :func:`load_squad_gold`; ``[]`` means unanswerable.
        predictions: ``{question id: predicted text}``, ``""`` meaning "no answer". Ids not in ``gold`` are
            ignored; gold ids without a prediction score 0 (with a :class:`MissingPredictionWarning`).
        na_probs: ``{question id: null odds}``, higher meaning "more likely unanswerable", for every predicted
            question; enables the ``best_*`` keys. ``None`` counts every null odds as 0.0.
        na_prob_thresh: a prediction whose null odds exceed this counts as "no answer" in ``exact``/``f1``.

    Returns:
        In this order: ``exact``, ``f1``, ``total``; ``HasAns_exact``, ``HasAns_f1``, ``HasAns_total`` when some
        question is answerable; ``NoAns_*`` likewise for unanswerable ones; and when ``na_probs`` is given,
        ``best_exact``, ``best_exact_thresh``, ``best_f1``, ``best_f1_thresh``. Scores are percentages (0-100).

    Raises:
        SquadFormatError: empty gold, a non-string prediction, or null odds missing or not numbers.
    """
    _check_gold(gold)
    _check_predictions(predictions)
    _warn_missing(gold, predictions)
    predicted = [qid for qid in gold if qid in predictions]
    if na_probs is not None:
        _check_na_probs(na_probs, predicted)
    # Only predicted questions get null odds, so a missing prediction is never rescued by the threshold.
    null_odds = {qid: 0.0 if na_probs is None else na_probs[qid] for qid in predicted}
    has_answer = {qid: bool(answers) for qid, answers in gold.items()}

    raw_exact: dict[str, float] = {}
    raw_f1: dict[str, float] = {}
    for qid, answers in gold.items():
        if qid not in predictions:
            raw_exact[qid], raw_f1[qid] = 0, 0.0
            continue
        # A gold answer that normalises to nothing cannot be matched by a span; the only target left is "".
        targets = [answer for answer in answers if normalize_answer(answer)] or [""]
        prediction = predictions[qid]
        raw_exact[qid] = max(exact_match(target, prediction) for target in targets)
        raw_f1[qid] = max(token_f1(target, prediction) for target in targets)

    exact = _apply_null_threshold(raw_exact, null_odds, has_answer, na_prob_thresh)
    f1 = _apply_null_threshold(raw_f1, null_odds, has_answer, na_prob_thresh)
    scores = _summary(exact, f1, list(gold))
    for prefix, qids in (
        ("HasAns", [qid for qid in gold if has_answer[qid]]),
        ("NoAns", [qid for qid in gold if not has_answer[qid]]),
    ):
        if qids:
            scores.update({f"{prefix}_{key}": value for key, value in _summary(exact, f1, qids).items()})
    if na_probs is not None:
        # The search starts from the raw scores: it chooses its own threshold instead of na_prob_thresh.
        for name, raw in (("exact", raw_exact), ("f1", raw_f1)):
            scores[f"best_{name}"], scores[f"best_{name}_thresh"] = _best_threshold(
                raw, predictions, na_probs, has_answer
            )
    return scores


def squad_v1_scores(gold: Mapping[str, list[str]], predictions: Mapping[str, str]) -> dict[str, float]:
    """Official SQuAD 1.1 scores of ``predictions`` against ``gold``.

    Args:
        gold: ``{question id: [gold answer text, ...]}`` from :func:`load_squad_gold`; every list non-empty.
        predictions: ``{question id: predicted text}``. Ids not in ``gold`` are ignored; gold ids without a
            prediction score 0 (with a :class:`MissingPredictionWarning`).

    Returns:
        ``{"exact_match": percent, "f1": percent}``, each the mean over all gold questions of the max over
        gold answers.

    Raises:
        SquadFormatError: empty gold, a question without gold answers, or a non-string prediction.
    """
    _check_gold(gold)
    _check_predictions(predictions)
    unanswerable = [qid for qid, answers in gold.items() if not answers]
    if unanswerable:
        raise SquadFormatError(
            f"{len(unanswerable)} questions have no gold answer (e.g. {unanswerable[0]!r}), which SQuAD 1.1 "
            "cannot score; use squad_v2_scores for data with unanswerable questions"
        )
    _warn_missing(gold, predictions)
    exact_total, f1_total = 0, 0.0
    for qid, answers in gold.items():
        if qid in predictions:
            exact_total += max(exact_match(answer, predictions[qid]) for answer in answers)
            f1_total += max(_v1_token_f1(answer, predictions[qid]) for answer in answers)
    return {"exact_match": 100.0 * exact_total / len(gold), "f1": 100.0 * f1_total / len(gold)}


def squad_scores(
    dataset: SquadSource,
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float | None = None,
) -> dict[str, float | int]:
    """Score ``predictions`` with the metric the dataset needs (see :func:`detect_squad_version`).

    Args:
        dataset: path to a SQuAD 1.1 or 2.0 dataset JSON file, or its parsed content.
        predictions: ``{question id: predicted text}``.
        na_probs: null odds per predicted question (SQuAD 2.0 only), see :func:`squad_v2_scores`.
        na_prob_thresh: SQuAD 2.0 only; ``None`` means the official default :data:`DEFAULT_NA_PROB_THRESH`.

    Returns:
        :func:`squad_v2_scores` for a 2.0 dataset, :func:`squad_v1_scores` for a 1.1 dataset.

    Raises:
        SquadFormatError: as the two scorers, or null odds / a threshold given for a SQuAD 1.1 dataset.
    """
    parsed = _read_dataset(dataset)
    gold = load_squad_gold(parsed)
    if detect_squad_version(parsed) == "2.0":
        threshold = DEFAULT_NA_PROB_THRESH if na_prob_thresh is None else na_prob_thresh
        return squad_v2_scores(gold, predictions, na_probs, threshold)
    if na_probs is not None or na_prob_thresh is not None:
        raise SquadFormatError(
            "null odds and na_prob_thresh apply to SQuAD 2.0 only, but this dataset has no 'is_impossible' "
            "fields (SQuAD 1.1); drop them, or pass a SQuAD 2.0 dataset"
        )
    return squad_v1_scores(gold, predictions)

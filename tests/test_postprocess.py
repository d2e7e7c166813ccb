"""QA post-processing on constructed logits: span choice, windows, the null threshold, files and errors."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from distill.postprocess import (
    PostprocessError,
    QAExample,
    QAWindow,
    examples_from_windows,
    postprocess_qa_predictions,
    whole_words,
    write_null_odds,
    write_predictions,
)
from distill.squad_metric import squad_v2_scores

CONTEXT = "Paris is the capital of France and its largest city ."
WORDS = [(m.start(), m.end()) for m in re.finditer(r"\S+", CONTEXT)]  # one token per word
N_QUESTION = 3
FIRST = 1 + N_QUESTION + 1  # [CLS] q q q [SEP] -> first context token
BASE = -5.0


def layout(context_offsets=WORDS, n_pad: int = 2) -> list:
    """Offsets of [CLS] question [SEP] context [SEP] padding; both conventions for tokens outside the context."""
    return [None] + [(-1, -1)] * N_QUESTION + [None] + list(context_offsets) + [None] + [(-1, -1)] * n_pad


def window(offsets, starts=None, ends=None, cls=(0.0, 0.0)) -> QAWindow:
    """A window with BASE logits everywhere except the given ``{token: logit}`` and the [CLS] pair."""
    start_logits = np.full(len(offsets), BASE)
    end_logits = np.full(len(offsets), BASE)
    start_logits[0], end_logits[0] = cls
    for token, value in (starts or {}).items():
        start_logits[token] = value
    for token, value in (ends or {}).items():
        end_logits[token] = value
    return QAWindow(start_logits, end_logits, offsets)


def answer(*windows: QAWindow, **settings):
    return postprocess_qa_predictions([QAExample("q", CONTEXT, windows)], **settings)["q"]


def test_picks_the_known_best_span():
    france = FIRST + 5
    prediction = answer(window(layout(), {france: 4.0, FIRST: 2.0}, {france: 3.0, FIRST + 1: 2.5}, cls=(1.0, 0.5)))
    assert prediction.text == "France"
    best = prediction.n_best[0]
    assert (best.score, best.start_logit, best.end_logit, best.window_index) == (7.0, 4.0, 3.0, 0)
    assert (best.char_start, best.char_end) == (CONTEXT.index("France"), CONTEXT.index("France") + 6)
    assert prediction.null_score == 1.5 and prediction.null_odds == 1.5 - 7.0
    # Then "Paris ... France" (2.0 + 3.0) and "Paris is" (2.0 + 2.5); "France is" would end before it starts.
    assert [c.text for c in prediction.n_best[1:3]] == ["Paris is the capital of France", "Paris is"]
    scores = [candidate.score for candidate in prediction.n_best]
    assert scores == sorted(scores, reverse=True) and len(scores) <= 20


def test_never_picks_question_special_or_padding_tokens():
    offsets = layout()
    outside = [1, 2, 3, FIRST - 1, FIRST + len(WORDS), len(offsets) - 2, len(offsets) - 1]  # question, [SEP]s, pads
    huge = {token: 50.0 for token in outside}
    capital = FIRST + 3
    prediction = answer(
        window(offsets, {**huge, capital: 1.0}, {**huge, capital: 1.0}, cls=(60.0, 60.0)),
        null_threshold=math.inf,
    )
    assert prediction.text == "capital"
    for candidate in prediction.n_best:
        assert 0 <= candidate.char_start < candidate.char_end <= len(CONTEXT)
        assert candidate.text == CONTEXT[candidate.char_start:candidate.char_end]
    # With the default threshold the huge [CLS] score wins: "no answer".
    assert answer(window(offsets, {capital: 1.0}, {capital: 1.0}, cls=(60.0, 60.0))).text == ""


def test_respects_max_answer_length_and_end_after_start():
    # Best start "is" (token 1); best end "and" (token 6) is 6 tokens away; next best end "capital" (token 3).
    starts = {FIRST + 1: 5.0}
    ends = {FIRST + 6: 5.0, FIRST + 3: 4.0, FIRST + 0: 9.0}  # "Paris" ends before every good start
    long = answer(window(layout(), starts, ends), max_answer_length=10)
    short = answer(window(layout(), starts, ends), max_answer_length=3)
    assert long.text == "is the capital of France and"
    assert short.text == "is the capital"
    assert all(c.char_end > c.char_start for c in long.n_best)
    assert all(len(c.text.split()) <= 3 for c in short.n_best)


def test_combines_windows():
    # Two overlapping windows over the context (tokens 0-6 and 4-10), like a tokenizer's doc stride.
    first, second = layout(WORDS[:7]), layout(WORDS[4:])
    city = FIRST + 9 - 4  # "city" (context token 9) inside the second window
    prediction = answer(
        window(first, {FIRST + 5: 3.0}, {FIRST + 5: 3.0}, cls=(2.0, 2.0)),  # "France": 6.0
        window(second, {city: 4.0}, {city: 4.0}, cls=(1.0, 0.0)),  # "city": 8.0
    )
    assert prediction.text == "city" and prediction.n_best[0].window_index == 1
    assert prediction.n_best[1].text == "France"
    # No answer is scored by the window most sure of it: min(4.0, 1.0).
    assert prediction.null_score == 1.0 and prediction.null_odds == 1.0 - 8.0


def test_null_threshold_flips_the_answer():
    logits = window(layout(), {FIRST: 2.0}, {FIRST: 2.0}, cls=(3.0, 2.0))  # span 4.0, null 5.0: null odds 1.0
    assert answer(logits).null_odds == 1.0
    assert answer(logits, null_threshold=0.5).text == ""
    assert answer(logits, null_threshold=1.5).text == "Paris"
    assert answer(logits, null_threshold=1.0).text == "Paris"  # "" only when the odds exceed the threshold


def test_no_valid_span_answers_empty_with_infinite_odds(tmp_path):
    # With one candidate each, the best start lies after the best end: no valid pair.
    prediction = answer(window(layout(), {FIRST + 4: 5.0}, {FIRST + 1: 5.0}), n_best_size=1)
    assert (prediction.text, prediction.null_odds, prediction.n_best) == ("", math.inf, ())
    write_null_odds({"q": prediction}, tmp_path / "na.json")
    assert json.loads((tmp_path / "na.json").read_text()) == {"q": math.inf}


def test_examples_from_windows_groups_a_batch_and_files_round_trip(tmp_path):
    contexts = [CONTEXT, "Rome is in Italy ."]
    rome_words = [(m.start(), m.end()) for m in re.finditer(r"\S+", contexts[1])]
    offsets = [layout(WORDS[:7]), layout(WORDS[4:]), layout(rome_words)]
    length = max(len(o) for o in offsets)
    offsets = [o + [None] * (length - len(o)) for o in offsets]  # pad the batch to one length
    start = np.full((3, length), BASE)
    end = np.full((3, length), BASE)
    start[1, FIRST + 1], end[1, FIRST + 1] = 4.0, 4.0  # "France" in window 1 (tokens 4..)
    start[2, :2], end[2, :2] = 10.0, 0.0  # example 2: [CLS] wins
    examples = examples_from_windows(["q1", "q2"], contexts, start, end, offsets, window_to_example=[0, 0, 1])
    assert [len(example.windows) for example in examples] == [2, 1]
    predictions = postprocess_qa_predictions(examples)
    assert {qid: p.text for qid, p in predictions.items()} == {"q1": "France", "q2": ""}

    write_predictions(predictions, tmp_path / "pred.json")
    write_null_odds(predictions, tmp_path / "na.json")
    written = json.loads((tmp_path / "pred.json").read_text())
    null_odds = json.loads((tmp_path / "na.json").read_text())
    assert written == {"q1": "France", "q2": ""}
    assert null_odds == {"q1": predictions["q1"].null_odds, "q2": predictions["q2"].null_odds}
    scores = squad_v2_scores({"q1": ["France"], "q2": []}, written, null_odds)
    assert scores["exact"] == 100.0 and scores["best_exact"] == 100.0


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: QAWindow(np.zeros(5), np.zeros(4), [None] * 5), r"shapes \(5,\) and \(4,\)"),
        (lambda: QAWindow(np.zeros(5), np.zeros(5), [None] * 4), r"shape \(4, 2\) but the logits cover 5 tokens"),
        (lambda: QAWindow(np.zeros(3), np.zeros(3), [(0, 0), (0, 5), (-1, -1)]), "sequence_ids"),
        (lambda: QAWindow(np.zeros(3), np.zeros(3), [None, (0, 5), (0, 0)]), r"\(0, 0\) to special and padding"),
        (lambda: QAWindow(np.array([0.0, np.nan]), np.zeros(2), [None, (0, 1)]), "NaN"),
        (lambda: QAWindow(np.zeros(2), np.zeros(2), [None, (0, 1)], cls_index=2), "cls_index 2"),
        (lambda: QAExample("q", "abc", ()), "has no windows"),
        (lambda: QAExample("q", "abc", (QAWindow(np.zeros(2), np.zeros(2), [None, (0, 9)]),)), "past the context's 3"),
        (lambda: QAExample("q", "abc", (QAWindow(np.zeros(2), np.zeros(2), [None, None]),)), "no context token"),
    ],
)
def test_invalid_windows_and_examples_raise(build, match):
    with pytest.raises(PostprocessError, match=match):
        build()


def test_batch_count_mismatches_raise():
    start = np.zeros((10, 4))
    offsets = [[None, (0, 1), (1, 2), None]] * 10
    with pytest.raises(PostprocessError, match="got 10 windows of logits but 12 window_to_example entries"):
        examples_from_windows(["q"], ["ab"], start, start, offsets, [0] * 12)
    with pytest.raises(PostprocessError, match="got 10 windows of logits but 9 offset lists"):
        examples_from_windows(["q"], ["ab"], start, start, offsets[:9], [0] * 10)
    with pytest.raises(PostprocessError, match="got 2 question ids and 1 contexts"):
        examples_from_windows(["q", "r"], ["ab"], start, start, offsets, [0] * 10)
    with pytest.raises(PostprocessError, match="window 9 belongs to example 2, but there are 2 examples"):
        examples_from_windows(["q", "r"], ["ab", "ab"], start, start, offsets, [0] * 9 + [2])
    with pytest.raises(PostprocessError, match=r"windows for 1 of 2 examples \(e.g. 'r' has none\)"):
        examples_from_windows(["q", "r"], ["ab", "ab"], start, start, offsets, [0] * 10)


def test_settings_and_duplicate_ids_raise():
    example = QAExample("q", CONTEXT, (window(layout()),))
    with pytest.raises(PostprocessError, match="n_best_size must be at least 1, got 0"):
        postprocess_qa_predictions([example], n_best_size=0)
    with pytest.raises(PostprocessError, match="appears in two examples"):
        postprocess_qa_predictions([example, example])


def test_an_answer_is_widened_to_whole_words_never_a_fragment():
    context = "In 1632 a miller named Tobias Wren arrived."
    # [CLS] in 16 ##32 a miller named tob ##ias wren . [SEP]
    offsets = [None, (0, 2), (3, 5), (5, 7), (8, 9), (10, 16), (17, 22), (23, 26), (26, 29), (30, 34), (41, 42), None]
    start, end = np.zeros(len(offsets)), np.zeros(len(offsets))
    start[3], end[7] = 5.0, 5.0  # the best span runs from "##32" to "tob"
    [example] = examples_from_windows(["q"], [context], [start], [end], [offsets], [0])
    prediction = postprocess_qa_predictions([example], null_threshold=1e9)["q"]
    assert prediction.text == "1632 a miller named Tobias"
    assert (prediction.n_best[0].char_start, prediction.n_best[0].char_end) == (3, 29)
    assert whole_words(context, 30, 34) == (30, 34)       # "Wren", not "Wren arrived" or "Wren."
    assert whole_words("北京大学", 1, 2) == (1, 2)         # each ideograph is a word of its own
    assert whole_words("state-of-the-art", 6, 8) == (6, 8)

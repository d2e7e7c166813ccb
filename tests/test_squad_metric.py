"""SQuAD metric: edge cases by hand, the real dev set against a second implementation, and the CLI as a process."""

from __future__ import annotations

import collections
import copy
import json
import random
import re
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from distill.squad_metric import (
    MissingPredictionWarning,
    SquadFormatError,
    detect_squad_version,
    exact_match,
    load_squad_gold,
    normalize_answer,
    squad_scores,
    squad_v1_scores,
    squad_v2_scores,
    token_f1,
)

REPO = Path(__file__).resolve().parents[1]
DEV_SET = REPO.parent / "shared" / "data" / "squad2" / "dev-v2.0.json"


@pytest.fixture(scope="module")
def dev_path() -> Path:
    if not DEV_SET.exists():
        pytest.skip(f"{DEV_SET} is absent: the real-data tests need ../shared beside the repo")
    return DEV_SET


@pytest.fixture(scope="module")
def dev_json(dev_path) -> dict:
    return json.loads(dev_path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def dev_gold(dev_json) -> dict[str, list[str]]:
    return load_squad_gold(dev_json)


# ---------------------------------------------------------------------------------------------------------------
# A second implementation, written straight from the official definitions, sharing no code with distill.
# ---------------------------------------------------------------------------------------------------------------

_DROP_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _ref_normalize(text: str) -> str:
    text = text.lower().translate(_DROP_PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _ref_f1(gold: str, prediction: str) -> float:
    gold_tokens, predicted_tokens = _ref_normalize(gold).split(), _ref_normalize(prediction).split()
    if not gold_tokens or not predicted_tokens:
        return float(gold_tokens == predicted_tokens)
    shared = sum((collections.Counter(gold_tokens) & collections.Counter(predicted_tokens)).values())
    if not shared:
        return 0.0
    precision, recall = shared / len(predicted_tokens), shared / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _reference_v2(dataset: dict, predictions: dict, na_probs: dict | None = None, thresh: float = 1.0) -> dict:
    """Official SQuAD 2.0 numbers by brute force over numpy arrays (missing predictions score 0 everywhere)."""
    rows = []
    for article in dataset["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                golds = [a["text"] for a in qa["answers"] if _ref_normalize(a["text"])] or [""]
                predicted = qa["id"] in predictions
                text = predictions.get(qa["id"], "")
                odds = (na_probs or {}).get(qa["id"], 0.0)
                exact = max(float(_ref_normalize(g) == _ref_normalize(text)) for g in golds) if predicted else 0.0
                f1 = max(_ref_f1(g, text) for g in golds) if predicted else 0.0
                rows.append((bool(qa["answers"]), predicted, bool(text), odds, exact, f1))
    has_ans, predicted, nonempty, odds, raw_exact, raw_f1 = (np.array(column) for column in zip(*rows))
    as_null = predicted & (odds > thresh)
    no_ans_right = (~has_ans).astype(float)
    result = {}
    for name, raw in (("exact", raw_exact), ("f1", raw_f1)):
        result[name] = np.where(as_null, no_ans_right, raw)
    out = {"exact": 100 * result["exact"].mean(), "f1": 100 * result["f1"].mean(), "total": len(rows)}
    for prefix, mask in (("HasAns", has_ans), ("NoAns", ~has_ans)):
        if mask.any():
            out[f"{prefix}_exact"] = 100 * result["exact"][mask].mean()
            out[f"{prefix}_f1"] = 100 * result["f1"][mask].mean()
            out[f"{prefix}_total"] = int(mask.sum())
    if na_probs is not None:
        for name, raw in (("exact", raw_exact), ("f1", raw_f1)):
            # Score at threshold t: null odds above t -> "no answer"; else the raw score, except that a no-answer
            # question is right only with an empty prediction string. Start from "everything null" at 0.0.
            answered_score = np.where(has_ans, raw, (~nonempty).astype(float)) * predicted
            null_score = no_ans_right * predicted
            best, best_t = null_score.sum(), 0.0
            for t in np.sort(odds[predicted]):
                score = np.where(odds > t, null_score, answered_score).sum()
                if score > best:
                    best, best_t = score, float(t)
            out[f"best_{name}"], out[f"best_{name}_thresh"] = 100 * best / len(rows), best_t
    return out


def _perturbed_predictions(dataset: dict) -> dict[str, str]:
    """A deterministic mix of right, partial, wrong, empty and missing answers."""
    predictions = {}
    index = 0
    for article in dataset["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                index += 1
                if index % 101 == 0:
                    continue  # missing prediction
                if qa["answers"]:
                    answer = qa["answers"][index % len(qa["answers"])]["text"]
                    words = answer.split()
                    predictions[qa["id"]] = [
                        answer,
                        " ".join(words[:-1]) if len(words) > 1 else answer[: len(answer) // 2],
                        "zzzq",
                        f"The {answer}, indeed.",
                        "",
                        f"«{answer.upper()}!»",
                    ][index % 6]
                else:
                    plausible = qa.get("plausible_answers") or [{"text": "something"}]
                    predictions[qa["id"]] = ["", plausible[0]["text"], ".", "the"][index % 4]
    return predictions


def _crafted_na_probs(gold: dict[str, list[str]]) -> dict[str, float]:
    """Distinct null odds in [-1, 2), higher on average for unanswerable questions (an informative model), so that
    the best threshold lies inside the range and 1.0 (the default threshold) cuts through them."""
    ranks = list(range(len(gold)))
    random.Random(0).shuffle(ranks)
    na_probs = {
        qid: -1.0 + 2.2 * rank / len(gold) + (0.0 if answers else 0.8)
        for (qid, answers), rank in zip(gold.items(), ranks)
    }
    assert len(set(na_probs.values())) == len(na_probs), "ties would make the walk order-dependent"
    na_probs["not-a-question"] = 0.5  # ignored, as in the official script
    return na_probs


def _assert_same_scores(actual: dict, expected: dict) -> None:
    assert list(actual) == list(expected)
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


# ---------------------------------------------------------------------------------------------------------------
# Normalisation and single-answer scores
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The  Eiffel Tower!", "eiffel tower"),
        ("an apple, a pear and THE plum.", "apple pear and plum"),
        ("theatre anthem", "theatre anthem"),  # articles only as whole words
        ("the,", ""),  # punctuation goes first, so the article is then a whole word
        ("«Paris»", "«paris»"),  # only ASCII string.punctuation is removed
        ("  \t\n ", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_and_f1_single_answers():
    assert exact_match("The Cat.", "cat") == 1
    assert exact_match("cat", "cats") == 0
    # 2 shared of 3 predicted and 2 gold tokens: P = 2/3, R = 1 -> F1 = 0.8
    assert token_f1("black cat", "the black cat sat") == pytest.approx(0.8)
    assert token_f1("cat cat dog", "cat dog dog") == pytest.approx(2 / 3)  # multiset overlap: cat, dog
    assert token_f1("", "") == 1.0
    assert token_f1("", "the") == 1.0  # both sides have no tokens
    assert token_f1("", "Paris") == 0.0
    assert token_f1("Paris", "") == 0.0
    assert token_f1("Paris", "London") == 0.0


# ---------------------------------------------------------------------------------------------------------------
# squad_v2_scores edge cases
# ---------------------------------------------------------------------------------------------------------------


def test_max_over_several_golds_and_key_order():
    gold = {"q1": ["Denver Broncos", "the Broncos", "Broncos team"], "q2": []}
    scores = squad_v2_scores(gold, {"q1": "Broncos", "q2": ""})
    assert list(scores) == [
        "exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total", "NoAns_exact", "NoAns_f1", "NoAns_total",
    ]
    # q1: exact via "the Broncos"; q2: empty prediction for an unanswerable question.
    assert scores["exact"] == 100.0 and scores["f1"] == 100.0 and scores["total"] == 2
    partial = squad_v2_scores(gold, {"q1": "Broncos team players", "q2": "x"})
    # Best F1 over golds: "Broncos team" -> P = 2/3, R = 1, F1 = 0.8; exact 0 everywhere; q2 wrong.
    assert partial["HasAns_f1"] == pytest.approx(80.0)
    assert partial["exact"] == 0.0 and partial["NoAns_f1"] == 0.0


def test_unanswerable_scores_only_an_empty_prediction():
    gold = {"q1": [], "q2": [], "q3": [], "q4": []}
    scores = squad_v2_scores(gold, {"q1": "", "q2": "Paris", "q3": "the", "q4": "?!"})
    # "the" and "?!" normalise to nothing, so they count as the empty answer.
    assert scores["exact"] == 75.0 and scores["f1"] == 75.0
    assert "HasAns_exact" not in scores and scores["NoAns_total"] == 4


def test_gold_answers_that_normalise_to_nothing_are_dropped():
    # "The" normalises to "", so only "Seine" is a target; the question still counts as answerable.
    gold = {"q1": ["The", "Seine"], "q2": ["."]}
    scores = squad_v2_scores(gold, {"q1": "seine", "q2": ""})
    assert scores["exact"] == 100.0 and scores["HasAns_total"] == 2 and "NoAns_total" not in scores


def test_missing_predictions_warn_and_score_zero():
    gold = {"q1": ["Paris"], "q2": ["Rome"], "q3": []}
    with pytest.warns(MissingPredictionWarning, match=r"Missing prediction for 2 of 3 questions.*q2, q3"):
        scores = squad_v2_scores(gold, {"q1": "Paris", "extra": "ignored"}, na_probs={"q1": 0.0, "q3": 5.0})
    assert scores["total"] == 3 and scores["exact"] == pytest.approx(100 / 3)
    # q3 has high null odds but no prediction: it is not rescued as "no answer".
    assert scores["NoAns_exact"] == 0.0
    assert scores["best_exact"] == pytest.approx(100 / 3)


def test_default_threshold_turns_high_null_odds_into_no_answer():
    gold = {"q1": ["Paris"], "q2": []}
    predictions = {"q1": "Paris", "q2": "Rome"}
    na_probs = {"q1": 1.5, "q2": 2.0}
    scores = squad_v2_scores(gold, predictions, na_probs)
    # Both odds exceed 1.0: q1 loses its right answer, q2's wrong answer becomes a right "no answer".
    assert (scores["HasAns_exact"], scores["NoAns_exact"]) == (0.0, 100.0)
    unthresholded = squad_v2_scores(gold, predictions, na_probs, na_prob_thresh=2.0)
    assert (unthresholded["HasAns_exact"], unthresholded["NoAns_exact"]) == (100.0, 0.0)


def test_best_threshold_by_hand():
    gold = {"q1": ["Paris"], "q2": ["Rome"], "q3": [], "q4": []}
    predictions = {"q1": "Paris", "q2": "Madrid", "q3": "x", "q4": ""}
    na_probs = {"q1": 0.1, "q2": 0.9, "q3": 0.8, "q4": 0.2}
    scores = squad_v2_scores(gold, predictions, na_probs)
    # All null: 2 right (q3, q4). Answer q1 (0.1): 3. q4 (0.2): still 3. q3 (0.8): 2. q2 (0.9): 2.
    assert scores["best_exact"] == 75.0 and scores["best_exact_thresh"] == 0.1
    assert list(scores)[-4:] == ["best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"]
    # Nothing beats "all null" -> the official script reports threshold 0.0.
    nothing = squad_v2_scores({"q1": [], "q2": ["Rome"]}, {"q1": "x", "q2": "Madrid"}, {"q1": 0.3, "q2": 0.4})
    assert (nothing["best_exact"], nothing["best_exact_thresh"]) == (50.0, 0.0)


def test_punctuation_only_prediction_loses_the_point_in_the_threshold_search():
    # Raw score of "." on a no-answer question is 1 (it normalises to ""), but the official search tests the raw
    # string, so answering it costs the point: the best is to leave it null.
    scores = squad_v2_scores({"q1": []}, {"q1": "."}, {"q1": 0.5})
    assert scores["exact"] == 100.0
    assert (scores["best_exact"], scores["best_exact_thresh"]) == (100.0, 0.0)


@pytest.mark.parametrize(
    ("gold", "predictions", "na_probs", "match"),
    [
        ({}, {}, None, "gold answers are empty"),
        ({"q1": "Paris"}, {"q1": "Paris"}, None, "list of answer strings"),
        ({"q1": ["Paris"]}, {"q1": ["Paris"]}, None, "1 predictions are not strings"),
        ({"q1": ["Paris"]}, ["Paris"], None, "got a list"),
        ({"q1": ["Paris"], "q2": []}, {"q1": "Paris", "q2": ""}, {"q1": 0.2}, "no null odds for 1 of 2"),
        ({"q1": ["Paris"]}, {"q1": "Paris"}, {"q1": "high"}, "not numbers"),
    ],
)
def test_invalid_inputs_raise(gold, predictions, na_probs, match):
    with pytest.raises(SquadFormatError, match=match):
        squad_v2_scores(gold, predictions, na_probs)


def test_load_squad_gold_rejects_malformed_datasets():
    with pytest.raises(SquadFormatError, match="'data' list"):
        load_squad_gold({"q1": "Paris"})
    article = {"paragraphs": [{"qas": [{"id": "q1", "answers": [{"text": "a"}]}] * 2}]}
    with pytest.raises(SquadFormatError, match="appears twice"):
        load_squad_gold({"data": [article]})
    with pytest.raises(SquadFormatError, match=r"data\[0\]\.paragraphs\[0\]\.qas\[0\].*'answers'"):
        load_squad_gold({"data": [{"paragraphs": [{"qas": [{"id": "q1"}]}]}]})


# ---------------------------------------------------------------------------------------------------------------
# SQuAD 1.1
# ---------------------------------------------------------------------------------------------------------------

V1_DATASET = {
    "version": "1.1",
    "data": [{"paragraphs": [{"context": "...", "qas": [
        {"id": "a", "answers": [{"text": "Denver Broncos"}, {"text": "Broncos"}]},
        {"id": "b", "answers": [{"text": "the"}]},
        {"id": "c", "answers": [{"text": "Santa Clara, California"}]},
    ]}]}],
}


def test_squad_v1_scores_and_detection():
    assert detect_squad_version(V1_DATASET) == "1.1"
    gold = load_squad_gold(V1_DATASET)
    with pytest.warns(MissingPredictionWarning, match="1 of 3"):
        scores = squad_v1_scores(gold, {"a": "broncos", "b": ""})
    # a: exact. b: exact (both normalise to "") but F1 0 in v1.1, which needs a shared token. c: missing -> 0.
    assert scores == {"exact_match": pytest.approx(200 / 3), "f1": pytest.approx(100 / 3)}
    assert squad_scores(V1_DATASET, {"a": "broncos", "b": "", "c": "Santa Clara"})["exact_match"] == pytest.approx(
        200 / 3
    )
    with pytest.raises(SquadFormatError, match="SQuAD 2.0 only"):
        squad_scores(V1_DATASET, {"a": "x"}, na_probs={"a": 0.0})
    with pytest.raises(SquadFormatError, match="use squad_v2_scores"):
        squad_v1_scores({"a": []}, {"a": ""})


def test_v1_metric_on_the_answerable_dev_questions(dev_json):
    v1 = copy.deepcopy(dev_json)
    for article in v1["data"]:
        for paragraph in article["paragraphs"]:
            paragraph["qas"] = [
                {"id": qa["id"], "answers": qa["answers"]} for qa in paragraph["qas"] if not qa["is_impossible"]
            ]
    assert detect_squad_version(v1) == "1.1"
    gold = load_squad_gold(v1)
    assert len(gold) == 5928
    assert squad_v1_scores(gold, {qid: answers[0] for qid, answers in gold.items()}) == {
        "exact_match": 100.0,
        "f1": 100.0,
    }


def test_real_punctuation_only_gold_answer(dev_gold):
    # One dev question lists "." among its gold answers. v1.1 matches it exactly but gives F1 0 (no shared
    # token); v2.0 drops it, so "." must match one of the real answers and does not.
    qid = "57340d124776f419006617bf"
    assert "." in dev_gold[qid]
    assert squad_v1_scores({qid: dev_gold[qid]}, {qid: "."}) == {"exact_match": 100.0, "f1": 0.0}
    v2 = squad_v2_scores({qid: dev_gold[qid]}, {qid: "."})
    assert (v2["exact"], v2["f1"]) == (0.0, 0.0)


# ---------------------------------------------------------------------------------------------------------------
# The real SQuAD 2.0 dev set
# ---------------------------------------------------------------------------------------------------------------


def test_dev_set_all_empty_predictions(dev_json, dev_gold):
    assert detect_squad_version(dev_json) == "2.0"
    assert len(dev_gold) == 11873 and sum(not answers for answers in dev_gold.values()) == 5945
    scores = squad_v2_scores(dev_gold, {qid: "" for qid in dev_gold})
    assert round(scores["exact"], 2) == round(scores["f1"], 2) == 50.07
    assert scores["exact"] == pytest.approx(5945 / 11873 * 100)
    assert (scores["HasAns_total"], scores["NoAns_total"], scores["HasAns_f1"]) == (5928, 5945, 0.0)


def test_dev_set_gold_predictions(dev_gold):
    predictions = {qid: answers[0] if answers else "" for qid, answers in dev_gold.items()}
    scores = squad_v2_scores(dev_gold, predictions)
    assert scores["exact"] == scores["f1"] == 100.0


def test_dev_set_perturbed_mix_matches_second_implementation(dev_json, dev_gold):
    predictions = _perturbed_predictions(dev_json)
    with pytest.warns(MissingPredictionWarning, match="Missing prediction for 117 of 11873"):
        scores = squad_v2_scores(dev_gold, predictions)
    _assert_same_scores(scores, _reference_v2(dev_json, predictions))
    # The mix is really mixed: neither end of the scale.
    assert 20 < scores["exact"] < scores["f1"] < 80


@pytest.mark.parametrize("thresh", [1.0, 0.3])
def test_dev_set_null_odds_match_second_implementation(dev_json, dev_gold, thresh):
    predictions = _perturbed_predictions(dev_json)
    na_probs = _crafted_na_probs(dev_gold)
    with pytest.warns(MissingPredictionWarning):
        scores = squad_v2_scores(dev_gold, predictions, na_probs, na_prob_thresh=thresh)
    expected = _reference_v2(dev_json, predictions, na_probs, thresh)
    _assert_same_scores(scores, expected)
    # The search settles strictly inside the crafted range, so the walk itself is exercised.
    assert -1.0 < scores["best_exact_thresh"] < 2.0 and scores["best_exact_thresh"] != 0.0


# ---------------------------------------------------------------------------------------------------------------
# The command line, as a real process
# ---------------------------------------------------------------------------------------------------------------


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "distill", "squad-metric", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_prints_the_official_json(dev_path, dev_json, dev_gold, tmp_path):
    predictions = _perturbed_predictions(dev_json)
    na_probs = _crafted_na_probs(dev_gold)
    (tmp_path / "pred.json").write_text(json.dumps(predictions))
    (tmp_path / "na.json").write_text(json.dumps(na_probs))
    result = _run_cli("--data", str(dev_path), "--predictions", str(tmp_path / "pred.json"),
                      "--na-probs", str(tmp_path / "na.json"), "--na-prob-thresh", "0.3")
    assert result.returncode == 0, result.stderr
    with pytest.warns(MissingPredictionWarning):
        expected = squad_v2_scores(dev_gold, predictions, na_probs, na_prob_thresh=0.3)
    assert result.stdout == json.dumps(expected, indent=2) + "\n"
    assert "Missing prediction for 117 of 11873" in result.stderr
    _assert_same_scores(json.loads(result.stdout), _reference_v2(dev_json, predictions, na_probs, 0.3))


def test_cli_out_file_and_v1(tmp_path):
    (tmp_path / "v1.json").write_text(json.dumps(V1_DATASET))
    (tmp_path / "pred.json").write_text(json.dumps({"a": "Broncos", "b": "", "c": "Santa Clara, California"}))
    result = _run_cli("--data", str(tmp_path / "v1.json"), "--predictions", str(tmp_path / "pred.json"),
                      "--out-file", str(tmp_path / "scores.json"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    written = (tmp_path / "scores.json").read_text()
    assert written == json.dumps({"exact_match": 100.0, "f1": 100 * 2 / 3})


def test_cli_reports_input_errors_in_one_line(tmp_path):
    (tmp_path / "v1.json").write_text(json.dumps(V1_DATASET))
    (tmp_path / "pred.json").write_text("{not json")
    missing = _run_cli("--data", str(tmp_path / "v1.json"), "--predictions", str(tmp_path / "absent.json"))
    assert missing.returncode == 2
    assert "error: cannot read --predictions" in missing.stderr and "Traceback" not in missing.stderr
    broken = _run_cli("--data", str(tmp_path / "v1.json"), "--predictions", str(tmp_path / "pred.json"),
                      "--na-prob-thresh", "0.5")
    assert broken.returncode == 2 and "is not valid JSON" in broken.stderr


def test_the_evaluate_module_loads_offline_and_scores_as_the_second_implementation(dev_json, dev_gold, monkeypatch):
    import evaluate

    from distill.metrics import SQUAD_V2

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    answers = {qa["id"]: qa["answers"] for article in dev_json["data"] for paragraph in article["paragraphs"]
               for qa in paragraph["qas"]}
    # evaluate pairs predictions with references one to one: the questions the perturbation leaves out say ""
    perturbed = _perturbed_predictions(dev_json)
    predictions = {qid: perturbed.get(qid, "") for qid in answers}
    na_probs = _crafted_na_probs(dev_gold)
    scores = evaluate.load(SQUAD_V2).compute(
        predictions=[{"id": qid, "prediction_text": text, "no_answer_probability": na_probs[qid]}
                     for qid, text in predictions.items()],
        references=[{"id": qid, "answers": {"text": [a["text"] for a in gold],
                                            "answer_start": [a["answer_start"] for a in gold]}}
                    for qid, gold in answers.items()],
        no_answer_threshold=0.5)
    _assert_same_scores(scores, _reference_v2(dev_json, predictions, na_probs, 0.5))

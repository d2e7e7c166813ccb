"""The MRQA shared task's format: gzipped JSON lines, a header, contexts with their questions, answer spans with an
inclusive end. Files made here from SQuAD 2.0 dev (its answerable questions, split into two "datasets" by article)."""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
import string
from collections import Counter
from pathlib import Path

import pytest

from augment.readers import WeightedSet, mix_examples, peek_source, read_examples
from augment.spec import DataSource
from core.resources import ResourcesSpec
from core.shards import read_shards
from distill.evaluate import EvalSet, evaluate_sets
from distill.models import ModelRef
from distill.spec import EvaluateSpec, FeaturesSpec
from tests.jobutil import write_mrqa

CPU = ResourcesSpec(gpus_per_worker=0)


@pytest.fixture(scope="module")
def mrqa_files(squad_dev_path, tmp_path_factory) -> dict[str, tuple[Path, list[dict]]]:
    """Two MRQA "datasets" from the first six dev articles, gzipped, with the questions each should hold."""
    articles = json.loads(squad_dev_path.read_text(encoding="utf-8"))["data"][:6]
    folder = tmp_path_factory.mktemp("mrqa")
    files = {}
    for name, part in (("SQuADa", articles[:3]), ("SQuADb", articles[3:])):
        path = write_mrqa(folder / f"{name}.jsonl.gz", part, name)
        expected = [{"id": qa["id"], "context": paragraph["context"], "question": qa["question"],
                     "answers": qa["answers"]}
                    for article in part for paragraph in article["paragraphs"] for qa in paragraph["qas"]
                    if not qa.get("is_impossible")]
        files[name] = (path, expected)
    return files


def test_mrqa_files_read_every_question_with_exact_spans(mrqa_files, tmp_path):
    for name, (path, expected) in mrqa_files.items():
        source = DataSource(path=str(path))
        assert source.format == "mrqa"  # from the .gz suffix
        result = read_examples(source, "qa", None, tmp_path / name)
        assert (result.read, result.written, result.rejected) == (len(expected), len(expected), 0)
        rows = {row["id"]: row for row in read_shards(tmp_path / name).to_pylist()}
        assert list(rows) == [question["id"] for question in expected]
        for question in expected:
            row = rows[question["id"]]
            assert row["title"] == name and not row["is_impossible"]
            assert (row["context"], row["question"]) == (question["context"], question["question"])
            first = {}
            for answer in question["answers"]:
                first.setdefault(answer["text"], answer["answer_start"])
            assert row["answers"] == {"text": list(first), "answer_start": list(first.values())}
            for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"]):
                assert row["context"][start:start + len(text)] == text


def test_malformed_mrqa_records_are_rejected_with_their_reason(tmp_path):
    context = "Gustave Eiffel's company built the tower in 1889."
    good = {"qid": "good", "question": "Who built it?",
            "detected_answers": [{"text": "Gustave Eiffel's company", "char_spans": [[0, 23]]}]}
    lines = [
        json.dumps({"header": {"dataset": "Hand", "split": "dev"}}),
        json.dumps({"context": context, "qas": [
            good,
            {"qid": "out", "question": "When?", "detected_answers": [{"text": "1889", "char_spans": [[44, 60]]}]},
            {"qid": "none", "question": "Where?"},
            {"qid": "reversed", "question": "When?", "detected_answers": [{"text": "x", "char_spans": [[9, 3]]}]},
            {"qid": "spans", "question": "When?", "detected_answers": [{"text": "1889", "char_spans": "44-47"}]},
            {"qid": "good", "question": "Who built it again?", "detected_answers": good["detected_answers"]},
            {"qid": "blank", "question": "  ", "detected_answers": good["detected_answers"]},
        ]}),
        '{"context": "cut short", "qas": [',
        json.dumps({"context": context}),
        json.dumps({"context": context, "qas": [{"qid": "when", "question": "When was it built?",
                                                 "detected_answers": [{"text": "1889", "char_spans": [[44, 47]]}]}]}),
    ]
    path = tmp_path / "hand.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    result = read_examples(DataSource(path=str(path)), "qa", None, tmp_path / "out")
    assert result.read == result.written + result.rejected == 10
    assert result.written == 2
    assert result.rejected_by_reason == {"answer_out_of_range": 2, "duplicate_id": 1, "empty_question": 1,
                                         "malformed_line": 1, "missing_field": 2, "wrong_type": 1}
    rows = read_shards(tmp_path / "out").to_pylist()
    assert [(row["id"], row["answers"]["text"]) for row in rows] == [("good", ["Gustave Eiffel's company"]),
                                                                      ("when", ["1889"])]
    rejects = [json.loads(line) for line in Path(result.rejects_path).read_text().splitlines()]
    assert {reject["location"] for reject in rejects} >= {"line 3", "line 4", "line 2.qas[1]"}


def test_peek_finds_mrqa_data_and_refuses_it_for_classification(mrqa_files):
    path, _ = mrqa_files["SQuADa"]
    assert peek_source(DataSource(path=str(path)), "qa").problem is None
    assert "task is classification" in peek_source(DataSource(path=str(path)), "classification").problem


def test_gold_aliases_are_kept_beside_the_spans(tmp_path):
    context = "John F. Kennedy spoke in Berlin in 1963."
    lines = [json.dumps({"header": {"dataset": "Hand", "split": "dev"}}), json.dumps({"context": context, "qas": [
        {"qid": "who", "question": "Who spoke?", "answers": ["John F. Kennedy", "JFK", "Kennedy"],
         "detected_answers": [{"text": "John F. Kennedy", "char_spans": [[0, 14]]},
                              {"text": "Kennedy", "char_spans": [[8, 14]]}]},
        {"qid": "when", "question": "When?", "detected_answers": [{"text": "1963", "char_spans": [[35, 38]]}]},
        {"qid": "bad", "question": "Where?", "answers": "Berlin",
         "detected_answers": [{"text": "Berlin", "char_spans": [[25, 30]]}]},
    ]})]
    path = tmp_path / "hand.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    result = read_examples(DataSource(path=str(path)), "qa", None, tmp_path / "out")
    assert (result.read, result.written, result.rejected_by_reason) == (3, 2, {"wrong_type": 1})
    rows = {row["id"]: row for row in read_shards(tmp_path / "out").to_pylist()}
    assert rows["who"]["answers"] == {"text": ["John F. Kennedy", "Kennedy"], "answer_start": [0, 8]}
    assert rows["who"]["gold_answers"] == ["John F. Kennedy", "JFK", "Kennedy"]  # "JFK" is not in the context
    assert rows["when"]["gold_answers"] is None  # no aliases given: the span texts are the gold


def test_training_sources_mix_by_weight(mrqa_files, tmp_path):
    sets = []
    for name, weight in (("SQuADa", 2.0), ("SQuADb", 0.5)):
        read_examples(DataSource(path=str(mrqa_files[name][0])), "qa", None, tmp_path / name)
        sets.append(WeightedSet(name, tmp_path / name, weight))
    # a third set repeating the first's questions: every one of them is a duplicate id
    sets.append(WeightedSet("again", tmp_path / "SQuADa", 1.0))
    result = mix_examples(sets, "qa", tmp_path / "mixed", seed=3)
    a, b = (len(mrqa_files[name][1]) for name in ("SQuADa", "SQuADb"))
    assert (result.read, result.rejected, result.rejected_by_reason) == (2 * a + b, a, {"duplicate_id": a})
    assert result.read == result.written + result.rejected
    rows = read_shards(tmp_path / "mixed").to_pylist()
    meta = json.loads((tmp_path / "mixed" / "meta.json").read_text())
    assert meta["counts"]["rows"] == len(rows) == meta["sets"]["SQuADa"]["rows"] + meta["sets"]["SQuADb"]["rows"]
    from_a = [row for row in rows if row["title"] == "SQuADa"]
    from_b = [row for row in rows if row["title"] == "SQuADb"]
    assert len(from_a) == 2 * a  # weight 2: each twice, the repeat under its own id
    assert [row["id"] for row in from_a[1::2]] == [f"{row['id']}#rep1" for row in from_a[0::2]]
    assert all(row["source_id"] == row["id"] and row["variant"] == 0 for row in rows)
    assert 0 < len(from_b) < b and len({row["id"] for row in from_b}) == len(from_b)  # weight 0.5: a random half
    again = mix_examples(sets, "qa", tmp_path / "again", seed=3)
    assert read_shards(tmp_path / "again").to_pylist() == rows and again == dataclasses.replace(
        result, out_dir=again.out_dir, shards=again.shards, rejects_path=again.rejects_path,
        meta_path=again.meta_path)
    rejects = [json.loads(line) for line in Path(result.rejects_path).read_text().splitlines()]
    assert [reject["location"].split(":")[0] for reject in rejects] == ["again"] * a


def mrqa_scores_by_hand(path: Path, predictions: dict[str, str]) -> tuple[float, float]:
    """EM and F1 as the MRQA shared task's script computes them, from the gzipped file's own `answers`."""

    def normalize(text: str) -> list[str]:
        text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
        return re.sub(r"\b(a|an|the)\b", " ", text).split()

    def f1(prediction: str, gold: str) -> float:
        common = sum((Counter(normalize(prediction)) & Counter(normalize(gold))).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(normalize(prediction)), common / len(normalize(gold))
        return 2 * precision * recall / (precision + recall)

    with gzip.open(path, "rt", encoding="utf-8") as handle:
        gold = {qa["qid"]: qa["answers"] for line in handle.read().splitlines()[1:]
                for qa in json.loads(line)["qas"]}
    exact = sum(max(normalize(predictions[q]) == normalize(g) for g in answers) for q, answers in gold.items())
    overlap = sum(max(f1(predictions[q], g) for g in answers) for q, answers in gold.items())
    return 100 * exact / len(gold), 100 * overlap / len(gold)


def test_per_set_scores_and_macro_averages_equal_a_hand_computation(mrqa_files, tiny_model_factory, tmp_path):
    model = ModelRef(str(tiny_model_factory(task="qa", layers=1, hidden=32)))
    # SQuADb's first question gets an alias that is what the model answers it, found nowhere in its spans
    path_b, expected_b = mrqa_files["SQuADb"]
    sets = []
    for name, group in (("SQuADa", "in"), ("SQuADb", "out")):
        read_examples(DataSource(path=str(mrqa_files[name][0])), "qa", None, tmp_path / name)
        sets.append(EvalSet(name, tmp_path / name, group, "mrqa"))
    first = evaluate_sets({"student": model}, "qa", sets, FeaturesSpec(max_seq_len=128, doc_stride=48),
                          EvaluateSpec(measure_speed=False), CPU, tmp_path / "first", progress=False)
    answered = json.loads((tmp_path / "first" / "sets" / "SQuADb" / "student" / "predictions.json").read_text())
    qid = expected_b[0]["id"]
    lines = gzip.open(path_b, "rt", encoding="utf-8").read().splitlines()
    aliased = tmp_path / "SQuADb.jsonl.gz"
    with gzip.open(aliased, "wt", encoding="utf-8") as handle:
        for line in lines:
            record = json.loads(line)
            for qa in record.get("qas", []):
                if qa["qid"] == qid:
                    qa["answers"] = [*qa["answers"], answered[qid] + " indeed"]
            handle.write(json.dumps(record) + "\n")
    read_examples(DataSource(path=str(aliased)), "qa", None, tmp_path / "SQuADb")
    result = evaluate_sets({"student": model}, "qa", sets, FeaturesSpec(max_seq_len=128, doc_stride=48),
                           EvaluateSpec(measure_speed=False), CPU, tmp_path / "eval", progress=False)
    metrics = json.loads(Path(result.metrics_path).read_text())["student"]
    by_hand = {}
    for name, path in (("SQuADa", mrqa_files["SQuADa"][0]), ("SQuADb", aliased)):
        predictions = json.loads((tmp_path / "eval" / "sets" / name / "student" / "predictions.json").read_text())
        assert all(predictions.values())  # MRQA scoring: every question is answered
        by_hand[name] = mrqa_scores_by_hand(path, predictions)
        assert (metrics["sets"][name]["exact"], metrics["sets"][name]["f1"]) == pytest.approx(by_hand[name])
    before = json.loads(Path(first.metrics_path).read_text())["student"]["sets"]["SQuADb"]
    # the alias counts: only it differs, and "indeed" is an extra token that F1 forgives but EM does not
    assert metrics["sets"]["SQuADb"]["f1"] > before["f1"] and metrics["sets"]["SQuADb"]["exact"] == before["exact"]
    assert metrics["exact"] == pytest.approx((by_hand["SQuADa"][0] + by_hand["SQuADb"][0]) / 2)
    assert metrics["f1"] == pytest.approx((by_hand["SQuADa"][1] + by_hand["SQuADb"][1]) / 2)
    assert metrics["groups"]["in"]["f1"] == pytest.approx(by_hand["SQuADa"][1])
    assert metrics["total"] == len(mrqa_files["SQuADa"][1]) + len(expected_b)

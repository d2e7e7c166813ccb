"""The MRQA shared task's format: gzipped JSON lines, a header, contexts with their questions, answer spans with an
inclusive end. Files made here from SQuAD 2.0 dev (its answerable questions, split into two "datasets" by article)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from augment.readers import peek_source, read_examples
from augment.writers import read_shards
from jobs.spec import DataSource


def mrqa_lines(articles: list[dict], dataset: str) -> list[str]:
    """SQuAD articles as MRQA lines: answerable questions only, each answer text once with all its spans."""
    lines = [json.dumps({"header": {"dataset": dataset, "split": "dev"}})]
    for article in articles:
        for p, paragraph in enumerate(article["paragraphs"]):
            qas = []
            for qa in paragraph["qas"]:
                if qa.get("is_impossible"):
                    continue
                spans: dict[str, list[list[int]]] = {}
                for answer in qa["answers"]:
                    span = [answer["answer_start"], answer["answer_start"] + len(answer["text"]) - 1]
                    if span not in spans.setdefault(answer["text"], []):
                        spans[answer["text"]].append(span)
                qas.append({"qid": qa["id"], "question": qa["question"], "answers": list(spans),
                            "detected_answers": [{"text": text, "char_spans": text_spans, "token_spans": [[0, 0]]}
                                                 for text, text_spans in spans.items()]})
            lines.append(json.dumps({"id": f"{article['title']}-{p}", "context": paragraph["context"], "qas": qas}))
    return lines


@pytest.fixture(scope="module")
def mrqa_files(squad_dev_path, tmp_path_factory) -> dict[str, tuple[Path, list[dict]]]:
    """Two MRQA "datasets" from the first six dev articles, gzipped, with the questions each should hold."""
    articles = json.loads(squad_dev_path.read_text(encoding="utf-8"))["data"][:6]
    folder = tmp_path_factory.mktemp("mrqa")
    files = {}
    for name, part in (("SQuADa", articles[:3]), ("SQuADb", articles[3:])):
        path = folder / f"{name}.jsonl.gz"
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write("\n".join(mrqa_lines(part, name)) + "\n")
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

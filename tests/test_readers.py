"""read_examples on the real SQuAD 2.0 dev set and SST-2, and on crafted files holding every kind of bad record."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from augment.readers import MAX_TEXT_CHARS, REJECT_REASONS, DataReadError, read_examples
from augment.spec import DataSource
from core.schema import CLASSIFICATION_SCHEMA, QA_SCHEMA, REGRESSION_SCHEMA
from core.shards import read_shards


def _rejects(result) -> list[dict]:
    return [json.loads(line) for line in Path(result.rejects_path).read_text(encoding="utf-8").splitlines()]


def _outputs(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_squad_dev_reads_every_question(squad_dev_path, tmp_path):
    result = read_examples(DataSource(path=str(squad_dev_path)), "qa", None, tmp_path / "dev")

    assert (result.read, result.written, result.rejected) == (11_873, 11_873, 0)
    assert _rejects(result) == []
    table = read_shards(tmp_path / "dev")
    assert table.schema.equals(QA_SCHEMA)
    rows = table.to_pylist()
    assert sum(r["is_impossible"] for r in rows) == 5_945
    assert len({r["id"] for r in rows}) == 11_873
    assert all(r["source_id"] == r["id"] and r["variant"] == 0 and r["substitutions"] == [] for r in rows)
    for row in rows:
        answers = row["answers"]
        assert row["is_impossible"] == (not answers["text"])
        for text, start in zip(answers["text"], answers["answer_start"]):
            assert row["context"][start:start + len(text)] == text
    # every answer of a question is kept, duplicates included; plausible answers of unanswerable ones are not
    first = rows[0]
    assert first["id"] == "56ddde6b9a695914005b9628"
    assert first["answers"] == {"text": ["France"] * 4, "answer_start": [159] * 4}
    assert first["title"] == "Normans"
    assert next(r for r in rows if r["id"] == "5ad39d53604f3c001a3fe8d1")["answers"] == {"text": [],
                                                                                          "answer_start": []}
    meta = json.loads(Path(result.meta_path).read_text())
    assert meta["counts"] == {"read": 11_873, "written": 11_873, "rejected": 0, "rejected_by_reason": {}}
    assert [Path(p).name for p in result.shards] == ["part-00000.parquet", "part-00001.parquet"]
    json.dumps(dataclasses.asdict(result))  # the result is JSON-serialisable


def test_sst2_dev_tsv(sst2_dir, tmp_path):
    result = read_examples(DataSource(path=str(sst2_dir / "dev.tsv")), "classification", None, tmp_path / "sst2")

    assert (result.read, result.written, result.rejected) == (872, 872, 0)
    assert result.label_names == ["0", "1"]
    table = read_shards(tmp_path / "sst2")
    assert table.schema.equals(CLASSIFICATION_SCHEMA)
    first = table.slice(0, 1).to_pylist()[0]
    # ids are <file stem>-<line number>; the header is line 1; text is kept exactly, trailing space included
    assert first == {"id": "dev-2", "source_id": "dev-2", "variant": 0,
                     "text": "it 's a charming and often affecting journey . ", "text_pair": None, "label": 1,
                     "substitutions": []}
    assert set(table.column("label").to_pylist()) == {0, 1}
    assert json.loads(Path(result.meta_path).read_text())["label_names"] == ["0", "1"]


def _qa(qid, question, answers, **extra):
    return {"id": qid, "question": question, "answers": answers, **extra}


CONTEXT = "The quick brown fox jumps over the lazy dog."


def _bad_squad_document() -> dict:
    """Good questions, and one question (or container) for every kind of bad record, with its expectation."""
    fox = [{"text": "fox", "answer_start": 16}]
    long_context = "word " * 20_000  # 100,000 characters: long, but accepted
    return {"version": "v2.0", "data": [
        {"title": "Animals", "paragraphs": [
            {"context": CONTEXT, "qas": [
                _qa("good-1", "What jumps?", fox + fox),
                _qa("good-2", "Who sleeps?", [], is_impossible=True,
                    plausible_answers=[{"text": "dog", "answer_start": 40}]),
                _qa("mismatch", "What jumps?", [{"text": "cat", "answer_start": 16}]),
                _qa("negative", "What jumps?", [{"text": "fox", "answer_start": -1}]),
                _qa("past-end", "What jumps?", [{"text": "dog.", "answer_start": 42}]),
                {"id": "no-question", "answers": fox},
                _qa("start-as-text", "What jumps?", [{"text": "fox", "answer_start": "16"}]),
                _qa("blank-question", "  ", fox),
                _qa("good-1", "Duplicate of the first?", fox),
                _qa("impossible-answered", "What jumps?", fox, is_impossible=True),
                _qa("answerable-unanswered", "What jumps?", [], is_impossible=False),
                _qa("empty-answer", "What jumps?", [{"text": "", "answer_start": 3}]),
                _qa("bad-bytes", "What BADBYTES jumps?", fox),
                _qa("surrogate", "What \ud800 jumps?", fox),
            ]},
            {"context": "", "qas": [_qa("empty-context", "What?", [])]},
            {"context": "x" * (MAX_TEXT_CHARS + 1), "qas": [_qa("huge", "What?", [])]},
            {"context": long_context, "qas": [_qa("good-long", "What?", [{"text": "word", "answer_start": 99_995}])]},
            {"context": CONTEXT},
        ]},
        ["not", "an", "article"],
        {"title": "Second", "paragraphs": [{"context": CONTEXT, "qas": [_qa("good-3", "Which dog?", [
            {"text": "lazy dog", "answer_start": 35}])]}]},
    ]}


EXPECTED_REJECTS = {  # location -> (id, reason)
    "data[0].paragraphs[0].qas[2]": ("mismatch", "answer_mismatch"),
    "data[0].paragraphs[0].qas[3]": ("negative", "answer_out_of_range"),
    "data[0].paragraphs[0].qas[4]": ("past-end", "answer_out_of_range"),
    "data[0].paragraphs[0].qas[5]": ("no-question", "missing_field"),
    "data[0].paragraphs[0].qas[6]": ("start-as-text", "wrong_type"),
    "data[0].paragraphs[0].qas[7]": ("blank-question", "empty_question"),
    "data[0].paragraphs[0].qas[8]": ("good-1", "duplicate_id"),
    "data[0].paragraphs[0].qas[9]": ("impossible-answered", "impossible_with_answers"),
    "data[0].paragraphs[0].qas[10]": ("answerable-unanswered", "answerable_without_answers"),
    "data[0].paragraphs[0].qas[11]": ("empty-answer", "empty_answer"),
    "data[0].paragraphs[0].qas[12]": ("bad-bytes", "invalid_utf8"),
    "data[0].paragraphs[0].qas[13]": ("surrogate", "invalid_utf8"),
    "data[0].paragraphs[1].qas[0]": ("empty-context", "empty_context"),
    "data[0].paragraphs[2].qas[0]": ("huge", "too_long"),
    "data[0].paragraphs[4]": (None, "missing_field"),
    "data[1]": (None, "wrong_type"),
}


def test_bad_squad_records_are_rejected_with_reason_and_location(tmp_path):
    path = tmp_path / "bad.json"
    text = json.dumps(_bad_squad_document())  # ASCII: the surrogate stays a \ud800 escape
    path.write_bytes(text.encode().replace(b"BADBYTES", b"\xe9\xff"))  # bytes that are not UTF-8

    result = read_examples(DataSource(path=str(path)), "qa", None, tmp_path / "out")

    rows = read_shards(tmp_path / "out").to_pylist()
    assert [r["id"] for r in rows] == ["good-1", "good-2", "good-long", "good-3"]
    assert rows[0]["answers"] == {"text": ["fox", "fox"], "answer_start": [16, 16]}
    assert rows[1]["is_impossible"] and rows[1]["answers"] == {"text": [], "answer_start": []}
    rejects = _rejects(result)
    assert {r["location"]: (r["id"], r["reason"]) for r in rejects} == EXPECTED_REJECTS
    assert {r["reason"] for r in rejects} <= set(REJECT_REASONS)
    assert all(r["source"] == str(path) and r["detail"] and len(r["record"]) <= 2_000 for r in rejects)
    by_location = {r["location"]: r for r in rejects}
    assert "first used at data[0].paragraphs[0].qas[0]" in by_location["data[0].paragraphs[0].qas[8]"]["detail"]
    assert "'cat'" in by_location["data[0].paragraphs[0].qas[2]"]["detail"]
    assert by_location["data[0].paragraphs[2].qas[0]"]["truncated"]
    assert "\\xe9\\xff" in by_location["data[0].paragraphs[0].qas[12]"]["record"]  # bad bytes shown, escaped
    assert (result.read, result.written, result.rejected) == (20, 4, 16)
    assert result.read == result.written + result.rejected
    assert result.rejected_by_reason == {
        "answer_mismatch": 1, "answer_out_of_range": 2, "answerable_without_answers": 1, "duplicate_id": 1,
        "empty_answer": 1, "empty_context": 1, "empty_question": 1, "impossible_with_answers": 1,
        "invalid_utf8": 2, "missing_field": 2, "too_long": 1, "wrong_type": 2}
    meta = json.loads(Path(result.meta_path).read_text())
    assert meta["counts"]["rejected_by_reason"] == result.rejected_by_reason


def test_broken_json_raises_with_line_and_leaves_no_outputs(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"version": "v2.0",\n "data": [\n   {"title": "x",, "paragraphs": []}\n]}\n')
    out = tmp_path / "out"
    with pytest.raises(DataReadError, match=r"broken\.json: not valid JSON at line 3, column 18"):
        read_examples(DataSource(path=str(path)), "qa", None, out)
    assert _outputs(out) == []
    with pytest.raises(DataReadError, match="missing.json: no such file"):
        read_examples(DataSource(path=str(tmp_path / "missing.json")), "qa", None, out)
    path.write_text('{"version": "v2.0", "articles": []}')
    with pytest.raises(DataReadError, match="not a SQuAD file.*'version', 'articles'"):
        read_examples(DataSource(path=str(path)), "qa", None, out)


def test_utf16_file_fails_clearly(tmp_path):
    path = tmp_path / "wide.tsv"
    path.write_text("sentence\tlabel\nfine\t1\n", encoding="utf-16")
    with pytest.raises(DataReadError, match="UTF-16.*not UTF-8"):
        read_examples(DataSource(path=str(path)), "classification", None, tmp_path / "out")


def test_tsv_missing_column_fails_naming_columns(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tsentiment\ngood\t1\n")
    out = tmp_path / "out"
    with pytest.raises(DataReadError) as caught:
        read_examples(DataSource(path=str(path)), "classification", None, out)
    message = str(caught.value)
    assert "missing column(s) label" in message
    assert "found columns: sentence, sentiment" in message and "expected: sentence, label" in message
    assert _outputs(out) == []


def test_tsv_bad_lines_are_rejected_with_line_numbers(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_bytes(b"sentence\tlabel\n"
                     b"a fine film \"with quotes\"\t1\n"
                     b"caf\xe9 latin-1 bytes\t0\n"
                     b"too\tmany\tfields\n"
                     b"\n"
                     b"no label\t\n"
                     b"unknown label\t7\n"
                     b"dull\t0\r\n")
    result = read_examples(DataSource(path=str(path)), "classification", ["negative", "positive"], tmp_path / "out")

    rows = read_shards(tmp_path / "out").to_pylist()
    assert [(r["id"], r["text"], r["label"]) for r in rows] == [
        ("train-2", 'a fine film "with quotes"', 1), ("train-8", "dull", 0)]
    rejects = {r["location"]: (r["id"], r["reason"]) for r in _rejects(result)}
    assert rejects == {"line 3": (None, "invalid_utf8"), "line 4": (None, "malformed_line"),
                       "line 6": ("train-6", "missing_field"), "line 7": ("train-7", "unknown_label")}
    bad_bytes = next(r for r in _rejects(result) if r["location"] == "line 3")
    assert "byte 0xe9 at column 4" in bad_bytes["detail"] and bad_bytes["record"].startswith("caf\\xe9")
    assert (result.read, result.written, result.rejected) == (6, 2, 4)


def test_csv_unclosed_quote_stray_carriage_return_and_empty_fields_are_each_one_reject(tmp_path):
    """A record the csv module cannot parse costs that record only: the lines an unclosed quote swallowed are read
    again as records, a carriage return inside a field does not stop the read, and a line of empty fields is a
    record (rejected), not a blank line."""
    path = tmp_path / "reviews.csv"
    after = "".join(f"{i % 2},review number {i}\n" for i in range(50))
    path.write_bytes(b'label,sentence\n1,fine film\n0,"an unclosed quote starts here\n' + after.encode()
                     + b'1,a stray \r inside\n,\n\n1,"closed, properly"\n')
    result = read_examples(DataSource(path=str(path)), "classification", None, tmp_path / "out")

    rows = read_shards(tmp_path / "out").to_pylist()
    assert [r["text"] for r in rows] == ["fine film", *(f"review number {i}" for i in range(50)), "closed, properly"]
    assert [r["id"] for r in rows][:3] == ["reviews-2", "reviews-4", "reviews-5"]
    rejects = {r["location"]: r for r in _rejects(result)}
    assert {where: r["reason"] for where, r in rejects.items()} == {
        "line 3": "malformed_line", "line 54": "malformed_line", "line 55": "missing_field"}
    assert "unclosed quote" in rejects["line 3"]["detail"]
    assert rejects["line 3"]["record"] == '0,"an unclosed quote starts here'
    assert (result.read, result.written, result.rejected) == (55, 52, 3)

    tsv = tmp_path / "pairs.tsv"
    tsv.write_bytes(b"sentence\tlabel\ngood\t1\n \t \nbad \r film\t0\n   \nfine\t0\n")
    result = read_examples(DataSource(path=str(tsv)), "classification", None, tmp_path / "tsv")
    assert [r["text"] for r in read_shards(tmp_path / "tsv").to_pylist()] == ["good", "fine"]
    assert {r["location"]: r["reason"] for r in _rejects(result)} == {"line 3": "empty_text",
                                                                      "line 4": "malformed_line"}


def test_mostly_latin1_file_fails_clearly(tmp_path):
    path = tmp_path / "latin.tsv"
    path.write_bytes("sentence\tlabel\ncafé\t1\nnaïve\t0\nrésumé\t1\n".encode("latin-1"))
    with pytest.raises(DataReadError, match="3 of 4 lines are not valid UTF-8"):
        read_examples(DataSource(path=str(path)), "classification", None, tmp_path / "out")


def test_jsonl_classification_labels_ids_and_duplicates(tmp_path):
    path = tmp_path / "reviews.jsonl"
    lines = [{"review": "great", "answer": "yes", "stars": "pos"},
             {"review": "awful", "answer": "no", "stars": "neg"},
             {"id": 17, "review": "fine", "answer": "ok", "stars": "neutral"},
             {"id": 17, "review": "again", "answer": "ok", "stars": "neg"},
             {"review": "", "answer": "ok", "stars": "neg"},
             {"review": ["a"], "answer": "ok", "stars": "neg"},
             {"review": "float label", "answer": "ok", "stars": 1.0}]
    path.write_text("\n".join(json.dumps(line) for line in lines) + '\n{"review": "cut\n[1, 2]\n')
    source = DataSource(path=str(path), text_column="review", text_pair_column="answer", label_column="stars")

    result = read_examples(source, "classification", None, tmp_path / "out")

    assert result.label_names == ["neg", "neutral", "pos"]
    rows = read_shards(tmp_path / "out").to_pylist()
    assert [(r["id"], r["text"], r["text_pair"], r["label"]) for r in rows] == [
        ("reviews-1", "great", "yes", 2), ("reviews-2", "awful", "no", 0), ("17", "fine", "ok", 1)]
    assert {r["location"]: r["reason"] for r in _rejects(result)} == {
        "line 4": "duplicate_id", "line 5": "empty_text", "line 6": "wrong_type", "line 7": "wrong_type",
        "line 8": "malformed_line", "line 9": "malformed_line"}
    assert result.read == result.written + result.rejected == 9


def test_jsonl_without_a_needed_field_fails(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n')
    with pytest.raises(DataReadError, match="missing column.*sentence.*found columns: label, text"):
        read_examples(DataSource(path=str(path)), "classification", None, tmp_path / "out")
    assert _outputs(tmp_path / "out") == []


def test_csv_quoted_fields_integer_labels_and_limit(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text('id,sentence,label\na1,"one, with a comma",0\na2,"two\nlines",2\na3,three,1\n')
    result = read_examples(DataSource(path=str(path)), "classification", None, tmp_path / "out")
    assert result.label_names == ["0", "1", "2"]
    rows = read_shards(tmp_path / "out").to_pylist()
    assert [(r["id"], r["text"], r["label"]) for r in rows] == [
        ("a1", "one, with a comma", 0), ("a2", "two\nlines", 2), ("a3", "three", 1)]

    limited = read_examples(DataSource(path=str(path), limit=2), "classification", None, tmp_path / "out")
    assert (limited.read, limited.written) == (2, 2)


def test_jsonl_qa_and_rerun_replaces_outputs(tmp_path):
    path = tmp_path / "qa.jsonl"
    records = [{"id": f"q{i}", "title": "t", "context": CONTEXT, "question": "What jumps?",
                "answers": {"text": ["fox"], "answer_start": [16]}} for i in range(5)]
    records.append({"id": "q5", "context": CONTEXT, "question": "Who flies?", "answers": {"text": [],
                                                                                           "answer_start": []}})
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out"

    first = read_examples(DataSource(path=str(path)), "qa", None, out, rows_per_shard=2)
    assert len(first.shards) == 3 and first.written == 6
    assert read_shards(out).to_pylist()[5]["is_impossible"] is True
    assert read_shards(out).to_pylist()[5]["title"] == ""

    second = read_examples(DataSource(path=str(path), limit=3), "qa", None, out, rows_per_shard=2)
    assert len(second.shards) == 2 and read_shards(out).num_rows == 3  # no stale shard from the first run
    assert _outputs(out) == ["meta.json", "rejects.jsonl", "shards/part-00000.parquet", "shards/part-00001.parquet"]


def test_hf_save_to_disk_folders(tmp_path):
    datasets = pytest.importorskip("datasets")
    qa = datasets.Dataset.from_list([
        {"id": "a", "title": "t", "context": CONTEXT, "question": "What jumps?",
         "answers": {"text": ["fox"], "answer_start": [16]}},
        {"id": "b", "title": "t", "context": CONTEXT, "question": "What jumps?",
         "answers": {"text": ["dog"], "answer_start": [16]}},
    ])
    datasets.DatasetDict({"train": qa, "validation": qa}).save_to_disk(str(tmp_path / "qa"))
    result = read_examples(DataSource(path=str(tmp_path / "qa"), split="validation"), "qa", None, tmp_path / "o1")
    assert (result.written, result.rejected_by_reason) == (1, {"answer_mismatch": 1})
    assert _rejects(result)[0]["location"] == "row 1"
    with pytest.raises(DataReadError, match="split None not found; set split to one of train, validation"):
        read_examples(DataSource(path=str(tmp_path / "qa")), "qa", None, tmp_path / "o2")

    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    sst = datasets.Dataset.from_dict({"sentence": ["bad", "good"], "label": [0, 1]}, features=features)
    sst.save_to_disk(str(tmp_path / "sst"))
    result = read_examples(DataSource(path=str(tmp_path / "sst")), "classification", None, tmp_path / "o3")
    assert result.label_names == ["negative", "positive"]  # from the ClassLabel column, not "0", "1"
    rows = read_shards(tmp_path / "o3").to_pylist()
    assert [(r["id"], r["label"]) for r in rows] == [("sst-0", 0), ("sst-1", 1)]


def test_regression_scores_read_from_sts_b_tsv_and_json_numbers(tmp_path):
    """STS-B's layout (GLUE TSV, unquoted) and JSON numbers: each label a finite float; the rest rejected with a
    reason, never dropped."""
    path = tmp_path / "sts-b.tsv"
    path.write_text("index\tgenre\tsentence1\tsentence2\tscore\n"
                    '0\tmain-news\tA man plays a "guitar".\tA man is playing music.\t3.800\n'
                    "1\tmain-news\tA cat sleeps.\tThe market fell.\t0\n"
                    "2\tmain-news\tA dog runs.\tA dog is running.\thigh\n"
                    "3\tmain-news\tA bird sings.\tA bird is singing.\tnan\n", encoding="utf-8")
    source = DataSource(path=str(path), text_column="sentence1", text_pair_column="sentence2", label_column="score")
    result = read_examples(source, "regression", None, tmp_path / "out")
    assert result.label_names is None
    table = read_shards(tmp_path / "out")
    assert table.schema.field("label").type == REGRESSION_SCHEMA.field("label").type
    assert [(r["text"], r["text_pair"], r["label"]) for r in table.to_pylist()] == [
        ('A man plays a "guitar".', "A man is playing music.", 3.8), ("A cat sleeps.", "The market fell.", 0.0)]
    assert {r["location"]: r["reason"] for r in _rejects(result)} == {"line 4": "bad_score", "line 5": "bad_score"}
    assert "bad_score" in REJECT_REASONS

    jsonl = tmp_path / "scores.jsonl"
    jsonl.write_text('{"sentence": "a", "label": 4.25}\n{"sentence": "b", "label": 2}\n'
                     '{"sentence": "c", "label": true}\n', encoding="utf-8")
    result = read_examples(DataSource(path=str(jsonl)), "regression", None, tmp_path / "json")
    assert [r["label"] for r in read_shards(tmp_path / "json").to_pylist()] == [4.25, 2.0]
    assert [r["reason"] for r in _rejects(result)] == ["wrong_type"]

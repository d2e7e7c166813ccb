"""ShardWriter, read_shards, and `python -m augment export` / export_squad_json (round trip through read_examples,
augmented variants included)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from augment.__main__ import main as augment_cli
from augment.export import export_squad_json
from augment.readers import read_examples
from augment.spec import DataSource
from core.schema import CLASSIFICATION_SCHEMA, QA_SCHEMA
from core.shards import ShardWriter, iter_shard_batches, read_rows, read_shards, write_shard


def _row(i: int) -> dict:
    return {"id": f"r{i}", "source_id": f"r{i}", "variant": 0, "text": f"text {i}", "text_pair": None,
            "label": i % 2, "substitutions": []}


def test_shard_writer_numbers_shards_and_reads_back_in_order(tmp_path):
    writer = ShardWriter(tmp_path / "shards", CLASSIFICATION_SCHEMA, rows_per_shard=2)
    for i in range(5):
        writer.add(_row(i))
    paths = writer.close()

    assert [p.name for p in paths] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [p.name for p in paths]  # no temp files
    table = read_shards(tmp_path / "shards")
    assert table.schema.equals(CLASSIFICATION_SCHEMA)
    assert table.column("id").to_pylist() == [f"r{i}" for i in range(5)]
    assert [b.num_rows for b in iter_shard_batches(tmp_path / "shards", batch_size=10)] == [2, 2, 1]
    assert writer.close() == paths
    with pytest.raises(ValueError, match="closed"):
        writer.add(_row(5))


def test_shard_writer_edge_cases(tmp_path):
    empty = ShardWriter(tmp_path / "empty", QA_SCHEMA).close()
    assert len(empty) == 1 and read_shards(tmp_path / "empty").num_rows == 0  # the schema is still recorded
    assert read_shards(tmp_path / "empty").schema.equals(QA_SCHEMA)

    with pytest.raises(FileExistsError, match="already holds 1 shard"):
        ShardWriter(tmp_path / "empty", QA_SCHEMA)

    writer = ShardWriter(tmp_path / "x", CLASSIFICATION_SCHEMA)
    with pytest.raises(ValueError, match=r"missing \['text_pair'\], unexpected \['pair'\]"):
        writer.add({**{k: v for k, v in _row(0).items() if k != "text_pair"}, "pair": None})
    with pytest.raises(FileNotFoundError, match="no shards"):
        read_shards(tmp_path / "nothing-here")


def test_read_rows_reads_a_range_across_row_groups(tmp_path):
    table = pa.Table.from_pylist([_row(i) for i in range(10)], schema=CLASSIFICATION_SCHEMA)
    pq.write_table(table, tmp_path / "part-00000.parquet", row_group_size=3)  # groups [0,3) [3,6) [6,9) [9,10)
    for start, stop in [(0, 10), (2, 8), (3, 6), (4, 5), (9, 10)]:
        assert read_rows(tmp_path / "part-00000.parquet", start, stop).equals(table.slice(start, stop - start))
    assert read_rows(tmp_path / "part-00000.parquet", 1, 4, ["id"]).column("id").to_pylist() == ["r1", "r2", "r3"]


def test_write_shard_failure_keeps_the_old_file(tmp_path):
    path = write_shard(tmp_path / "part-00000.parquet", [_row(0)], CLASSIFICATION_SCHEMA)
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        write_shard(path, [{**_row(1), "label": "not an int"}], CLASSIFICATION_SCHEMA)
    assert read_shards(tmp_path).column("id").to_pylist() == ["r0"]
    assert [p.name for p in tmp_path.iterdir()] == ["part-00000.parquet"]


def _sorted_rows(folder: Path) -> list[dict]:
    return sorted(read_shards(folder).to_pylist(), key=lambda row: row["id"])


def test_export_round_trip_on_the_dev_set(squad_dev_path, tmp_path, capsys):
    read_examples(DataSource(path=str(squad_dev_path)), "qa", None, tmp_path / "examples")

    assert augment_cli(["export", str(tmp_path / "examples"), "--format", "squad",
                        "--out", str(tmp_path / "export.json")]) == 0
    exported = Path(capsys.readouterr().out.strip())
    assert exported == tmp_path / "export.json"
    again = read_examples(DataSource(path=str(exported)), "qa", None, tmp_path / "again")

    assert again.rejected == 0
    assert read_shards(tmp_path / "again").equals(read_shards(tmp_path / "examples"))  # same rows, same order
    document = json.loads(exported.read_text(encoding="utf-8"))
    assert document["version"] == "v2.0"
    assert len(document["data"]) == 35
    assert sum(len(article["paragraphs"]) for article in document["data"]) == 1_204


def test_export_round_trip_with_augmented_variants(tmp_path):
    context = "The quick brown fox jumps over the lazy dog."
    variant_context = "The fast brown fox leaps over the lazy dog."
    fox = {"text": ["fox"], "answer_start": [16]}
    base = {"title": "Animals", "question": "What jumps?", "is_impossible": False, "gold_answers": None}
    substitutions = [
        {"field": "context", "start": 4, "end": 8, "original": "quick", "replacement": "fast", "source": "mlm"},
        {"field": "context", "start": 19, "end": 24, "original": "jumps", "replacement": "leaps",
         "source": "embedding"},
    ]
    rows = [
        {"id": "q1", "source_id": "q1", "variant": 0, **base, "context": context, "answers": fox,
         "substitutions": [], "gold_answers": ["fox", "a brown fox"]},  # MRQA's aliases
        {"id": "q1#aug1", "source_id": "q1", "variant": 1, **base, "context": variant_context,
         "answers": {"text": ["fox"], "answer_start": [15]},
         "substitutions": substitutions},
        {"id": "q1#aug2", "source_id": "q1", "variant": 2, **base, "context": context, "answers": fox,
         "question": "What leaps?", "substitutions": [
             {"field": "question", "start": 5, "end": 10, "original": "jumps", "replacement": "leaps",
              "source": "embedding"}]},
        {"id": "q2", "source_id": "q2", "variant": 0, **base, "title": "Other", "context": context,
         "question": "Who sleeps?", "answers": {"text": [], "answer_start": []}, "is_impossible": True,
         "substitutions": []},
    ]
    writer = ShardWriter(tmp_path / "augmented" / "shards", QA_SCHEMA, rows_per_shard=3)
    for row in rows:
        writer.add(row)
    writer.close()

    exported = export_squad_json(tmp_path / "augmented", tmp_path / "augmented.json")
    result = read_examples(DataSource(path=str(exported)), "qa", None, tmp_path / "again")

    assert (result.written, result.rejected) == (4, 0)
    assert _sorted_rows(tmp_path / "again") == _sorted_rows(tmp_path / "augmented")
    document = json.loads(exported.read_text(encoding="utf-8"))
    assert [a["title"] for a in document["data"]] == ["Animals", "Other"]
    paragraphs = document["data"][0]["paragraphs"]
    # grouped by identical context: q1 and its question-only variant share a paragraph
    assert [[qa["id"] for qa in p["qas"]] for p in paragraphs] == [["q1", "q1#aug2"], ["q1#aug1"]]
    assert "source_id" not in paragraphs[0]["qas"][0]  # originals stay plain SQuAD


def test_export_refuses_classification_examples_with_the_reason(tmp_path, capsys):
    (tmp_path / "examples" / "shards").mkdir(parents=True)
    write_shard(tmp_path / "examples" / "shards" / "part-00000.parquet", [_row(0)], CLASSIFICATION_SCHEMA)
    assert augment_cli(["export", str(tmp_path / "examples"), "--out", str(tmp_path / "out.json")]) == 2
    assert "does not hold QA examples" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()

"""The augmentation stage end to end on Ray: real SQuAD and SST-2 examples, a tiny masked LM, 1 and 2 workers."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from augment.__main__ import main
from augment.candidates import MaskedLMProposer
from augment.pipeline import AugmentInputError, _read_runs, _runs, augment_block, augment_examples, plan_blocks
from augment.readers import read_examples
from augment.spec import AugmentSpec, DataSource, VectorsSpec
from augment.words import load_stopwords, segment
from core.blocks import OutputClaimError
from core.resources import ResourcesSpec
from core.schema import QA_SCHEMA
from core.shards import ShardWriter, read_shards
from tests.substitutions import undo_substitutions


@pytest.fixture(scope="module")
def qa_examples(tmp_path_factory, squad_dev_path) -> Path:
    folder = tmp_path_factory.mktemp("squad-examples")
    read_examples(DataSource(path=str(squad_dev_path), limit=36), "qa", None, folder)
    return folder


@pytest.fixture(scope="module")
def config(tiny_model_factory) -> AugmentSpec:
    # 10 examples per shard: about one paragraph per block, so a few dev paragraphs make several blocks
    return AugmentSpec(factor=3, top_k=5, mlm_model=str(tiny_model_factory(task="mlm")), mlm_window=16,
                       mlm_batch_size=8, augment_questions=True, examples_per_shard=10)


def run(examples: Path, config: AugmentSpec, workers: int, out: Path, task="qa"):
    return augment_examples(examples, task, config, ResourcesSpec(workers=workers, cpus_per_worker=0.5), seed=7,
                            out_dir=out, progress=False)


def shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "shards").glob("part-*.parquet"))}


@pytest.fixture(scope="module")
def one_and_two_workers(ray_session, qa_examples, config, tmp_path_factory):
    out = tmp_path_factory.mktemp("augmented")
    return run(qa_examples, config, 1, out / "one"), run(qa_examples, config, 2, out / "two")


def test_output_is_byte_identical_with_one_and_two_workers(one_and_two_workers):
    one, two = one_and_two_workers
    assert one.blocks >= 3 and two.stats["workers"] == 2
    assert shard_bytes(Path(one.out_dir)) == shard_bytes(Path(two.out_dir))
    assert (Path(one.out_dir) / "vectors.kv.vectors.npy").read_bytes() == \
        (Path(two.out_dir) / "vectors.kv.vectors.npy").read_bytes()


def test_answers_stay_answers_and_only_substituted_words_change(one_and_two_workers, qa_examples):
    result, _ = one_and_two_workers
    originals = {r["id"]: r for r in read_shards(qa_examples).to_pylist()}
    rows = read_shards(result.out_dir).to_pylist()
    stopwords = load_stopwords()
    assert len(rows) == result.examples_out and result.examples_in == len(originals)
    assert [r["source_id"] for r in rows if r["variant"] == 0] == list(originals)  # input order kept
    for row in rows:
        original = originals[row["source_id"]]
        for start, text in zip(row["answers"]["answer_start"], row["answers"]["text"]):
            assert row["context"][start:start + len(text)] == text
        assert row["answers"]["text"] == original["answers"]["text"]
        assert row["is_impossible"] == original["is_impossible"]
        for field in ("context", "question"):
            records = [s for s in row["substitutions"] if s["field"] == field]
            assert undo_substitutions(row[field], records) == original[field]
        assert all(s["original"].lower() not in stopwords for s in row["substitutions"])
    stats = json.loads(Path(result.stats_path).read_text())
    assert stats["substitutions_by_source"]["mlm"] > 0 and stats["substitutions_by_source"]["embedding"] > 0
    assert 0.2 < stats["substitution_rate"] <= 0.5
    assert stats["examples_out"] == len(rows)
    assert json.loads(Path(result.meta_path).read_text())["task"] == "qa"
    assert result.vectors_path and Path(result.vectors_path).exists()
    json.dumps(dataclasses.asdict(result))


def test_resume_redoes_only_missing_blocks(ray_session, one_and_two_workers, qa_examples, config, tmp_path):
    finished, _ = one_and_two_workers
    out = tmp_path / "resumed"
    shutil.copytree(finished.out_dir, out)
    (out / "shards" / "part-00001.parquet").unlink()
    (out / "blocks" / "part-00002.json").unlink()  # counts missing: that block is not finished either
    untouched = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.parquet")
                 if p.name != "part-00002.parquet"}
    result = run(qa_examples, config, 1, out)
    assert result.blocks_reused == finished.blocks - 2
    assert {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.parquet") if p.name in untouched} \
        == untouched
    assert shard_bytes(out) == shard_bytes(Path(finished.out_dir))
    assert result.stats["examples_out"] == finished.stats["examples_out"]


def test_a_paragraph_stays_in_one_block_across_shards_and_when_it_recurs(tmp_path):
    writer = ShardWriter(tmp_path / "shards", QA_SCHEMA, rows_per_shard=3)
    for i, context in enumerate("AABACC"):
        writer.add({"id": f"q{i}", "source_id": f"q{i}", "variant": 0, "title": "t", "context": context,
                    "question": "?", "answers": {"text": [], "answer_start": []}, "is_impossible": True,
                    "substitutions": [], "gold_answers": None})
    writer.close()
    blocks = plan_blocks(tmp_path, "qa", 2)
    assert blocks == [[0, 1, 3], [2, 4, 5]]  # A's rows together, in the order A first appears
    shard_rows = [("part-00000.parquet", 3), ("part-00001.parquet", 3)]
    assert _runs(blocks[0], shard_rows) == [("part-00000.parquet", 0, 2), ("part-00001.parquet", 0, 1)]
    read = _read_runs(tmp_path / "shards", _runs(blocks[1], shard_rows))
    assert read.column("id").to_pylist() == ["q2", "q4", "q5"]


def test_output_does_not_depend_on_how_the_input_is_sharded(ray_session, one_and_two_workers, squad_dev_path,
                                                             config, tmp_path):
    """Blocks whose rows span input shards are read by the workers from each shard, in order."""
    one, _ = one_and_two_workers
    resharded = tmp_path / "examples"
    read_examples(DataSource(path=str(squad_dev_path), limit=36), "qa", None, resharded, rows_per_shard=7)
    result = run(resharded, config, 2, tmp_path / "out")
    assert result.blocks == one.blocks
    assert shard_bytes(tmp_path / "out") == shard_bytes(Path(one.out_dir))


def test_a_bpe_word_that_is_several_tokens_somewhere_gets_neighbours(ray_session, tiny_bpe_mlm_factory, tmp_path):
    """With a BPE masked LM, "Paris" is one token mid-sentence but two at a text's start: the driver must find it
    vector neighbours, since that is where the workers send it."""
    tsv = tmp_path / "train.tsv"
    tsv.write_text("sentence\tlabel\nParis is in France.\t1\nPeople visit Paris and London.\t0\n", encoding="utf-8")
    read_examples(DataSource(path=str(tsv)), "classification", None, tmp_path / "examples")
    rng = np.random.default_rng(0)
    glove = tmp_path / "glove.txt"
    glove.write_text("".join(f"{w} {' '.join(f'{x:.4f}' for x in rng.normal(size=8))}\n"
                             for w in ["paris", "london", "france", "people", "visit", "rome", "berlin"]),
                     encoding="utf-8")
    spec = AugmentSpec(factor=2, top_k=2, mlm_model=str(tiny_bpe_mlm_factory()), vectors=VectorsSpec(path=str(glove)))
    result = run(tmp_path / "examples", spec, 1, tmp_path / "out", task="classification")
    with pa.memory_map(str(tmp_path / "out" / "neighbours.arrow")) as source:
        needing = set(pa.ipc.open_file(source).read_all().column("word").to_pylist())
    assert "paris" in needing and "london" not in needing  # London is one token wherever it stands
    assert result.stats["substitutions_by_source"]["embedding"] > 0


def test_a_rerun_with_other_settings_is_refused(one_and_two_workers, qa_examples, config):
    finished, _ = one_and_two_workers
    with pytest.raises(OutputClaimError, match="differs in: augment"):
        run(qa_examples, config.model_copy(update={"factor": 4}), 1, Path(finished.out_dir))
    with pytest.raises(AugmentInputError, match="holds 'qa' examples"):
        run(qa_examples, config, 1, Path(finished.out_dir) / "other", task="classification")


def test_exact_mode_keeps_answers(qa_examples, config):
    """Exact mode, in-process: the pipeline's actors run this same `augment_block`."""
    exact = config.model_copy(update={"mlm_mode": "exact", "factor": 2, "augment_questions": False})
    mlm = MaskedLMProposer(exact.mlm_model, batch_size=exact.mlm_batch_size)
    originals = read_shards(qa_examples).to_pylist()[:12]
    rows, tally = augment_block(originals, "qa", exact, 7, {}, mlm)
    assert tally.by_source["mlm"] > 0 and tally.examples_out == len(rows) > len(originals)
    for row in rows:
        for start, text in zip(row["answers"]["answer_start"], row["answers"]["text"]):
            assert row["context"][start:start + len(text)] == text
        assert all(s["field"] == "context" and s["source"] == "mlm" for s in row["substitutions"])


def test_classification_from_the_command_line_with_glove_vectors_only(ray_session, sst2_dir, tmp_path, capsys):
    examples = tmp_path / "sst2"
    read_examples(DataSource(path=str(sst2_dir / "dev.tsv"), limit=20), "classification", None, examples)
    words = sorted({w.word.lower() for r in read_shards(examples).to_pylist() for w in segment(r["text"])})
    rng = np.random.default_rng(0)
    glove = tmp_path / "glove.txt"  # GloVe text: no header line
    glove.write_text("".join(f"{w} {' '.join(f'{x:.4f}' for x in rng.normal(size=8))}\n" for w in words),
                     encoding="utf-8")
    status = main(["run", "--input", str(examples), "--out", str(tmp_path / "out"), "--factor", "3",
                   "--mlm-model", "none", "--vectors", str(glove), "--top-k", "5", "--workers", "1",
                   "--cpus-per-worker", "0.5", "--examples-per-shard", "8", "--quiet"])
    assert status == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["examples_in"] == 20 and printed["blocks"] == 3 and printed["vectors_path"] is None
    assert printed["stats"]["substitutions_by_source"] == {"mlm": 0, "embedding": printed["stats"]["substituted_words"]}
    labels = {r["id"]: r["label"] for r in read_shards(examples).to_pylist()}
    rows = read_shards(tmp_path / "out").to_pylist()
    assert len(rows) > 20 and all(r["label"] == labels[r["source_id"]] for r in rows)
    assert all(r["text_pair"] is None for r in rows)
    assert all(s["replacement"].lower() in words for r in rows for s in r["substitutions"])
    assert pq.read_schema(tmp_path / "out" / "shards" / "part-00000.parquet") == \
        pq.read_schema(examples / "shards" / "part-00000.parquet")
    assert main(["run", "--input", str(tmp_path / "missing"), "--out", str(tmp_path / "x"), "--task", "qa"]) == 2

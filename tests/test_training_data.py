"""The trainer's data path: the memory-mapped training view, its batches against the row-by-row reference, the
view's cache rules, and the prefetching thread."""

from __future__ import annotations

import mmap
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoTokenizer

from distill.features import qa_features
from distill.spec import FeaturesSpec
from distill.trainer import epoch_order, epoch_steps, worker_slice
from distill.training_data import MANIFEST, VIEW_DIR, TrainingDataError, open_training_view, prefetch
from test_features import reference_pad

PHASE2_COLUMNS = ("input_ids", "token_type_ids", "start_position", "end_position", "teacher_start_logits",
                  "teacher_end_logits")


def _with_teacher_logits(table: pa.Table, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    lengths = pc.list_value_length(table["input_ids"]).to_pylist()
    for name in ("teacher_start_logits", "teacher_end_logits"):
        column = pa.array([rng.normal(size=n).astype(np.float16).tolist() for n in lengths], pa.list_(pa.float16()))
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return table


@pytest.fixture()
def labelled_dir(tmp_path, squad_rows, bert_tokenizer_dir) -> tuple[pa.Table, Path]:
    """About 130 labelled QA features of real SQuAD 2.0 dev questions in three shards of uneven size."""
    tokenizer = AutoTokenizer.from_pretrained(bert_tokenizer_dir)
    table = qa_features(squad_rows(120), tokenizer, FeaturesSpec(max_seq_len=128, doc_stride=48, max_query_len=32))
    table = _with_teacher_logits(table, 0)
    shards = tmp_path / "features" / "shards"
    shards.mkdir(parents=True)
    cuts = [0, 7, 60, table.num_rows]
    for index, (start, stop) in enumerate(zip(cuts, cuts[1:])):
        # small row groups, so the view is built from several record batches per shard
        pq.write_table(table.slice(start, stop - start), shards / f"part-{index:05d}.parquet", row_group_size=16)
    return table, tmp_path / "features"


def test_an_epoch_of_batches_equals_the_in_memory_table_path(labelled_dir):
    """Every micro-batch of two epochs, for 1 worker and for each of 2 workers, equals the batch the trainer
    made before (rows taken from one in-memory table and padded row by row), in the same order."""
    table, folder = labelled_dir
    view = open_training_view(folder, PHASE2_COLUMNS)
    assert view.num_rows == table.num_rows
    reference_table = table.select(list(PHASE2_COLUMNS))
    lengths = pc.list_value_length(table["input_ids"]).to_numpy()
    assert np.array_equal(view.lengths, lengths)
    compared = 0
    for epoch in range(2):
        order = epoch_order(view.offsets, seed=3, epoch=epoch, batch_size=8)
        assert np.array_equal(order, epoch_order(np.concatenate([[0], np.cumsum(lengths)]), 3, epoch, 8))
        for step in epoch_steps(order, batch_size=8, accum=2):
            for micro in step:
                for world in (1, 2):
                    for rank in range(world):
                        rows = worker_slice(micro, rank, world)
                        if len(rows) == 0:  # a last micro-batch smaller than the world (the trainer repeats a row)
                            continue
                        expected = reference_pad(reference_table.take(rows).to_pylist(), pad_token_id=0)
                        got = view.batch(rows, pad_token_id=0)
                        assert got.keys() == expected.keys()
                        for key in got:
                            assert torch.equal(got[key], expected[key]), (epoch, key)
                        compared += 1
    assert compared >= 2 * 3 * (table.num_rows // 8)


def test_the_view_is_built_once_grows_by_column_and_follows_its_shards(labelled_dir):
    table, folder = labelled_dir
    inputs = open_training_view(folder, ("input_ids", "token_type_ids"))
    view = folder / VIEW_DIR
    assert set(inputs.columns) == {"input_ids", "token_type_ids"}
    built = {p.name: p.stat().st_mtime_ns for p in view.glob("*.bin")}
    assert set(built) == {"offsets.bin", "input_ids.bin", "token_type_ids.bin"}
    # another phase asking for more columns adds them and leaves the others as they were
    full = open_training_view(folder, PHASE2_COLUMNS)
    after = {p.name: p.stat().st_mtime_ns for p in view.glob("*.bin")}
    assert {name: after[name] for name in built} == built
    assert set(after) == set(built) | {f"{c}.bin" for c in PHASE2_COLUMNS}
    owner = full.columns["teacher_start_logits"]
    while isinstance(owner, np.ndarray):
        owner = owner.base
    assert isinstance(owner.obj, mmap.mmap)  # mapped from the view's file, not read into memory
    assert full.columns["teacher_start_logits"].dtype == np.float16  # stored as labelled, widened per batch
    # asking again reads the manifest and builds nothing
    open_training_view(folder, PHASE2_COLUMNS)
    assert {p.name: p.stat().st_mtime_ns for p in view.glob("*.bin")} == after
    # relabelled shards (new files) make a new view
    relabelled = _with_teacher_logits(table, 1)
    for shard in (folder / "shards").glob("part-*.parquet"):
        shard.unlink()
    pq.write_table(relabelled, folder / "shards" / "part-00000.parquet")
    again = open_training_view(folder, PHASE2_COLUMNS)
    expected = np.concatenate(relabelled["teacher_end_logits"].to_numpy(zero_copy_only=False))
    assert np.array_equal(np.asarray(again.columns["teacher_end_logits"]), expected)


def test_unlabelled_and_half_labelled_features(labelled_dir):
    table, folder = labelled_dir
    half = table.set_column(table.schema.get_field_index("teacher_start_logits"), "teacher_start_logits",
                            pa.nulls(table.num_rows, pa.list_(pa.float16())))
    for shard in (folder / "shards").glob("part-*.parquet"):
        shard.unlink()
    pq.write_table(table.slice(0, 50), folder / "shards" / "part-00000.parquet")
    pq.write_table(half.slice(50), folder / "shards" / "part-00001.parquet")
    # never labelled anywhere: absent, with its count, for the objective's check to report
    view = open_training_view(folder, ("input_ids", "start_position"))
    assert view.null_counts == {"input_ids": 0, "start_position": 0}
    with pytest.raises(TrainingDataError, match=f"{table.num_rows - 50} of {table.num_rows} features .* no "
                                                "teacher_start_logits"):
        open_training_view(folder, ("input_ids", "teacher_start_logits"))
    with pytest.raises(TrainingDataError, match=r"lacks column\(s\) \['label'\]"):
        open_training_view(folder, ("input_ids", "label"))
    unlabelled = table.set_column(table.schema.get_field_index("teacher_end_logits"), "teacher_end_logits",
                                  pa.nulls(table.num_rows, pa.list_(pa.float16())))
    (folder / "shards" / "part-00001.parquet").unlink()
    pq.write_table(unlabelled, folder / "shards" / "part-00000.parquet")
    view = open_training_view(folder, ("input_ids", "teacher_end_logits"))
    assert "teacher_end_logits" not in view.columns and view.null_counts["teacher_end_logits"] == table.num_rows
    assert (folder / VIEW_DIR / MANIFEST).exists()


def test_two_processes_opening_at_once_build_one_view(labelled_dir):
    """Ranks of one node (here threads) asking at the same time: one builds under the lock, the other reads it."""
    table, folder = labelled_dir
    views, errors = [], []

    def open_view() -> None:
        try:
            views.append(open_training_view(folder, PHASE2_COLUMNS))
        except Exception as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=open_view) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(views) == 2
    rows = np.arange(table.num_rows)
    a, b = (view.batch(rows, 0) for view in views)
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_prefetch_keeps_order_raises_where_it_failed_and_stops_when_left():
    assert list(prefetch(range(50), lambda x: x * x, depth=3)) == [x * x for x in range(50)]

    def fails_at_seven(x: int) -> int:
        if x == 7:
            raise ValueError("bad item 7")
        return x

    seen = []
    with pytest.raises(ValueError, match="bad item 7"):
        for value in prefetch(range(20), fails_at_seven):
            seen.append(value)
    assert seen == list(range(7))

    prepared = []

    def slow(x: int) -> int:
        prepared.append(x)
        return x

    batches = prefetch(iter(range(10_000)), slow, depth=2)
    assert [next(batches) for _ in range(3)] == [0, 1, 2]
    batches.close()
    time.sleep(0.05)
    count = len(prepared)
    time.sleep(0.05)
    assert len(prepared) == count < 10, "the producer kept going after the consumer left"
    assert not any(t.name.startswith("distill-prefetch") and t.is_alive() for t in threading.enumerate())

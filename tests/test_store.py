"""The run store: atomic state, a full disk, cache entries that are complete only once marked."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import time

import pytest

from jobs.store import RunStore, write_atomic


def test_write_atomic_replaces_whole_files(tmp_path):
    target = tmp_path / "state.json"
    write_atomic(target, "old")
    write_atomic(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_full_disk_during_a_write_leaves_the_previous_state(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    write_atomic(target, json.dumps({"status": "running"}))

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space"):
        write_atomic(target, json.dumps({"status": "succeeded"}))
    assert json.loads(target.read_text()) == {"status": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # the temp file was removed


def test_created_run_holds_spec_and_pending_stages(tmp_path):
    store = RunStore(tmp_path)
    run = store.create("demo-1", "task: qa\n", ["prepare", "label"], backend="local")
    state = run.read_state()
    assert state.status == "pending" and state.backend == "local"
    assert list(state.stages) == ["prepare", "label"]
    assert run.spec_path.read_text() == "task: qa\n"
    run.update_stage("prepare", status="completed")
    assert run.read_state().stages["prepare"].status == "completed"
    # the state is typed: a misspelt field or a status no reader knows is refused where it is written
    with pytest.raises(ValueError, match="statu"):
        run.update_stage("prepare", statu="completed")
    with pytest.raises(ValueError, match="done"):
        run.set_state(status="done")
    assert run.read_state().status == "pending"
    assert [r.job_id for r in store.list()] == ["demo-1"]
    with pytest.raises(FileExistsError):
        store.create("demo-1", "", [])


def test_missing_job_names_the_latest(tmp_path):
    store = RunStore(tmp_path)
    store.create("demo-1", "", [])
    with pytest.raises(LookupError, match="demo-1"):
        store.get("nope")


def _hold_lock_then_complete(root: str, hold_seconds: float) -> None:
    entry = RunStore(root).cache_entry("label", "abc")
    with entry.lock():
        entry.path.mkdir(parents=True, exist_ok=True)
        (entry.path / "part-0.parquet").write_text("half")
        time.sleep(hold_seconds)
        entry.mark_complete({"features": 3})


def test_cache_entry_is_incomplete_until_marked_and_a_second_job_waits(tmp_path):
    entry = RunStore(tmp_path).cache_entry("label", "abc")
    writer = multiprocessing.get_context("spawn").Process(target=_hold_lock_then_complete, args=(str(tmp_path), 1.5))
    writer.start()
    deadline = time.monotonic() + 30
    while not (entry.path / "part-0.parquet").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not entry.complete  # files exist, but the entry is not complete until its marker lands
    with entry.lock():  # blocks until the writer is done
        assert entry.complete and entry.summary() == {"features": 3}
    writer.join()


def _die_holding_lock(root: str) -> None:
    entry = RunStore(root).cache_entry("label", "abc")
    with entry.lock():
        entry.path.mkdir(parents=True, exist_ok=True)
        os.kill(os.getpid(), 9)


def test_lock_of_a_killed_holder_is_released(tmp_path):
    process = multiprocessing.get_context("spawn").Process(target=_die_holding_lock, args=(str(tmp_path),))
    process.start()
    process.join(30)
    assert process.exitcode == -9
    entry = RunStore(tmp_path).cache_entry("label", "abc")
    with entry.lock():
        assert not entry.complete

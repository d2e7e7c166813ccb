"""`python -m jobs` commands that read the run store: quick to start, filters, JSON, and clusters that are down.

No test here runs a job or starts Ray; run stores are written directly with `RunStore.create`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.api import pid_alive
from jobs.cli import main
from jobs.store import RunStore
from tests.jobutil import wait_for

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "ray", "pyarrow")

# runs the CLI in a fresh interpreter and prints which heavy packages it imported
_IMPORTED = """
import sys
import pytest

from jobs.cli import main
try:
    main(sys.argv[1:])
except SystemExit:  # --help
    pass
print("IMPORTED", sorted(name for name in {HEAVY!r} if name in sys.modules))
"""


def _imported_heavy(*argv: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", _IMPORTED.format(HEAVY=HEAVY), *argv], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.rsplit("IMPORTED ", 1)[1].replace("'", '"'))


def _store_with_jobs(root: Path) -> RunStore:
    store = RunStore(root)
    store.create("quickstart-20260101-120000-aaaaaa", "", ["prepare"], backend="local")
    run = store.create("quickstart-20260101-120001-bbbbbb", "", ["prepare"], backend="local")
    run.set_state(status="failed", started_at="2026-01-01T12:00:02+00:00", ended_at="2026-01-01T12:00:03+00:00")
    store.create("squad-20260101-120002-cccccc", "", ["prepare"], backend="local")
    return store


def test_help_list_explain_and_validate_do_not_import_torch_transformers_ray_or_pyarrow(tmp_path):
    _store_with_jobs(tmp_path)
    assert _imported_heavy("--help") == []
    assert _imported_heavy("list", "--root", str(tmp_path)) == []
    assert _imported_heavy("explain", "distill.prediction") == []
    assert _imported_heavy("validate", "configs/quickstart.yaml") == []


def test_list_json_and_filters(tmp_path, capsys):
    store = _store_with_jobs(tmp_path)
    assert main(["list", "--json", "--root", str(tmp_path)]) == 0
    jobs = json.loads(capsys.readouterr().out)
    assert [job["job_id"] for job in jobs] == [run.job_id for run in store.list()]
    failed = next(job for job in jobs if job["job_id"] == "quickstart-20260101-120001-bbbbbb")
    assert failed == {"job_id": "quickstart-20260101-120001-bbbbbb", "name": "quickstart", "status": "failed",
                      "created_at": failed["created_at"], "started_at": "2026-01-01T12:00:02+00:00",
                      "ended_at": "2026-01-01T12:00:03+00:00", "run_dir": str(tmp_path.resolve() / failed["job_id"])}

    assert main(["list", "--json", "--root", str(tmp_path), "--status", "pending", "--name", "quickstart"]) == 0
    assert [job["job_id"] for job in json.loads(capsys.readouterr().out)] == ["quickstart-20260101-120000-aaaaaa"]
    assert main(["list", "--json", "--root", str(tmp_path), "--name", "nope"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["list", "--root", str(tmp_path), "--status", "failed"]) == 0
    table = capsys.readouterr().out
    assert "quickstart-20260101-120001-bbbbbb" in table and "squad" not in table


def test_a_job_on_an_unreachable_cluster_lists_as_unknown(tmp_path, capsys):
    store = _store_with_jobs(tmp_path)
    # nothing listens on port 1: the connection is refused at once
    store.create("remote-20260101-120003-dddddd", "", ["prepare"], backend="ray", address="http://127.0.0.1:1",
                 submission_id="remote-20260101-120003-dddddd")
    assert main(["list", "--root", str(tmp_path)]) == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["remote-20260101-120003-dddddd"] == "unknown"
    assert rows["quickstart-20260101-120001-bbbbbb"] == "failed"

    assert main(["status", "remote-20260101-120003-dddddd", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "unknown" in out and "cannot reach the Ray cluster at http://127.0.0.1:1" in out


def test_explain_an_unknown_field_suggests_the_nearest(capsys):
    assert main(["explain", "distill.predicton.temperatur"]) == 2
    error = capsys.readouterr().err
    assert "no spec field starts with 'distill.predicton.temperatur'" in error
    assert "did you mean distill.prediction.temperature" in error
    assert main(["explain", "nonsense.field"]) == 2
    error = capsys.readouterr().err
    assert "no spec field starts with 'nonsense.field'; did you mean " in error
    assert main(["explain", "zz"]) == 2
    assert "run `python -m jobs explain` for all of them" in capsys.readouterr().err


def test_submit_name_is_validated_as_the_specs_own_before_anything_is_created(tmp_path, capsys):
    root = tmp_path / "runs"
    assert main(["submit", "configs/quickstart.yaml", "--name", "my run", "--root", str(root)]) == 2
    assert "name: string should match pattern" in capsys.readouterr().err
    assert not root.exists()
    assert main(["submit", "configs/quickstart.yaml", "--name", "renamed", "--root", str(root), "--dry-run"]) == 0
    assert "renamed" in capsys.readouterr().out


def _cache_entry(store: RunStore, stage: str, key: str, size: int) -> Path:
    entry = store.cache_entry(stage, key)
    entry.path.mkdir(parents=True)
    (entry.path / "data.bin").write_bytes(b"x" * size)
    return entry.path


def test_gc_frees_unreferenced_entries_and_keeps_referenced_and_locked_ones(tmp_path, capsys):
    store = RunStore(tmp_path)
    used = _cache_entry(store, "label", "used", 1000)
    unused = _cache_entry(store, "label", "unused", 3_000_000)
    computing = _cache_entry(store, "augment", "computing", 500)
    run = store.create("job-20260101-120000-aaaaaa", "", ["label"], backend="local")
    run.update_stage("label", status="completed", output=str(used))

    assert main(["gc", "--root", str(tmp_path), "--dry-run"]) == 0
    assert "would free 3.0 MB: 2 cache entries no job uses" in capsys.readouterr().out
    assert unused.exists()
    with store.cache_entry("augment", "computing").lock():   # a job computing it: gc must wait its turn
        assert main(["gc", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "freed 3.0 MB: 1 cache entry no job uses; 1 in use by a running job kept" in out
    assert "label/unused" in out
    assert not unused.exists() and used.exists() and computing.exists()

    assert main(["gc", "--root", str(tmp_path), "--older-than", "1"]) == 0   # written just now: too young
    assert "freed 0.0 MB: 0 cache entries" in capsys.readouterr().out
    assert computing.exists()
    assert main(["gc", "--root", str(tmp_path)]) == 0
    assert not computing.exists() and used.exists()


def test_a_detached_job_that_ends_before_it_starts_is_not_left_pending(tmp_path):
    """Its spec no longer loads (its data moved): the job records why and fails; a process that died without a word
    leaves a pending job that reads as interrupted, so it can be resumed."""
    from jobs.api import effective_state, spawn

    store = RunStore(tmp_path)
    moved = store.create("moved-20260101-120000-aaaaaa", "data:\n  train: /nowhere/train.json\n", ["prepare"])
    pid = spawn(moved, store)
    wait_for(lambda: not pid_alive(pid), timeout=60, what="the detached job to end")
    state = effective_state(moved)
    assert state.status == "failed" and "/nowhere/train.json" in state.error

    died = store.create("died-20260101-120000-bbbbbb", "", ["prepare"])
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    died.set_state(pid=int(ended.stdout))
    assert effective_state(died).status == "interrupted"


def test_rm_deletes_a_finished_job_and_refuses_a_running_one(tmp_path, capsys):
    store = _store_with_jobs(tmp_path)
    finished = store.get("quickstart-20260101-120001-bbbbbb")
    running = store.get("squad-20260101-120002-cccccc")
    running.set_state(status="running", pid=os.getpid())
    assert main(["rm", finished.job_id, "--root", str(tmp_path)]) == 0
    assert "removed quickstart-20260101-120001-bbbbbb: " in capsys.readouterr().out
    assert not finished.path.exists()
    assert main(["rm", running.job_id, "--root", str(tmp_path)]) == 2
    assert "is running; cancel it first" in capsys.readouterr().err
    assert running.path.exists()
    assert main(["rm", "nonsense", "--root", str(tmp_path)]) == 3


def test_python_api_reads_a_jobs_status_and_outputs(tmp_path):
    from jobs.api import get_job
    from jobs.store import JobNotFound

    store = _store_with_jobs(tmp_path)
    run = store.get("quickstart-20260101-120001-bbbbbb")
    run.update_stage("prepare", status="completed", output=str(tmp_path / ".cache" / "prepare" / "k"))
    job = get_job(run.job_id, root=tmp_path)
    assert (job.status, job.run_dir, job.error) == ("failed", run.path, None)
    assert job.outputs == {"prepare": tmp_path / ".cache" / "prepare" / "k"}
    assert job.report == run.path / "report" / "report.md"
    dead = store.get("squad-20260101-120002-cccccc")
    dead.set_state(status="running", pid=2**22 + 12345)   # no such process
    assert get_job(dead.job_id, root=tmp_path).status == "interrupted"
    with pytest.raises(JobNotFound):
        get_job("nonsense", root=tmp_path)

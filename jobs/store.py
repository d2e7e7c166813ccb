"""The run store: one folder per job, and a stage cache shared by every job under the same root.

    ROOT/
      <job-id>/                 spec.yaml (resolved), state.json, logs/job.log, report/, export/,
                                artifacts/<stage> -> the stage's cache entry
      .cache/<stage>/<key>/     a stage's output; complete only once it holds COMPLETE.json
      .cache/<stage>/<key>.lock held while a job computes that entry

`python -m jobs rm ID` deletes a run folder; `python -m jobs gc` deletes the cache entries no job's state refers to.

Every state write is atomic (temp file, fsync, rename), so a crash or a full disk leaves the previous state
intact, and a cache entry counts as complete only once its marker is renamed into place, which a stage does
after all its files are written. Locks are `flock`s: the kernel drops them when a holder dies, even by SIGKILL.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from pydantic import BaseModel, ConfigDict

from core.locks import file_lock

COMPLETE_MARKER = "COMPLETE.json"


class JobNotFound(LookupError):
    pass


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` so that readers see the old content or the new, never a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


StageStatus = Literal["pending", "running", "completed", "cached", "skipped", "failed", "cancelled"]
#: `interrupted` (a local job whose process died) and `unknown` (a cluster that does not answer) are never stored:
#: `jobs.api.effective_state` says them to readers.
JobStatus = Literal["pending", "running", "succeeded", "failed", "cancelled", "interrupted", "unknown"]


class _State(BaseModel):
    # every assignment is checked, so a misspelt field or a wrong type fails where it is written
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def set(self, **fields: Any) -> None:
        for name, value in fields.items():
            setattr(self, name, value)


class StageState(_State):
    status: StageStatus = "pending"
    started_at: str | None = None
    ended_at: str | None = None
    output: str | None = None          # the stage's folder: its cache entry, or under the run folder
    cache_key: str | None = None
    summary: dict[str, Any] | None = None
    error: str | None = None


class RunState(_State):
    """A job's state.json: written by the runner and the command line (under a lock), read by everything else."""

    job_id: str
    name: str
    status: JobStatus = "pending"
    created_at: str
    started_at: str | None = None
    ended_at: str | None = None
    resumed_at: str | None = None
    pid: int | None = None                       # the local process running the job
    error: str | None = None
    backend: Literal["local", "ray"] = "local"
    address: str | None = None                   # backend ray: the cluster's Ray Jobs address ...
    submission_id: str | None = None             # ... and the job's id there
    cluster_error: str | None = None             # set by effective_state when the cluster does not answer
    stages: dict[str, StageState]                # in the runner's order


@dataclass(frozen=True)
class CacheEntry:
    """One stage output, addressed by a hash of the stage's configuration and of its inputs' keys."""

    path: Path

    @property
    def complete(self) -> bool:
        return (self.path / COMPLETE_MARKER).exists()

    def summary(self) -> dict[str, Any]:
        return json.loads((self.path / COMPLETE_MARKER).read_text())["summary"]

    def mark_complete(self, summary: dict[str, Any]) -> None:
        write_atomic(self.path / COMPLETE_MARKER, json.dumps({"completed_at": now(), "summary": summary}, indent=2))

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Held while computing: a second job asking for the same entry waits, then finds it complete."""
        with file_lock(self.lock_path):
            yield

    def locked(self) -> bool:
        """Whether some job holds the lock now (computing the entry, or about to reuse it)."""
        if not self.lock_path.exists():
            return False
        with file_lock(self.lock_path, wait=False) as free:
            return not free


@dataclass(frozen=True)
class Run:
    path: Path

    @property
    def job_id(self) -> str:
        return self.path.name

    @property
    def spec_path(self) -> Path:
        return self.path / "spec.yaml"

    @property
    def state_path(self) -> Path:
        return self.path / "state.json"

    @property
    def log_path(self) -> Path:
        return self.path / "logs" / "job.log"

    def read_state(self) -> RunState:
        return RunState.model_validate_json(self.state_path.read_text())

    def update_state(self, change: Callable[[RunState], None]) -> RunState:
        """Read, change and atomically write the state under a lock (the CLI and the job may both write)."""
        with file_lock(self.path / ".state.lock"):
            state = self.read_state()
            change(state)
            write_atomic(self.state_path, state.model_dump_json(indent=2))
            return state

    def set_state(self, **fields: Any) -> RunState:
        """Set fields of the job's state."""
        return self.update_state(lambda state: state.set(**fields))

    def update_stage(self, stage: str, **fields: Any) -> None:
        self.update_state(lambda state: state.stages[stage].set(**fields))


class RunStore:
    def __init__(self, root: Path):
        self.root = Path(root).resolve()

    def new_job_id(self, name: str) -> str:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        return f"{name}-{stamp}-{secrets.token_hex(3)}"

    def create(self, job_id: str, spec_yaml: str, stage_names: list[str], backend: Literal["local", "ray"] = "local",
               address: str | None = None, submission_id: str | None = None) -> Run:
        """Make the run folder with its spec and an all-pending state; the folder appears fully formed."""
        final = self.root / job_id
        if final.exists():
            raise FileExistsError(f"job {job_id} already exists in {self.root}")
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{job_id}."))
        (staging / "logs").mkdir()
        write_atomic(staging / "spec.yaml", spec_yaml)
        state = RunState(job_id=job_id, name=job_id.rsplit("-", 3)[0], created_at=now(), backend=backend,
                         address=address, submission_id=submission_id,
                         stages={name: StageState() for name in stage_names})
        write_atomic(staging / "state.json", state.model_dump_json(indent=2))
        os.replace(staging, final)
        return Run(final)

    def get(self, job_id: str) -> Run:
        path = self.root / job_id
        if not (path / "state.json").exists():
            known = ", ".join(r.job_id for r in self.list()[-5:]) or "none"
            raise JobNotFound(f"no job {job_id!r} in {self.root} (latest: {known}); pass --root if it lives elsewhere")
        return Run(path)

    def list(self) -> list[Run]:
        if not self.root.exists():
            return []
        runs = [Run(p) for p in self.root.iterdir() if not p.name.startswith(".") and (p / "state.json").exists()]
        return sorted(runs, key=lambda r: r.read_state().created_at)

    def cache_entry(self, stage: str, key: str) -> CacheEntry:
        return CacheEntry(self.root / ".cache" / stage / key)

    def cache_entries(self) -> list[CacheEntry]:
        """Every stage output in the cache, complete or not."""
        cache = self.root / ".cache"
        if not cache.is_dir():
            return []
        return [CacheEntry(path) for stage in sorted(cache.iterdir()) if stage.is_dir()
                for path in sorted(stage.iterdir()) if path.is_dir()]

    def referenced_entries(self) -> set[Path]:
        """The cache entries some job's state names as a stage output (resolved paths)."""
        referenced = set()
        for run in self.list():
            for stage in run.read_state().stages.values():
                if stage.output:
                    referenced.add(Path(stage.output).resolve())
        return referenced


def folder_bytes(path: Path) -> int:
    """Bytes of the files under `path`, links not followed."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total

"""The Python API beside `python -m jobs`: submit a spec (a YAML path or a dict), read a job's status and outputs.

    from jobs.api import get_job, submit

    job = submit("configs/quickstart.yaml", overrides=["seed=3"])       # runs here; returns when it ends
    print(job.status, job.outputs["distill_prediction"], job.report)
    job = submit({"task": "qa", ...}, root="runs", detach=True)          # a background process
    print(get_job(job.job_id, root="runs").status)

The CLI's commands are this module plus printing; a job submitted either way is the same job.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.spec import JobSpec, SpecError, dump_spec, load_spec, parse_spec
from jobs.stages import STAGE_NAMES
from jobs.store import Run, RunState, RunStore

#: Statuses of a job that has not ended.
ACTIVE = ("pending", "running")


@dataclass(frozen=True)
class Job:
    """A job as its state says now."""

    job_id: str
    status: str                  # pending, running, succeeded, failed, cancelled, interrupted, unknown
    run_dir: Path
    outputs: dict[str, Path]     # each stage that has an output folder (completed, cached or running) -> the folder
    error: str | None

    @property
    def report(self) -> Path:
        return self.run_dir / "report" / "report.md"


class PreflightError(SpecError):
    """The job's models and data do not fit together (`jobs.preflight.check_job`); nothing was created."""


def default_root(spec: JobSpec | None = None) -> Path:
    """$DISTILLERY_ROOT, else the spec's output.root, else ./runs."""
    return Path(os.environ.get("DISTILLERY_ROOT") or (spec.output.root if spec else "runs"))


def load(spec: str | Path | dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> JobSpec:
    """A spec from a YAML file (relative paths from its folder, `overrides` as `--set`) or from a dict (relative
    paths from the working directory)."""
    if isinstance(spec, dict):
        if overrides:
            raise ValueError("overrides apply to a spec file; change the dict instead")
        return parse_spec(spec, Path.cwd(), "spec")
    return load_spec(spec, overrides=overrides)


def submit(spec: str | Path | dict[str, Any], *, root: str | Path | None = None, detach: bool = False,
           overrides: list[str] | tuple[str, ...] = (), check_models: bool = True, progress: bool | None = None) -> Job:
    """Create a job from `spec` in the run store at `root` and run it: here, returning when it ends, or in a
    background process (`detach`), returning at once.

    Raises:
        SpecError: the spec is invalid; PreflightError: its models and data do not fit (`check_models`).
    """
    job_spec = load(spec, overrides)
    if check_models:
        from jobs.preflight import check_job

        problems = check_job(job_spec)
        if problems:
            raise PreflightError(problems, str(spec) if not isinstance(spec, dict) else "spec")
    store = RunStore(Path(root) if root is not None else default_root(job_spec))
    run = store.create(store.new_job_id(job_spec.name), dump_spec(job_spec), STAGE_NAMES)
    if detach:
        spawn(run, store)
    else:
        from jobs.runner import run_job

        run_job(run, store, progress)
    return get_job(run.job_id, store.root)


def get_job(job_id: str, root: str | Path | None = None) -> Job:
    """The job `job_id` of the run store at `root`; raises `jobs.store.JobNotFound`."""
    run = RunStore(Path(root) if root is not None else default_root()).get(job_id)
    state = effective_state(run)
    outputs = {name: Path(stage.output) for name, stage in state.stages.items() if stage.output}
    return Job(job_id=run.job_id, status=state.status, run_dir=run.path, outputs=outputs, error=state.error)


def spawn(run: Run, store: RunStore) -> int:
    """Start `python -m jobs run` for an existing run as a detached process in its own session; its pid."""
    stdout = open(run.path / "logs" / "stdout.log", "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "jobs", "run", str(run.spec_path), "--job-id", run.job_id, "--root", str(store.root)],
        stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    run.set_state(pid=process.pid)
    return process.pid


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped by its parent) still answers kill(0)
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return True


def effective_state(run: Run) -> RunState:
    """The stored state, with the status a reader should see: a local job whose process died is 'interrupted'."""
    state = run.read_state()
    if state.backend == "ray":
        from jobs import cluster

        try:
            state.status = cluster.status(state.address, state.submission_id)
        except OSError as error:  # ConnectionError, timeouts: one cluster that is down must not hide the others
            state.set(status="unknown", cluster_error=f"cannot reach the Ray cluster at {state.address}: {error}")
        except Exception as error:  # its error answers (404 for a job a restarted head forgot, a refused token)
            state.set(status="unknown", cluster_error=f"the Ray cluster at {state.address} gave no status for Ray job "
                                                      f"{state.submission_id}: {type(error).__name__}: {error}")
    elif state.status in ACTIVE and state.pid is not None and not pid_alive(state.pid):
        state.status = "interrupted"  # killed, or (still pending) a detached process that ended before starting
    return state

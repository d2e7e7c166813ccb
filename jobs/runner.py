"""Runs a job's stages in order inside its run folder: cache lookups, state updates, logs, cancellation.

`run_job` is the one entry point, used alike by `submit` (in-process), by a detached local job, by `resume`
and by a Ray Jobs entrypoint on a cluster. A stage's output is a cache entry keyed by a hash of the stage's
part of the spec and of its inputs' keys; an entry that is already complete is reused, one left half-done by a
crash is handed back to the stage, which continues where it stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Iterator, Literal, TextIO

from pydantic import BaseModel

from core.devices import choose_precision
from core.progress import LOG_FORMATTER, PROGRESS_LOGGER, use_console
from core.ray_runtime import ensure_ray, resolve_on_cluster
from core.resources import asked_per_worker
from jobs.spec import JobSpec, load_spec
from jobs.stages import STAGE_VERSION, STAGES, Stage, StageContext
from jobs.store import Run, RunState, RunStore, now

log = logging.getLogger("distillery")
#: Lines libraries write to stderr, kept in the job log at debug level.
LIBRARY_LOGGER = "distillery.library"


class JobCancelled(Exception):
    pass


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def stage_key(stage: Stage, spec: JobSpec, input_keys: dict[str, str]) -> str:
    """Content hash of what decides a stage's output: its part of the spec and the keys of its inputs."""
    payload = {"stage": stage.name, "version": STAGE_VERSION, "config": _jsonable(stage.config(spec)),
               "inputs": {name: input_keys[name] for name in stage.inputs if name in input_keys}}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return digest[:16]


def _attach_log_handlers(run: Run, bars: bool, console: TextIO) -> list[logging.Handler]:
    """Log to the run's job.log and to the console (the real stderr: a terminal, a detached job's stdout.log, or
    Ray Jobs' log); where the console draws progress bars, the progress lines go to job.log alone. Library output
    is job.log's alone, at debug level."""
    handlers = [logging.FileHandler(run.log_path), logging.StreamHandler(console)]
    handlers[1].setLevel(logging.INFO)
    if bars:
        handlers[1].addFilter(lambda record: record.name != PROGRESS_LOGGER)
    for handler in handlers:
        handler.setFormatter(LOG_FORMATTER)
        log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    return handlers


@contextlib.contextmanager
def _library_output_to_log() -> Iterator[TextIO]:
    """Send everything written to stderr to the job log at debug level; yield a stream on the real stderr, the
    console, for the job's own lines and bars (`core.progress.console`).

    Libraries print to stderr in ways Python cannot redirect one by one: Ray's C++ core writes its notices (token
    authentication, actor warnings) straight to file descriptor 2, Ray's and transformers' loggers print to
    `sys.stderr`. So descriptor 2 becomes a pipe, read line by line into the log. The reader thread outlives the
    job on purpose: a process Ray started may still hold the pipe, and a closed pipe would kill it with SIGPIPE.
    """
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    library = logging.getLogger(LIBRARY_LOGGER)

    def forward() -> None:
        with open(read_end, "rb") as pipe:
            for raw in pipe:
                line = raw.decode("utf-8", errors="replace").rstrip()
                if line:
                    library.debug("%s", line)

    threading.Thread(target=forward, name="library-stderr", daemon=True).start()
    console = open(real, "w", buffering=1, encoding="utf-8", errors="replace")
    try:
        with use_console(console):
            yield console
    finally:
        sys.stderr.flush()
        console.flush()
        os.dup2(real, 2)
        console.close()


def run_job(run: Run, store: RunStore, progress: bool | None = None) -> str:
    """Run (or resume) every stage of `run`; return the final job status."""
    progress = sys.stderr.isatty() if progress is None else progress
    # the stages' progress is ours (core.progress); the weight-loading bars of transformers would only add noise
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    with _library_output_to_log() as console:
        return _run_stages(run, store, progress, console)


def _run_stages(run: Run, store: RunStore, progress: bool, console: TextIO) -> str:
    handlers = _attach_log_handlers(run, progress, console)
    signals: list[int] = []

    def cancel(signum: int, frame: Any) -> None:
        signals.append(signum)
        raise JobCancelled(f"received signal {signum}")

    previous_handler = signal.signal(signal.SIGTERM, cancel)
    current: str | None = None
    try:
        spec = load_spec(run.spec_path)
        run.set_state(status="running", pid=os.getpid(), started_at=now(), error=None)
        log.info("job %s: running in %s", run.job_id, run.path)
        if any(s.uses_ray and s.enabled(spec) for s in STAGES):
            import ray

            ensure_ray()
            # Ray's start installs its own SIGTERM handler, which ends the process at once: ours again, so that a
            # cancel (jobs cancel, Ray Jobs' stop) is recorded in the job's state
            signal.signal(signal.SIGTERM, cancel)
            if not ray.cluster_resources().get("GPU"):
                # every stage computes on CPU: half precision asked for is refused now, not after hours of work
                choose_precision("cpu", None, spec.resources.precision)
            if any(asked_per_worker(spec.resources, "gpus").values()):
                # GPUs asked for: checked against the cluster before any stage runs
                resolve_on_cluster(spec.resources, masked_lm=augments_with_masked_lm(spec))
        keys: dict[str, str] = {}
        outputs: dict[str, Path] = {}
        for stage in STAGES:
            current = stage.name
            if not stage.enabled(spec):
                run.update_stage(stage.name, status="skipped")
                continue
            _run_stage(stage, spec, run, store, keys, outputs, progress)
        run.set_state(status="succeeded", ended_at=now())
        log.info("job %s: succeeded", run.job_id)
        return "succeeded"
    except (JobCancelled, KeyboardInterrupt) as exc:
        _fail(run, current, "cancelled", f"cancelled: {exc}")
        return "cancelled"
    except Exception as exc:
        if signals:  # the signal came while Ray's C code ran, which hands our exception back wrapped in another
            _fail(run, current, "cancelled", f"cancelled: received signal {signals[0]}")
            return "cancelled"
        log.error("job %s: stage %s failed:\n%s", run.job_id, current, traceback.format_exc())
        _fail(run, current, "failed", f"{type(exc).__name__}: {exc}")
        return "failed"
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()


def _fail(run: Run, stage: str | None, status: Literal["failed", "cancelled"], message: str) -> None:
    def change(state: RunState) -> None:
        state.set(status=status, ended_at=now(), error=message)
        if stage is not None and state.stages[stage].status == "running":
            state.stages[stage].set(status=status, ended_at=now(), error=message)
    run.update_state(change)
    log.info("job %s: %s", run.job_id, message)


def _run_stage(stage: Stage, spec: JobSpec, run: Run, store: RunStore, keys: dict[str, str],
               outputs: dict[str, Path], progress: bool) -> None:
    inputs = {name: outputs[name] for name in stage.inputs if name in outputs}
    key = stage_key(stage, spec, keys)
    keys[stage.name] = key
    if not stage.cached:
        out_dir = run.path / stage.name
        _execute(stage, spec, run, out_dir, inputs, key, progress)
        outputs[stage.name] = out_dir
        return
    entry = store.cache_entry(stage.name, key)
    outputs[stage.name] = entry.path
    _link_artifact(run, stage.name, entry.path)
    if not entry.complete and entry.locked():
        log.info("stage %s: another job is computing %s; waiting for it", stage.name, entry.path)
    with entry.lock():
        if entry.complete:
            log.info("stage %s: reusing cached output %s", stage.name, entry.path)
            run.update_stage(stage.name, status="cached", output=str(entry.path), cache_key=key,
                             summary=entry.summary(), started_at=now(), ended_at=now(), error=None)
            return
        summary = _execute(stage, spec, run, entry.path, inputs, key, progress)
        entry.mark_complete(summary)


def _link_artifact(run: Run, stage: str, target: Path) -> None:
    """runs/<job>/artifacts/<stage> points at the stage's cache entry, so a job's outputs sit in its folder."""
    link = run.path / "artifacts" / stage
    link.parent.mkdir(exist_ok=True)
    temporary = link.with_name(f".{stage}.link")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(target, target_is_directory=True)
    os.replace(temporary, link)


def augments_with_masked_lm(spec: JobSpec) -> bool:
    """Whether the augmentation runs a masked LM (the only augmentation work a GPU can do)."""
    return spec.augment.enabled and spec.augment.mlm_model is not None


def _execute(stage: Stage, spec: JobSpec, run: Run, out_dir: Path, inputs: dict[str, Path], key: str,
             progress: bool) -> dict[str, Any]:
    if stage.uses_ray:
        # keys were made from the spec as written; the stage gets the workers and GPUs the cluster decides
        resolved = resolve_on_cluster(spec.resources, masked_lm=augments_with_masked_lm(spec))
        spec = spec.model_copy(update={"resources": resolved})
    resumed = out_dir.exists() and any(out_dir.iterdir())
    out_dir.mkdir(parents=True, exist_ok=True)
    run.update_stage(stage.name, status="running", output=str(out_dir), cache_key=key, started_at=now(),
                     ended_at=None, error=None)
    log.info("stage %s: %s%s -> %s", stage.name, stage.description, " (resuming)" if resumed else "", out_dir)
    started = time.monotonic()
    summary = stage.run(StageContext(spec=spec, out_dir=out_dir, inputs=inputs, run_dir=run.path,
                                     progress=progress))
    seconds = round(time.monotonic() - started, 2)
    summary = {**summary, "seconds": seconds}
    run.update_stage(stage.name, status="completed", ended_at=now(), summary=summary)
    log.info("stage %s: completed in %.1f s", stage.name, seconds)
    return summary

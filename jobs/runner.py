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
from typing import Any, Iterator, TextIO, get_args

from pydantic import BaseModel

from jobs.progress import LOG_FORMATTER, PROGRESS_LOGGER, use_console
from jobs.spec import JobSpec, ParallelStage, ResourcesSpec, StageResources, load_spec
from jobs.stages import STAGE_VERSION, STAGES, Stage, StageContext
from jobs.store import Run, RunStore, now

log = logging.getLogger("distillery")
#: Lines libraries write to stderr, kept in the job log at debug level.
LIBRARY_LOGGER = "distillery.library"


class JobCancelled(Exception):
    pass


class ClusterResourcesError(RuntimeError):
    """The job asks for resources (GPUs) that the Ray cluster it runs on does not have."""


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
    console, for the job's own lines and bars (`jobs.progress.console`).

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


def _raise_cancelled(signum: int, frame: Any) -> None:
    raise JobCancelled(f"received signal {signum}")


def run_job(run: Run, store: RunStore, progress: bool | None = None) -> str:
    """Run (or resume) every stage of `run`; return the final job status."""
    progress = sys.stderr.isatty() if progress is None else progress
    # the stages' progress is ours (jobs.progress); the weight-loading bars of transformers would only add noise
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    with _library_output_to_log() as console:
        return _run_stages(run, store, progress, console)


def _run_stages(run: Run, store: RunStore, progress: bool, console: TextIO) -> str:
    handlers = _attach_log_handlers(run, progress, console)
    previous_handler = signal.signal(signal.SIGTERM, _raise_cancelled)
    current: str | None = None
    try:
        spec = load_spec(run.spec_path)
        run.update_state(lambda s: s.update(status="running", pid=os.getpid(), started_at=now(), error=None))
        log.info("job %s: running in %s", run.job_id, run.path)
        if any(asked_gpus(spec.resources).values()) and any(s.uses_ray and s.enabled(spec) for s in STAGES):
            _ensure_ray(progress)  # GPUs asked for: checked against the cluster before any stage runs
            resolve_resources(spec.resources, _cluster_resources(), masked_lm=augments_with_masked_lm(spec))
        keys: dict[str, str] = {}
        outputs: dict[str, Path] = {}
        for stage in STAGES:
            current = stage.name
            if not stage.enabled(spec):
                run.update_stage(stage.name, status="skipped")
                continue
            _run_stage(stage, spec, run, store, keys, outputs, progress)
        run.update_state(lambda s: s.update(status="succeeded", ended_at=now()))
        log.info("job %s: succeeded", run.job_id)
        return "succeeded"
    except (JobCancelled, KeyboardInterrupt) as exc:
        _fail(run, current, "cancelled", f"cancelled: {exc}")
        return "cancelled"
    except Exception as exc:
        log.error("job %s: stage %s failed:\n%s", run.job_id, current, traceback.format_exc())
        _fail(run, current, "failed", f"{type(exc).__name__}: {exc}")
        return "failed"
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()


def _fail(run: Run, stage: str | None, status: str, message: str) -> None:
    def change(state: dict[str, Any]) -> None:
        state.update(status=status, ended_at=now(), error=message)
        if stage is not None and state["stages"][stage]["status"] == "running":
            state["stages"][stage].update(status=status, ended_at=now(), error=message)
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


def _ensure_ray(progress: bool) -> None:
    """Start Ray in this process (the embedded default), or join the cluster when run as a Ray Job.

    `address="local"` keeps a job from silently attaching to some other cluster started on this machine.
    """
    import ray

    if ray.is_initialized():
        return
    ray.init(address=os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = progress


def _cluster_resources() -> dict[str, float]:
    import ray

    return ray.cluster_resources()


def asked_gpus(resources: ResourcesSpec) -> dict[str, float | None]:
    """The GPUs per worker the spec sets, shared and per stage, by field path."""
    asked = {"resources.gpus_per_worker": resources.gpus_per_worker}
    for stage in get_args(ParallelStage):
        asked[f"resources.{stage}.gpus_per_worker"] = getattr(resources, stage).gpus_per_worker
    return asked


def resolve_resources(resources: ResourcesSpec, cluster: dict[str, float], *, masked_lm: bool) -> ResourcesSpec:
    """`resources` with every stage's GPUs and workers decided from the Ray cluster's resources, not from this
    process: on a cluster the job's driver runs on the head node, which often has no GPU while the workers have them.

    GPUs per worker: an unset shared value becomes 1 when the cluster has a whole GPU, else 0, and a stage's unset
    value takes it; but augmentation computes on a GPU only for its masked LM (`masked_lm`), so without one it
    takes 0 and leaves the GPUs to the other stages.
    Workers: a stage's own value, else the shared one, else the stage's default: augmentation one actor per GPU when
    it computes on GPUs, else one per CPU but one (left to Ray Data's tasks and the driver; every actor taking a
    CPU starves them); labelling one actor per GPU (one actor on CPUs); training 1, since the batch is global and
    more workers split it (resources.train.workers is a choice about the batch, trainer.thin_worker_batch).

    Raises:
        ClusterResourcesError: more GPUs per worker than the cluster has, named with what the cluster has.
    """
    gpus_in_cluster = cluster.get("GPU", 0.0)
    for field, asked in asked_gpus(resources).items():
        if asked is not None and asked > gpus_in_cluster:
            has = ", ".join(f"{cluster.get(name, 0):g} {name}" for name in ("CPU", "GPU"))
            raise ClusterResourcesError(
                f"{field}: {asked:g} GPU per worker, but the Ray cluster has {has}; set gpus_per_worker: 0 to run "
                "on CPUs, or run on a cluster with GPU nodes")
    shared_gpus = resources.gpus_per_worker
    if shared_gpus is None:
        shared_gpus = 1.0 if gpus_in_cluster >= 1 else 0.0
    update: dict[str, Any] = {"gpus_per_worker": shared_gpus}
    for stage in get_args(ParallelStage):
        own: StageResources = getattr(resources, stage)
        gpus = own.gpus_per_worker
        if gpus is None:
            gpus = 0.0 if stage == "augment" and not masked_lm else shared_gpus
        workers = own.workers or resources.workers
        if workers is None:
            cpus = own.cpus_per_worker or resources.cpus_per_worker
            workers = _default_workers(stage, gpus, cpus, cluster)
        update[stage] = own.model_copy(update={"gpus_per_worker": gpus, "workers": workers})
    return resources.model_copy(update=update)


def augments_with_masked_lm(spec: JobSpec) -> bool:
    """Whether the augmentation runs a masked LM (the only augmentation work a GPU can do)."""
    return spec.augment.enabled and spec.augment.mlm_model is not None


def _default_workers(stage: ParallelStage, gpus: float, cpus: float, cluster: dict[str, float]) -> int:
    if stage == "train":
        return 1
    if gpus > 0:
        return max(1, int(cluster.get("GPU", 0.0) // gpus))
    if stage == "augment":
        return max(1, int((cluster.get("CPU", 1.0) - 1) // cpus))
    return 1


def _execute(stage: Stage, spec: JobSpec, run: Run, out_dir: Path, inputs: dict[str, Path], key: str,
             progress: bool) -> dict[str, Any]:
    if stage.uses_ray:
        _ensure_ray(progress)
        # keys were made from the spec as written; the stage gets the GPUs the cluster decides
        spec = spec.model_copy(update={"resources": resolve_resources(spec.resources, _cluster_resources(),
                                                                      masked_lm=augments_with_masked_lm(spec))})
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

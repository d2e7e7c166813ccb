"""Running a job on a Ray cluster through Ray Jobs: submit, status, logs, stop.

The cluster runs the same entrypoint a local job does, `python -m jobs run spec.yaml --job-id ID`, with our four
packages shipped as `py_modules` and the resolved spec in the working dir; the cluster's Python environment
provides the dependencies. Paths in the spec must be valid on the cluster (a shared filesystem, or absolute
paths that exist there).
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

import augment
import core
import distill
import jobs
from jobs.store import Run

AGENT_WAIT_SECONDS = 120

# Ray Jobs states mapped onto ours, so `status` reads the same for local and cluster jobs
_STATUS = {"PENDING": "pending", "RUNNING": "running", "SUCCEEDED": "succeeded", "FAILED": "failed",
           "STOPPED": "cancelled"}


def _client(address: str):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address)


def submit(address: str, run: Run, root: Path, submission_id: str) -> str:
    """Submit `run` to the cluster at `address`; `python -m jobs run` there continues the run's stages."""
    staging = Path(tempfile.mkdtemp(prefix="distillery-submit-"))
    try:
        shutil.copy(run.spec_path, staging / "spec.yaml")
        packages = [str(Path(module.__file__).parent) for module in (core, augment, distill, jobs)]
        entrypoint = (f"python -m jobs run spec.yaml --job-id {shlex.quote(run.job_id)} "
                      f"--root {shlex.quote(str(root))}")
        # no env_vars: the tokenizers' own threads stay on, as in a local job (labelling actors featurize with them)
        runtime_env = {"working_dir": str(staging), "py_modules": packages}
        client = _client(address)
        deadline = time.monotonic() + AGENT_WAIT_SECONDS
        while True:
            try:
                return client.submit_job(entrypoint=entrypoint, submission_id=submission_id,
                                         runtime_env=runtime_env)
            except RuntimeError as error:
                # a head that has just started answers before its job agent has registered
                if "No available agent" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(2.0)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def status(address: str, submission_id: str) -> str:
    return _STATUS.get(str(_client(address).get_job_status(submission_id).value), "unknown")


def logs(address: str, submission_id: str) -> str:
    return _client(address).get_job_logs(submission_id)


def follow_logs(address: str, submission_id: str) -> Iterator[str]:
    import asyncio

    client = _client(address)
    stream = client.tail_job_logs(submission_id)
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(stream.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.close()


def stop(address: str, submission_id: str) -> bool:
    return _client(address).stop_job(submission_id)

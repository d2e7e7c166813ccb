"""A real Ray head on 127.0.0.1 with its dashboard: a job submitted through Ray Jobs runs, logs and finishes."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from core.resources import ClusterResourcesError, ResourcesSpec, StageResources, resolve_resources
from tests.jobutil import job_state, jobs_cli, tiny_qa_spec, wait_for, write_spec


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """`ray start --head --block` (2 CPUs, no GPU) in its own process group, shared by this module's tests;
    stopping the group stops only this cluster.

    Ray 2.60 clusters require a token; the head and every client (this process and the CLI subprocesses
    inheriting its environment) share one through RAY_AUTH_TOKEN, as users of a real cluster would.
    """
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("RAY_AUTH_MODE", "token")
        monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
        yield from _ray_head(tmp_path_factory.mktemp("ray-head"))


def _ray_head(tmp_path: Path) -> Iterator[str]:
    ray = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    gcs_port, dashboard_port = _free_port(), _free_port()
    # the test session's own Ray instance already holds the default agent ports
    agent_ports = [f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
                   f"--runtime-env-agent-port={_free_port()}", f"--metrics-export-port={_free_port()}"]
    log = open(tmp_path / "ray-head.log", "w")
    head = subprocess.Popen(
        [ray, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
         *agent_ports, "--num-cpus=2", "--num-gpus=0", "--disable-usage-stats"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"})
    address = f"http://127.0.0.1:{dashboard_port}"

    def jobs_api_up():
        # a fresh process, as a user's client would be: this one may hold a Ray session of its own
        probe = subprocess.run([sys.executable, "-c", "import sys; from ray.job_submission import "
                                "JobSubmissionClient as C; C(sys.argv[1]).list_jobs()", address],
                               capture_output=True, text=True)
        assert head.poll() is None, (tmp_path / "ray-head.log").read_text()[-3000:]
        return probe.returncode == 0

    try:
        wait_for(jobs_api_up, timeout=240, what="the Ray head's Jobs API", interval=2.0)
        yield address
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            # a graceful stop takes Ray ~30 s; the cluster's processes are all in this group and die with it
            head.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(30)
        log.close()


def test_job_submitted_to_a_ray_cluster_succeeds_with_logs_and_artifacts(ray_head, tmp_path):
    root = tmp_path / "runs"
    spec = write_spec(tmp_path, tiny_qa_spec(**{"evaluate.measure_speed": False}))
    submitted = jobs_cli("submit", str(spec), "--address", ray_head, "--root", str(root))
    job_id = submitted.stdout.strip().splitlines()[-1]

    final = wait_for(lambda: job_state(root, job_id)["status"] in ("succeeded", "failed", "cancelled")
                     and job_state(root, job_id), timeout=600, what="the cluster job to end", interval=2.0)
    logs = jobs_cli("logs", job_id, "--root", str(root)).stdout
    assert final["status"] == "succeeded", logs[-4000:]
    assert "stage distill_prediction: completed" in logs
    # the cluster shares this machine's filesystem, so its artifacts are in the run store here
    state = final["stages"]
    assert state["evaluate"]["status"] == "completed"
    assert (Path(state["distill_prediction"]["output"]) / "student" / "config.json").exists()
    assert (root / job_id / "report" / "report.md").exists()


def test_a_job_asking_for_gpus_on_a_cluster_without_any_fails_before_any_stage(ray_head, tmp_path):
    root = tmp_path / "runs"
    spec = write_spec(tmp_path, tiny_qa_spec(**{"resources.gpus_per_worker": 1}))
    submitted = jobs_cli("submit", str(spec), "--address", ray_head, "--root", str(root))
    job_id = submitted.stdout.strip().splitlines()[-1]

    final = wait_for(lambda: job_state(root, job_id)["status"] in ("succeeded", "failed", "cancelled")
                     and job_state(root, job_id), timeout=300, what="the cluster job to end", interval=1.0)
    assert final["status"] == "failed"
    assert ("resources.gpus_per_worker: 1 GPU per worker, but the Ray cluster has 2 CPU, 0 GPU; set "
            "gpus_per_worker: 0 to run on CPUs") in final["error"]
    # refused at once: not even the data was read
    assert all(stage["status"] == "pending" for stage in final["stages"].values()), final["stages"]


def test_a_job_the_cluster_does_not_know_lists_as_unknown_and_is_not_resubmitted(ray_head, tmp_path):
    """A restarted head forgets its jobs: the run folder's job reads as unknown, with the cluster's answer, instead of
    breaking `list` for every job; resuming it is refused, as it may still run somewhere; `rm --force` deletes it.
    The CLI runs in fresh processes, as a user's would: this one may hold a Ray session (and token) of its own."""
    from jobs.store import RunStore

    job_id = "lost-20260101-120000-aaaaaa"
    RunStore(tmp_path).create(job_id, "", ["prepare"], backend="ray", address=ray_head, submission_id=job_id)
    root = ["--root", str(tmp_path)]
    assert jobs_cli("list", *root).stdout.splitlines()[1].split()[:2] == [job_id, "unknown"]
    status = jobs_cli("status", job_id, *root).stdout
    assert f"gave no status for Ray job {job_id}" in status and f"Job {job_id} does not exist" in status
    refused = jobs_cli("resume", job_id, *root, check=False)
    assert refused.returncode == 1 and f"is unknown (Ray job {job_id} at" in refused.stderr
    not_stopped = jobs_cli("cancel", job_id, *root, check=False)
    assert not_stopped.returncode == 1 and f"cannot stop Ray job {job_id} at" in not_stopped.stderr
    kept = jobs_cli("rm", job_id, *root, check=False)
    assert kept.returncode == 2 and "or delete it anyway with --force" in kept.stderr
    jobs_cli("rm", job_id, *root, "--force")
    assert not (tmp_path / job_id).exists()


def test_a_submission_the_cluster_refuses_leaves_no_job_behind(tmp_path):
    root = tmp_path / "runs"
    spec = write_spec(tmp_path, tiny_qa_spec())
    # nothing listens on port 1: the connection is refused at once
    assert jobs_cli("submit", str(spec), "--address", "http://127.0.0.1:1", "--root", str(root),
                    check=False).returncode != 0
    assert [p.name for p in root.iterdir() if not p.name.startswith(".")] == []


@pytest.mark.parametrize("asked,cluster,decided", [
    (None, {"CPU": 8.0}, 0.0),
    (None, {"CPU": 8.0, "GPU": 4.0}, 1.0),          # the cluster's GPUs count, not this process's
    (None, {"CPU": 8.0, "GPU": 0.5}, 0.0),          # no whole GPU for a worker
    (0.0, {"CPU": 8.0, "GPU": 4.0}, 0.0),           # asked to stay on CPUs
    (0.5, {"CPU": 8.0, "GPU": 1.0}, 0.5),
    (1.0, {"CPU": 8.0, "GPU": 1.0}, 1.0),
])
def test_gpus_per_worker_are_decided_from_the_clusters_resources(asked, cluster, decided):
    resolved = resolve_resources(ResourcesSpec(gpus_per_worker=asked, workers=3), cluster, masked_lm=True)
    assert resolved.gpus_per_worker == decided and resolved.workers == 3
    for stage in ("augment", "label", "train"):
        assert resolved.for_stage(stage).gpus_per_worker == decided and resolved.for_stage(stage).workers == 3


def test_more_gpus_than_the_cluster_has_are_refused_with_what_it_has():
    with pytest.raises(ClusterResourcesError, match="2 GPU per worker, but the Ray cluster has 16 CPU, 1 GPU"):
        resolve_resources(ResourcesSpec(gpus_per_worker=2), {"CPU": 16.0, "GPU": 1.0}, masked_lm=False)


def test_a_stages_own_gpus_are_checked_too_and_the_rest_follow_the_cluster():
    resources = ResourcesSpec(train=StageResources(workers=2, gpus_per_worker=1))
    with pytest.raises(ClusterResourcesError, match="resources.train.gpus_per_worker: 1 GPU per worker, but the Ray "
                                                    "cluster has 4 CPU, 0 GPU"):
        resolve_resources(resources, {"CPU": 4.0}, masked_lm=False)
    resolved = resolve_resources(resources, {"CPU": 4.0, "GPU": 2.0}, masked_lm=True)
    assert resolved.for_stage("augment").gpus_per_worker == 1.0 and resolved.for_stage("train").workers == 2


@pytest.mark.parametrize("cluster,masked_lm,workers,gpus", [
    # a workstation with one GPU: augmentation on the CPU cores but one, labelling and training on the GPU
    ({"CPU": 16.0, "GPU": 1.0}, False, {"augment": 15, "label": 1, "train": 1}, {"augment": 0, "label": 1, "train": 1}),
    # its masked LM on the GPU: one augmentation actor per GPU
    ({"CPU": 16.0, "GPU": 1.0}, True, {"augment": 1, "label": 1, "train": 1}, {"augment": 1, "label": 1, "train": 1}),
    # 4 GPUs: labelling spreads over them; training stays one worker (the global batch would be split)
    ({"CPU": 64.0, "GPU": 4.0}, False, {"augment": 63, "label": 4, "train": 1}, {"augment": 0, "label": 1, "train": 1}),
    # this machine: 2 cores, one actor (every actor taking a CPU would starve Ray Data's tasks)
    ({"CPU": 2.0}, True, {"augment": 1, "label": 1, "train": 1}, {"augment": 0, "label": 0, "train": 0}),
])
def test_unset_workers_take_each_stages_default_from_the_cluster(cluster, masked_lm, workers, gpus):
    resolved = resolve_resources(ResourcesSpec(), cluster, masked_lm=masked_lm)
    for stage in workers:
        assert resolved.for_stage(stage).workers == workers[stage], stage
        assert resolved.for_stage(stage).gpus_per_worker == gpus[stage], stage
    # two CPUs per augmentation actor: half as many
    halved = resolve_resources(ResourcesSpec(augment=StageResources(cpus_per_worker=2)), {"CPU": 17.0},
                               masked_lm=False)
    assert halved.for_stage("augment").workers == 8

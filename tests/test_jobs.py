"""Real jobs through `python -m jobs` in subprocesses: every stage, the cache, SIGKILL and resume, cancel."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.jobutil import (QUICKSTART, REPO, folder_bytes, job_state, jobs_cli, stored_state, tiny_qa_spec, wait_for,
                           write_spec)

# what a stage has written once it is part-way through: a first shard, a first checkpoint
PARTIAL_OUTPUT = {"augment": "shards/*.parquet", "label": "shards/*.parquet",
                  "distill_intermediate": "checkpoints/step-*", "distill_prediction": "checkpoints/step-*"}
STAGES = ["prepare", "finetune_teachers", "augment", "label", "distill_intermediate", "distill_prediction",
          "evaluate", "report"]


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def _student_weights(state: dict) -> dict[str, torch.Tensor]:
    return load_file(Path(state["stages"]["distill_prediction"]["output"]) / "student" / "model.safetensors")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """One uninterrupted job: the reference the other tests compare against."""
    folder = tmp_path_factory.mktemp("baseline")
    spec = write_spec(folder, tiny_qa_spec())
    result = jobs_cli("submit", str(spec), "--root", str(folder / "runs"))
    job_id = _last_line(result.stdout).split()[1].rstrip(":")
    return {"root": folder / "runs", "job_id": job_id, "state": job_state(folder / "runs", job_id),
            "spec": spec}


def test_submit_runs_every_stage_and_writes_artifacts(baseline):
    state = baseline["state"]
    assert state["status"] == "succeeded"
    assert [name for name, s in state["stages"].items() if s["status"] == "completed"] == STAGES
    outputs = {name: Path(s["output"]) for name, s in state["stages"].items() if s["output"] is not None}
    assert list((outputs["augment"] / "shards").glob("*.parquet"))
    assert list((outputs["label"] / "shards").glob("*.parquet"))
    assert (outputs["distill_prediction"] / "student" / "config.json").exists()
    assert (outputs["evaluate"] / "metrics.json").exists()
    run_dir = baseline["root"] / baseline["job_id"]
    assert (run_dir / "report" / "report.md").exists()
    assert "stage report: completed" in (run_dir / "logs" / "job.log").read_text()


def test_resubmission_reuses_every_stage_the_change_does_not_touch(baseline, tmp_path):
    changed = tiny_qa_spec(**{"distill.prediction.temperature": 2.0})
    result = jobs_cli("submit", str(write_spec(tmp_path, changed)), "--root", str(baseline["root"]))
    job_id = _last_line(result.stdout).split()[1].rstrip(":")
    stages = job_state(baseline["root"], job_id)["stages"]
    for name in ["prepare", "finetune_teachers", "augment", "label", "distill_intermediate"]:
        assert stages[name]["status"] == "cached", name
        assert stages[name]["output"] == baseline["state"]["stages"][name]["output"]
    assert stages["distill_prediction"]["status"] == "completed"
    assert stages["distill_prediction"]["output"] != baseline["state"]["stages"]["distill_prediction"]["output"]


def test_onnx_evaluation_scores_and_times_both_graphs_and_exports_them(baseline, tmp_path):
    result = jobs_cli("submit", str(write_spec(tmp_path, tiny_qa_spec(**{"evaluate.onnx": True}))),
                      "--root", str(baseline["root"]))
    job_id = _last_line(result.stdout).split()[1].rstrip(":")
    state = job_state(baseline["root"], job_id)
    assert state["stages"]["distill_prediction"]["status"] == "cached"
    metrics = json.loads((Path(state["stages"]["evaluate"]["output"]) / "metrics.json").read_text())
    assert {"student", "student_onnx", "student_onnx_int8", "teacher_0"} == set(metrics)
    assert metrics["student_onnx"]["f1"] == pytest.approx(metrics["student"]["f1"], abs=1e-6)
    for name in ("student_onnx", "student_onnx_int8"):
        assert metrics[name]["speed"]["cpu"]["size_bytes"] > 0 and metrics[name]["speed"]["cpu"]["latency_ms"] > 0
    run_dir = baseline["root"] / job_id
    report = (run_dir / "report" / "report.md").read_text()
    speed = report[report.index("## Size and speed"):]
    assert "| `student_onnx` | cpu |" in speed and "| `student_onnx_int8` | cpu |" in speed
    assert set(metrics["student"]["vs_teachers"]) == {"teacher_0"}  # its own graphs are not compared as teachers
    assert {p.name for p in (run_dir / "export" / "onnx").iterdir()} >= {"model.onnx", "model_int8.onnx",
                                                                         "config.json", "tokenizer.json"}


def test_job_killed_in_each_stage_resumes_to_identical_outputs(baseline, tmp_path):
    """One job SIGKILLed part-way through each resumable stage in turn and resumed each time ends with the data and
    the student of the uninterrupted run."""
    root = tmp_path / "runs"
    spec = write_spec(tmp_path, tiny_qa_spec())
    job_id = _last_line(jobs_cli("submit", str(spec), "--detach", "--root", str(root)).stdout)
    for stage, written in PARTIAL_OUTPUT.items():
        def writing_process():
            """The job's process once it has written part of `stage`'s output, else None."""
            state = stored_state(root, job_id)
            assert state["status"] in ("pending", "running"), state.get("error")
            current = state["stages"][stage]
            started = current["status"] == "running" and current["output"]
            return state["pid"] if started and any(Path(current["output"]).glob(written)) else None

        pid = wait_for(writing_process, timeout=300, what=f"stage {stage} to start writing", interval=0.02)
        os.killpg(pid, signal.SIGKILL)
        wait_for(lambda: job_state(root, job_id)["status"] == "interrupted", timeout=30,
                 what=f"the kill in {stage} to be seen")
        last = stage == list(PARTIAL_OUTPUT)[-1]
        jobs_cli("resume", job_id, "--root", str(root), *([] if last else ["--detach"]))

    state = job_state(root, job_id)
    assert state["status"] == "succeeded"
    reference = baseline["state"]["stages"]
    for name in ["augment", "label"]:
        assert folder_bytes(Path(state["stages"][name]["output"])) == folder_bytes(Path(reference[name]["output"]))
    resumed, uninterrupted = _student_weights(state), _student_weights(baseline["state"])
    assert resumed.keys() == uninterrupted.keys()
    for key in resumed:
        torch.testing.assert_close(resumed[key], uninterrupted[key], rtol=0, atol=1e-6, msg=key)


@pytest.mark.parametrize("detached", [True, False])
def test_cancel_stops_a_job(detached, tmp_path):
    """A detached job leads its own process group; one a script runs in the foreground shares the script's."""
    root = tmp_path / "runs"
    spec = write_spec(tmp_path, tiny_qa_spec(**{"distill.prediction.epochs": 50}))
    if detached:
        submitted = jobs_cli("submit", str(spec), "--detach", "--root", str(root)).stdout
        job_id = _last_line(submitted)
        assert f"follow it with: python -m jobs logs {job_id} --follow --root {root}\n" in submitted
    else:
        foreground = subprocess.Popen([sys.executable, "-m", "jobs", "submit", str(spec), "--root", str(root)],
                                      cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: root.is_dir() and any(root.iterdir()), timeout=60, what="the job's folder")
        job_id = next(p.name for p in root.iterdir() if not p.name.startswith("."))
    wait_for(lambda: job_state(root, job_id)["stages"]["prepare"]["status"] == "completed", timeout=120,
             what="the job to get going")
    jobs_cli("cancel", job_id, "--root", str(root))
    state = job_state(root, job_id)
    # recorded by the job itself (its SIGTERM handler outlives Ray's start), the stage it was in with it
    assert state["status"] == "cancelled" and state["error"] == "cancelled: received signal 15"
    assert "running" not in {stage["status"] for stage in state["stages"].values()}
    assert "cancelled" in {stage["status"] for stage in state["stages"].values()}

    def process_gone() -> bool:
        try:
            os.kill(state["pid"], 0)
        except ProcessLookupError:
            return True
        return False

    if not detached:
        assert foreground.wait(timeout=30) is not None
    # the job exited; until init reaps it, the orphan is a zombie that still answers kill(0)
    wait_for(process_gone, timeout=30, what="the cancelled job's process to be reaped")
    assert jobs_cli("list", "--root", str(root)).stdout.count("cancelled") == 1


def test_half_precision_where_no_gpu_is_fails_before_any_stage(tmp_path):
    root = tmp_path / "runs"
    spec = write_spec(tmp_path, tiny_qa_spec(**{"resources.precision": "fp16"}))
    assert jobs_cli("submit", str(spec), "--root", str(root), check=False).returncode == 1
    job_id = next(p.name for p in root.iterdir() if not p.name.startswith("."))
    state = job_state(root, job_id)
    assert state["status"] == "failed" and "resources.precision fp16 on CPU" in state["error"]
    assert {stage["status"] for stage in state["stages"].values()} == {"pending"}


def test_two_jobs_at_once_share_cached_stages_safely_and_each_stage_runs_with_its_own_workers(tmp_path):
    """Two identical jobs at once: one computes each stage, the other reuses it. Their resources: shared ones (2
    workers of half a CPU) for augmentation and labelling, training's own (1 worker); each stage records the workers
    it ran with."""
    root = tmp_path / "runs"
    spec = write_spec(tmp_path, tiny_qa_spec(**{
        "resources.workers": 2, "resources.cpus_per_worker": 0.5,
        "resources.train": {"workers": 1, "cpus_per_worker": 1.0},
        "evaluate.enabled": False, "distill.intermediate.enabled": False}))
    first = _last_line(jobs_cli("submit", str(spec), "--detach", "--root", str(root)).stdout)
    second = _last_line(jobs_cli("submit", str(spec), "--detach", "--root", str(root)).stdout)
    for job_id in (first, second):
        wait_for(lambda: job_state(root, job_id)["status"] not in ("pending", "running"), timeout=600,
                 what=f"job {job_id} to end")
    states = [job_state(root, job_id) for job_id in (first, second)]
    assert [s["status"] for s in states] == ["succeeded", "succeeded"]
    for name in ["prepare", "augment", "label", "distill_prediction"]:
        # one job computed each stage, the other waited for it and reused it
        assert {s["stages"][name]["status"] for s in states} == {"completed", "cached"}, name
        assert states[0]["stages"][name]["output"] == states[1]["stages"][name]["output"]

    outputs = {name: Path(s["output"]) for name, s in states[0]["stages"].items() if s["output"] is not None}
    assert json.loads((outputs["augment"] / "stats.json").read_text())["workers"] == 2
    assert json.loads((outputs["label"] / "stats.json").read_text())["workers"] == 2
    for trained in (outputs["finetune_teachers"] / "teacher_0", outputs["distill_prediction"]):
        resources = json.loads((trained / "train_config.json").read_text())["resources"]
        assert (resources["workers"], resources["cpus_per_worker"]) == (1, 1.0), trained


def test_masked_lm_trained_on_a_corpus_is_shared_by_jobs_of_other_seeds(tmp_path):
    """A user without a hub: the augmentation's masked LM is trained on a corpus by its own stage, once; the
    teacher is fine-tuned on its own, larger labelled set; `--set seed=N` runs the same spec for another seed."""
    root = tmp_path / "runs"
    sample = str(QUICKSTART / "sample-train.json")
    spec = tiny_qa_spec(**{
        "augment.mlm_training": {"epochs": 1, "batch_size": 16},
        "augment.corpus": {"path": sample},
        "teachers": [{"model": str(QUICKSTART / "tiny-bert"), "init": "random",
                      "finetune": {"train": {"path": sample, "limit": 80}, "epochs": 0.5, "batch_size": 16}}],
        "distill.intermediate.enabled": False, "evaluate.enabled": False})
    path = write_spec(tmp_path, spec)
    states = []
    for seed in (1, 2):
        job_id = _last_line(jobs_cli("submit", str(path), "--set", f"seed={seed}", "--root", str(root)).stdout)
        states.append(job_state(root, job_id.split()[1].rstrip(":")))
    first, second = ({name: s for name, s in state["stages"].items()} for state in states)
    assert [state["status"] for state in states] == ["succeeded", "succeeded"]
    assert (first["train_mlm"]["status"], second["train_mlm"]["status"]) == ("completed", "cached")
    assert first["train_mlm"]["output"] == second["train_mlm"]["output"]
    # the prepare stage read the corpus and the teacher's own data, as it reads every source
    prepared = Path(first["prepare"]["output"])
    corpus = json.loads((prepared / "corpus" / "meta.json").read_text())["counts"]["written"]
    assert corpus == 178  # the whole corpus, not the 40 training questions
    trained = Path(first["train_mlm"]["output"])
    for stages in (first, second):
        # both seeds' augmentations drew candidates from that model, and differ by their sampling
        plan = json.loads((Path(stages["augment"]["output"]) / "augment.json").read_text())
        assert plan["augment"]["mlm_model"] == str(trained / "model")
    assert first["augment"]["output"] != second["augment"]["output"]
    # the teacher learnt from its own 80 questions, the student's data is 40
    teacher_examples = prepared / "finetune" / "teacher_0" / "meta.json"
    assert json.loads(teacher_examples.read_text())["counts"]["written"] == 80
    student_examples = prepared / "train" / "meta.json"
    assert json.loads(student_examples.read_text())["counts"]["written"] == 40


def test_unknown_job_exits_3(tmp_path):
    assert jobs_cli("status", "nope", "--root", str(tmp_path), check=False).returncode == 3

"""The run report renders from hand-built run folders: full, half-finished and damaged ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.report import _load_run, _loss_keys, _lr_schedules, _training_logs, write_report
from jobs.spec import JobSpec, dump_spec

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STAGES = ["prepare", "finetune_teachers", "augment", "label", "distill_intermediate", "distill_prediction",
          "evaluate", "report"]

STUDENT = {"exact": 58.25, "f1": 61.23, "total": 30, "HasAns_exact": 50.0, "HasAns_f1": 56.5, "HasAns_total": 14,
           "NoAns_exact": 65.4, "NoAns_f1": 65.4, "NoAns_total": 16, "best_exact": 59.0, "best_f1": 62.0}
TEACHER = {"exact": 72.1, "f1": 75.4, "total": 30, "HasAns_exact": 70.0, "HasAns_f1": 76.9, "HasAns_total": 14,
           "NoAns_exact": 74.0, "NoAns_f1": 74.0, "NoAns_total": 16, "best_exact": 73.0, "best_f1": 76.0}


def _speed(parameters: int, size_bytes: int, latency_ms: float, throughput: float) -> dict:
    return {"cpu": {"model": "m", "device": "cpu", "device_name": "cpu (2 threads)", "precision": "fp32",
                    "parameters": parameters, "size_bytes": size_bytes, "seq_len": 384, "repeats": 20, "warmup": 3,
                    "latency_ms": latency_ms, "latency_p90_ms": latency_ms * 1.1, "throughput_batch_size": 32,
                    "throughput": throughput, "throughput_p90": throughput * 0.9}}


def _write(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value if isinstance(value, str) else json.dumps(value), encoding="utf-8")


def _stage(status: str, output: Path | None = None, start: str = "2025-01-01T10:00:00+00:00",
           end: str | None = "2025-01-01T10:02:30+00:00", error: str | None = None) -> dict:
    return {"status": status, "started_at": start if status != "pending" else None,
            "ended_at": end if status not in ("pending", "running") else None,
            "output": str(output) if output else None, "summary": {}, "error": error}


def _metrics_lines(phase_terms: list[str], steps: int = 6) -> str:
    lines = []
    for step in range(1, steps + 1):
        record = {"step": step * 10, "epoch": step / steps, "lr": 5e-5 * (1 - step / (steps + 1)),
                  "loss": 10.0 / step, "examples_per_s": 100.0 + step}
        record |= {f"loss/{term}": (i + 1) * 1.0 / step for i, term in enumerate(phase_terms)}
        lines.append(json.dumps(record))
    return "\n".join(lines) + "\n"


@pytest.fixture
def full_run(tmp_path: Path) -> Path:
    run = tmp_path / "squad-20250101-100000-abc123"
    cache = tmp_path / ".cache"
    spec = JobSpec(name="squad", task="qa")
    _write(run / "spec.yaml", dump_spec(spec))

    prepare = cache / "prepare" / "k1"
    _write(prepare / "train" / "meta.json", {"task": "qa", "label_names": None, "counts": {
        "read": 1000, "written": 990, "rejected": 10, "rejected_by_reason": {"answer_mismatch": 7, "duplicate_id": 3}}})
    _write(prepare / "eval" / "meta.json", {"task": "qa", "label_names": None, "counts": {
        "read": 30, "written": 30, "rejected": 0, "rejected_by_reason": {}}})
    augment = cache / "augment" / "k2"
    _write(augment / "stats.json", {"examples_in": 990, "examples_out": 20790, "substitution_rate": 0.372,
                                    "substitutions_by_source": {"mlm": 5123, "embedding": 2345}})
    label = cache / "label" / "k3"
    _write(label / "stats.json", {"features": 21450, "bytes_per_feature": 3172, "teachers": 1})
    intermediate = cache / "distill_intermediate" / "k4"
    _write(intermediate / "metrics.jsonl", _metrics_lines(["embeddings", "hidden", "attention"]))
    prediction = cache / "distill_prediction" / "k5"
    # a torn last line, as a crash mid-write leaves it
    _write(prediction / "metrics.jsonl", _metrics_lines(["kl"]) + '{"step": 70, "lo')
    evaluate = cache / "evaluate" / "k6"
    _write(evaluate / "metrics.json", {
        "student": STUDENT | {"speed": _speed(67_000_000, 268_000_000, 20.0, 150.0),
                              "vs_teachers": {"teacher_0": {"cpu": {
                                  "device": "cpu", "seq_len": 384, "speedup": 2.0, "throughput_ratio": 1.95,
                                  "size_ratio": 1.64, "parameter_ratio": 1.63}}}},
        "teacher_0": TEACHER | {"speed": _speed(109_000_000, 440_000_000, 40.0, 77.0)},
    })
    outputs = {"prepare": prepare, "augment": augment, "label": label, "distill_intermediate": intermediate,
               "distill_prediction": prediction, "evaluate": evaluate}
    stages = {name: _stage("completed", outputs.get(name)) for name in STAGES}
    stages["finetune_teachers"] = _stage("skipped", start=None, end=None)
    stages["report"] = _stage("running", run / "report")
    _write(run / "state.json", {"job_id": run.name, "name": "squad", "status": "running",
                                "created_at": "2025-01-01T10:00:00+00:00", "pid": 123, "stages": stages})
    return run


def test_full_report_has_the_numbers_and_valid_plots(full_run: Path):
    path = write_report(full_run)
    assert path == full_run / "report" / "report.md"
    text = path.read_text(encoding="utf-8")
    for expected in [
        "Distillery report: squad-20250101-100000-abc123",
        "deepset/bert-base-uncased-squad2",            # teacher in the spec summary
        "huawei-noah/TinyBERT_General_6L_768D",        # student source
        "x20",                                         # augmentation factor
        "2.5 min",                                     # a stage duration
        "| train | 990 | 990 | 10 |".replace("990 | 990", "1,000 | 990"),
        "`answer_mismatch` | 7 | 0",                    # rejects by reason
        "20,790", "0.37", "substitutions from mlm | 5,123",
        "bytes_per_feature | 3,172",
        "61.23", "75.40", "56.50", "74.00",            # student and teacher scores
        "81.2%",                                       # student keeps 61.23 / 75.4 of the teacher's f1
        "67,000,000", "268.0", "440.0", "20.00", "150.0",  # params, MB, latency, throughput
        "2.00x", "1.64x",                              # speed-up and size ratio
        "skipped",                                     # finetune_teachers
    ]:
        assert expected in text, expected
    assert "1 line(s) are not JSON objects" in text    # the torn metrics line is reported, not fatal
    plots = ["loss_distill_intermediate.png", "loss_distill_prediction.png", "lr.png", "scores.png"]
    for name in plots:
        data = (full_run / "report" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, name
        assert f"]({name})" in text
    import matplotlib.image

    assert matplotlib.image.imread(full_run / "report" / "scores.png").ndim == 3


def test_report_written_by_the_job_gives_its_final_status_and_wall_time(full_run: Path):
    """The job's report stage is still running as it writes; every other stage is done, so the job has succeeded."""
    header = write_report(full_run).read_text(encoding="utf-8").split("## ", 1)[0]
    assert "| squad | succeeded |" in header
    assert "| wall time |" in header
    text = (full_run / "report" / "report.md").read_text(encoding="utf-8")
    assert "| `report` | completed (this report) |" in text


def test_lr_schedule_is_drawn_from_step_0_and_one_term_losses_once(full_run: Path):
    intermediate = full_run.parent / ".cache" / "distill_intermediate" / "k4"
    _write(intermediate / "train_config.json", {"config": {"learning_rate": 4e-5},
                                                "schedule": {"total_steps": 100, "warmup_steps": 10}})
    run = _load_run(full_run)
    schedule = dict(_lr_schedules(run)["distill_intermediate"])
    assert schedule[0] == 0.0 and schedule[5] == pytest.approx(2e-5) and schedule[10] == pytest.approx(4e-5)
    assert schedule[55] == pytest.approx(2e-5) and schedule[100] == 0.0
    assert "distill_prediction" not in _lr_schedules(run)   # no train_config.json: only the logged points
    logs = _training_logs(run)
    assert _loss_keys(logs["distill_prediction"]) == ["loss"]   # loss/kl alone would be the same curve
    assert _loss_keys(logs["distill_intermediate"]) == ["loss", "loss/attention", "loss/embeddings", "loss/hidden"]


def test_report_of_a_run_that_has_only_started(tmp_path: Path):
    run = tmp_path / "job"
    _write(run / "spec.yaml", dump_spec(JobSpec(task="qa", augment={"enabled": False},
                                                evaluate={"measure_speed": False})))
    stages = {name: _stage("pending") for name in STAGES}
    stages["prepare"] = _stage("failed", error="DataReadError: no such file")
    _write(run / "state.json", {"job_id": "job", "name": "job", "status": "failed", "created_at": "x",
                                "pid": None, "stages": stages})
    text = write_report(run).read_text(encoding="utf-8")
    assert "| job | failed |" in text
    assert "No data counts: stage `prepare` failed: DataReadError: no such file" in text
    assert "## Augmentation\n\nDisabled in the spec." in text
    assert "No metrics: stage `distill_intermediate` pending" in text
    assert "No metrics: stage `evaluate` pending" in text
    assert "Not measured" in text
    assert not list((run / "report").glob("*.png"))


def test_report_of_a_damaged_run_folder_names_the_problems(tmp_path: Path, full_run: Path):
    (full_run / "spec.yaml").write_text("task: [unclosed", encoding="utf-8")
    evaluate = Path(json.loads((full_run / "state.json").read_text())["stages"]["evaluate"]["output"])
    (evaluate / "metrics.json").write_text("{not json", encoding="utf-8")
    text = write_report(full_run).read_text(encoding="utf-8")
    assert "## Problems reading the run" in text
    assert "spec.yaml` could not be read" in text and "metrics.json` is unreadable" in text
    assert "No readable spec.yaml" in text
    assert (full_run / "report" / "lr.png").is_file() and not (full_run / "report" / "scores.png").exists()
    bare = tmp_path / "bare"
    bare.mkdir()
    assert "state.json` is missing" in write_report(bare).read_text(encoding="utf-8")


def test_classification_report_shows_per_class_scores(tmp_path: Path):
    run = tmp_path / "sst"
    _write(run / "spec.yaml", dump_spec(JobSpec(task="classification", data={
        "train": {"path": "train.tsv"}, "eval": {"path": "dev.tsv"}}, evaluate={"measure_speed": False})))
    evaluate = tmp_path / "evaluate"
    per_class = {"negative": {"precision": 0.8, "recall": 0.9, "f1": 0.847, "support": 428},
                 "positive": {"precision": 0.9, "recall": 0.8, "f1": 0.847, "support": 444}}
    _write(evaluate / "metrics.json", {
        "student": {"accuracy": 0.8512, "macro_f1": 0.8471, "total": 872, "per_class": per_class},
        "teacher_0": {"accuracy": 0.9232, "macro_f1": 0.923, "total": 872, "per_class": per_class}})
    stages = {name: _stage("pending") for name in STAGES}
    stages["evaluate"] = _stage("completed", evaluate)
    _write(run / "state.json", {"job_id": "sst", "name": "sst", "status": "running", "created_at": "x",
                                "pid": None, "stages": stages})
    text = write_report(run).read_text(encoding="utf-8")
    assert "0.85" in text and "0.92" in text and "| negative | 0.80 | 0.90 | 0.85 | 428 |" in text
    assert "| features | max_seq_len 384 |" in text  # not QA's window settings
    assert (run / "report" / "scores.png").read_bytes().startswith(PNG_MAGIC)


def test_degenerate_models_are_warned_about_in_the_report_and_status(full_run: Path, capsys):
    from jobs.cli import main

    never_answers = "answers no answer to all 30 questions"
    metrics_path = full_run.parent / ".cache" / "evaluate" / "k6" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["student"] |= {"f1": 53.3, "degenerate": never_answers}
    metrics["teacher_0"] |= {"f1": 53.3, "degenerate": never_answers}
    _write(metrics_path, metrics)

    text = write_report(full_run).read_text(encoding="utf-8")
    warnings = text.split("## Warnings", 1)[1].split("\n## ", 1)[0]
    assert f"`student` {never_answers}" in warnings and f"`teacher_0` {never_answers}" in warnings
    assert "compared with `teacher_0`" in warnings
    retention = next(line for line in text.splitlines() if line.startswith("The student keeps"))
    assert "100.0%" in retention and never_answers in retention

    assert main(["status", full_run.name, "--root", str(full_run.parent)]) == 0
    status = capsys.readouterr().out
    assert f"warning: `student` {never_answers}" in status and "compared with `teacher_0`" in status


def test_healthy_models_get_no_warnings(full_run: Path, capsys):
    from jobs.cli import main

    assert "## Warnings" not in write_report(full_run).read_text(encoding="utf-8")
    assert main(["status", full_run.name, "--root", str(full_run.parent)]) == 0
    assert "warning" not in capsys.readouterr().out


def test_validation_curve_and_the_best_beside_the_last(full_run: Path):
    prediction = full_run.parent / ".cache" / "distill_prediction" / "k5"
    scores = [(10, 41.0, 38.0), (20, 55.5, 50.0), (30, 55.5, 51.0), (40, 52.25, 49.0)]
    (prediction / "validation.jsonl").write_text("".join(
        json.dumps({"step": step, "epoch": step / 40, "f1": f1, "exact": exact}) + "\n"
        for step, f1, exact in scores), encoding="utf-8")
    text = write_report(full_run).read_text(encoding="utf-8")
    # the best is the first step with the top F1, as the trainer keeps it
    assert "| best validation f1 | 55.5000 at step 20 (kept in best/) |" in text
    assert "| last validation f1 | 52.2500 at step 40 |" in text
    data = (full_run / "report" / "validation_distill_prediction.png").read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000
    assert "](validation_distill_prediction.png)" in text
    assert not (full_run / "report" / "validation_distill_intermediate.png").exists()


def test_the_best_is_what_best_json_says_when_there_is_one(full_run: Path):
    """best/ can hold a student validated after the checkpoint a killed run resumed from (its line is gone from
    validation.jsonl); the report names what best/ holds."""
    prediction = full_run.parent / ".cache" / "distill_prediction" / "k5"
    (prediction / "validation.jsonl").write_text("".join(
        json.dumps({"step": step, "f1": f1, "exact": f1 - 3}) + "\n" for step, f1 in ((10, 41.0), (20, 50.0))),
        encoding="utf-8")
    _write(prediction / "best" / "best.json", {"step": 25, "metric": "f1", "value": 52.0})
    text = write_report(full_run).read_text(encoding="utf-8")
    assert "| best validation f1 | 52.0000 at step 25 (kept in best/) |" in text


def test_data_table_has_a_row_per_source_with_the_rows_its_weight_gives(full_run: Path):
    spec = JobSpec(name="squad", task="qa", data={"train": [{"name": "a", "path": "x/a.jsonl.gz", "weight": 2},
                                                            {"name": "b", "path": "x/b.jsonl.gz"}]})
    _write(full_run / "spec.yaml", dump_spec(spec))
    prepare = full_run.parent / ".cache" / "prepare" / "k1"
    for name, rejected in (("a", 4), ("b", 6)):
        _write(prepare / "train_sets" / name / "meta.json", {"task": "qa", "label_names": None, "counts": {
            "read": 500, "written": 500 - rejected, "rejected": rejected,
            "rejected_by_reason": {"answer_mismatch": rejected}}})
    _write(prepare / "train" / "meta.json", {"task": "qa", "label_names": None, "counts": {
        "read": 1000, "written": 990, "rejected": 10, "rejected_by_reason": {"answer_mismatch": 10}, "rows": 1486},
        "sets": {"a": {"rows": 992}, "b": {"rows": 494}}})
    text = write_report(full_run).read_text(encoding="utf-8")
    for row in ("| train: a | 500 | 496 | 4 | 992 |", "| train: b | 500 | 494 | 6 | 494 |",
                "| train | 1,000 | 990 | 10 | 1,486 |", "`answer_mismatch` | 10 | 0"):
        assert row in text, row  # the sources' rejects are counted once, in the mixed set's

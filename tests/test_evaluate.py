"""Evaluation on real dev examples with tiny models: official files, metric consistency, the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from augment.readers import read_examples
from augment.writers import read_shards
from distill.evaluate import EvaluationError, evaluate_models
from distill.models import ModelCheckError, ModelRef
from distill.squad_metric import load_squad_gold, squad_v2_scores
from jobs.spec import DataSource, EvaluateSpec, FeaturesSpec, ResourcesSpec

REPO = Path(__file__).resolve().parents[1]
# short windows so that many SQuAD contexts span two or more
FEATURES = FeaturesSpec(max_seq_len=128, doc_stride=32, max_query_len=32)
CPU = ResourcesSpec(gpus_per_worker=0)


@pytest.fixture(scope="module")
def qa_examples(squad_dev_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("qa-eval") / "examples"
    read_examples(DataSource(path=str(squad_dev_path), limit=30), "qa", None, out)
    return out


@pytest.fixture(scope="module")
def qa_result(qa_examples, tiny_model_factory, tmp_path_factory):
    student = tiny_model_factory(task="qa", layers=1, hidden=32)
    teacher = tiny_model_factory(task="qa", layers=2, hidden=64)
    out = tmp_path_factory.mktemp("qa-eval-out")
    config = EvaluateSpec(batch_size=8, speed_repeats=1)
    result = evaluate_models({"student": ModelRef(str(student)), "teacher_0": ModelRef(str(teacher))}, "qa",
                             qa_examples, FEATURES, config, CPU, out, progress=False)
    return result, out


def test_qa_writes_official_files_for_every_question(qa_result, qa_examples):
    result, out = qa_result
    ids = read_shards(qa_examples).column("id").to_pylist()
    assert len(ids) == 30
    for name in ("student", "teacher_0"):
        predictions = json.loads((out / name / "predictions.json").read_text())
        null_odds = json.loads((out / name / "null_odds.json").read_text())
        assert list(predictions) == ids and list(null_odds) == ids
        assert all(isinstance(text, str) for text in predictions.values())
        assert all(isinstance(odds, float) for odds in null_odds.values())
        # "" exactly where the null odds beat the threshold (0.0 by default)
        assert all((predictions[q] == "") == (null_odds[q] > 0.0) for q in ids)
        assert result.models[name].predictions_path == str(out / name / "predictions.json")
    assert result.models["student"].features > 30  # some contexts needed more than one window


def test_qa_metrics_match_the_metric_run_on_the_written_files(qa_result, squad_dev_path):
    result, out = qa_result
    metrics = json.loads((out / "metrics.json").read_text())
    gold_all = load_squad_gold(squad_dev_path)
    for name in ("student", "teacher_0"):
        predictions = json.loads((out / name / "predictions.json").read_text())
        null_odds = json.loads((out / name / "null_odds.json").read_text())
        gold = {qid: gold_all[qid] for qid in predictions}
        expected = squad_v2_scores(gold, predictions, null_odds, na_prob_thresh=0.0)
        scores = {k: v for k, v in metrics[name].items() if k not in ("speed", "vs_teachers", "na_prob_thresh")}
        assert scores == pytest.approx(expected)
        for key in ("HasAns_exact", "HasAns_f1", "HasAns_total", "NoAns_exact", "NoAns_f1", "NoAns_total",
                    "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"):
            assert key in scores
        assert scores["HasAns_total"] + scores["NoAns_total"] == 30
        assert result.models[name].metrics["f1"] == metrics[name]["f1"]


def test_qa_speed_and_result_structure(qa_result):
    result, out = qa_result
    metrics = json.loads((out / "metrics.json").read_text())
    student, teacher = metrics["student"]["speed"]["cpu"], metrics["teacher_0"]["speed"]["cpu"]
    assert student["parameters"] < teacher["parameters"] and student["size_bytes"] < teacher["size_bytes"]
    assert student["seq_len"] == FEATURES.max_seq_len
    ratios = metrics["student"]["vs_teachers"]["teacher_0"]["cpu"]
    assert ratios["size_ratio"] > 1 and ratios["parameter_ratio"] > 1
    assert result.comparisons["teacher_0"]["cpu"] == pytest.approx(ratios)
    json.dumps(dataclasses.asdict(result))  # the runner stores it as the stage summary
    settings = json.loads((out / "settings.json").read_text())
    assert settings["features"]["max_seq_len"] == 128 and settings["device"] == "cpu"


def test_qa_windows_without_room_are_refused(qa_examples, tiny_model_factory, tmp_path):
    model = ModelRef(str(tiny_model_factory(task="qa", layers=1, hidden=32)))
    with pytest.raises(EvaluationError, match="doc_stride"):
        evaluate_models({"student": model}, "qa", qa_examples, FeaturesSpec(max_seq_len=128), EvaluateSpec(),
                        CPU, tmp_path, progress=False)


@pytest.fixture(scope="module")
def sst2_examples(sst2_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sst2-eval") / "examples"
    read_examples(DataSource(path=str(sst2_dir / "dev.tsv"), limit=24), "classification",
                  ["negative", "positive"], out)
    return out


def test_classification_accuracy_equals_a_hand_count(sst2_examples, tiny_model_factory, tmp_path):
    model = ModelRef(str(tiny_model_factory(task="classification", layers=1, hidden=32, seed=3)))
    result = evaluate_models({"student": model}, "classification", sst2_examples, FEATURES,
                             EvaluateSpec(measure_speed=False), CPU, tmp_path, progress=False)
    examples = read_shards(sst2_examples).to_pylist()
    names = ["negative", "positive"]
    predictions = json.loads((tmp_path / "student" / "predictions.json").read_text())
    assert set(predictions) == {row["id"] for row in examples}
    right = sum(predictions[row["id"]] == names[row["label"]] for row in examples)
    metrics = json.loads((tmp_path / "metrics.json").read_text())["student"]
    assert metrics["accuracy"] == pytest.approx(right / len(examples))
    assert metrics["total"] == 24 and "speed" not in metrics
    assert sum(c["support"] for c in metrics["per_class"].values()) == 24
    assert set(metrics["per_class"]) == set(names) and 0 <= metrics["macro_f1"] <= 1
    assert result.models["student"].null_odds_path is None and result.models["student"].speed is None


def test_classification_label_count_must_match_the_model(sst2_examples, tiny_model_factory, tmp_path):
    model = ModelRef(str(tiny_model_factory(task="classification", layers=1, hidden=32, num_labels=3)))
    with pytest.raises(ModelCheckError, match="3 labels"):
        evaluate_models({"student": model}, "classification", sst2_examples, FEATURES,
                        EvaluateSpec(measure_speed=False), CPU, tmp_path, progress=False)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "distill", "evaluate", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_evaluates_a_model_folder_on_a_squad_file(squad_dev_path, tiny_model_factory, tmp_path):
    model = tiny_model_factory(task="qa", layers=1, hidden=32)
    out = tmp_path / "eval"
    done = _cli(str(model), "--data", str(squad_dev_path), "--limit", "8", "--max-seq-len", "128",
                "--doc-stride", "32", "--max-query-len", "32", "--cpu", "--out", str(out))
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["total"] == 8 and "HasAns_f1" in printed
    assert json.loads((out / "metrics.json").read_text())["model"]["f1"] == printed["f1"]
    assert len(json.loads((out / "model" / "predictions.json").read_text())) == 8

    missing = _cli(str(tmp_path / "no-such-model"), "--data", str(squad_dev_path))
    assert missing.returncode == 2 and "no model folder" in missing.stderr

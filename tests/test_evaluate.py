"""Evaluation on real dev examples with tiny models: official files, metric consistency, the CLI."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
import torch

from augment.readers import read_examples
from augment.spec import DataSource
from core.resources import ResourcesSpec
from core.shards import read_shards, write_shard
from distill import evaluate
from distill.evaluate import EvaluationError, evaluate_models
from distill.label import TeacherEnsemble
from distill.models import ModelCheckError, ModelRef, load_tokenizer
from distill.onnx_export import load_scoring_model
from distill.spec import EvaluateSpec, FeaturesSpec, LabelSpec, StudentSpec, TeacherSpec
from distill.squad_metric import load_squad_gold, squad_v2_scores
from distill.student import build_student
from distill.tasks import TASKS, task_kind
from distill.tasks.qa import QA
from jobs.spec import JobSpec
from jobs.stages import StageContext, teacher_refs

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
        scores = {k: v for k, v in metrics[name].items()
                  if k not in ("speed", "vs_teachers", "na_prob_thresh", "degenerate")}
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


@pytest.mark.parametrize(("task", "predictions", "note"), [
    ("qa", ["", "", ""], "answers no answer to all 3 questions"),
    ("qa", ["", "Paris", ""], None),
    ("classification", ["negative"] * 4, "predicts 'negative' for all 4 examples"),
    ("classification", ["negative", "positive", "negative"], None),
    ("classification", ["negative"], None),  # a single example says nothing about the model
])
def test_degenerate_predictions_are_named(task, predictions, note):
    assert task_kind(task).degenerate(predictions) == note


@pytest.mark.parametrize(("null_threshold", "note"), [(-1e9, "answers no answer to all 30 questions"),
                                                      (1e9, None)])
def test_qa_metrics_flag_a_model_that_never_answers(qa_examples, tiny_model_factory, tmp_path, null_threshold, note):
    model = ModelRef(str(tiny_model_factory(task="qa", layers=1, hidden=32)))
    evaluate_models({"student": model}, "qa", qa_examples, FEATURES,
                    EvaluateSpec(null_threshold=null_threshold, measure_speed=False), CPU, tmp_path, progress=False)
    assert json.loads((tmp_path / "metrics.json").read_text())["student"]["degenerate"] == note


def test_qa_windows_without_room_are_refused(qa_examples, tiny_model_factory, tmp_path):
    model = ModelRef(str(tiny_model_factory(task="qa", layers=1, hidden=32)))
    with pytest.raises(EvaluationError, match="doc_stride"):
        evaluate_models({"student": model}, "qa", qa_examples, FeaturesSpec(max_seq_len=128), EvaluateSpec(),
                        CPU, tmp_path, progress=False)


def _record_chunks(monkeypatch) -> list[tuple[list[str], list[str]]]:
    """Record (example ids, feature example ids) of every chunk whose features evaluation builds."""
    chunks = []

    for kind in TASKS.values():
        def recording(examples, *args, build=kind.build_features):
            table = build(examples, *args)
            chunks.append((examples.column("id").to_pylist(), table.column("example_id").to_pylist()))
            return table

        monkeypatch.setattr(kind, "build_features", recording)
    return chunks


def _write_examples(folder: Path, *shards: pa.Table) -> Path:
    """An examples folder holding `shards` in order."""
    (folder / "shards").mkdir(parents=True)
    for index, shard in enumerate(shards):
        write_shard(folder / "shards" / f"part-{index:05d}.parquet", shard.to_pylist(), shard.schema)
    return folder


def _outputs(out: Path, name: str = "student") -> dict[str, bytes]:
    files = [out / "metrics.json", *sorted((out / name).iterdir())]
    return {file.name: file.read_bytes() for file in files}


def test_qa_chunks_hold_whole_examples_and_score_like_one_chunk(qa_examples, tiny_model_factory, tmp_path,
                                                                monkeypatch):
    model = ModelRef(str(tiny_model_factory(task="qa", layers=1, hidden=32)))
    ids = read_shards(qa_examples).column("id").to_pylist()
    windows = Counter(QA.build_features(read_shards(qa_examples), load_tokenizer(model), FEATURES)
                      .column("example_id").to_pylist())
    # chunks cut right after a context of several windows, so that its windows end the first chunk
    edge = next(i for i, qid in enumerate(ids) if i > 0 and windows[qid] > 1)
    # batch_size 1 pads each window to its own length only, so its logits do not depend on the chunking to the
    # bit; larger batches differ by float rounding where a window shares a batch with a different longest one
    config = EvaluateSpec(batch_size=1, measure_speed=False)
    monkeypatch.setattr(evaluate, "EXAMPLES_PER_CHUNK", len(ids))
    whole = evaluate_models({"student": model}, "qa", qa_examples, FEATURES, config, CPU, tmp_path / "whole",
                            progress=False)

    chunks = _record_chunks(monkeypatch)
    monkeypatch.setattr(evaluate, "EXAMPLES_PER_CHUNK", edge + 1)
    chunked = evaluate_models({"student": model}, "qa", qa_examples, FEATURES, config, CPU, tmp_path / "chunked",
                              progress=False)

    assert len(chunks) == math.ceil(len(ids) / (edge + 1))
    assert [qid for chunk_ids, _ in chunks for qid in chunk_ids] == ids
    for chunk_ids, feature_ids in chunks:
        assert len(chunk_ids) <= edge + 1
        assert Counter(feature_ids) == {qid: windows[qid] for qid in chunk_ids}  # every window, no other
    assert chunks[0][1][-windows[ids[edge]]:] == [ids[edge]] * windows[ids[edge]]
    assert _outputs(tmp_path / "chunked") == _outputs(tmp_path / "whole")
    assert chunked.models["student"].features == whole.models["student"].features == sum(windows.values())
    assert chunked.models["student"].examples == len(ids)


def test_qa_id_repeated_in_a_later_chunk_is_refused(qa_examples, tiny_model_factory, tmp_path, monkeypatch):
    examples = read_shards(qa_examples)
    folder = _write_examples(tmp_path / "examples", examples, examples.slice(0, 1))
    model = ModelRef(str(tiny_model_factory(task="qa", layers=1, hidden=32)))
    monkeypatch.setattr(evaluate, "EXAMPLES_PER_CHUNK", 16)
    with pytest.raises(EvaluationError, match="appears in two examples"):
        evaluate_models({"student": model}, "qa", folder, FEATURES, EvaluateSpec(measure_speed=False), CPU,
                        tmp_path / "out", progress=False)


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


def test_classification_chunks_score_like_one_chunk(sst2_examples, tiny_model_factory, tmp_path, monkeypatch):
    model = ModelRef(str(tiny_model_factory(task="classification", layers=1, hidden=32, seed=3)))
    config = EvaluateSpec(batch_size=1, measure_speed=False)
    chunks = _record_chunks(monkeypatch)
    for size, out in ((24, "whole"), (5, "chunked")):
        monkeypatch.setattr(evaluate, "EXAMPLES_PER_CHUNK", size)
        evaluate_models({"student": model}, "classification", sst2_examples, FEATURES, config, CPU, tmp_path / out,
                        progress=False)
    assert [len(chunk_ids) for chunk_ids, _ in chunks] == [24, 5, 5, 5, 5, 4]
    assert _outputs(tmp_path / "chunked") == _outputs(tmp_path / "whole")


def test_classification_unlabelled_examples_are_refused_before_any_model_loads(sst2_examples, tmp_path):
    examples = read_shards(sst2_examples)
    labels = examples.column("label").to_pylist()
    labels[3] = None
    folder = _write_examples(tmp_path / "examples", examples.set_column(
        examples.schema.get_field_index("label"), examples.schema.field("label"), pa.array(labels, pa.int64())))
    shutil.copy(sst2_examples / "meta.json", folder / "meta.json")
    # a model folder that does not exist: the data check must come first
    with pytest.raises(EvaluationError, match="1 of 24 evaluation examples have no label"):
        evaluate_models({"student": ModelRef(str(tmp_path / "no-model"))}, "classification", folder, FEATURES,
                        EvaluateSpec(measure_speed=False), CPU, tmp_path / "out", progress=False)


def test_classification_label_count_must_match_the_model(sst2_examples, tiny_model_factory, tmp_path):
    model = ModelRef(str(tiny_model_factory(task="classification", layers=1, hidden=32, num_labels=3)))
    with pytest.raises(ModelCheckError, match="3 labels"):
        evaluate_models({"student": model}, "classification", sst2_examples, FEATURES,
                        EvaluateSpec(measure_speed=False), CPU, tmp_path, progress=False)


def test_classifier_with_the_classes_in_another_order_is_refused(sst2_examples, classifier_with_classes, tmp_path):
    swapped = ModelRef(str(classifier_with_classes(["positive", "negative"])))  # the data's: [negative, positive]
    with pytest.raises(ModelCheckError, match=r"\['positive', 'negative'\].*\['negative', 'positive'\]"):
        evaluate_models({"teacher_0": swapped}, "classification", sst2_examples, FEATURES,
                        EvaluateSpec(measure_speed=False), CPU, tmp_path, progress=False)
    assert not (tmp_path / "teacher_0").exists()


def test_classifier_classes_are_matched_ignoring_case_and_generic_names_are_noted(
        sst2_examples, classifier_with_classes, tiny_model_factory, tmp_path, caplog):
    models = {"teacher_0": ModelRef(str(classifier_with_classes(["NEGATIVE", "POSITIVE"]))),
              "student": ModelRef(str(tiny_model_factory(task="classification", layers=1, hidden=32)))}
    with caplog.at_level(logging.WARNING, logger="distill.models"):
        evaluate_models(models, "classification", sst2_examples, FEATURES, EvaluateSpec(measure_speed=False), CPU,
                        tmp_path, progress=False)
    notes = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(notes) == 1 and notes[0].startswith("student") and "LABEL_0" in notes[0]


def test_random_init_teacher_is_the_labelling_teacher_in_evaluation_and_student_init(
        sst2_examples, tiny_model_factory, tmp_path, monkeypatch):
    folder = str(tiny_model_factory(task="classification", layers=2, hidden=32))
    spec = JobSpec(task="classification",
                   teachers=[TeacherSpec(model=folder), TeacherSpec(model=folder, init="random")])
    refs = teacher_refs(StageContext(spec, tmp_path, {}, tmp_path, progress=False))
    labelling = TeacherEnsemble(refs, "classification", 2, LabelSpec(), torch.device("cpu"), 0).models[1].state_dict()
    torch.manual_seed(123)  # whatever the global RNG holds, a random teacher is rebuilt the same

    loaded = []
    monkeypatch.setattr(evaluate, "load_scoring_model",
                        lambda *args, **kwargs: loaded.append(load_scoring_model(*args, **kwargs)) or loaded[-1])
    evaluate_models({"teacher_1": refs[1]}, "classification", sst2_examples, FEATURES,
                    EvaluateSpec(measure_speed=False), CPU, tmp_path / "eval", progress=False)
    assert all(torch.equal(value, labelling[key]) for key, value in loaded[0].state_dict().items())

    student = build_student(StudentSpec(init_from_teacher_layers=[1]), refs[1], "classification", 2).state_dict()
    assert torch.equal(student["bert.embeddings.word_embeddings.weight"],
                       labelling["bert.embeddings.word_embeddings.weight"])
    assert torch.equal(student["bert.encoder.layer.0.attention.self.query.weight"],
                       labelling["bert.encoder.layer.1.attention.self.query.weight"])


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "distill", "evaluate", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_evaluates_a_model_folder_on_a_squad_file(squad_dev_path, tiny_model_factory, tmp_path):
    model = tiny_model_factory(task="qa", layers=1, hidden=32)
    out = tmp_path / "eval"
    done = _cli(str(model), "--data", str(squad_dev_path), "--limit", "8", "--max-seq-len", "128",
                "--doc-stride", "32", "--max-query-len", "32", "--cpu", "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["total"] == 8 and "HasAns_f1" in printed
    assert json.loads((out / "metrics.json").read_text())["model"]["f1"] == printed["f1"]
    assert len(json.loads((out / "model" / "predictions.json").read_text())) == 8

    missing = _cli(str(tmp_path / "no-such-model"), "--data", str(squad_dev_path))
    assert missing.returncode == 2 and "no model folder" in missing.stderr

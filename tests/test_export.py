"""Exported students load with transformers pipelines and answer; the card carries the recipe and numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import pipeline

from augment.readers import read_examples
from augment.spec import DataSource
from core.resources import ResourcesSpec
from core.shards import read_shards
from distill.evaluate import evaluate_models
from distill.export import ExportError, ModelCardInfo, export_student, pipeline_call
from distill.models import ModelRef
from distill.spec import EvaluateSpec, FeaturesSpec
from jobs.report import export_final_student
from jobs.spec import JobSpec, dump_spec
from jobs.store import RunStore

FEATURES = FeaturesSpec(max_seq_len=128, doc_stride=32, max_query_len=32)
QA_METRICS = {"student": {"exact": 61.5, "f1": 64.25, "HasAns_f1": 70.1, "NoAns_f1": 58.0,
                          "speed": {"cpu": {"parameters": 1_010_370, "size_bytes": 4_045_768, "latency_ms": 1.5,
                                            "throughput": 5000.0}},
                          "vs_teachers": {"teacher_0": {"cpu": {"device": "cpu", "seq_len": 128, "speedup": 2.0,
                                                                "throughput_ratio": 1.9, "size_ratio": 1.64,
                                                                "parameter_ratio": 1.63}}}},
              "teacher_0": {"exact": 77.0, "f1": 80.5, "HasAns_f1": 81.0, "NoAns_f1": 80.0}}


def _qa_card(**changes) -> ModelCardInfo:
    card = ModelCardInfo(
        task="qa", teachers=["deepset/bert-base-uncased-squad2"], student_source="huawei-noah/TinyBERT_General_6L_768D",
        data={"train": "squad_v2 train", "eval": "dev-v2.0.json", "eval_examples": 30},
        augmentation={"enabled": True, "factor": 20, "examples_out": 2_756_000},
        phases={"intermediate": {"epochs": 5, "learning_rate": 5e-5}, "prediction": {"epochs": 5, "temperature": 1.0}},
        metrics=QA_METRICS, inference={"max_seq_len": 128, "doc_stride": 32, "max_question_len": 32},
        name="squad-student", job_id="squad-20250101-abc")
    return ModelCardInfo(**{**card.__dict__, **changes})


@pytest.fixture(scope="module")
def qa_export(tiny_model_factory, tmp_path_factory) -> Path:
    student = tiny_model_factory(task="qa", layers=1, hidden=32)
    return export_student(student, tmp_path_factory.mktemp("export") / "qa-student", _qa_card())


def test_qa_export_folder_layout_and_card(qa_export: Path):
    names = {p.name for p in qa_export.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md", "distillery_qa.py"} <= names
    config = json.loads((qa_export / "config.json").read_text())
    assert config["architectures"] == ["BertForQuestionAnswering"]
    assert config["task_specific_params"]["question-answering"]["doc_stride"] == 32
    card = (qa_export / "README.md").read_text()
    for expected in ("pipeline_tag: question-answering", "deepset/bert-base-uncased-squad2", "TinyBERT_General_6L_768D",
                     "factor 20", "temperature 1", "| f1 | 64.25 | 80.50 |", "squad-20250101-abc",
                     "trust_remote_code=True", "## Intended use", "## Limitations", "4.0",
                     "2.00x faster at batch 1, 1.64x smaller on disk", "examples_out 2,756,000"):
        assert expected in card, expected


def test_qa_export_answers_through_the_pipeline(qa_export: Path):
    qa = pipeline("question-answering", model=str(qa_export), trust_remote_code=True, device="cpu")
    context = "The Eiffel Tower is a wrought-iron lattice tower in Paris, France. " * 12  # several windows
    answer = qa(question="Where is the Eiffel Tower?", context=context, handle_impossible_answer=False)
    assert set(answer) == {"answer", "score", "start", "end", "null_odds"}
    assert answer["answer"] and answer["answer"] == context[answer["start"]:answer["end"]]
    assert 0 <= answer["score"] <= 1
    top = qa({"question": "Where is it?", "context": "It is in Paris."}, top_k=3)
    assert isinstance(top, list) and 1 <= len(top) <= 3


def test_qa_pipeline_agrees_with_evaluation(qa_export: Path, squad_dev_path, tmp_path):
    """The served pipeline and the evaluation stage give the same answers for the same model and settings."""
    examples_dir = tmp_path / "examples"
    read_examples(DataSource(path=str(squad_dev_path), limit=8), "qa", None, examples_dir)
    evaluate_models({"student": ModelRef(str(qa_export))}, "qa", examples_dir, FEATURES,
                    EvaluateSpec(measure_speed=False), ResourcesSpec(gpus_per_worker=0), tmp_path / "eval",
                    progress=False)
    predictions = json.loads((tmp_path / "eval" / "student" / "predictions.json").read_text())
    null_odds = json.loads((tmp_path / "eval" / "student" / "null_odds.json").read_text())
    qa = pipeline("question-answering", model=str(qa_export), trust_remote_code=True, device="cpu")
    for row in read_shards(examples_dir).to_pylist():
        # "no answer" where the evaluation says so, as the evaluation's null threshold decides
        served = qa(question=row["question"], context=row["context"], handle_impossible_answer=True)
        assert served["answer"] == predictions[row["id"]]
        assert served["null_odds"] == pytest.approx(null_odds[row["id"]], abs=1e-3)


def test_classification_export_answers_with_label_names(tiny_model_factory, tmp_path):
    student = tiny_model_factory(task="classification", layers=1, hidden=32)
    card = ModelCardInfo(task="classification", teachers=["textattack/bert-base-uncased-SST-2"],
                         student_source="tiny", label_names=["negative", "positive"],
                         metrics={"student": {"accuracy": 0.8512, "macro_f1": 0.85}})
    out = export_student(student, tmp_path / "sst2-student", card)
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["label2id"] == {"negative": 0, "positive": 1}
    assert "custom_pipelines" not in config and not (out / "distillery_qa.py").exists()
    classify = pipeline("text-classification", model=str(out), device="cpu")
    [result] = classify("it 's a charming and often affecting journey .")
    assert result["label"] in ("negative", "positive") and 0 <= result["score"] <= 1
    assert classify("word " * 2000, truncation=True)[0]["label"] in ("negative", "positive")
    card_text = (out / "README.md").read_text()
    assert "0 = negative, 1 = positive" in card_text and "0.85" in card_text


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_the_pipeline_call_card_and_report_print_serves_what_the_model_computes(task, tiny_model_factory, tmp_path):
    """The card's and the report's call, run as printed: a class's probability, or a regression's raw score."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    student = tiny_model_factory(task=task, layers=1, hidden=32)
    card = ModelCardInfo(task=task, teachers=[], student_source="tiny",
                         label_names=["negative", "positive"] if task == "classification" else None)
    out = export_student(student, tmp_path / "student", card)
    assert pipeline_call(task, '"path/to/this/folder"') in (out / "README.md").read_text()
    serve = eval(pipeline_call(task, repr(str(out))), {"pipeline": pipeline})
    text = {"text": "A man plays a guitar.", "text_pair": "A man is playing music."}
    served = serve(text) if task == "regression" else serve(text["text"])[0]   # a pair in, one result out
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    encoded = (tokenizer(text["text"], text["text_pair"], return_tensors="pt") if task == "regression"
               else tokenizer(text["text"], return_tensors="pt"))
    with torch.no_grad():
        logits = model(**encoded).logits[0]
    expected = logits[0] if task == "regression" else logits.softmax(-1).max()
    assert served["score"] == pytest.approx(float(expected), abs=1e-5)


def test_export_refuses_a_folder_without_tokenizer_or_with_wrong_labels(tiny_model_factory, tmp_path):
    student = tiny_model_factory(task="classification", layers=1, hidden=32)
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((student / name).read_bytes())
    card = ModelCardInfo(task="classification", teachers=[], student_source="tiny", label_names=["a", "b"])
    with pytest.raises(ExportError, match="tokenizer"):
        export_student(bare, tmp_path / "out", card)
    with pytest.raises(ExportError, match="3"):
        export_student(student, tmp_path / "out", ModelCardInfo(**{**card.__dict__, "label_names": ["a", "b", "c"]}))
    assert not (tmp_path / "out").exists()


def test_export_final_student_builds_the_card_from_the_run_folder(tiny_model_factory, tmp_path):
    evaluate = tmp_path / "runs" / ".cache" / "evaluate" / "k"
    evaluate.mkdir(parents=True)
    (evaluate / "metrics.json").write_text(json.dumps(QA_METRICS))
    spec = dump_spec(JobSpec(name="squad", features=FEATURES.model_dump()))
    created = RunStore(tmp_path / "runs").create("squad-20250101-100000-abc123", spec, ["prepare", "evaluate"])
    created.update_stage("evaluate", status="completed", output=str(evaluate))
    run = created.path
    out = export_final_student(run, tiny_model_factory(task="qa", layers=1, hidden=32))
    assert out == run / "export"
    card = (out / "README.md").read_text()
    assert "# squad-student" in card and run.name in card and "| f1 | 64.25 | 80.50 |" in card
    settings = json.loads((out / "config.json").read_text())["task_specific_params"]["question-answering"]
    assert settings["max_seq_len"] == 128 and settings["max_question_len"] == 32

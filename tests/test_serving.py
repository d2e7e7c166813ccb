"""Serving an exported student: `distill answer`, the registered and the standalone pipelines, ONNX and int8,
Haystack's reader, the model card's metadata."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from transformers import pipeline
from transformers.pipelines import PIPELINE_REGISTRY

import distill  # noqa: F401  registers the pipeline
from distill.__main__ import main
from distill.answer import AnswerError, QuestionAnswerer
from distill.export import ModelCardInfo, export_student
from distill.postprocess import whole_words
from distill.qa_pipeline import TASK
from tests.test_export import QA_METRICS

REPO = Path(__file__).resolve().parents[1]
CONTEXT = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named "
           "after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. ") * 6


@pytest.fixture(scope="module")
def qa_export(tiny_model_factory, tmp_path_factory) -> Path:
    card = ModelCardInfo(
        task="qa", teachers=["deepset/bert-base-uncased-squad2", "/home/someone/models/teacher-b"],
        student_source="huawei-noah/TinyBERT_General_6L_768D",
        data={"train": "/data/squad/train-v2.0.json", "eval": "rajpurkar/squad_v2", "eval_examples": 30},
        augmentation={"enabled": True, "factor": 20, "mlm_model": "/home/someone/bert-base-uncased"},
        metrics=QA_METRICS, inference={"max_seq_len": 96, "doc_stride": 32, "max_question_len": 24},
        name="squad-student", job_id="squad-20250101-abc")
    student = tiny_model_factory(task="qa", layers=1, hidden=32, max_positions=128)
    return export_student(student, tmp_path_factory.mktemp("serve") / "qa", card)


def at_word_boundary(text: str, index: int) -> bool:
    """No run of letters or digits crosses `index`."""
    return index in (0, len(text)) or not (text[index - 1].isalnum() and text[index].isalnum())


def run_answer(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill", "answer", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_registered_pipeline_serves_without_remote_code_and_answers_like_distill_answer(qa_export):
    assert TASK in PIPELINE_REGISTRY.get_supported_tasks()
    qa = pipeline(TASK, model=str(qa_export), device="cpu")
    served = qa(question="Who designed the tower?", context=CONTEXT, handle_impossible_answer=True)
    [answered] = QuestionAnswerer(qa_export, cpu=True).answer([{"question": "Who designed the tower?",
                                                                 "context": CONTEXT}])
    assert served["answer"] == answered.answer
    assert served["null_odds"] == pytest.approx(answered.null_odds, abs=1e-4)
    # like transformers' old pipeline, a span unless told to say "no answer"
    spanned = qa(question="Who designed the tower?", context=CONTEXT)
    assert spanned["answer"] and spanned["answer"] == CONTEXT[spanned["start"]:spanned["end"]]
    top = qa(question="Who designed the tower?", context=CONTEXT, top_k=3)
    assert len(top) == 3 and top[0]["score"] >= top[1]["score"] >= top[2]["score"]
    for answer in top:
        assert at_word_boundary(CONTEXT, answer["start"]) and at_word_boundary(CONTEXT, answer["end"]), answer


def test_standalone_pipeline_is_the_package_module_byte_for_byte_and_agrees(qa_export):
    assert (qa_export / "distillery_qa.py").read_bytes() == (REPO / "distill" / "qa_pipeline.py").read_bytes()
    assert (qa_export / "postprocess.py").read_bytes() == (REPO / "distill" / "postprocess.py").read_bytes()
    remote = pipeline("question-answering", model=str(qa_export), trust_remote_code=True, device="cpu")
    registered = pipeline(TASK, model=str(qa_export), device="cpu")
    for question in ("Who designed the tower?", "Where is it?"):
        assert remote(question=question, context=CONTEXT) == registered(question=question, context=CONTEXT)


def test_distill_answer_command_answers_a_question_and_a_jsonl_file(qa_export, tmp_path, capsys):
    result = run_answer(str(qa_export), "--question", "Who designed the tower?", "--context", CONTEXT, "--json")
    assert result.returncode == 0, result.stderr
    [answer] = [json.loads(line) for line in result.stdout.splitlines()]
    assert set(answer) == {"id", "answer", "score", "start", "end", "null_odds"}
    if answer["answer"]:
        assert CONTEXT[answer["start"]:answer["end"]] == answer["answer"]

    questions = tmp_path / "questions.jsonl"
    questions.write_text("\n".join(json.dumps({"id": f"q{i}", "question": q, "context": CONTEXT})
                                   for i, q in enumerate(["Who designed the tower?", "Where is it?"])))
    assert main(["answer", str(qa_export), "--file", str(questions), "--null-threshold", "1e9"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == ["id", "answer", "score", "null odds"]
    assert [row[0] for row in rows[1:]] == ["q0", "q1"] and all(row[1] != "(no answer)" for row in rows[1:])


@pytest.mark.parametrize("problem", ["empty context", "no model", "classifier", "bad jsonl"])
def test_distill_answer_refuses_bad_input_with_exit_2(problem, qa_export, tiny_model_factory, tmp_path, capsys):
    args = {"empty context": [str(qa_export), "--question", "Who?", "--context", "  "],
            "no model": [str(tmp_path), "--question", "Who?", "--context", "Gustave."],
            "classifier": [str(tiny_model_factory(task="classification", layers=1, hidden=32)), "--question", "Who?",
                           "--context", "Gustave."],
            "bad jsonl": [str(qa_export), "--file", str(tmp_path / "q.jsonl")]}[problem]
    (tmp_path / "q.jsonl").write_text('{"question": "Who?", "context": "Gustave."}\n{"question": "Who?"\n')
    assert main(["answer", *args]) == 2  # in this process: the subprocess test above covers the command itself
    expected = {"empty context": "'context' must be non-empty", "no model": "no model",
                "classifier": "classification model", "bad jsonl": "line 2"}[problem]
    assert expected in capsys.readouterr().err


def test_question_answerer_rejects_what_it_cannot_answer(qa_export):
    answerer = QuestionAnswerer(qa_export, cpu=True)
    with pytest.raises(AnswerError, match="question 2"):
        list(answerer.answer([{"question": "Who?", "context": CONTEXT}, {"question": "", "context": CONTEXT}]))
    with pytest.raises(AnswerError, match="twice"):
        list(answerer.answer([{"id": "a", "question": "Who?", "context": CONTEXT},
                              {"id": "a", "question": "Where?", "context": CONTEXT}]))
    with pytest.raises(AnswerError, match="unknown settings"):
        QuestionAnswerer(qa_export, beam=3)


def test_distill_evaluate_takes_its_defaults_from_the_export_and_prints_a_summary(qa_export, squad_dev_path,
                                                                                    tmp_path):
    # the export's 128 positions do not hold the default 384 tokens: only its saved max_seq_len 96 works
    result = subprocess.run([sys.executable, "-m", "distill", "evaluate", str(qa_export), "--data",
                             str(squad_dev_path), "--limit", "6", "--cpu", "--out", str(tmp_path / "eval")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split("  ", 1) for line in result.stdout.splitlines())
    assert {"exact match", "F1", "best F1 (threshold)", "examples / features"} <= set(lines)
    settings = json.loads((tmp_path / "eval" / "settings.json").read_text())
    assert settings["features"]["max_seq_len"] == 96 and settings["features"]["max_query_len"] == 24


def test_exported_files_are_world_readable(qa_export):
    for path in qa_export.iterdir():
        assert path.stat().st_mode & stat.S_IROTH, path.name


def test_model_card_metadata_parses_and_names_no_local_path(qa_export):
    text = (qa_export / "README.md").read_text()
    card = ModelCard(text)
    data = card.data.to_dict()
    assert data["license"] and data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "question-answering"
    assert data["base_model"] == "huawei-noah/TinyBERT_General_6L_768D"
    assert data["teachers"] == ["deepset/bert-base-uncased-squad2", "teacher-b"]
    assert data["datasets"] == ["rajpurkar/squad_v2"]
    results = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert results["f1"] == pytest.approx(64.25) and results["exact"] == pytest.approx(61.5)
    assert "/home/someone" not in text and "/data/squad" not in text
    assert "train-v2.0.json" in text and "mlm_model bert-base-uncased" in text
    assert "import distill" in text and "trust_remote_code=True" in text


def test_onnx_export_matches_pytorch_and_int8_keeps_the_scores(qa_export, squad_dev_path, tmp_path):
    from augment.readers import read_examples
    from augment.spec import DataSource
    from core.resources import ResourcesSpec
    from distill.evaluate import evaluate_models
    from distill.models import ModelRef
    from distill.onnx_export import PARITY_TOLERANCE, export_onnx
    from distill.spec import EvaluateSpec, FeaturesSpec

    files = export_onnx(qa_export, out_dir=tmp_path / "onnx")
    assert files.max_abs_diff <= PARITY_TOLERANCE
    assert files.int8.stat().st_size < files.fp32.stat().st_size / 2
    examples = tmp_path / "examples"
    read_examples(DataSource(path=str(squad_dev_path), limit=60), "qa", None, examples)
    result = evaluate_models({"student": ModelRef(str(qa_export)), "onnx": ModelRef(str(files.fp32)),
                              "onnx_int8": ModelRef(str(files.int8))}, "qa", examples,
                             FeaturesSpec(max_seq_len=96, doc_stride=32, max_query_len=24),
                             EvaluateSpec(measure_speed=False), ResourcesSpec(gpus_per_worker=0), tmp_path / "eval",
                             progress=False)
    scores = {name: evaluation.metrics for name, evaluation in result.models.items()}
    assert scores["onnx"]["f1"] == pytest.approx(scores["student"]["f1"], abs=1e-6)
    assert abs(scores["onnx_int8"]["f1"] - scores["student"]["f1"]) <= 0.5
    assert abs(scores["onnx_int8"]["exact"] - scores["student"]["exact"]) <= 0.5


def test_haystack_reader_gives_the_top_answers_of_distill_answer(qa_export, squad_rows, tmp_path):
    os.environ["HAYSTACK_TELEMETRY_ENABLED"] = "False"
    haystack = pytest.importorskip("haystack")
    from haystack_integrations.components.readers.transformers import TransformersExtractiveReader
    from transformers import AutoModelForQuestionAnswering

    # Haystack's reader feeds no token_type_ids (every token is segment 0); a trained BERT student tolerates that,
    # a random one does not. Give both segments one embedding, so the comparison is of windows and spans alone.
    model = AutoModelForQuestionAnswering.from_pretrained(qa_export)
    embeddings = model.bert.embeddings.token_type_embeddings.weight
    embeddings.data[1] = embeddings.data[0]
    served = tmp_path / "one-segment"
    shutil.copytree(qa_export, served)
    model.save_pretrained(served)

    rows = squad_rows(12)
    reader = TransformersExtractiveReader(model=str(served), device=None, max_seq_length=96, stride=32,
                                          top_k=1, no_answer=False)
    reader.warm_up()
    # Haystack ranks every span of any length and never cuts the question: ask the same of distill answer
    answerer = QuestionAnswerer(served, cpu=True, null_threshold=1e9, max_answer_len=1000, n_best=96,
                                max_question_len=64)
    for row, ours in zip(rows, answerer.answer(rows)):
        [theirs] = reader.run(query=row["question"], documents=[haystack.Document(content=row["context"])])["answers"]
        # Haystack's span can start or end inside a word; ours is widened to whole words
        span = whole_words(row["context"], theirs.document_offset.start, theirs.document_offset.end)
        assert span == (ours.start, ours.end), row["id"]

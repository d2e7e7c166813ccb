"""Preflight: `python -m jobs validate SPEC --check-models`, and `submit` before its first stage.

Every recipe's tiny version (tests/test_recipes.py swaps its hub models and data for tiny local stand-ins with the
real uncased vocabulary) passes. Broken variants of the SST-2 recipe, each one `--set` away, exit 2 with one line
per problem naming the field, and a spec with several problems lists them all. Only configs, tokenizers and the
head of each data file are read, so each check takes seconds.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from augment.readers import peek_source
from augment.spec import DataSource
from core.positions import usable_positions
from distill.models import ModelCheckError, check_max_seq_len
from jobs.cli import main
from tests.jobutil import QUICKSTART, REPO, jobs_cli
# fixtures: tiny local stand-ins for every recipe's models and data
from tests.test_recipes import RECIPE_NAMES, TinyRecipe, stand_in, tiny_recipes  # noqa: F401

SST2 = "sst2_bert_tiny_two_teachers.yaml"  # classification, two teachers (BERT and DistilBERT), declared labels


def validate(spec: Path, *settings: str, capsys) -> tuple[int, list[str], str]:
    """`python -m jobs validate SPEC --check-models --set S ...` in this process: exit code, problem lines, stdout."""
    code = main(["validate", str(spec), "--check-models", *(arg for s in settings for arg in ("--set", s))])
    out, err = capsys.readouterr()
    return code, [line.strip() for line in err.splitlines() if line.startswith("  ")], out


@pytest.fixture(scope="module")
def sst2(tiny_recipes) -> TinyRecipe:
    return tiny_recipes[SST2]


def copy_of_first_teacher(sst2: TinyRecipe, folder: Path) -> Path:
    model = folder / "model"
    shutil.copytree(sst2.swapped.teachers[0].model, model)
    return model


@pytest.fixture(scope="module")
def swapped_teacher(sst2, tmp_path_factory) -> Path:
    """The first teacher with its classes named in the other order than the recipe's [negative, positive]."""
    model = copy_of_first_teacher(sst2, tmp_path_factory.mktemp("swapped"))
    config = json.loads((model / "config.json").read_text())
    config["id2label"] = {"0": "positive", "1": "negative"}
    config["label2id"] = {"positive": 0, "negative": 1}
    (model / "config.json").write_text(json.dumps(config))
    return model


@pytest.fixture(scope="module")
def cased_teacher(sst2, tmp_path_factory, bert_tokenizer_dir) -> Path:
    """The first teacher with the same vocabulary but a tokenizer that keeps case: "Paris" is [UNK] to it."""
    model = copy_of_first_teacher(sst2, tmp_path_factory.mktemp("cased"))
    AutoTokenizer.from_pretrained(bert_tokenizer_dir, do_lower_case=False).save_pretrained(model)
    return model


# ---------------------------------------------------------------------------------------------------------------
# Specs that fit


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_every_recipe_passes_with_tiny_local_stand_ins(tiny_recipes, name, capsys):
    code, problems, out = validate(tiny_recipes[name].spec_path, capsys=capsys)
    assert (code, problems) == (0, [])
    assert re.search(r"^ok: .*; models and data fit together \(checked in [0-9.]+ s\)$", out, re.M), out


def test_quickstart_passes_as_shipped(capsys):
    code, problems, out = validate(REPO / "configs" / "quickstart.yaml", capsys=capsys)
    assert (code, problems) == (0, [])
    assert "models and data fit together" in out


def test_a_fine_tuned_teacher_gets_a_new_head_so_its_classes_are_not_compared(sst2, swapped_teacher, capsys):
    code, problems, _ = validate(sst2.spec_path, f"teachers.0.model={swapped_teacher}",
                                 "teachers.0.finetune={epochs: 1}", capsys=capsys)
    assert (code, problems) == (0, [])


# ---------------------------------------------------------------------------------------------------------------
# Broken variants: exit 2, one line per problem, naming the field


def test_swapped_class_labels(sst2, swapped_teacher, capsys):
    code, problems, _ = validate(sst2.spec_path, f"teachers.0.model={swapped_teacher}", capsys=capsys)
    assert code == 2
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"teachers.0.model ({swapped_teacher}): classifies into ['positive', 'negative'] "
                                  "(in id order), the data's labels are ['negative', 'positive']: the same classes "
                                  "in another order")


def test_cased_tokenizer_against_uncased_ones(sst2, cased_teacher, capsys):
    code, problems, _ = validate(sst2.spec_path, f"teachers.1.model={cased_teacher}", capsys=capsys)
    assert code == 2
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"teachers.1.model ({cased_teacher}) tokenizes the probe 'Where is the Eiffel Tower "
                                  "in Paris?' as ['[CLS]', '[UNK]'")
    assert f"but student.model ({sst2.swapped.student.model}) as ['[CLS]', 'where'" in problems[0]


def test_max_seq_len_over_the_positions_of_every_model_even_a_random_init_teacher(sst2, capsys):
    code, problems, _ = validate(sst2.spec_path, "features.max_seq_len=1024", "teachers.0.init=random", capsys=capsys)
    assert code == 2
    assert sorted(problem.split(" ")[0] for problem in problems) == ["student.model", "teachers.0.model",
                                                                     "teachers.1.model"]
    assert all("features.max_seq_len 1024 exceeds the model's 512 positions" in problem for problem in problems)


def test_squad_json_given_with_task_classification(sst2, capsys):
    squad = QUICKSTART / "sample-train.json"
    code, problems, _ = validate(sst2.spec_path, f"data.train.path={squad}", capsys=capsys)
    assert code == 2
    assert problems == [f"data.train.path: {squad}: holds SQuAD JSON (QA data: an object whose 'data' lists articles "
                        "with paragraphs and questions), but the task is classification; set task: qa, or give "
                        "classification data (TSV, CSV or JSONL records with a text and a label column, or an HF "
                        "dataset)"]


@pytest.mark.parametrize("layer_map, expected", [
    ("[0, 9]", "layer_map names teacher layers [9], but the teacher has layers 0..3"),
    ("[0, 1, 2]", "layer_map has 3 entries but the student has 2 layers"),
])
def test_layer_map_that_does_not_fit_the_models(sst2, layer_map, expected, capsys):
    code, problems, _ = validate(sst2.spec_path, f"distill.intermediate.layer_map={layer_map}", capsys=capsys)
    assert code == 2
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"distill.intermediate.layer_map: {expected}")
    assert "(teacher teachers.0.model" in problems[0] and "4 layers; student student.model" in problems[0]


def test_attention_term_between_different_head_counts(sst2, capsys):
    # the recipe leaves attention out because BERT-tiny has 2 heads to the teacher's 12 (here 4)
    code, problems, _ = validate(sst2.spec_path, "distill.intermediate.losses=[embeddings, hidden, attention]",
                                 capsys=capsys)
    assert code == 2
    assert len(problems) == 1, problems
    assert problems[0].startswith("distill.intermediate.losses: attention distillation pairs heads one to one, but "
                                  "the student has 2 heads and the teacher 4")


def test_onnx_evaluation_without_onnxruntime_installed(sst2, monkeypatch, capsys):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "onnxruntime"
                        else find_spec(name, *args))
    code, problems, _ = validate(sst2.spec_path, "evaluate.onnx=true", capsys=capsys)
    assert code == 2
    assert problems == ['evaluate.onnx: needs onnxruntime; pip install -e ".[onnx]" (or set it false)']
    monkeypatch.undo()
    assert validate(sst2.spec_path, "evaluate.onnx=true", capsys=capsys)[0] == 0


def test_two_problems_are_both_listed(sst2, swapped_teacher, capsys):
    code, problems, _ = validate(sst2.spec_path, f"teachers.0.model={swapped_teacher}",
                                 "distill.intermediate.layer_map=[0, 9]", capsys=capsys)
    assert code == 2
    assert [problem.split(" ")[0] for problem in problems] == ["teachers.0.model", "distill.intermediate.layer_map:"]


def test_hub_name_not_found_locally_with_the_hub_offline(sst2, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    code, problems, _ = validate(sst2.spec_path, "student.model=no-such-org/no-such-model", capsys=capsys)
    assert code == 2
    assert problems == ["student.model: no-such-org/no-such-model is not found locally (no such folder, not in the "
                        "hub cache) and the hub is offline (HF_HUB_OFFLINE is set); give a local folder, or download "
                        "the model once where the hub is reachable"]


def test_data_head_is_described_by_content_not_suffix(tmp_path, sst2_dir):
    qa_records = tmp_path / "qa.jsonl"
    qa_records.write_text(json.dumps({"id": "q1", "context": "Paris is in France.", "question": "Where is Paris?",
                                      "answers": {"text": ["France"], "answer_start": [12]}}) + "\n")
    problem = peek_source(DataSource(path=str(qa_records)), "classification").problem
    assert "found columns: answers, context, id, question" in problem
    assert problem.endswith("these are QA fields (context, question, answers): set task: qa")

    squad_named_jsonl = tmp_path / "squad.jsonl"
    shutil.copy(QUICKSTART / "sample-dev.json", squad_named_jsonl)
    problem = peek_source(DataSource(path=str(squad_named_jsonl)), "qa").problem
    assert problem.startswith(f"{squad_named_jsonl}: holds SQuAD JSON") and problem.endswith("set format: squad")

    records_named_json = tmp_path / "sentences.json"
    records_named_json.write_text('{"sentence": "a fine film", "label": 1}\n{"sentence": "dull", "label": 0}\n')
    problem = peek_source(DataSource(path=str(records_named_json)), "classification").problem
    assert "format squad (the default for .json files) reads SQuAD JSON, which is QA data" in problem
    assert problem.endswith("found JSON Lines records with fields label, sentence; set format: jsonl")

    assert peek_source(DataSource(path=str(sst2_dir / "dev.tsv")), "classification").problem is None
    assert peek_source(DataSource(path="stanfordnlp/sst2", format="hf"), "classification") is None  # hub: not fetched


# ---------------------------------------------------------------------------------------------------------------
# submit runs the same checks before anything is created


def test_submit_refuses_a_broken_model_before_any_stage(sst2, swapped_teacher, tmp_path):
    root = tmp_path / "runs"
    result = jobs_cli("submit", str(sst2.spec_path), "--set", f"teachers.0.model={swapped_teacher}", "--root",
                      str(root), check=False)
    assert result.returncode == 2, result.stderr
    assert "problem(s) between the job's models and data" in result.stderr
    assert f"teachers.0.model ({swapped_teacher}): classifies into ['positive', 'negative']" in result.stderr
    assert not root.exists()  # no job folder, no stage, no process


def test_detached_submit_refuses_it_too(sst2, swapped_teacher, tmp_path, capsys):
    root = tmp_path / "runs"
    assert main(["submit", str(sst2.spec_path), "--set", f"teachers.0.model={swapped_teacher}", "--detach",
                 "--root", str(root)]) == 2
    assert "another order" in capsys.readouterr().err
    assert not root.exists()


def test_python_api_submit_refuses_a_misfit_job_before_creating_anything(sst2, tmp_path):
    from jobs.api import PreflightError, submit

    with pytest.raises(PreflightError) as caught:
        submit(sst2.spec_path, root=tmp_path / "runs", overrides=["features.max_seq_len=1024"])
    assert any("exceeds the model's 512 positions" in problem for problem in caught.value.problems)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("family, table_rows, usable", [("bert", 64, 64), ("roberta", 66, 65)])
def test_max_seq_len_is_checked_against_the_positions_a_token_can_take(family, table_rows, usable, tiny_model_factory):
    """RoBERTa numbers positions from the padding id + 1 (0 in this stand-in, so one row is never a token's; 1 in
    RoBERTa itself, so 514 rows hold 512 tokens): the check counts what a window can hold, as the model runs it."""
    import torch
    from transformers import AutoConfig, AutoModelForQuestionAnswering

    folder = tiny_model_factory("qa", family=family, max_positions=64)
    config = AutoConfig.from_pretrained(folder)
    assert (config.max_position_embeddings, usable_positions(config)) == (table_rows, usable)
    check_max_seq_len(config, usable, family)
    with pytest.raises(ModelCheckError, match=f"features.max_seq_len {usable + 1} exceeds the model's {usable} "):
        check_max_seq_len(config, usable + 1, family)
    model = AutoModelForQuestionAnswering.from_pretrained(folder).eval()
    with torch.no_grad():
        assert model(input_ids=torch.full((1, usable), 5)).start_logits.shape == (1, usable)  # a full window runs
        with pytest.raises((IndexError, RuntimeError)):
            model(input_ids=torch.full((1, usable + 1), 5))  # one token more does not

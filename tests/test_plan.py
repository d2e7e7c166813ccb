"""`python -m jobs plan` and `submit --dry-run`: what a spec will run and cost, with nothing created.

The quickstart's plan is checked against the run it predicts in tests/test_quickstart.py; here the reference
recipe is planned at full size, with bert-base-sized model configs built locally (no weights: the plan reads
configs and tokenizers only) and the training set's size given, since the hub is not reachable.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer, BertConfig

from augment.readers import read_examples
from augment.spec import DataSource
from core.shards import read_shards
from jobs.plan import _tokenized, _word_estimate
from jobs.spec import load_spec
from tests.jobutil import REPO, jobs_cli

SHARED = REPO.parent / "shared"
SQUAD_DEV = SHARED / "data/squad2/dev-v2.0.json"
TOKENIZER = SHARED / "tokenizers/bert-base-uncased"
RECIPE = REPO / "configs/squad2_tinybert_6l.yaml"
SQUAD_TRAIN_QUESTIONS = 130_319   # SQuAD 2.0 train

pytestmark = pytest.mark.skipif(not SQUAD_DEV.exists(), reason="needs ../shared (SQuAD 2.0 dev, the vocabulary)")


@pytest.fixture(scope="module")
def recipe_models(tmp_path_factory) -> dict[str, Path]:
    """Config-only folders of the recipe's models at their real sizes, each with the real uncased vocabulary."""
    base = tmp_path_factory.mktemp("models")
    shapes = {"teacher": BertConfig(), "student": BertConfig(num_hidden_layers=6), "mlm": BertConfig()}
    folders = {}
    for name, config in shapes.items():
        folder = base / name
        config.save_pretrained(folder)
        for file in TOKENIZER.iterdir():
            shutil.copy(file, folder / file.name)
        folders[name] = folder
    return folders


def recipe_args(models: dict[str, Path], *extra: str) -> list[str]:
    return [str(RECIPE), "--set", f"teachers.0.model={models['teacher']}", "--set", f"student.model={models['student']}",
            "--set", f"augment.mlm_model={models['mlm']}", "--set", f"data.eval.path={SQUAD_DEV}",
            "--set", "data.eval.format=squad", *extra]


@pytest.fixture(autouse=True)
def no_hub(monkeypatch):
    """Hub names are looked up in the cache only, so that a machine with internet plans as CI does."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def test_reference_recipe_plan_at_full_size_creates_nothing(recipe_models, tmp_path):
    root = tmp_path / "runs"
    result = jobs_cli("plan", *recipe_args(recipe_models, "--root", str(root), "--json", "--train-examples",
                                           str(SQUAD_TRAIN_QUESTIONS), "--set", "resources.gpus_per_worker=1"))
    assert not root.exists()
    plan = json.loads(result.stdout)
    stages = {stage["name"]: stage for stage in plan["stages"]}
    assert {name for name, s in stages.items() if s["cache"] == "skipped"} == {"finetune_teachers", "train_mlm"}
    # the training set as given (the hub data set is not read here), x20 + the original
    assert stages["augment"]["examples"] == SQUAD_TRAIN_QUESTIONS * 21
    # ~1.02 windows per question at max_seq_len 384 (measured on the dev set), batch 26, 5 epochs per phase
    features = stages["label"]["features"]
    assert 1.0 * 21 * SQUAD_TRAIN_QUESTIONS < features < 1.05 * 21 * SQUAD_TRAIN_QUESTIONS
    spec = load_spec(RECIPE)
    for phase, config in (("distill_intermediate", spec.distill.intermediate),
                          ("distill_prediction", spec.distill.prediction)):
        assert stages[phase]["features"] == features
        assert stages[phase]["steps"] == config.epochs * -(-features // config.batch_size)
        assert 500_000 < stages[phase]["steps"] < 600_000
    # times for every stage (configs are readable), phase 1 dearer per step than phase 2 (a teacher runs online)
    assert all(stages[name]["seconds"] for name in stages if stages[name]["cache"] != "skipped")
    assert stages["distill_intermediate"]["seconds"] > stages["distill_prediction"]["seconds"]
    assert "GPU" in plan["device"]
    # the evaluation set is read: its questions exactly
    assert stages["evaluate"]["examples"] == 11_873
    assert any("data.train" in note for note in plan["notes"])


def test_plan_without_readable_data_or_models_says_what_it_does_not_know(tmp_path):
    result = jobs_cli("plan", str(RECIPE), "--root", str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()
    out = result.stdout
    assert "prepare" in out and "distill_prediction" in out
    assert "its size is not known" in out
    assert "no config of deepset/bert-base-uncased-squad2" in out
    assert "Traceback" not in result.stderr


def test_submit_dry_run_prints_the_plan_and_runs_nothing(tmp_path):
    root = tmp_path / "runs"
    result = jobs_cli("submit", str(REPO / "configs/quickstart.yaml"), "--dry-run", "--root", str(root))
    assert not root.exists()
    assert "plan of quickstart" in result.stdout and "distill_prediction" in result.stdout


def test_word_estimate_of_windows_is_within_one_percent_of_the_tokenizer(tmp_path):
    """Without a tokenizer the plan counts words; on SQuAD 2.0 dev that gives the same windows and tokens."""
    read_examples(DataSource(path=str(SQUAD_DEV)), "qa", None, tmp_path / "dev")
    examples = read_shards(tmp_path / "dev")
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    spec = load_spec(RECIPE)
    for max_seq_len in (384, 192):
        spec = spec.model_copy(update={"features": spec.features.model_copy(update={"max_seq_len": max_seq_len})})
        exact_features, exact_tokens, _ = _tokenized(spec, examples, tokenizer)
        features, tokens, _ = _word_estimate(spec, examples)
        assert features == pytest.approx(exact_features, rel=0.01), max_seq_len
        assert tokens == pytest.approx(exact_tokens, rel=0.01), max_seq_len


def test_a_weighted_training_source_counts_its_rows_after_weighting(tmp_path):
    """Weight 2 doubles what the later stages read, for a lone source as for several, and a cached prepare stage
    is counted by the rows it wrote, not by its distinct examples."""
    from jobs.plan import plan_job
    from jobs.spec import parse_spec
    from jobs.store import RunStore

    def prepared_examples(weight: float, root: Path) -> int:
        spec = parse_spec({"task": "qa", "augment": {"enabled": False}, "teachers": [],
                           "distill": {"intermediate": {"enabled": False},
                                       "prediction": {"distill_weight": 0.0}},
                           "evaluate": {"evaluate_teachers": False},
                           "student": {"model": str(REPO / "configs/quickstart/tiny-bert"), "init": "random"},
                           "data": {"train": {"path": str(REPO / "configs/quickstart/sample-train.json"),
                                              "weight": weight},
                                    "eval": {"path": str(REPO / "configs/quickstart/sample-dev.json")}}},
                          REPO, "spec")
        return next(s for s in plan_job(spec, RunStore(root)).stages if s.name == "prepare").examples

    once = prepared_examples(1.0, tmp_path / "runs")
    assert once > 0 and prepared_examples(2.0, tmp_path / "runs") == 2 * once

    # data the plan cannot read (a hub set, offline): a cached prepare stage says what it wrote
    from jobs.runner import stage_key
    from jobs.stages import STAGES

    spec = parse_spec({"data": {"train": {"path": "rajpurkar/squad_v2", "format": "hf", "split": "train",
                                          "weight": 2.5}}}, REPO, "spec")
    store = RunStore(tmp_path / "hub")
    prepare = next(stage for stage in STAGES if stage.name == "prepare")
    entry = store.cache_entry("prepare", stage_key(prepare, spec, {}))
    entry.path.mkdir(parents=True)
    entry.mark_complete({"train": {"written": 100, "rows": 250}, "eval": {"written": 10}})
    planned = next(s for s in plan_job(spec, store).stages if s.name == "prepare")
    assert (planned.cache, planned.examples) == ("cached", 250)


@pytest.mark.parametrize(("weight", "keyed"), [(1.0, False), (2.0, False), (0.5, True), (1.5, True)])
def test_prepare_is_keyed_on_the_seed_exactly_where_a_fractional_weight_samples_with_it(weight, keyed):
    """Jobs of other seeds share the read data, except where a weight keeps a seeded random share of a source."""
    from jobs.runner import stage_key
    from jobs.spec import parse_spec
    from jobs.stages import STAGES

    prepare = next(stage for stage in STAGES if stage.name == "prepare")
    train = [{"path": str(REPO / "configs/quickstart/sample-train.json"), "name": "sample", "weight": weight}]
    keys = {stage_key(prepare, parse_spec({"seed": seed, "data": {"train": train}}, REPO, "spec"), {})
            for seed in (1, 2)}
    assert len(keys) == (2 if keyed else 1)

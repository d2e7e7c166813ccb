"""Job specs: defaults, round trip, every shipped config, and bad specs refused with the field named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from jobs.cli import main
from jobs.spec import JobSpec, SpecError, dump_spec, load_spec, parse_spec
from tests.jobutil import write_mrqa

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
BENCHMARK_SPECS = sorted((REPO / "benchmarks" / "specs").glob("*.yaml"))
QUICKSTART_SPEC = REPO / "configs" / "quickstart.yaml"


def test_defaults_reproduce_the_reference_recipe():
    spec = JobSpec()
    assert spec.teachers[0].model == "deepset/bert-base-uncased-squad2"
    assert spec.student.model == "huawei-noah/TinyBERT_General_6L_768D"
    assert (spec.augment.factor, spec.augment.keep_original) == (20, True)
    assert (spec.distill.intermediate.epochs, spec.distill.prediction.epochs) == (5, 5)
    assert spec.distill.intermediate.batch_size == spec.distill.prediction.batch_size == 26
    assert (spec.distill.intermediate.learning_rate, spec.distill.prediction.learning_rate) == (5e-5, 3e-5)
    assert (spec.features.max_seq_len, spec.features.doc_stride) == (384, 128)
    assert (spec.distill.prediction.temperature, spec.distill.prediction.distill_weight) == (1.0, 1.0)


def test_reference_config_spells_out_exactly_the_defaults():
    spec = load_spec(REPO / "configs" / "squad2_tinybert_6l.yaml", check_paths=False)
    assert spec.model_copy(update={"name": "distill"}) == JobSpec()


def test_round_trip_through_the_resolved_yaml(tmp_path):
    spec = load_spec(QUICKSTART_SPEC)
    saved = tmp_path / "spec.yaml"
    saved.write_text(dump_spec(spec))
    assert load_spec(saved) == spec
    # relative paths were resolved against the spec's folder, so the copy works from anywhere
    assert Path(spec.data.train[0].path).is_absolute() and Path(spec.data.train[0].path).exists()


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_shipped_config_is_valid(config, capsys, tmp_path):
    """Valid as shipped; a recipe over files the user downloads (MRQA) is valid once they lie where it says."""
    downloads = [Path(source.path) for _, source in load_spec(config, check_paths=False).data_sources()
                 if source.format == "mrqa" and not Path(source.path).exists()]
    if downloads:
        assert main(["validate", str(config)]) == 2  # as shipped: the data is not here
        assert all("no such file" in line for line in capsys.readouterr().err.splitlines()[1:])
        copy = tmp_path / config.name
        copy.write_text(config.read_text())
        article = json.loads((REPO / "configs" / "quickstart" / "sample-dev.json").read_text())["data"][:1]
        for path in downloads:
            placed = tmp_path / path.relative_to(config.parent)
            placed.parent.mkdir(parents=True, exist_ok=True)
            write_mrqa(placed, article, path.name.split(".")[0])
        config = copy
    assert main(["validate", str(config)]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("path", BENCHMARK_SPECS, ids=[p.name for p in BENCHMARK_SPECS])
def test_benchmark_specs_are_valid(path):
    # their model folders are written by benchmarks/quality_sst2.py before it submits them
    spec = load_spec(path, check_paths=False)
    assert spec.task == "classification" and Path(spec.data.train[0].path).name == "train.tsv"


# each case: a change to a valid spec, and the field path the error must name
BAD_SPECS = [
    ({"distill": {"prediction": {"temperature": -1}}}, "distill.prediction.temperature: must be > 0"),
    ({"augmnt": {"factor": 3}}, "augmnt: unknown key; did you mean 'augment'"),
    ({"augment": {"factr": 3}}, "augment.factr: unknown key; did you mean 'factor'"),
    ({"teachers": [{"modle": "x"}]}, "teachers.0.modle: unknown key; did you mean 'model'"),
    ({"task": "regresion"}, "task: input should be 'qa', 'classification' or 'regression'"),
    ({"augment": {"mlm_mode": "quick"}}, "augment.mlm_mode: input should be 'fast' or 'exact'"),
    ({"augment": {"replace_prob": 1.5}}, "augment.replace_prob: must be <= 1"),
    ({"augment": {"factor": 0}}, "augment.factor: must be >= 1"),
    ({"teachers": [{"model": "a/b", "weight": 0}]}, "teachers.0.weight: must be > 0"),
    ({"teachers": []}, "distill.intermediate: needs a teacher"),
    ({"student": {"model": "a/b", "architecture": {}}}, "student: give one of model, architecture"),
    ({"student": {"architecture": {"num_hidden_layers": 3}},
      "distill": {"intermediate": {"layer_map": [1, 2]}}}, "distill.intermediate.layer_map: 2 entries"),
    ({"features": {"doc_stride": 400}}, "features.doc_stride: must be <"),
    ({"distill": {"intermediate": {"teacher": 3}}}, "distill.intermediate.teacher: index 3"),
    ({"distill": {"intermediate": {"enabled": False}, "prediction": {"enabled": False}}},
     "distill: both phases are disabled"),
    ({"distill": {"prediction": {"batch_size": "many"}}}, "distill.prediction.batch_size: input should be"),
    ({"data": {"train": {"path": "./missing.json"}}}, "data.train.path: no such file"),
    ({"teachers": [{"model": "./no-such-model"}]}, "teachers.0.model: no such file"),
    ({"student": {"architecture": {"hidden_size": 100, "num_attention_heads": 12}}},
     "student.architecture: hidden_size 100 is not a multiple"),
    ({"name": "../escape"}, "name: string should match pattern"),
    ({"label": {"ensemble": "vote"}}, "label.ensemble: input should be 'probs' or 'logits'"),
    ({"student": {"architecture": {"num_hidden_layers": 2}, "init": "random"}},
     "student: init: random builds `model` from its config"),
    ({"augment": {"mlm_model": None, "mlm_training": {"epochs": 1}}}, "augment: mlm_training: trains mlm_model"),
    ({"augment": {"corpus": {"path": "./no-corpus.tsv"}}}, "augment.corpus.path: no such file"),
    ({"teachers": [{"model": "a/b", "finetune": {"train": {"path": "./no-teacher-data.json"}}}]},
     "teachers.0.finetune.train.path: no such file"),
    ({"teachers": [{"model": "a/b", "finetune": {"train": {"path": "./x.tsv"}}}]},
     "teachers.0.finetune.train.format: qa reads squad, mrqa, hf or jsonl data, got tsv"),
    ({"data": {"train": [{"path": "a/b"}, {"path": "c/d", "name": "d"}]}},
     "data.train: several sources need a name each; 0 have none"),
    ({"data": {"eval": [{"path": "a/b", "name": "x"}, {"path": "c/d", "name": "x"}]}},
     "data.eval: names must differ; x is used more than once"),
    ({"data": {"train": [{"path": "a/b", "name": "a", "weight": 0}]}}, "data.train.0.weight: must be > 0"),
    ({"data": {"train": []}}, "data.train: list should have at least 1 item"),
    ({"data": {"train": [{"path": "a/b", "name": "a"}, {"path": "./gone.jsonl.gz", "name": "b"}]}},
     "data.train.1.path: no such file"),
    ({"task": "classification", "data": {"eval": {"path": "a/b", "scoring": "mrqa"}}},
     "data.eval.0.scoring: mrqa scores QA"),
    ({"student": None, "teachers": []}, "student: with no student the job fine-tunes and evaluates its teachers"),
    ({"task": "regression", "data": {"train": {"path": "a/b"}, "eval": {"path": "c/d"}, "label_names": ["x", "y"]}},
     "data.label_names: names classes, and regression has none"),
    ({"resources": {"compile": "fast"}}, "resources.compile: input should be 'default', 'reduce-overhead'"),
    ({"augment": {"corpus": {"path": "a/b"}, "vectors": {"path": "fse/glove-wiki-gigaword-100"}}},
     "augment: corpus: nothing would read it"),
]


@pytest.mark.parametrize("change,expected", BAD_SPECS, ids=[e.split(":")[0] for _, e in BAD_SPECS])
def test_bad_spec_is_refused_with_exit_2_and_nothing_created(tmp_path, capsys, change, expected):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(change))
    root = tmp_path / "runs"
    assert main(["submit", str(spec_file), "--root", str(root)]) == 2
    assert expected in capsys.readouterr().err
    assert not root.exists()


def test_every_problem_is_listed_at_once():
    with pytest.raises(SpecError) as error:
        parse_spec({"augment": {"factor": 0, "top_k": 0}, "seed": "x"}, Path("."))
    assert len(error.value.problems) == 3


def test_yaml_syntax_error_points_at_the_line(tmp_path, capsys):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("task: qa\naugment:\n  factor: [1, 2\nseed: 3\n")
    assert main(["validate", str(spec_file)]) == 2
    assert "(yaml): syntax error at line" in capsys.readouterr().err


def test_spec_is_data_not_code(tmp_path, capsys):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("task: !!python/object/apply:os.system ['echo pwned']\n")
    assert main(["validate", str(spec_file)]) == 2
    assert "(yaml)" in capsys.readouterr().err


def test_trust_remote_code_is_off_unless_asked():
    spec = JobSpec()
    assert not spec.teachers[0].trust_remote_code and not spec.student.trust_remote_code


def test_set_overrides_fields_by_dotted_path():
    spec = load_spec(QUICKSTART_SPEC, overrides=["seed=7", "teachers.0.weight=2.5", "augment.enabled=false",
                                                 "distill.intermediate.losses=[embeddings, hidden]",
                                                 "distill.prediction.epochs=0.5"])
    assert (spec.seed, spec.teachers[0].weight, spec.augment.enabled) == (7, 2.5, False)
    assert spec.distill.intermediate.losses == ["embeddings", "hidden"] and spec.distill.prediction.epochs == 0.5
    # everything else is the file's
    plain = load_spec(QUICKSTART_SPEC)
    assert spec.model_copy(update={"seed": plain.seed, "teachers": plain.teachers, "augment": plain.augment,
                                   "distill": plain.distill}) == plain


@pytest.mark.parametrize("override,expected", [
    ("distill.predicton.epochs=1", "distill.predicton: unknown key; did you mean 'prediction'"),
    ("seed", "--set seed: expected KEY.PATH=VALUE"),
    ("teachers.5.model=x", "--set teachers.5.model=x: cannot set teachers.5.model here"),
    ("seed=[1, 2", "--set seed=[1, 2: cannot set seed here"),
])
def test_set_is_checked_like_the_file_and_creates_nothing(tmp_path, capsys, override, expected):
    root = tmp_path / "runs"
    assert main(["submit", str(QUICKSTART_SPEC), "--set", override, "--root", str(root)]) == 2
    assert expected in capsys.readouterr().err
    assert not root.exists()


def test_data_sources_one_or_several_named_and_weighted():
    one = parse_spec({"data": {"train": {"path": "a/b"}, "eval": {"path": "c/d"}}}, Path("."))
    assert [(s.name, s.weight) for s in one.data.train] == [("train", 1.0)]
    assert [(s.name, s.metric) for s in one.data.eval] == [("eval", "squad_v2")]
    several = parse_spec({"data": {
        "train": [{"name": "squad", "path": "x/SQuAD.jsonl.gz", "weight": 0.5}, {"name": "news", "path": "n/q"}],
        "eval": [{"name": "squad", "path": "x/dev.jsonl.gz", "group": "in_domain"},
                 {"name": "bio", "path": "b/q", "format": "hf", "group": "out_of_domain", "scoring": "mrqa"}]}},
        Path("/data"))
    assert [(s.name, s.format, s.weight) for s in several.data.train] == [("squad", "mrqa", 0.5), ("news", "hf", 1.0)]
    assert [(s.group, s.metric) for s in several.data.eval] == [("in_domain", "mrqa"), ("out_of_domain", "mrqa")]
    assert several.data.train[0].path == "/data/x/SQuAD.jsonl.gz"
    assert [field for field, _ in several.data_sources()] == ["data.train.0", "data.train.1", "data.eval.0",
                                                              "data.eval.1"]
    # the resolved spec a run stores reads back the same
    assert parse_spec(yaml.safe_load(dump_spec(several)), Path("/elsewhere")) == several


def test_a_spec_without_student_only_fine_tunes_and_evaluates():
    from jobs.stages import STAGES

    spec = parse_spec({"student": None, "teachers": [{"model": "a/b", "finetune": {"epochs": 1}}]}, Path("."))
    assert [stage.name for stage in STAGES if stage.enabled(spec)] == ["prepare", "finetune_teachers", "evaluate",
                                                                      "report"]


def test_compile_true_is_torchs_default_mode_and_a_named_mode_is_kept():
    modes = [parse_spec({"resources": {"compile": value}}, Path(".")).resources.compile_mode
             for value in (False, True, "reduce-overhead")]
    assert modes == [None, "default", "reduce-overhead"]


def test_each_parallel_stage_takes_its_own_resources_or_the_shared_ones():
    spec = parse_spec({"resources": {"workers": 4, "cpus_per_worker": 2, "gpus_per_worker": 1,
                                     "augment": {"workers": 16, "gpus_per_worker": 0},
                                     "train": {"workers": 8}}}, Path("."))
    augment, label, train = (spec.resources.for_stage(stage) for stage in ("augment", "label", "train"))
    assert (augment.workers, augment.cpus_per_worker, augment.gpus_per_worker) == (16, 2, 0)
    assert (label.workers, label.cpus_per_worker, label.gpus_per_worker) == (4, 2, 1)
    assert (train.workers, train.cpus_per_worker, train.gpus_per_worker) == (8, 2, 1)
    with pytest.raises(SpecError, match="resources.label.workers: must be > 0"):
        parse_spec({"resources": {"label": {"workers": 0}}}, Path("."))

"""Every shipped recipe (configs/*.yaml but the quickstart) run end to end as a real job, shape kept, size cut.

The recipes need hub models and datasets and hours of training, so each is run in a tiny version: every hub model
becomes a tiny local model of the same family (BERT or DistilBERT) and kind (fine-tuned with the task's head, or a
base model to fine-tune or distil into), all sharing bert-base-uncased's vocabulary as the real ones do; hub
datasets become a few local examples with the recipe's columns and label set; epochs, sequence lengths and the
augmentation factor are cut down. Everything else (teachers and their weights, ensemble mode, enabled phases,
losses, layer map, temperature, distillation weight, augmentation settings, fine-tuning) is the recipe's own, and
`test_tiny_version_changes_only_models_data_and_sizes` holds the swap to that. Each tiny recipe then runs as a
real job through `python -m jobs submit --detach` (a few at once, each in its own run store), and its outputs show
that the recipe's shape reached the stages that ran.
"""

from __future__ import annotations

import copy
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest
import yaml

from augment.spec import DataSource
from core.shards import read_shards
from core.tasks import task_traits
from distill.tasks import task_kind
from jobs.api import effective_state
from jobs.layout import eval_sets
from jobs.spec import JobSpec, load_spec
from jobs.stages import STAGES
from jobs.store import Run
from tests.jobutil import QUICKSTART, REPO, jobs_cli, jsonl_records, parquet_rows, write_mrqa, write_spec

RECIPES = sorted(path for path in (REPO / "configs").glob("*.yaml") if path.name != "quickstart.yaml")
RECIPE_NAMES = [path.name for path in RECIPES]
# Two jobs at a time, the second started once the first's Ray is up: local Ray instances that start together race for
# the dashboard agent's port (52365) and the loser's raylet dies at start-up; once one holds it, another starts fine.
CONCURRENT_JOBS = 2
JOBS_TIMEOUT_S = 1200


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    heads: int


# the recipes' teachers are bert-base sized (12 layers, 768 wide, 12 heads); scaled down
TEACHER_SHAPE = Shape(layers=4, hidden=32, heads=4)
# Students keep their real relation to a bert-base teacher: TinyBERT 6L-768D and DistilBERT have its width and heads
# and half its layers (attention compared head to head, no projection); BERT-tiny (2 layers, 128 wide, 2 heads) is
# narrower with fewer heads, so its hidden states reach the teacher's through a learned projection.
STUDENT_SHAPES = {
    "huawei-noah/TinyBERT_General_6L_768D": Shape(layers=2, hidden=32, heads=4),
    "distilbert-base-uncased": Shape(layers=2, hidden=32, heads=4),
    "prajjwal1/bert-tiny": Shape(layers=2, hidden=16, heads=2),
}
DEFAULT_STUDENT_SHAPE = Shape(layers=2, hidden=32, heads=4)
MLM_SHAPE = Shape(layers=2, hidden=32, heads=4)  # the augmentation's masked LM (bert-base-uncased in the recipes)
# hub datasets that ../shared holds a copy of, by split; other datasets get a few examples written for the test
SHARED_DATA = {"stanfordnlp/sst2": {"train": "train.tsv", "validation": "dev.tsv"}}
QA_QUESTIONS = {"train": 12, "eval": 12}
MRQA_QUESTIONS = {"train": 4, "eval": 3}  # per set: a recipe may have many (six and twelve for D-NET)
CLASSIFICATION_EXAMPLES = {"train": 32, "eval": 32}
QA_FEATURES = {"max_seq_len": 96, "max_query_len": 24, "doc_stride": 32}
CLASSIFICATION_MAX_SEQ_LEN = 64

# What the tiny version may change: where models and data come from, and sizes. Any other difference from the
# recipe fails the structure test.
SWAPPABLE = [re.compile(pattern) for pattern in (
    r"data\.(train|eval)\.\d+\.(path|format|split|limit)",
    r"teachers\.\d+\.model",
    r"teachers\.\d+\.finetune\.epochs",
    r"teachers\.\d+\.finetune\.train\.(path|format|split|limit)",
    r"student\.model",
    r"augment\.(factor|mlm_model)",
    r"augment\.corpus\.(path|format|split|limit)",
    r"features\.(max_seq_len|max_query_len|doc_stride)",
    r"distill\.(intermediate|prediction)\.(epochs|log_every)",
    r"evaluate\.measure_speed",
)]
TASK_HEAD = {"qa": "ForQuestionAnswering", "classification": "ForSequenceClassification",
             "regression": "ForSequenceClassification"}
# the range of each headline score
STUDENT_METRICS = {"qa": {"exact": (0, 100), "f1": (0, 100)},
                   "classification": {"accuracy": (0, 1), "macro_f1": (0, 1)},
                   "regression": {"pearson": (-1, 1), "spearman": (-1, 1)}}


def family(model: str) -> str:
    name = model.lower()
    for known in ("distilbert", "squeezebert", "roberta", "electra", "bert"):  # the first that the name holds
        if known in name:
            return known
    pytest.fail(f"no tiny stand-in for {model}: add its family to tests/conftest.py and tests/test_recipes.py")


@pytest.fixture(scope="module")
def stand_in(tiny_model_factory):
    """A tiny model folder of a family (bert, distilbert) and head (qa, classification, or mlm for a base model),
    with bert-base-uncased's tokenizer; built once per set of arguments."""

    def make(model_family: str, head: str, shape: Shape, num_labels: int = 2, seed: int = 0) -> Path:
        return tiny_model_factory(task=head, layers=shape.layers, hidden=shape.hidden, heads_count=shape.heads,
                                  num_labels=num_labels, seed=seed, family=model_family)

    return make


# ---------------------------------------------------------------------------------------------------------------
# The tiny version of a recipe


def sst2_sentences(sst2_dir: Path, split: str, count: int) -> list[str]:
    lines = (sst2_dir / ("train.tsv" if split == "train" else "dev.tsv")).read_text(encoding="utf-8").splitlines()
    return [line.split("\t")[0].strip() for line in lines[1:count + 1]]


def label_set(spec: JobSpec) -> tuple[list[str], bool]:
    """The classes the tiny data uses, and whether the data gives them as ids (an HF ClassLabel column, whose names
    the recipe lists) or as names the reader has to collect (a dataset whose names the recipe leaves out)."""
    if spec.data.label_names:
        return list(spec.data.label_names), True
    return [f"{spec.data.train[0].label_column}_{letter}" for letter in "abcde"], False


def tiny_data(source: DataSource, split: str, spec: JobSpec, sst2_dir: Path, folder: Path,
              index: int = 0) -> dict[str, Any]:
    """Settings replacing a data source: a local file (and limit) with the source's format and columns and the
    job's labels. The `index`-th MRQA source of a split gets its own article of the sample, in the MRQA format."""
    if spec.task == "qa":
        sample = QUICKSTART / ("sample-train.json" if split == "train" else "sample-dev.json")
        if source.format == "mrqa":
            articles = json.loads(sample.read_text(encoding="utf-8"))["data"]
            name = Path(source.path).name
            path = write_mrqa(folder / f"{split}-{index}-{name}", [articles[index % len(articles)]],
                              name.split(".")[0])
            return {"path": str(path), "format": None, "split": None, "limit": MRQA_QUESTIONS[split]}
        return {"path": str(sample), "format": None, "split": None, "limit": QA_QUESTIONS[split]}
    if spec.task == "regression":
        return {"path": str(stsb_file(folder, split, source, sst2_dir)), "format": "tsv", "split": None,
                "limit": None}
    count = CLASSIFICATION_EXAMPLES[split]
    shared = SHARED_DATA.get(source.path, {}).get(source.split or ("train" if split == "train" else "validation"))
    if shared is not None:
        return {"path": str(sst2_dir / shared), "format": None, "split": None, "limit": count}
    names, as_ids = label_set(spec)
    texts = sst2_sentences(sst2_dir, split, count + 1)
    path = folder / f"{split}.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(count):
            record = {source.text_column: texts[i],
                      source.label_column: i % len(names) if as_ids else names[i % len(names)]}
            if source.text_pair_column is not None:
                record[source.text_pair_column] = texts[i + 1]
            handle.write(json.dumps(record) + "\n")
    return {"path": str(path), "format": None, "split": None, "limit": None}


def stsb_file(folder: Path, split: str, source: DataSource, sst2_dir: Path) -> Path:
    """A small file in GLUE STS-B's layout (tab-separated, unquoted: index, genre, filename, year, old_index,
    source1, source2, the two sentences, the score; the last three under the recipe's column names): pairs of
    SST-2 sentences with scores spread over 0-5."""
    count = CLASSIFICATION_EXAMPLES[split]
    texts = sst2_sentences(sst2_dir, split, count + 1)
    header = ["index", "genre", "filename", "year", "old_index", "source1", "source2", source.text_column,
              source.text_pair_column, source.label_column]
    lines = ["\t".join(header)]
    for i in range(count):
        score = f"{5 * ((7 * i) % count) / count:.3f}"
        lines.append("\t".join([str(i), "main-captions", "MSRvid", "2012test", f"{i:04d}", "none", "none", texts[i],
                                texts[i + 1], score]))
    path = folder / f"{split}-stsb.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class TinyRecipe:
    recipe: Path
    original: JobSpec
    swapped: JobSpec
    spec_path: Path
    student_shape: Shape | None
    teacher_shapes: list[Shape]


def tiny_version(recipe: Path, stand_in, sst2_dir: Path, folder: Path) -> TinyRecipe:
    original = load_spec(recipe, check_paths=False)
    document = copy.deepcopy(yaml.safe_load(recipe.read_text(encoding="utf-8")))

    def section(*keys: str) -> dict[str, Any]:
        node = document
        for key in keys:
            if node.get(key) is None:
                node[key] = {}
            node = node[key]
        return node

    task = original.task
    num_labels = len(label_set(original)[0]) if task == "classification" else 2
    for split, sources in (("train", original.data.train), ("eval", original.data.eval)):
        if not isinstance(section("data").get(split), list):
            section("data", split)
        given = section("data")[split]
        for i, (source, settings) in enumerate(zip(sources, given if isinstance(given, list) else [given])):
            settings.update(tiny_data(source, split, original, sst2_dir, folder, i))

    # teachers deep enough for an explicit layer map or layer copy, as the real ones are
    layer_map = original.distill.intermediate.layer_map
    copied = original.student.init_from_teacher_layers if original.student is not None else None
    wanted = [*(layer_map if isinstance(layer_map, list) else []), *(copied or [])]
    teacher_shape = Shape(max(TEACHER_SHAPE.layers, max(wanted, default=0) + 1), TEACHER_SHAPE.hidden,
                          TEACHER_SHAPE.heads)
    document["teachers"] = document.get("teachers") or [{} for _ in original.teachers]
    for i, teacher in enumerate(original.teachers):
        # a teacher to fine-tune names a base model; any other is already fine-tuned with the task's head
        head = "mlm" if teacher.finetune is not None else task
        document["teachers"][i]["model"] = str(stand_in(family(teacher.model), head, teacher_shape, num_labels,
                                                         seed=i + 1))
        if teacher.finetune is not None:
            finetune = document["teachers"][i]["finetune"]
            finetune["epochs"] = min(teacher.finetune.epochs, 1)
            if teacher.finetune.train is not None:
                finetune["train"].update(tiny_data(teacher.finetune.train, "train", original, sst2_dir, folder))

    student_shape = None
    if original.student is not None and original.student.model is not None:
        name = original.student.model
        student_shape = STUDENT_SHAPES.get(name, DEFAULT_STUDENT_SHAPE)
        if isinstance(layer_map, list):
            student_shape = Shape(len(layer_map), student_shape.hidden, student_shape.heads)
        # students start from general (base) models, as the recipes' hub students do
        section("student")["model"] = str(stand_in(family(name), "mlm", student_shape, num_labels, seed=100))

    augment = original.augment
    if augment.enabled:
        section("augment")["factor"] = min(augment.factor, 2)
        if augment.mlm_model is not None:
            section("augment")["mlm_model"] = str(stand_in(family(augment.mlm_model), "mlm", MLM_SHAPE))
        if augment.vectors.path is not None:
            pytest.fail(f"{recipe.name} names a vectors file; give it a tiny stand-in in tests/test_recipes.py")
        if augment.corpus is not None:
            section("augment", "corpus").update(tiny_data(augment.corpus, "train", original, sst2_dir, folder))

    if task == "qa":
        features = original.features.model_dump()
        section("features").update({key: min(features[key], value) for key, value in QA_FEATURES.items()})
    else:
        section("features")["max_seq_len"] = min(original.features.max_seq_len, CLASSIFICATION_MAX_SEQ_LEN)
    for phase in ("intermediate", "prediction"):
        settings = section("distill", phase)
        settings["epochs"] = min(getattr(original.distill, phase).epochs, 1)
        settings["log_every"] = 1  # every step in metrics.jsonl, so each loss term shows up
    section("evaluate")["measure_speed"] = False

    spec_path = write_spec(folder, document, recipe.name)
    return TinyRecipe(recipe, original, load_spec(spec_path), spec_path, student_shape,
                      [teacher_shape for _ in original.teachers])


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return {prefix: value}
    flat = {}
    for key, inner in items:
        flat |= flatten(inner, f"{prefix}.{key}" if prefix else str(key))
    return flat or {prefix: value}


def differing_fields(first: JobSpec, second: JobSpec) -> set[str]:
    a, b = flatten(first.model_dump(mode="json")), flatten(second.model_dump(mode="json"))
    missing = object()
    return {path for path in a.keys() | b.keys() if a.get(path, missing) != b.get(path, missing)}


def enabled_stages(spec: JobSpec) -> list[str]:
    return [stage.name for stage in STAGES if stage.enabled(spec)]


# ---------------------------------------------------------------------------------------------------------------
# Fixtures: the tiny version of each recipe, and its job


@pytest.fixture(scope="module")
def tiny_recipes(stand_in, sst2_dir, tmp_path_factory) -> dict[str, TinyRecipe]:
    return {recipe.name: tiny_version(recipe, stand_in, sst2_dir, tmp_path_factory.mktemp(recipe.stem))
            for recipe in RECIPES}


@pytest.fixture(scope="module")
def recipe_jobs(tiny_recipes) -> dict[str, dict[str, Any]]:
    """Every tiny recipe submitted through the CLI with --detach, CONCURRENT_JOBS at a time, and waited for.

    A job starts only when every running one has its Ray up (see CONCURRENT_JOBS). Each has its own run store.
    """
    pending, running, finished = list(tiny_recipes.values()), {}, {}
    deadline = time.monotonic() + JOBS_TIMEOUT_S
    while pending or running:
        states = {}
        for name, job in list(running.items()):
            # as `status` sees it (a job whose process died is "interrupted"), without a CLI process per poll
            states[name] = state = effective_state(Run(job["root"] / job["job_id"])).model_dump(mode="json")
            if state["status"] not in ("pending", "running"):
                finished[name] = running.pop(name) | {"state": state}
        if pending and len(running) < CONCURRENT_JOBS and all(ray_is_up(states[name]) for name in running):
            tiny = pending.pop(0)
            root = tiny.spec_path.parent / "runs"
            submitted = jobs_cli("submit", str(tiny.spec_path), "--detach", "--root", str(root))
            running[tiny.recipe.name] = {"root": root, "job_id": submitted.stdout.strip().splitlines()[-1]}
        if time.monotonic() > deadline:
            for job in running.values():  # leave no job behind
                jobs_cli("cancel", job["job_id"], "--root", str(job["root"]), check=False)
            pytest.fail(f"tiny recipe jobs still running after {JOBS_TIMEOUT_S} s: {sorted(running)}")
        time.sleep(0.5)
    return finished


def ray_is_up(state: dict[str, Any]) -> bool:
    """Whether a job has started Ray: the runner marks a Ray stage running only once Ray is up."""
    return any(stage.uses_ray and state.get("stages", {}).get(stage.name, {}).get("status") in ("running", "completed")
               for stage in STAGES)


def finished_job(recipe_jobs: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    """The recipe's job, which must have succeeded; its outputs by stage."""
    job = recipe_jobs[name]
    run_dir = job["root"] / job["job_id"]
    if job["state"]["status"] != "succeeded":
        logs = "".join(path.read_text(errors="replace")[-4000:]
                       for path in (run_dir / "logs" / "job.log", run_dir / "logs" / "stdout.log") if path.exists())
        pytest.fail(f"the tiny version of {name} ended {job['state']['status']}: {job['state'].get('error')}\n{logs}")
    outputs = {stage: Path(s["output"]) for stage, s in job["state"]["stages"].items() if s["output"]}
    return job | {"run_dir": run_dir, "outputs": outputs}


def stage_ran(spec: JobSpec, stage: str, outputs: dict[str, Path]) -> bool:
    """Whether the recipe enables this stage (a training phase, augmentation, labelling); a disabled one must have
    left no output."""
    enabled = stage in enabled_stages(spec)
    if not enabled:
        assert stage not in outputs
    return enabled


def training_record(output: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """train_config.json and metrics.jsonl of a training stage's output."""
    return json.loads((output / "train_config.json").read_text()), jsonl_records(output / "metrics.jsonl")


def assert_logged_terms(records: list[dict[str, Any]], terms: set[str], output: Path) -> None:
    logged = {key.removeprefix("loss/") for record in records for key in record if key.startswith("loss/")}
    assert logged == terms, (output, logged)
    assert all(math.isfinite(record["loss"]) for record in records), output


# ---------------------------------------------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_tiny_version_changes_only_models_data_and_sizes(tiny_recipes, name):
    tiny_recipe = tiny_recipes[name]
    changed = differing_fields(tiny_recipe.original, tiny_recipe.swapped)
    unexpected = sorted(path for path in changed if not any(p.fullmatch(path) for p in SWAPPABLE))
    assert not unexpected, f"the tiny version of {tiny_recipe.recipe.name} changed its structure: {unexpected}"
    swapped = tiny_recipe.swapped
    # nothing is left to come from a hub: every model and data source is a local file or folder
    models = [t.model for t in swapped.teachers]
    models += [swapped.augment.mlm_model] if "augment" in enabled_stages(swapped) else []
    models += [swapped.student.model] if swapped.student is not None else []
    sources = [*swapped.data.train, *swapped.data.eval]
    for model in filter(None, models):
        assert Path(model).is_dir(), model
    for source in sources:
        assert source.format != "hf" and Path(source.path).is_file(), source
    assert enabled_stages(swapped) == enabled_stages(tiny_recipe.original)


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_recipe_job_succeeds_running_exactly_the_stages_it_enables(tiny_recipes, recipe_jobs, name):
    tiny_recipe, recipe_job = tiny_recipes[name], finished_job(recipe_jobs, name)
    state = recipe_job["state"]
    enabled = enabled_stages(tiny_recipe.swapped)
    ran = [name for name, stage in state["stages"].items() if stage["status"] == "completed"]
    assert ran == enabled
    assert all(stage["status"] == "skipped" for name, stage in state["stages"].items() if name not in enabled)
    run_dir = recipe_job["run_dir"]
    assert (run_dir / "report" / "report.md").is_file()
    exported = tiny_recipe.swapped.evaluate.export and tiny_recipe.swapped.student is not None
    assert (run_dir / "export" / "README.md").is_file() == exported


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_recipe_fine_tunes_and_labels_with_every_teacher_by_weight(tiny_recipes, recipe_jobs, name):
    tiny_recipe, recipe_job = tiny_recipes[name], finished_job(recipe_jobs, name)
    spec, outputs = tiny_recipe.swapped, recipe_job["outputs"]
    teachers = []
    for i, teacher in enumerate(spec.teachers):
        if teacher.finetune is None:
            teachers.append(teacher.model)
            continue
        model = outputs["finetune_teachers"] / f"teacher_{i}" / "model"
        config = json.loads((model / "config.json").read_text())
        assert config["architectures"][0].endswith(TASK_HEAD[spec.task]), config["architectures"]
        teachers.append(str(model))
    if not stage_ran(spec, "label", outputs):  # no student: the teachers are fine-tuned and scored, nothing labelled
        assert spec.student is None and "finetune_teachers" in outputs
        return
    stats = json.loads((outputs["label"] / "stats.json").read_text())
    assert stats["teachers"] == teachers
    total = sum(t.weight for t in spec.teachers)
    assert stats["weights"] == pytest.approx([t.weight / total for t in spec.teachers])
    assert (stats["ensemble"], stats["keep_teacher_logits"]) == (spec.label.ensemble, spec.label.keep_teacher_logits)

    features = read_shards(outputs["label"])
    mixed, each = task_traits(spec.task).teacher_columns[0], task_traits(spec.task).per_teacher_columns[0]
    assert features.num_rows == stats["features"] > 0
    assert features[mixed].null_count == 0
    if spec.label.keep_teacher_logits:
        assert features[each].null_count == 0
        assert set(pc.list_value_length(features[each]).to_pylist()) == {len(spec.teachers)}
    else:
        assert features[each].null_count == features.num_rows


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_recipe_augments_as_configured(tiny_recipes, recipe_jobs, name):
    tiny_recipe, recipe_job = tiny_recipes[name], finished_job(recipe_jobs, name)
    spec, outputs = tiny_recipe.swapped, recipe_job["outputs"]
    if not stage_ran(spec, "augment", outputs):
        return
    stats = json.loads((outputs["augment"] / "stats.json").read_text())
    train = json.loads((outputs["prepare"] / "train" / "meta.json").read_text())["counts"]
    assert stats["examples_in"] == train["written"] > 0
    assert stats["examples_in"] < stats["examples_out"] <= stats["examples_in"] * (spec.augment.factor + 1)
    rows = read_shards(outputs["augment"])
    assert rows.num_rows == stats["examples_out"]
    originals = rows.filter(pc.equal(rows["variant"], 0)).num_rows
    assert originals == (stats["examples_in"] if spec.augment.keep_original else 0)


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_recipe_intermediate_phase_uses_its_losses_and_layer_map(tiny_recipes, recipe_jobs, name):
    tiny_recipe, outputs = tiny_recipes[name], finished_job(recipe_jobs, name)["outputs"]
    phase = tiny_recipe.swapped.distill.intermediate
    if not stage_ran(tiny_recipe.swapped, "distill_intermediate", outputs):
        return
    config, records = training_record(outputs["distill_intermediate"])
    objective = config["objective"]
    assert set(objective["losses"]) == set(phase.losses)
    assert_logged_terms(records, set(phase.losses), outputs["distill_intermediate"])
    assert objective["teacher_index"] == phase.teacher
    teacher = tiny_recipe.teacher_shapes[phase.teacher]
    student = tiny_recipe.student_shape
    if isinstance(phase.layer_map, list):
        expected_map = list(phase.layer_map)
    else:  # uniform: student layer i learns from teacher layer (i + 1) * T / S - 1
        expected_map = [(i + 1) * teacher.layers // student.layers - 1 for i in range(student.layers)]
    assert objective["layer_map"]["teacher_layer_per_student_layer"] == expected_map
    # a student narrower than its teacher is compared through learned projections, one of the same width is not
    projected = {name.split(".")[0] for name in objective["projections"]}
    narrower = student.hidden != teacher.hidden
    assert projected == ({"embeddings", "hidden"} & set(phase.losses) if narrower else set())
    assert (objective["attention_compared"] is not None) == ("attention" in phase.losses)


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_recipe_prediction_phase_uses_its_temperature_and_weight(tiny_recipes, recipe_jobs, name):
    tiny_recipe, outputs = tiny_recipes[name], finished_job(recipe_jobs, name)["outputs"]
    spec = tiny_recipe.swapped
    phase = spec.distill.prediction
    if not stage_ran(spec, "distill_prediction", outputs):
        return
    config, records = training_record(outputs["distill_prediction"])
    losses = config["objective"]["losses"]
    soft = task_kind(spec.task).soft_term   # kl; regression's mse
    assert losses[soft]["weight"] == pytest.approx(phase.distill_weight)
    assert losses["hard"]["weight"] == pytest.approx(1 - phase.distill_weight)
    assert losses[soft]["temperature"] == pytest.approx(phase.temperature)
    assert losses[soft]["teacher_logits"] == phase.teacher_logits
    terms = {term for term, used in ((soft, phase.distill_weight > 0), ("hard", phase.distill_weight < 1)) if used}
    assert_logged_terms(records, terms, outputs["distill_prediction"])
    if spec.distill.intermediate.enabled:  # phase 2 continues from phase 1's student
        assert config["objective"]["student"] == str(outputs["distill_intermediate"] / "student")
    student = json.loads((outputs["distill_prediction"] / "student" / "config.json").read_text())
    assert student["architectures"][0].endswith(TASK_HEAD[spec.task])
    if tiny_recipe.original.student.model is not None:  # the recipe's student family really ran (DistilBERT's path)
        assert student["model_type"] == family(tiny_recipe.original.student.model)


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_recipe_evaluates_the_student_and_its_teachers(tiny_recipes, recipe_jobs, name):
    tiny_recipe, recipe_job = tiny_recipes[name], finished_job(recipe_jobs, name)
    spec, outputs = tiny_recipe.swapped, recipe_job["outputs"]
    metrics = json.loads((outputs["evaluate"] / "metrics.json").read_text())
    expected = ({"student"} if spec.student is not None else set()) | (
        {f"teacher_{i}" for i in range(len(spec.teachers))} if spec.evaluate.evaluate_teachers else set())
    assert set(metrics) == expected
    sets = eval_sets(spec, outputs["prepare"])
    counts = {source.name: json.loads((folder / "meta.json").read_text())["counts"]["written"]
              for source, folder in sets}
    for source, folder in sets:
        assert counts[source.name] == parquet_rows(folder) > 0
    keys = STUDENT_METRICS[spec.task]
    for model, entry in metrics.items():
        for key, (low, high) in keys.items():
            assert low <= entry[key] <= high, (model, key, entry[key])
        assert entry["total"] == sum(counts.values()), model
        if len(sets) == 1:
            continue
        # several sets: each scored on its own, then macro-averaged (each set once), overall and per group
        assert list(entry["sets"]) == list(counts)
        groups: dict[str, list[str]] = {}
        for source, folder in sets:
            scores = entry["sets"][source.name]
            assert scores["total"] == counts[source.name]
            if spec.task == "qa":
                assert scores["scoring"] == source.metric == "mrqa"
                answers = json.loads((outputs["evaluate"] / "sets" / source.name / model / "predictions.json")
                                     .read_text())
                assert len(answers) == counts[source.name] and all(answers.values())  # never a null answer
            if source.group is not None:
                groups.setdefault(source.group, []).append(source.name)
        for key in keys:
            assert entry[key] == pytest.approx(sum(entry["sets"][n][key] for n in counts) / len(counts))
        assert set(entry["groups"]) == set(groups)
        for group, members in groups.items():
            for key in keys:
                assert entry["groups"][group][key] == pytest.approx(
                    sum(entry["sets"][n][key] for n in members) / len(members))
    if len(sets) > 1:  # the report's table: a row per set, per group and for all
        report = (recipe_job["run_dir"] / "report" / "report.md").read_text()
        table = report.split("Per evaluation set")[1].split("\n\n")[1]
        rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
        assert len(rows) == len(sets) + len(metrics[next(iter(metrics))]["groups"]) + 1
        for source, _ in sets:
            assert any(row.startswith(f"| `{source.name}` |") for row in rows), source.name

"""Job specs: the pydantic model a YAML job file is validated against, assembled from the sections each stage
package owns (`augment.spec`, `distill.spec`, `core.resources`).

Every field is declared once, beside the code that reads it, with its default and a description; the defaults
reproduce the reference recipe (bert-base-uncased-squad2 teacher, TinyBERT General 6L-768D student, SQuAD 2.0 x20
+ original, 5 + 5 epochs, batch 26, lr 5e-5 / 3e-5, max_seq_len 384, doc_stride 128, temperature 1, distillation
weight 1.0). What this module adds is what only the whole job knows: its name, task, seed and output, and the
checks across sections.

`load_spec` is the only way in: it parses YAML safely, validates, resolves relative paths against the spec
file's folder and checks that local files and models exist, and raises `SpecError` listing every problem by
field path.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from augment.spec import QA_FORMATS, AugmentSpec, DataSource, DataSpec
from core.config import DEFAULT_SEED, StrictModel
from core.resources import ResourcesSpec
from core.tasks import Task, task_traits
from distill.spec import DistillSpec, EvaluateSpec, FeaturesSpec, LabelSpec, StudentSpec, TeacherSpec


class SpecError(Exception):
    """A job spec that cannot be run; `problems` holds one line per problem, each starting with a field path."""

    def __init__(self, problems: list[str], source: str = "spec"):
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))


class OutputSpec(StrictModel):
    root: str = Field("runs", description="run store: one folder per job plus a shared stage cache; a relative "
                                          "path is taken from the folder `submit` runs in (--root overrides)")


class JobSpec(StrictModel):
    name: str = Field("distill", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    task: Task = "qa"
    seed: int = DEFAULT_SEED
    data: DataSpec = DataSpec()
    teachers: list[TeacherSpec] = Field([TeacherSpec()], description="one or more; empty trains the student alone")
    student: StudentSpec | None = Field(
        StudentSpec(), description="the model to distil into; null: no distillation, the job fine-tunes (where "
                                   "asked) and evaluates its teachers side by side")
    augment: AugmentSpec = AugmentSpec()
    features: FeaturesSpec = FeaturesSpec()
    label: LabelSpec = LabelSpec()
    distill: DistillSpec = DistillSpec()
    evaluate: EvaluateSpec = EvaluateSpec()
    resources: ResourcesSpec = ResourcesSpec()
    output: OutputSpec = OutputSpec()

    @model_validator(mode="after")
    def _cross_checks(self) -> JobSpec:
        problems = []
        if not self.teachers:
            if self.distill.intermediate.enabled:
                problems.append("distill.intermediate: needs a teacher; add one to teachers or set enabled: false")
            if self.distill.prediction.enabled and self.distill.prediction.distill_weight > 0:
                problems.append("distill.prediction: distill_weight > 0 needs a teacher; add one or set it to 0")
            if self.student is not None and (self.student.init_from_teacher_layers is not None
                                             or self.student.architecture is not None):
                problems.append("student: init_from_teacher_layers and architecture are derived from a teacher")
            if self.evaluate.evaluate_teachers:
                problems.append("evaluate.evaluate_teachers: there are no teachers; set it to false")
        elif self.distill.intermediate.teacher >= len(self.teachers):
            problems.append(f"distill.intermediate.teacher: index {self.distill.intermediate.teacher} but only "
                            f"{len(self.teachers)} teacher(s)")
        layer_map = self.distill.intermediate.layer_map
        student_layers = self._student_layer_count()
        if isinstance(layer_map, list) and student_layers is not None and len(layer_map) != student_layers:
            problems.append(f"distill.intermediate.layer_map: {len(layer_map)} entries for a student of "
                            f"{student_layers} layers")
        if task_traits(self.task).windows:
            problems += self._window_problems()
            problems += [f"{field}.format: qa reads squad, mrqa, hf or jsonl data, got {source.format}"
                         for field, source in self.data_sources()
                         if source.format not in QA_FORMATS and field != "augment.corpus"]
        else:
            problems += [f"data.eval.{i}.scoring: {source.scoring} scores QA; {self.task} is scored by "
                         f"{task_traits(self.task).headline_metric}"
                         for i, source in enumerate(self.data.eval) if source.scoring is not None]
        if self.data.label_names and not task_traits(self.task).classes:
            problems.append(f"data.label_names: names classes, and {self.task} has none; remove it")
        if self.student is None:
            if not self.teachers or not self.evaluate.evaluate_teachers:
                problems.append("student: with no student the job fine-tunes and evaluates its teachers; give "
                                "teachers and keep evaluate.evaluate_teachers on")
        elif not (self.distill.intermediate.enabled or self.distill.prediction.enabled):
            problems.append("distill: both phases are disabled; enable at least one (or set student: null to only "
                            "fine-tune and evaluate the teachers)")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def data_sources(self) -> list[tuple[str, DataSource]]:
        """Every data source the job reads, with its field path: training and eval sets, the teachers' own
        fine-tuning data and the augmentation corpus."""
        sources: list[tuple[str, DataSource]] = []
        for split, split_sources in (("train", self.data.train), ("eval", self.data.eval)):
            several = len(split_sources) > 1
            sources += [(f"data.{split}.{i}" if several else f"data.{split}", source)
                        for i, source in enumerate(split_sources)]
        sources += [(f"teachers.{i}.finetune.train", t.finetune.train) for i, t in enumerate(self.teachers)
                    if t.finetune is not None and t.finetune.train is not None]
        if self.augment.corpus is not None:
            sources.append(("augment.corpus", self.augment.corpus))
        return sources

    def _window_problems(self) -> list[str]:
        f = self.features
        room = f.max_seq_len - f.max_query_len - 3
        if room <= 0:
            return [f"features.max_seq_len: {f.max_seq_len} leaves no room for context after max_query_len "
                    f"{f.max_query_len} and 3 special tokens"]
        if f.doc_stride >= room:
            return [f"features.doc_stride: must be < {room} (max_seq_len - max_query_len - 3) so windows "
                    f"overlap, got {f.doc_stride}"]
        return []

    def _student_layer_count(self) -> int | None:
        if self.student is None:
            return None
        if self.student.architecture is not None:
            return self.student.architecture.num_hidden_layers
        if self.student.init_from_teacher_layers is not None:
            return len(self.student.init_from_teacher_layers)
        return None


# ---------------------------------------------------------------------------------------------------------------
# Loading and error reporting

_BOUND_WORDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """Valid keys of the model found by following `loc` (a pydantic error location) from JobSpec."""
    model: Any = JobSpec
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        if field is None:
            break
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        for c in candidates:  # list[Model]
            for inner in getattr(c, "__args__", ()):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    model = inner
    return list(model.model_fields) if model is not None else []


def _describe(error: dict[str, Any]) -> str:
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    path = ".".join(str(p) for p in loc) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        valid = _fields_at(loc[:-1])
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"{path}: unknown key{hint} (valid keys: {', '.join(valid)})"
    if kind == "missing":
        return f"{path}: required, missing"
    if kind in _BOUND_WORDS:
        bound = next(iter(error.get("ctx", {}).values()), "?")
        return f"{path}: must be {_BOUND_WORDS[kind]} {bound}, got {error['input']!r}"
    message = error["msg"].removeprefix("Value error, ")
    if kind == "value_error":
        return message if not loc or message.startswith(path) else f"{path}: {message}"
    return f"{path}: {message[0].lower()}{message[1:]}, got {error['input']!r}"


def parse_spec(document: Any, base_dir: Path, source: str = "spec") -> JobSpec:
    """Validate an already-parsed YAML document; relative paths are taken from `base_dir`."""
    if not isinstance(document, dict):
        raise SpecError([f"(top level): expected a mapping of sections, got {type(document).__name__}"], source)
    try:
        return JobSpec.model_validate(document, context={"base_dir": str(base_dir)})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            # cross-field checks report several problems at once, one per line, each with its own path
            problems += _describe(error).split("\n")
        raise SpecError(problems, source) from None


def missing_references(spec: JobSpec) -> list[str]:
    """Local files and model folders the spec names but that do not exist (hub names are not checked)."""
    refs: list[tuple[str, str | None]] = [(f"{field}.path", source.path) for field, source in spec.data_sources()]
    refs += [("student.model", spec.student.model if spec.student is not None else None),
             ("augment.vectors.path", spec.augment.vectors.path)]
    if spec.augment.enabled and spec.augment.mlm_model is not None:
        refs.append(("augment.mlm_model", spec.augment.mlm_model))
    refs += [(f"teachers.{i}.model", teacher.model) for i, teacher in enumerate(spec.teachers)]
    return [f"{field}: no such file or folder: {value}"
            for field, value in refs if value is not None and Path(value).is_absolute() and not Path(value).exists()]


def apply_overrides(document: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`document` with `key.path=value` settings applied, as `python -m jobs submit --set` takes them.

    The path is dotted, with list indices as numbers (`teachers.0.model`); the value is read as YAML, so
    `seed=3`, `augment.enabled=false` and `data.label_names=[neg, pos]` mean what they say. Missing mappings on
    the way are created; validation then catches a misspelt key like any other.
    """
    document = copy.deepcopy(document)
    problems = []
    for override in overrides:
        path, sep, raw = override.partition("=")
        keys = path.strip().split(".")
        if not sep or not all(keys):
            problems.append(f"--set {override}: expected KEY.PATH=VALUE, e.g. seed=3 or teachers.0.model=./teacher")
            continue
        node: Any = document
        try:
            for key, following in zip(keys, keys[1:]):
                if isinstance(node, list):
                    node = node[int(key)]
                else:
                    node = node.setdefault(key, [] if following.isdigit() else {})
            value = yaml.safe_load(raw)
            if isinstance(node, list):
                node[int(keys[-1])] = value
            else:
                node[keys[-1]] = value
        except (ValueError, IndexError, TypeError, AttributeError, yaml.YAMLError) as exc:
            problems.append(f"--set {override}: cannot set {path} here ({type(exc).__name__}: {exc})")
    if problems:
        raise SpecError(problems, "--set")
    return document


def load_spec(path: str | Path, check_paths: bool = True, overrides: list[str] | tuple[str, ...] = ()) -> JobSpec:
    """Read, validate and resolve a YAML job spec, with `overrides` (see `apply_overrides`) applied; raise
    SpecError with every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([f"(file): cannot read {path}: {exc}"], str(path)) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([f"(yaml): syntax error at {where}: {problem}"], str(path)) from None
    document = apply_overrides(document if document is not None else {}, overrides)
    spec = parse_spec(document, path.resolve().parent, str(path))
    if check_paths:
        problems = missing_references(spec)
        if problems:
            raise SpecError(problems, str(path))
    return spec


def dump_spec(spec: JobSpec) -> str:
    """The resolved spec as YAML, every default written out: what a run directory stores."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)

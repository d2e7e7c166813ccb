"""What a job will do and cost, before it runs: `plan_job(spec, store)`, shown by `python -m jobs plan SPEC` and
`python -m jobs submit SPEC --dry-run`. Nothing is created: not a run folder, not a cache entry.

For each stage in order: whether the run store already holds its output (cached, partly written by an interrupted
job, or to run), the examples it writes, the features and optimizer steps it trains on, the disk its output takes
and a rough time on the spec's resources. Where a stage is cached, its counts are the ones it recorded. Otherwise:

- examples: the training data is read here (into a temporary folder, deleted after) exactly as `prepare` reads it;
  augmentation writes each original and up to `factor` variants (a variant equal to an earlier one is dropped, so
  this is an upper bound).
- features: up to `SAMPLE_EXAMPLES` training examples (all of them in a small data set, so the count is exact)
  are tokenized with the tokenizer the label stage uses, giving features per example and tokens per feature;
  variants are assumed to window like their originals. Without the tokenizer here (a hub model on an offline
  machine), wordpieces are estimated as `WORDPIECES_PER_WORD` per whitespace word.
- steps: as the trainer counts them, epochs x ceil(ceil(features / batch_size) / grad_accum_steps), rounded up.
- time: floating-point work (2 x parameters per token for a forward pass, 3x that to train, attention included)
  over an assumed rate per worker, `CPU_FLOPS_PER_CORE` or `GPU_FLOPS`, plus augmentation's per-row cost. It is
  meant to tell minutes from days, not to schedule by.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, get_args

import numpy as np

from core.tasks import task_traits
from augment.spec import DataSource, EvalSource, TrainSource
from core.loop import LoopSpec
from core.resources import ParallelStage, ResourcesSpec, asked_per_worker, resolve_resources
from jobs.runner import augments_with_masked_lm
from jobs.spec import JobSpec
from jobs.stages import STAGES, Stage
from jobs.store import RunStore, folder_bytes

STAGES_BY_NAME = {stage.name: stage for stage in STAGES}

#: Training examples tokenized to measure features per example and tokens per feature.
SAMPLE_EXAMPLES = 2_000
#: bert-base-uncased wordpieces per whitespace-separated word of SQuAD 2.0 dev contexts (questions: 1.23); used
#: where the tokenizer cannot be loaded.
WORDPIECES_PER_WORD = 1.29
#: fp32 FLOP/s per core of the 2-core development CPU: label_bench.py's bare forward reaches ~60 GFLOP/s, training
#: less; 40 predicts the quickstart's job within 10% (56 s planned, 45-53 s run).
CPU_FLOPS_PER_CORE = 40e9
#: assumed: one data-centre GPU under mixed precision at about a third of its dense peak.
GPU_FLOPS = 50e12
#: augmentation's work per row written besides the masked LM: sampling, span checks, Parquet (scale_bench.py).
AUGMENT_SECONDS_PER_ROW = 1.5e-3
#: exact mode runs one masked-LM pass per word where fast mode runs about one per text (augment_bench.py: 25.6x).
EXACT_MLM_PASSES = 25.6
#: Parquet bytes of an augmented row over an original's: a variant records its substitutions, and shares most of
#: its context with its neighbours, which compresses (quickstart, factor 4: 1.04).
AUGMENTED_ROW_BYTES = 1.0
#: label shards per token of a QA feature: ids, types, offsets, float16 logits, compressed (label_bench.py: 3.0;
#: the quickstart's random teacher: 4.8) ...
LABEL_BYTES_PER_TOKEN = 3.0
#: ... and the training view the first training phase maps beside them: int32 ids, int8 types, 2 float16 logits.
VIEW_BYTES_PER_TOKEN = 9
#: a stage on Ray workers starts processes that import torch and transformers and load their models.
WORKER_STARTUP_SECONDS = 8
#: the report's plots and the export.
REPORT_SECONDS = 5
#: a checkpoint holds fp32 weights and Adam's two moments; the trainer keeps 2 (distill.trainer.KEEP_CHECKPOINTS).
CHECKPOINT_BYTES_PER_PARAM = 12
KEPT_CHECKPOINTS = 2


@dataclass
class StagePlan:
    """One stage of the plan; None where a number is not known here (`notes` says why)."""

    name: str
    cache: str                          # cached, partial (an interrupted run's output, resumed), run, always, skipped
    key: str | None = None
    output: str | None = None
    examples: int | None = None         # examples the stage writes (prepare: train; augment: originals + variants)
    features: int | None = None         # windows the stage writes (label) or trains on (training stages)
    steps: int | None = None            # optimizer steps (training stages)
    disk_bytes: int | None = None
    seconds: float | None = None
    notes: list[str] = field(default_factory=list)

    def shows_examples(self) -> bool:
        return self.name in ("prepare", "augment", "label", "evaluate")


@dataclass
class JobPlan:
    name: str
    task: str
    root: str
    device: str                         # what the time estimates assume, in words
    stages: list[StagePlan]
    notes: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _DataProfile:
    """What the plan knows of a data set: counts exact where read, per-example rates from a sample."""

    examples: int | None
    parquet_bytes: int | None
    features_per_example: float | None
    tokens_per_feature: float | None
    text_tokens_per_example: float | None   # distinct text (a QA context counted once per paragraph), for the MLM
    sampled: int | None                     # examples tokenized (or counted in words) for the rates
    read_seconds: float | None = None


@dataclass(frozen=True)
class _Model:
    params: int
    forward_params: int                     # parameters a token goes through (embedding tables excluded)
    layers: int
    hidden: int

    def forward_flops(self, tokens_per_sequence: float) -> float:
        """Per token: 2 per weight, plus attention scores and weighted values (2 x 2 x T x hidden per layer)."""
        return 2 * self.forward_params + 4 * self.layers * tokens_per_sequence * self.hidden


# ---------------------------------------------------------------------------------------------------------------
# The entry point


def plan_job(spec: JobSpec, store: RunStore, train_examples: int | None = None) -> JobPlan:
    """The plan of `spec` against the run store `store`; reads data and model configs, writes nothing.

    Args:
        train_examples: the number of training examples, for data that cannot be read here (a hub data set on an
            offline machine); ignored where the data is read.
    """
    from jobs.runner import stage_key

    notes: list[str] = []
    keys: dict[str, str] = {}
    stages: list[StagePlan] = []
    recorded: dict[str, dict[str, Any]] = {}   # the summaries of cached stages
    for stage in STAGES:
        if not stage.enabled(spec):
            stages.append(StagePlan(stage.name, "skipped"))
            continue
        key = stage_key(stage, spec, keys)
        keys[stage.name] = key
        stages.append(_cache_state(stage, key, store, recorded))

    models = _Models(spec)
    prepared = recorded.get("prepare", {})
    with tempfile.TemporaryDirectory(prefix="distillery-plan-") as tmp:
        # a cached prepare stage counts the training rows after weighting (what the later stages read)
        prepared_train = prepared.get("train", {})
        train = _profile_sets(spec, spec.data.train, "data.train", Path(tmp) / "train",
                              prepared_train.get("rows", prepared_train.get("written", train_examples)), models, notes)
        evaluation = _profile_sets(spec, spec.data.eval, "data.eval", Path(tmp) / "eval",
                                   prepared.get("eval", {}).get("written"), models, notes)
    if train.features_per_example is None and evaluation.features_per_example is not None:
        train = _like(train, evaluation)
        notes.append("data.train not read here: its rates per example (features, tokens, bytes, reading time) are "
                     "data.eval's")
    resources = resolve_resources(spec.resources, _assumed_cluster(spec.resources),
                                  masked_lm=augments_with_masked_lm(spec))
    device, rate = _device(resources.for_stage("train"))
    estimator = _Estimator(spec, resources, models, train, evaluation, rate, recorded)
    for stage in stages:
        if stage.cache != "skipped":
            getattr(estimator, stage.name)(stage)
        if stage.cache == "cached":   # what it took and takes, in place of the estimates
            stage.disk_bytes = folder_bytes(Path(stage.output))
            stage.seconds = recorded[stage.name].get("seconds")
        elif stage.seconds is not None and STAGES_BY_NAME[stage.name].uses_ray:
            stage.seconds += WORKER_STARTUP_SECONDS
    notes += models.problems
    if recorded:
        notes.append("cached stages: counts, disk and time as they recorded them")
    return JobPlan(spec.name, spec.task, str(store.root), device, stages, notes)


def _cache_state(stage: Stage, key: str, store: RunStore, recorded: dict[str, dict[str, Any]]) -> StagePlan:
    if not stage.cached:
        return StagePlan(stage.name, "always", key)
    entry = store.cache_entry(stage.name, key)
    cache = "cached" if entry.complete else "partial" if entry.path.is_dir() else "run"
    plan = StagePlan(stage.name, cache, key, str(entry.path))
    if cache == "cached":
        recorded[stage.name] = entry.summary()
    return plan


# ---------------------------------------------------------------------------------------------------------------
# Models and data


class _Models:
    """Configs of the spec's models (no weights), parameters counted on the meta device; None where not loadable."""

    def __init__(self, spec: JobSpec):
        self.spec = spec
        self.problems: list[str] = []
        self._configs: dict[str, Any] = {}
        self.teachers = [self._model(t.model, spec.task, f"teachers.{i}.model")
                         for i, t in enumerate(spec.teachers)]
        self.student = self._student(spec.task)
        mlm = spec.augment.mlm_model if spec.augment.enabled else None
        self.mlm = self._model(mlm, "mlm", "augment.mlm_model") if mlm else None
        self.tokenizer = self._tokenizer()

    def _config(self, name: str, field_path: str) -> Any:
        if name not in self._configs:
            from distill.models import ModelRef, load_config

            try:
                self._configs[name] = load_config(ModelRef(name), local_files_only=not _local_or_hub(name))
            except Exception as error:  # transformers raises OSError, ValueError...: one line each
                self._configs[name] = None
                self.problems.append(f"{field_path}: no config of {name} here ({_why(name, error)}): no time "
                                     "estimate for the stages running it")
        return self._configs[name]

    def _model(self, name: str, head: str, field_path: str, **overrides: Any) -> _Model | None:
        config = self._config(name, field_path)
        return None if config is None else _count(config, head, overrides)

    def _student(self, head: str) -> _Model | None:
        student = self.spec.student
        if student is None:
            return None
        if student.model is not None:
            return self._model(student.model, head, "student.model")
        if not self.spec.teachers:
            return None
        teacher = self.spec.teachers[0].model
        if student.architecture is not None:
            return self._model(teacher, head, "teachers.0.model", **student.architecture.model_dump())
        return self._model(teacher, head, "teachers.0.model",
                           num_hidden_layers=len(student.init_from_teacher_layers or []))

    def _tokenizer(self) -> Any:
        """The tokenizer the label stage builds features with (jobs.stages.tokenizer_ref), or None."""
        student = self.spec.student
        if student is not None and student.model is not None:
            name, trust_remote_code = student.model, student.trust_remote_code
        elif self.spec.teachers:
            name, trust_remote_code = self.spec.teachers[0].model, self.spec.teachers[0].trust_remote_code
        else:
            return None
        from distill.models import ModelRef, load_tokenizer

        try:
            return load_tokenizer(ModelRef(name, trust_remote_code=trust_remote_code),
                                  local_files_only=not _local_or_hub(name))
        except Exception as error:
            self.problems.append(f"no tokenizer of {name} here ({_why(name, error)}): features estimated at "
                                 f"{WORDPIECES_PER_WORD} wordpieces per word")
            return None


def _local_or_hub(name: str) -> bool:
    """Whether `name` can be loaded without waiting on an unreachable hub (transformers retries ~20 s per file)."""
    return Path(name).exists() or _hub_up()


@functools.cache
def _hub_up() -> bool:
    from jobs.preflight import hub_reachable

    return hub_reachable()


def _why(name: str, error: Exception) -> str:
    if not Path(name).exists() and not _hub_up():
        return "not in the hub cache, and the hub is unreachable"
    return _first_line(error)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _count(config: Any, head: str, overrides: dict[str, Any]) -> _Model:
    import torch
    from transformers import AutoModelForMaskedLM

    from distill.tasks import task_kind

    config = config.__class__.from_dict({**config.to_dict(), **overrides})
    model_class = AutoModelForMaskedLM if head == "mlm" else task_kind(head).head
    with torch.device("meta"):   # shapes only: no memory, no time
        model = model_class.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    embeddings = sum(p.numel() for name, p in model.named_parameters() if re.search(r"embeddings?\.", name))
    return _Model(params, params - embeddings, getattr(config, "num_hidden_layers", getattr(config, "n_layers", 1)),
                  getattr(config, "hidden_size", getattr(config, "dim", 0)))


def _profile_sets(spec: JobSpec, sources: list[TrainSource] | list[EvalSource], field_path: str, folder: Path,
                  known_examples: int | None, models: _Models, notes: list[str]) -> _DataProfile:
    """The profile of the sources read as one set (`_profile` of each): examples and bytes summed, training sources
    by their weights (a lone source too), and rates per example averaged over the examples."""
    if len(sources) == 1 and getattr(sources[0], "weight", 1.0) == 1.0:
        return _profile(spec, sources[0], field_path, folder, known_examples, models, notes)
    several = len(sources) > 1
    weighted = [(_profile(spec, source, f"{field_path}.{i}" if several else field_path, folder / str(i), None,
                          models, notes), getattr(source, "weight", 1.0)) for i, source in enumerate(sources)]
    if any(profile.examples is None for profile, _ in weighted):
        return _DataProfile(known_examples, None, None, None, None, None)
    examples = sum(profile.examples * weight for profile, weight in weighted)

    def mean(field: str) -> float | None:
        values = [(getattr(profile, field), profile.examples * weight) for profile, weight in weighted]
        if not examples or any(value is None for value, _ in values):
            return None
        return sum(value * count for value, count in values) / examples

    def total(field: str, by_weight: bool) -> float | None:
        values = [getattr(profile, field) for profile, _ in weighted]
        if None in values:
            return None
        return sum(value * (weight if by_weight else 1) for value, (_, weight) in zip(values, weighted))

    parquet_bytes = total("parquet_bytes", by_weight=True)  # repeated examples are written again; read once
    return _DataProfile(round(examples), None if parquet_bytes is None else round(parquet_bytes),
                        mean("features_per_example"), mean("tokens_per_feature"), mean("text_tokens_per_example"),
                        sum(profile.sampled or 0 for profile, _ in weighted), total("read_seconds", by_weight=False))


def _profile(spec: JobSpec, source: DataSource, field_path: str, folder: Path, known_examples: int | None,
             models: _Models, notes: list[str]) -> _DataProfile:
    """Read `source` as `prepare` would and tokenize a sample of it; `known_examples` where it cannot be read."""
    from augment.readers import read_examples
    from core.shards import read_shards

    unknown_size = "" if known_examples else "; its size is not known" + (
        " (plan --train-examples N)" if field_path == "data.train" else "")
    if source.format == "hf" and not _local_or_hub(source.path):
        notes.append(f"{field_path}: {source.path} is a hub data set and the hub is unreachable here{unknown_size}")
        return _DataProfile(known_examples, None, None, None, None, None)
    started = time.perf_counter()
    try:
        result = read_examples(source, spec.task, spec.data.label_names, folder)
    except Exception as error:
        notes.append(f"{field_path}: cannot read {source.path} here ({_first_line(error)}){unknown_size}")
        return _DataProfile(known_examples, None, None, None, None, None)
    read_seconds = time.perf_counter() - started
    table = read_shards(folder)
    n = table.num_rows
    parquet_bytes = sum(p.stat().st_size for p in Path(folder, "shards").glob("*.parquet"))
    if n == 0:
        return _DataProfile(0, parquet_bytes, None, None, None, 0, read_seconds)
    rows = np.sort(np.random.default_rng(0).choice(n, size=min(n, SAMPLE_EXAMPLES), replace=False))
    sample = table.take(rows)
    if models.tokenizer is not None:
        features, tokens, text_tokens = _tokenized(spec, sample, models.tokenizer)
    else:
        features, tokens, text_tokens = _word_estimate(spec, sample)
    return _DataProfile(result.written, parquet_bytes, features / len(rows), tokens / max(features, 1),
                        text_tokens / len(rows), len(rows), read_seconds)


def _like(unread: _DataProfile, read: _DataProfile) -> _DataProfile:
    """`unread` (a size at most) with the per-example rates of `read`."""
    def scaled(total: float | None) -> float | None:
        if total is None or unread.examples is None or not read.examples:
            return None
        return total * unread.examples / read.examples

    parquet_bytes = scaled(read.parquet_bytes)
    return dataclasses.replace(unread, features_per_example=read.features_per_example,
                               tokens_per_feature=read.tokens_per_feature,
                               text_tokens_per_example=read.text_tokens_per_example, sampled=read.sampled,
                               parquet_bytes=None if parquet_bytes is None else round(parquet_bytes),
                               read_seconds=scaled(read.read_seconds))


def _tokenized(spec: JobSpec, sample: Any, tokenizer: Any) -> tuple[int, int, int]:
    """(features, their tokens, tokens of the distinct texts) of the sample, tokenized as the label stage does."""
    from distill.tasks import task_kind

    features = task_kind(spec.task).build_features(sample, tokenizer, spec.features)
    tokens = int(np.diff(features.column("input_ids").combine_chunks().offsets.to_numpy()).sum())
    texts = _distinct_texts(spec, sample)
    # verbose=False: texts longer than the model's positions are only counted here
    text_tokens = (sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"])
                   if texts else 0)
    return features.num_rows, tokens, text_tokens


def _distinct_texts(spec: JobSpec, sample: Any) -> list[str]:
    if task_traits(spec.task).windows:
        return list(dict.fromkeys(sample.column("context").to_pylist())) + sample.column("question").to_pylist()
    pairs = [p for p in sample.column("text_pair").to_pylist() if p] if "text_pair" in sample.column_names else []
    return sample.column("text").to_pylist() + pairs


def _word_estimate(spec: JobSpec, sample: Any) -> tuple[int, int, int]:
    """(features, tokens, distinct-text tokens) from word counts: the label stage's windowing, wordpieces guessed."""
    def pieces(text: str | None) -> int:
        return round(len((text or "").split()) * WORDPIECES_PER_WORD)

    f = spec.features
    text_tokens = sum(pieces(t) for t in _distinct_texts(spec, sample))
    if not task_traits(spec.task).windows:   # one feature per example: [CLS] text [SEP] (pair [SEP]), cut
        texts = sample.column("text").to_pylist()
        pairs = sample.column("text_pair").to_pylist() if "text_pair" in sample.column_names else [None] * len(texts)
        lengths = [min(f.max_seq_len, pieces(t) + 2 + (pieces(p) + 1 if p else 0)) for t, p in zip(texts, pairs)]
        return len(lengths), sum(lengths), text_tokens
    features = tokens = 0
    for question, context in zip(sample.column("question").to_pylist(), sample.column("context").to_pylist()):
        query = min(pieces(question), f.max_query_len)
        room = f.max_seq_len - query - 3           # [CLS] question [SEP] context [SEP]
        rest = pieces(context)
        while True:   # windows overlapping by doc_stride tokens, as the tokenizer's overflow makes them
            features += 1
            tokens += query + 3 + min(rest, room)
            if rest <= room:
                break
            rest -= max(room - f.doc_stride, 1)
    return features, tokens, text_tokens


def _assumed_cluster(resources: ResourcesSpec) -> dict[str, float]:
    """The Ray cluster a job will find, as far as a plan can tell: this machine's CPUs and GPUs, and at least what
    the spec asks a worker for (on a cluster, 1 GPU when it names none)."""
    import torch

    def at_least(what: str, here: float) -> float:
        return max([here, *(n for n in asked_per_worker(resources, what).values() if n is not None)])

    gpus = at_least("gpus", float(torch.cuda.device_count()))
    return {"CPU": at_least("cpus", float(os.cpu_count() or 1)), "GPU": max(gpus, 1.0) if resources.address else gpus}


def _device(train: ResourcesSpec) -> tuple[str, float]:
    """What the training workers compute on, in words, and each worker's assumed FLOP/s."""
    gpus = train.gpus_per_worker or 0.0
    workers = f"{train.worker_count} training worker(s)"
    if gpus > 0:
        return (f"{workers} x {gpus:g} GPU, assumed {GPU_FLOPS / 1e12:.0f} TFLOP/s each (mixed precision)",
                GPU_FLOPS * gpus)
    cores = max(1, math.ceil(train.cpus_per_worker))
    return (f"{workers} x {cores} CPU core(s), {CPU_FLOPS_PER_CORE / 1e9:.0f} GFLOP/s per core (fp32, calibrated on "
            "the development CPU)", CPU_FLOPS_PER_CORE * cores)


# ---------------------------------------------------------------------------------------------------------------
# Per-stage estimates


def _steps(features: int, epochs: float, batch_size: int, accum: int = 1) -> int:
    """As distill.trainer.Recipe counts them."""
    return math.ceil(epochs * math.ceil(math.ceil(features / batch_size) / accum))


class _Estimator:
    """Fills each StagePlan from the data profiles, the models and the rate; one method per stage."""

    def __init__(self, spec: JobSpec, resources: ResourcesSpec, models: _Models, train: _DataProfile,
                 evaluation: _DataProfile, rate: float, recorded: dict[str, dict[str, Any]]):
        self.spec, self.models, self.train, self.evaluation = spec, models, train, evaluation
        self.rate, self.recorded = rate, recorded
        self.workers = {stage: resources.for_stage(stage).worker_count for stage in get_args(ParallelStage)}
        self.augmented_examples: int | None = None
        self.label_features: int | None = None

    def _features(self, examples: int | None, profile: _DataProfile) -> int | None:
        if examples is None or profile.features_per_example is None:
            return None
        return round(examples * profile.features_per_example)

    def _seconds(self, flops_per_token: float | None, tokens: float | None, workers: int) -> float | None:
        if flops_per_token is None or tokens is None:
            return None
        return flops_per_token * tokens / (self.rate * workers)

    def _train(self, plan: StagePlan, features: int | None, config: LoopSpec, trained: _Model | None,
               online: list[_Model | None], recorded: dict[str, Any] | None) -> None:
        """A training phase (several add up): steps, the model and its checkpoints on disk, time for training
        `trained` with `online` teachers running beside it."""
        if features is None:
            return
        plan.features = (plan.features or 0) + features
        steps = recorded["steps"] if recorded else _steps(features, config.epochs, config.batch_size,
                                                          config.grad_accum_steps)
        plan.steps = (plan.steps or 0) + steps
        if trained is not None:
            plan.disk_bytes = (plan.disk_bytes or 0) + trained.params * (
                4 + CHECKPOINT_BYTES_PER_PARAM * KEPT_CHECKPOINTS)
        length = self.train.tokens_per_feature
        if trained is None or length is None or any(m is None for m in online):
            return
        flops = 3 * trained.forward_flops(length) + sum(m.forward_flops(length) for m in online)
        plan.seconds = (plan.seconds or 0) + self._seconds(flops, features * length * config.epochs,
                                                           self.workers["train"])

    def prepare(self, plan: StagePlan) -> None:
        plan.examples = self.train.examples
        if self.train.parquet_bytes is not None:
            plan.disk_bytes = self.train.parquet_bytes + (self.evaluation.parquet_bytes or 0)
        if self.train.read_seconds is not None:
            plan.seconds = self.train.read_seconds + (self.evaluation.read_seconds or 0)
        sampled, examples = self.train.sampled, self.train.examples
        if sampled and examples and sampled < examples:
            plan.notes.append(f"features per example from {sampled:,} examples drawn at random")

    def finetune_teachers(self, plan: StagePlan) -> None:
        for i, teacher in enumerate(self.spec.teachers):
            if teacher.finetune is None:
                continue
            if teacher.finetune.train is not None:
                plan.notes.append(f"teacher {i} fine-tunes on its own data: counts not estimated")
                continue
            self._train(plan, self._features(self.train.examples, self.train), teacher.finetune,
                        self.models.teachers[i], [], self.recorded.get(plan.name, {}).get(f"teacher_{i}"))

    def train_mlm(self, plan: StagePlan) -> None:
        config = self.spec.augment.mlm_training
        if self.spec.augment.corpus is not None:
            plan.notes.append("trains on augment.corpus: counts not estimated")
            return
        self._train(plan, self._features(self.train.examples, self.train), config, self.models.mlm, [],
                    self.recorded.get(plan.name))

    def augment(self, plan: StagePlan) -> None:
        config = self.spec.augment
        if plan.name in self.recorded:
            plan.examples = self.recorded[plan.name]["examples_out"]
        elif self.train.examples is not None:
            plan.examples = self.train.examples * (config.factor + config.keep_original)
            plan.notes.append("at most: a variant equal to an earlier one is dropped")
        self.augmented_examples = plan.examples
        if plan.examples is None:
            return
        if self.train.parquet_bytes is not None and self.train.examples:
            plan.disk_bytes = round(plan.examples * AUGMENTED_ROW_BYTES * self.train.parquet_bytes
                                    / self.train.examples)
        seconds = plan.examples * AUGMENT_SECONDS_PER_ROW / self.workers["augment"]
        mlm = self.models.mlm
        if mlm is not None and self.train.text_tokens_per_example is not None:
            passes = EXACT_MLM_PASSES if config.mlm_mode == "exact" else 1.0
            window = 2 * config.mlm_window + 1 if config.mlm_mode == "fast" else self.train.tokens_per_feature
            seconds += self._seconds(passes * mlm.forward_flops(window or 0),
                                     self.train.examples * self.train.text_tokens_per_example, self.workers["augment"])
        elif config.mlm_model is not None:
            return
        plan.seconds = seconds

    def label(self, plan: StagePlan) -> None:
        examples = self.augmented_examples if self.spec.augment.enabled else self.train.examples
        plan.examples = examples
        recorded = self.recorded.get(plan.name)
        plan.features = recorded["features"] if recorded else self._features(examples, self.train)
        self.label_features = plan.features
        length = self.train.tokens_per_feature
        if plan.features is None or length is None:
            return
        tokens = plan.features * length
        per_token = task_traits(self.spec.task).windows
        shards = tokens * LABEL_BYTES_PER_TOKEN if per_token else plan.features * (5 * length + 8)
        plan.disk_bytes = round(shards + tokens * VIEW_BYTES_PER_TOKEN)
        if all(self.models.teachers):
            plan.seconds = self._seconds(sum(t.forward_flops(length) for t in self.models.teachers), tokens,
                                         self.workers["label"])

    def distill_intermediate(self, plan: StagePlan) -> None:
        config = self.spec.distill.intermediate
        teacher = self.models.teachers[config.teacher] if config.teacher < len(self.models.teachers) else None
        self._train(plan, self.label_features, config, self.models.student, [teacher], self.recorded.get(plan.name))

    def distill_prediction(self, plan: StagePlan) -> None:
        config = self.spec.distill.prediction
        online = self.models.teachers if config.teacher_logits == "online" and config.distill_weight > 0 else []
        self._train(plan, self.label_features, config, self.models.student, list(online),
                    self.recorded.get(plan.name))

    def evaluate(self, plan: StagePlan) -> None:
        examples = self.evaluation.examples
        plan.examples = examples
        plan.features = self._features(examples, self.evaluation)
        length = self.evaluation.tokens_per_feature
        scored = (([self.models.student] if self.spec.student is not None else [])
                  + (self.models.teachers if self.spec.evaluate.evaluate_teachers else []))
        if examples is not None:   # predictions, and null odds for QA, of each model
            plan.disk_bytes = examples * len(scored) * 100
        if plan.features is not None and length is not None and all(scored):
            plan.seconds = self._seconds(sum(m.forward_flops(length) for m in scored), plan.features * length, 1)

    def report(self, plan: StagePlan) -> None:
        plan.seconds = REPORT_SECONDS
        if self.spec.evaluate.export and self.models.student is not None:
            plan.disk_bytes = self.models.student.params * 4


# ---------------------------------------------------------------------------------------------------------------
# Printing


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} B"


def _count_text(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


def format_plan(plan: JobPlan) -> str:
    """The plan as the CLI prints it: a table of stages, totals, the assumptions and every note."""
    from core.progress import format_duration

    header = ("stage", "cache", "examples", "features", "steps", "disk", "time")
    rows = []
    for s in plan.stages:
        if s.cache == "skipped":
            rows.append((s.name, "skipped", "", "", "", "", ""))
            continue
        rows.append((s.name, s.cache, _count_text(s.examples) if s.shows_examples() else "",
                     "" if s.features is None and s.steps is None and s.name != "label" else _count_text(s.features), "" if s.steps is None else f"{s.steps:,}", _size(s.disk_bytes),
                     "?" if s.seconds is None else format_duration(s.seconds)))
    def total(values: list[Any], show: Callable[[Any], str]) -> str:
        """The sum of the known values, '+' when some are not known."""
        known = [v for v in values if v is not None]
        return (show(sum(known)) + ("+" if len(known) < len(values) else "")) if known else "?"

    to_run = [s for s in plan.stages if s.cache not in ("skipped", "cached")]
    rows.append(("total to run", "", "", "", "", total([s.disk_bytes for s in to_run], _size),
                 total([s.seconds for s in to_run], format_duration)))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [f"plan of {plan.name} ({plan.task}) against the run store {plan.root}; nothing was created",
             f"time assumes {plan.device}; rough (x2 either way)", ""]
    for row in [header, *rows]:
        lines.append("  ".join(str(v).ljust(w) if i < 2 else str(v).rjust(w)
                               for i, (v, w) in enumerate(zip(row, widths))).rstrip())
    notes = plan.notes + [f"{s.name}: {n}" for s in plan.stages for n in s.notes]
    if notes:
        lines += ["", "notes:"] + [f"  {n}" for n in notes]
    return "\n".join(lines)

"""Job specs: the pydantic models a YAML job file is validated against.

Every field is declared once, here, with its default and a description; the defaults reproduce the reference
recipe (bert-base-uncased-squad2 teacher, TinyBERT General 6L-768D student, SQuAD 2.0 x20 + original, 5 + 5
epochs, batch 26, lr 5e-5 / 3e-5, max_seq_len 384, doc_stride 128, temperature 1, distillation weight 1.0).

`load_spec` is the only way in: it parses YAML safely, validates, resolves relative paths against the spec
file's folder and checks that local files and models exist, and raises `SpecError` listing every problem by
field path.
"""

from __future__ import annotations

import copy
import difflib
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)

DEFAULT_TEACHER = "deepset/bert-base-uncased-squad2"
DEFAULT_STUDENT = "huawei-noah/TinyBERT_General_6L_768D"
DEFAULT_MLM = "bert-base-uncased"
DATA_FILE_FORMATS = {".json": "squad", ".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".gz": "mrqa"}
QA_FORMATS = ("squad", "mrqa", "hf", "jsonl")


class SpecError(Exception):
    """A job spec that cannot be run; `problems` holds one line per problem, each starting with a field path."""

    def __init__(self, problems: list[str], source: str = "spec"):
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))


def _looks_like_path(value: str) -> bool:
    return value.startswith((".", "/", "~")) or Path(value).suffix.lower() in DATA_FILE_FORMATS


def _resolve_local(value: str, info: ValidationInfo) -> str:
    """Turn a path written relative to the spec file into an absolute one; leave hub names alone.

    A string is a local path when it starts with `.`, `/` or `~`, has a data-file suffix, or names something
    that exists next to the spec; anything else is a hub id, which cannot be checked offline.
    """
    base = Path((info.context or {}).get("base_dir", "."))
    candidate = base / os.path.expanduser(value)
    if _looks_like_path(value) or candidate.exists():
        return str(candidate.resolve())
    return value


Ref = Annotated[str, AfterValidator(_resolve_local)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class DataSource(StrictModel):
    path: Ref = Field(description="SQuAD JSON, MRQA .jsonl.gz, TSV/CSV/JSONL file, local HF dataset folder, or hub "
                                  "dataset name")
    format: Literal["squad", "mrqa", "tsv", "csv", "jsonl", "hf"] | None = Field(
        None, description="input format; inferred from the file suffix (.gz is mrqa; a folder or hub name is 'hf') "
                          "when unset")
    split: str | None = Field(None, description="split to read from an HF dataset (e.g. train, validation)")
    text_column: str = Field("sentence", description="classification: column holding the text")
    text_pair_column: str | None = Field(None, description="classification: column holding the second text")
    label_column: str = Field("label", description="classification: column holding the label")
    limit: int | None = Field(None, gt=0, description="read only the first N examples (quick experiments)")

    @model_validator(mode="after")
    def _infer_format(self) -> DataSource:
        if self.format is None:
            object.__setattr__(self, "format", DATA_FILE_FORMATS.get(Path(self.path).suffix.lower(), "hf"))
        return self


SetName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]


class TrainSource(DataSource):
    name: SetName | None = Field(None, description="the source's name in the report; needed when there are several")
    weight: float = Field(
        1.0, gt=0, description="times each of its examples is used: 2 repeats every example twice, 0.5 keeps a "
                               "seeded random half, 1.5 every example once and a seeded random half twice")


class EvalSource(DataSource):
    name: SetName | None = Field(None, description="the set's name in the report; needed when there are several")
    group: SetName | None = Field(
        None, description="sets of one group (say in_domain, out_of_domain) are macro-averaged together")
    scoring: Literal["squad_v2", "mrqa"] | None = Field(
        None, description="QA: squad_v2 (the official SQuAD 2.0 script: null answers, HasAns/NoAns) or mrqa (the "
                          "shared task's: SQuAD 1.1 normalisation, best over the gold answers, never a null answer); "
                          "unset: mrqa for format mrqa, else squad_v2")

    @property
    def metric(self) -> Literal["squad_v2", "mrqa"]:
        return self.scoring or ("mrqa" if self.format == "mrqa" else "squad_v2")


def _named(sources: list[Any], field: str, default_name: str) -> list[Any]:
    """`sources` with the name of a lone unnamed source filled in; several must each have a distinct name."""
    if len(sources) == 1 and sources[0].name is None:
        return [sources[0].model_copy(update={"name": default_name})]
    unnamed = [str(i) for i, source in enumerate(sources) if source.name is None]
    if unnamed:
        raise ValueError(f"{field}: several sources need a name each; {', '.join(unnamed)} have none")
    names = [source.name for source in sources]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{field}: names must differ; {', '.join(repeated)} is used more than once")
    return sources


class DataSpec(StrictModel):
    """The data as lists of named sources: a single source may be given as a mapping, and is named train or eval."""

    train: list[TrainSource] = Field(
        [TrainSource(path="rajpurkar/squad_v2", format="hf", split="train")], min_length=1,
        description="training examples: one source, or a list of named sources (each with a sampling weight) read "
                    "into one training set")
    eval: list[EvalSource] = Field(
        [EvalSource(path="rajpurkar/squad_v2", format="hf", split="validation")], min_length=1,
        description="evaluation examples: one source, or a list of named sets, each scored on its own and "
                    "macro-averaged, overall and per group")
    label_names: list[str] | None = Field(
        None, description="classification: label names in id order; labels in the data may be names or ids")

    @model_validator(mode="before")
    @classmethod
    def _one_source_as_a_list(cls, value: Any) -> Any:
        if isinstance(value, dict):
            value = {key: [item] if key in ("train", "eval") and isinstance(item, (dict, DataSource)) else item
                     for key, item in value.items()}
        return value

    @model_validator(mode="after")
    def _names(self) -> DataSpec:
        object.__setattr__(self, "train", _named(self.train, "data.train", "train"))
        object.__setattr__(self, "eval", _named(self.eval, "data.eval", "eval"))
        return self


class FinetuneSpec(StrictModel):
    train: DataSource | None = Field(
        None, description="labelled data to fine-tune on; unset: data.train (give a larger set when data.train is "
                          "a small transfer set)")
    epochs: float = Field(2.0, gt=0, description="epochs of fine-tuning")
    batch_size: int = Field(32, gt=0)
    learning_rate: float = Field(3e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)


class TeacherSpec(StrictModel):
    model: Ref = Field(DEFAULT_TEACHER, description="hub name or local folder of a fine-tuned model")
    init: Literal["pretrained", "random"] = Field(
        "pretrained", description="random: build from the config at `model` with fresh weights (to train from "
                                  "scratch with `finetune`, or for demos)")
    weight: float = Field(1.0, gt=0, description="weight of this teacher in the ensemble")
    finetune: FinetuneSpec | None = Field(
        None, description="fine-tune `model` (a base model) on the training data first")
    trust_remote_code: bool = Field(False, description="allow code from the model repo to run; off by default")


class StudentArchitecture(StrictModel):
    num_hidden_layers: int = Field(6, gt=0)
    hidden_size: int = Field(768, gt=0)
    num_attention_heads: int = Field(12, gt=0)
    intermediate_size: int = Field(3072, gt=0)

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> StudentArchitecture:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        return self


class StudentSpec(StrictModel):
    """Exactly one of `model`, `architecture`, `init_from_teacher_layers`; with none, the TinyBERT default."""

    model: Ref | None = Field(None, description=f"hub name or local folder (default {DEFAULT_STUDENT})")
    init: Literal["pretrained", "random"] = Field(
        "pretrained", description="random: build `model` from its config with fresh weights (seeded by `seed`)")
    architecture: StudentArchitecture | None = Field(
        None, description="build a fresh student from the first teacher's config with these sizes")
    init_from_teacher_layers: list[Annotated[int, Field(ge=0)]] | None = Field(
        None, description="copy these layers (0-based) of the first teacher, plus its embeddings")
    trust_remote_code: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> StudentSpec:
        given = [n for n in ("model", "architecture", "init_from_teacher_layers") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of model, architecture, init_from_teacher_layers; got {', '.join(given)}")
        if not given:
            object.__setattr__(self, "model", DEFAULT_STUDENT)
        if self.init == "random" and self.model is None:
            raise ValueError("init: random builds `model` from its config; architecture and "
                             "init_from_teacher_layers are always built fresh, so leave init out")
        return self


class VectorsSpec(StrictModel):
    path: Ref | None = Field(
        None, description="word vectors file; unset: word2vec vectors are trained on the input corpus")
    format: Literal["glove", "word2vec", "word2vec_binary", "fasttext", "keyedvectors"] | None = Field(
        None, description="file format; inferred from the suffix when unset")
    dim: int = Field(100, gt=0, description="dimension of vectors trained on the corpus")
    epochs: int = Field(5, gt=0, description="epochs of training vectors on the corpus")
    min_count: int = Field(2, gt=0, description="ignore words rarer than this when training vectors")


class MaskedLMTrainingSpec(StrictModel):
    epochs: float = Field(1.0, gt=0, description="passes over the texts")
    batch_size: int = Field(64, gt=0)
    learning_rate: float = Field(5e-4, gt=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    mask_prob: float = Field(0.15, gt=0, lt=1, description="share of wordpieces masked (BERT's 80/10/10 rule)")
    seed: int = Field(0, description="fixed, not the job seed: jobs that differ only in `seed` share one trained "
                                     "masked LM")


class AugmentSpec(StrictModel):
    enabled: bool = True
    factor: int = Field(20, ge=1, description="augmented variants generated per example")
    keep_original: bool = Field(True, description="keep each original example first, next to its variants")
    replace_prob: float = Field(0.4, gt=0, le=1, description="probability that an eligible word is replaced")
    top_k: int = Field(15, ge=1, description="candidates considered per word")
    mlm_model: Ref | None = Field(
        DEFAULT_MLM, description="masked LM proposing candidates for single-wordpiece words; null: vectors only")
    mlm_init: Literal["pretrained", "random"] = Field(
        "pretrained", description="random: build the masked LM from its config with fresh weights (to train with "
                                  "mlm_training, or for demos)")
    mlm_training: MaskedLMTrainingSpec | None = Field(
        None, description="train the masked LM (mlm_model, from mlm_init weights) first, on `corpus` or else the "
                          "training texts, in windows of features.max_seq_len: no hub needed")
    corpus: DataSource | None = Field(
        None, description="texts (labels unused) that a trained masked LM learns from instead of the training "
                          "data, and trained word vectors learn from besides it")
    mlm_mode: Literal["fast", "exact"] = Field(
        "fast", description="fast: several separated words masked per pass in a bounded window; "
                            "exact: TinyBERT semantics, one masked word per pass over the full context")
    mlm_window: int = Field(64, ge=8, description="fast mode: tokens of context either side of a masked word")
    mlm_batch_size: int = Field(32, gt=0)
    vectors: VectorsSpec = VectorsSpec()
    examples_per_shard: int = Field(
        256, gt=0, description="input examples per output shard; a crash loses at most one shard's work")
    augment_questions: bool = Field(False, description="QA: also substitute words in questions")
    augment_answers: bool = Field(False, description="QA: also substitute words inside answer spans")

    @model_validator(mode="after")
    def _training_needs_a_model(self) -> AugmentSpec:
        if self.mlm_training is not None and self.mlm_model is None:
            raise ValueError("mlm_training: trains mlm_model, which is null; name a masked LM (its config and "
                             "tokenizer are enough with mlm_init: random)")
        return self


class FeaturesSpec(StrictModel):
    max_seq_len: int = Field(384, ge=16, description="tokens per window (question + context)")
    doc_stride: int = Field(128, gt=0, description="QA: overlap between consecutive context windows")
    max_query_len: int = Field(64, gt=0, description="QA: questions are truncated to this many tokens")


class LabelSpec(StrictModel):
    batch_size: int = Field(64, gt=0, description="features per teacher forward pass")
    ensemble: Literal["probs", "logits"] = Field(
        "probs", description="how several teachers make one target at distill.prediction.temperature T. probs: the "
                             "weighted mean of the teachers' softened distributions, sum_k w_k softmax(z_k / T) "
                             "(labels are computed for T); logits: the weighted mean of their logits, divided by T, "
                             "softmax(sum_k w_k z_k / T)")
    keep_teacher_logits: bool = Field(False, description="also store each teacher's own logits")
    examples_per_shard: int = Field(
        1024, gt=0, description="examples per output shard; a crash loses at most one shard's work")


class PhaseSpec(StrictModel):
    enabled: bool = True
    epochs: float = Field(5.0, gt=0)
    batch_size: int = Field(
        26, gt=0, description="global batch: with N training workers each computes batch_size / N features of every "
                              "micro-batch, so the steps, the learning rate and the result do not depend on N; a "
                              "worker with fewer than 8 features is warned about in the log")
    learning_rate: float = Field(5e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="share of steps with linear warm-up")
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    grad_accum_steps: int = Field(1, gt=0)
    log_every: int | None = Field(
        None, gt=0, description="steps between metric and progress lines; null: about 200 lines per phase, at most "
                                "50 steps apart")
    checkpoint_minutes: float | None = Field(
        30.0, gt=0, description="minutes of training between resumable checkpoints (also at each epoch's end; the "
                                "last 2 are kept); null: none by time")
    checkpoint_every: int | None = Field(None, gt=0, description="also checkpoint every this many steps; null: off")


class IntermediateSpec(PhaseSpec):
    losses: list[Literal["embeddings", "hidden", "attention"]] = Field(
        ["embeddings", "hidden", "attention"], min_length=1, description="which MSE terms to use")
    layer_map: Literal["uniform"] | list[Annotated[int, Field(ge=0)]] = Field(
        "uniform", description="uniform: student layer i <- teacher layer (i+1)*T/S - 1; or a teacher layer per "
                               "student layer (0-based)")
    teacher: int = Field(0, ge=0, description="index of the teacher whose layers are distilled")


class PredictionSpec(PhaseSpec):
    learning_rate: float = Field(3e-5, gt=0)
    temperature: float = Field(1.0, gt=0, description="softmax temperature for the KL term (scaled by T^2)")
    distill_weight: float = Field(
        1.0, ge=0, le=1, description="loss = w * KL(teacher || student) + (1 - w) * hard-label loss")
    teacher_logits: Literal["labelled", "online"] = Field(
        "labelled", description="read teacher logits from the label stage, or run the teacher each step")
    eval_every: int | None = Field(
        None, gt=0, description="score the student every this many steps (and at the end) on the first "
                                "eval_examples of data.eval, keeping the best in best/ beside the last; null: off")
    eval_examples: int = Field(1000, gt=0, description="evaluation examples scored every eval_every steps")


class DistillSpec(StrictModel):
    intermediate: IntermediateSpec = IntermediateSpec()
    prediction: PredictionSpec = PredictionSpec()


class EvaluateSpec(StrictModel):
    enabled: bool = True
    batch_size: int = Field(64, gt=0)
    max_answer_len: int = Field(30, gt=0, description="QA: longest answer span in tokens")
    n_best: int = Field(20, gt=0, description="QA: start/end candidates per window")
    null_threshold: float = Field(0.0, description="QA: predict no answer when null - best span score > this")
    evaluate_teachers: bool = Field(True, description="score the teachers too, for the comparison")
    measure_speed: bool = Field(True, description="measure size, latency and throughput of teacher and student")
    speed_repeats: int = Field(20, gt=0, description="timed repeats per measurement (median is reported)")
    export: bool = Field(True, description="write the final student as a pipeline-ready folder with a model card")
    license: str = Field("apache-2.0", description="license named in the exported model card; the teachers' and "
                                                   "the data's licenses bind the student too")
    onnx: bool = Field(False, description="also score and time the student as ONNX fp32 and int8 graphs (needs "
                                          "the onnx extra); the export carries them in onnx/")


class StageResources(StrictModel):
    """One stage's parallelism; an unset field takes the shared value of `resources`."""

    workers: int | None = Field(None, gt=0, description="this stage's workers; unset: resources.workers")
    cpus_per_worker: float | None = Field(None, gt=0, description="unset: resources.cpus_per_worker")
    gpus_per_worker: float | None = Field(None, ge=0, description="unset: resources.gpus_per_worker")


ParallelStage = Literal["augment", "label", "train"]


class ResourcesSpec(StrictModel):
    workers: int | None = Field(
        None, gt=0, description="parallel workers (Ray actors / Ray Train workers) of every stage that does not set "
                                "its own; unset: each stage's default, from the Ray cluster's resources: "
                                "augmentation one actor per CPU but one (per GPU when its masked LM runs on GPUs), "
                                "labelling one actor per GPU (1 without GPUs), training 1 worker")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved per worker; fractions allowed")
    gpus_per_worker: float | None = Field(
        None, ge=0, description="GPUs per worker; unset: 1 when the Ray cluster has a GPU (the workers', not the "
                                "head's), else 0. More than the cluster has fails the job before any stage")
    address: str | None = Field(None, description="Ray Jobs address (http://HEAD:8265); unset: Ray in-process")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="what every stage computes in on a GPU. auto: bf16 on compute capability 8.0+ (A100, "
                            "H100), fp16 with a loss scaler on older GPUs (V100), fp32 on CPU; bf16 on an older GPU "
                            "or half precision on CPU is refused")
    compile: bool = Field(
        False, description="torch.compile each training phase's model (the student, its projections and the "
                           "teachers it runs), in every worker: the first steps pay for the compilation (minutes), "
                           "the rest run faster on a GPU. Results match an uncompiled run to rounding")
    worker_restarts: int = Field(
        3, ge=0, description="times a multi-worker training phase restarts its workers from the last complete "
                             "checkpoint when a worker process or node dies (logged); 0: the phase fails at once")
    augment: StageResources = Field(
        StageResources(), description="the augmentation's Ray actors (masked-LM candidates and substitution); "
                                      "unset fields take the shared values above")
    label: StageResources = Field(
        StageResources(), description="the labelling actors (teacher inference); unset fields take the shared "
                                      "values above")
    train: StageResources = Field(
        StageResources(), description="the Ray Train workers (DDP world) of teacher fine-tuning, the masked LM's "
                                      "training and both distillation phases; unset fields take the shared values "
                                      "above")

    def for_stage(self, stage: ParallelStage) -> ResourcesSpec:
        """These resources with `stage`'s own settings in place of the shared ones."""
        return self.model_copy(update=getattr(self, stage).model_dump(exclude_none=True))

    @property
    def worker_count(self) -> int:
        """`workers` as a job resolved it (jobs.runner.resolve_resources), or 1 where nothing did: a stage's function
        called on its own."""
        return self.workers or 1


class OutputSpec(StrictModel):
    root: str = Field("runs", description="run store: one folder per job plus a shared stage cache; a relative "
                                          "path is taken from the folder `submit` runs in (--root overrides)")


class JobSpec(StrictModel):
    name: str = Field("distill", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    task: Literal["qa", "classification"] = "qa"
    seed: int = 42
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
        if self.task == "qa":
            problems += self._window_problems()
        if self.task == "qa":
            problems += [f"{field}.format: qa reads squad, mrqa, hf or jsonl data, got {source.format}"
                         for field, source in self.data_sources()
                         if source.format not in QA_FORMATS and field != "augment.corpus"]
        else:
            problems += [f"data.eval.{i}.scoring: {source.scoring} scores QA; classification is scored by accuracy"
                         for i, source in enumerate(self.data.eval) if source.scoring is not None]
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

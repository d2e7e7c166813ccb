"""Evaluation: score each model on the evaluation examples, write its predictions, optionally time it.

`evaluate_sets` is the stage's entry point: it runs `evaluate_models` on each evaluation set and, with several,
macro-averages their scores (overall and per group). For every named model (the student and, for the comparison,
the teachers) `evaluate_models` builds features with the shared `distill.features` functions, runs batched
inference, and scores:

    QA              distill.postprocess -> official predictions.json / null_odds.json -> distill.squad_metric
                    squad_v2 scoring: exact, f1, HasAns_*, NoAns_*, best_* and their thresholds
                    mrqa scoring (the MRQA shared task): exact, f1 with SQuAD 1.1 normalisation, best over the
                    gold answers (`gold_answers` where the data has aliases), never a null answer
    classification  argmax -> predictions.json -> distill.classification_metrics (accuracy, macro-F1, per class)

    out_dir/
      settings.json                       task, features and evaluate settings, models, device
      metrics.json                        {name: {metric: value, ..., "speed": {device: SpeedReport}}, ...}
                                          the student also gets "vs_teachers": {teacher: {device: ratios}};
                                          "degenerate" says when a model gives one answer to everything
      <name>/predictions.json             QA: {qid: answer text, "" for no answer}; classification: {id: label}
      <name>/null_odds.json               QA only: {qid: null score - best span score}

With several sets, each set's layout is in out_dir/sets/<set>/ (speed measured on the first set only) and
out_dir/metrics.json holds {name: {exact, f1 (or accuracy, macro_f1): macro averages, total, sets_averaged,
"groups": {group: averages}, "sets": {set: metrics}, "speed", "vs_teachers"}}.

The examples stream through in chunks of EXAMPLES_PER_CHUNK, shard by shard: a chunk's features are built, run
and post-processed together, and only each example's answer outlives the chunk, so memory does not grow with
the eval set's features or logits.

Example::

    result = evaluate_models({"student": ModelRef("runs/x/student"), "teacher_0": ModelRef("deepset/...")},
                             "qa", Path("runs/x/prepare/eval"), spec.features, spec.evaluate, spec.resources,
                             Path("runs/x/evaluate"))
    result.models["student"].metrics["f1"], result.comparisons["teacher_0"]["cpu"]["speedup"]
"""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from core.devices import autocast, device_precision, pick_device
from core.progress import Progress
from core.resources import ResourcesSpec
from core.shards import iter_shard_batches, shard_paths, write_json
from core.tasks import Task, task_traits
from distill import speed
from distill.features import FlatFeatures
from distill.models import ModelRef, check_label_order, check_max_seq_len, load_tokenizer
from distill.onnx_export import load_scoring_model
from distill.postprocess import QAPrediction
from distill.spec import EvaluateSpec, FeaturesSpec
from distill.tasks import EvaluationError, task_kind
from distill.tasks.qa import QA, Scoring, qa_predictions


# Examples whose features are built, run and post-processed together. A chunk never splits an example, so all of a
# QA example's windows meet in post-processing. 1,024 SQuAD questions make about 1,050 windows at max_seq_len 384
# (more for long contexts): about 15 MB of token ids, offsets and logits, and enough rows to sort by length into
# full batches. Outputs do not depend on it beyond float rounding of batches padded to a different longest row.
EXAMPLES_PER_CHUNK = 1024


@dataclass(frozen=True)
class ModelEvaluation:
    """One model's evaluation.

    Attributes:
        name: the model's name in the evaluation ("student", "teacher_0", ...).
        model: its folder or hub name.
        examples: evaluation examples scored.
        features: model inputs they made (QA: windows; classification: one per example).
        seconds: wall time of feature building, inference and scoring (speed measurement excluded).
        metrics: the scores as in metrics.json, without "speed". QA: the official SQuAD 2.0 keys plus
            na_prob_thresh; classification: accuracy, macro_f1, macro_precision, macro_recall, total, per_class.
            Both: degenerate, `TaskKind.degenerate` of its predictions (None for a model that discriminates).
        speed: {device: SpeedReport as a dict}; None when speed was not measured.
        predictions_path: predictions.json.
        null_odds_path: null_odds.json (QA), else None.
    """

    name: str
    model: str
    examples: int
    features: int
    seconds: float
    metrics: dict[str, Any]
    speed: dict[str, dict[str, Any]] | None
    predictions_path: str
    null_odds_path: str | None


@dataclass(frozen=True)
class EvaluationResult:
    """What `evaluate_models` wrote; `dataclasses.asdict` of it is JSON-serialisable.

    Attributes:
        task: "qa" or "classification".
        device: where inference ran.
        metrics_path: out_dir/metrics.json.
        models: one ModelEvaluation per model, in the order given.
        comparisons: {teacher name: {device: speed.compare(student, teacher)}}; empty unless speed was measured
            and a model is named "student".
    """

    task: Task
    device: str
    metrics_path: str
    models: dict[str, ModelEvaluation]
    comparisons: dict[str, dict[str, dict[str, Any]]]


def evaluate_models(models: dict[str, ModelRef], task: Task, examples_dir: Path, features: FeaturesSpec,
                    config: EvaluateSpec, resources: ResourcesSpec, out_dir: Path,
                    label_names: list[str] | None = None, progress: bool = True,
                    scoring: Scoring = "squad_v2") -> EvaluationResult:
    """Score every model on the examples in `examples_dir` and write the layout in the module doc to `out_dir`.

    Args:
        models: {name: model}; a model named "student" is compared for speed with every other whose name does
            not start with "student" (the teachers; "student_onnx" is the student's own graph). A path to an
            `.onnx` graph is evaluated through onnxruntime (distill.onnx_export).
        task: "qa" or "classification".
        examples_dir: an examples folder (shards/part-*.parquet, meta.json) in the task's schema.
        features: tokenization settings, the same as for training.
        config: batch size, QA answer settings, whether to measure speed and how often.
        resources: gpus_per_worker decides the device (CUDA when present and not set to 0).
        out_dir: where the outputs go; created if needed.
        label_names: classification: class names in id order; None: read from examples_dir/meta.json.
        progress: draw a progress bar per model.
        scoring: QA: squad_v2 (the official SQuAD 2.0 script) or mrqa (the MRQA shared task's: SQuAD 1.1
            normalisation, best over the gold answers, and the best span always answered: no null answer).

    Raises:
        EvaluationError: no models, no examples, QA windows without room for context, unlabelled classification
            examples, or label names that do not match a classifier.
        distill.models.ModelCheckError: a model whose head, positions, tokenizer or named classes (other than
            label_names, or in another order) do not fit.
    """
    if not models:
        raise EvaluationError("no models to evaluate; pass at least one {name: ModelRef}")
    examples_dir = Path(examples_dir)
    num_examples = _count_examples(examples_dir)
    if num_examples == 0:
        raise EvaluationError(f"{examples_dir} holds no examples; check the eval data and its rejects.jsonl")
    kind = task_kind(task)
    if kind.traits.classes:
        label_names = label_names or _meta_label_names(examples_dir)
    if kind.traits.windows:
        _check_windows(features)
    else:
        _check_labelled(examples_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(resources.gpus_per_worker)
    precision = device_precision(device, resources.precision)
    write_json(out_dir / "settings.json", {
        "task": task, "examples_dir": str(examples_dir), "examples": num_examples,
        "features": features.model_dump(mode="json"), "evaluate": config.model_dump(mode="json"),
        "models": {name: asdict(ref) for name, ref in models.items()}, "device": str(device),
        "precision": precision, "label_names": label_names, "scoring": scoring if kind.null_odds else None,
    })

    evaluations: dict[str, ModelEvaluation] = {}
    speed_reports: dict[str, dict[str, speed.SpeedReport]] = {}
    for name, ref in models.items():
        evaluations[name] = _evaluate_one(name, ref, task, examples_dir, num_examples, features, config, device,
                                          precision, out_dir / name, label_names, progress, scoring)
        if config.measure_speed:
            speed_reports[name] = _measure(ref, task, features, config, device, resources.precision)
            evaluations[name] = _with_speed(evaluations[name], speed_reports[name])

    comparisons: dict[str, dict[str, dict[str, Any]]] = {}
    if "student" in speed_reports:
        student = speed_reports["student"]
        for name, reports in speed_reports.items():
            # the teachers; the student's own ONNX graphs ("student_onnx...") are rows of their own, not rivals.
            # Compared on the devices both were timed on: an ONNX model is timed on CPU only
            if not name.startswith("student"):
                comparisons[name] = {dev: speed.compare(student[dev], reports[dev]) for dev in student
                                     if dev in reports}

    metrics = {}
    for name, evaluation in evaluations.items():
        entry = dict(evaluation.metrics)
        if evaluation.speed is not None:
            entry["speed"] = evaluation.speed
        if name == "student" and comparisons:
            entry["vs_teachers"] = comparisons
        metrics[name] = entry
    metrics_path = out_dir / "metrics.json"
    write_json(metrics_path, metrics)
    return EvaluationResult(task=task, device=str(device), metrics_path=str(metrics_path), models=evaluations,
                            comparisons=comparisons)


@dataclass(frozen=True)
class EvalSet:
    """One evaluation set: its name, examples folder, group (sets of a group are macro-averaged together) and
    QA scoring."""

    name: str
    examples_dir: Path
    group: str | None = None
    scoring: Scoring = "squad_v2"


@dataclass(frozen=True)
class SetsEvaluation:
    """What `evaluate_sets` wrote; `dataclasses.asdict` of it is JSON-serialisable.

    Attributes:
        task: "qa" or "classification".
        metrics_path: out_dir/metrics.json: the one set's metrics, or with several sets each model's macro
            averages with "sets" ({set: its metrics}) and "groups" ({group: macro averages}).
        sets: {set name: EvaluationResult}, in the order given.
    """

    task: Task
    metrics_path: str
    sets: dict[str, EvaluationResult]


# The scores averaged over sets (each set counts once, whatever its size); `total` is summed.


def evaluate_sets(models: dict[str, ModelRef], task: Task, sets: list[EvalSet], features: FeaturesSpec,
                  config: EvaluateSpec, resources: ResourcesSpec, out_dir: Path,
                  label_names: list[str] | None = None, progress: bool = True) -> SetsEvaluation:
    """`evaluate_models` on each set: one set writes its layout into `out_dir` itself; several write theirs into
    out_dir/sets/<name>/, speed is measured on the first only (it does not depend on the data), and
    out_dir/metrics.json holds every model's macro averages: over all sets and per group, each set counting once.

    Raises:
        EvaluationError: no sets, or two with one name; and whatever `evaluate_models` raises.
    """
    names = [eval_set.name for eval_set in sets]
    if not sets or len(set(names)) != len(names):
        raise EvaluationError(f"evaluation sets need distinct names, got {names}")
    out_dir = Path(out_dir)
    if len(sets) == 1:
        only = sets[0]
        result = evaluate_models(models, task, only.examples_dir, features, config, resources, out_dir, label_names,
                                 progress, only.scoring)
        return SetsEvaluation(task, result.metrics_path, {only.name: result})
    results = {}
    for i, eval_set in enumerate(sets):
        set_config = config if i == 0 else config.model_copy(update={"measure_speed": False})
        results[eval_set.name] = evaluate_models(models, task, eval_set.examples_dir, features, set_config, resources,
                                                 out_dir / "sets" / eval_set.name, label_names, progress,
                                                 eval_set.scoring)
    per_set = {name: json.loads(Path(result.metrics_path).read_text(encoding="utf-8"))
               for name, result in results.items()}
    groups: dict[str, list[str]] = {}
    for eval_set in sets:
        if eval_set.group is not None:
            groups.setdefault(eval_set.group, []).append(eval_set.name)
    metrics = {}
    for model in models:
        entries = {name: {key: value for key, value in per_set[name][model].items()
                          if key not in ("speed", "vs_teachers")} for name in names}
        degenerate = [f"{name}: {entry['degenerate']}" for name, entry in entries.items() if entry.get("degenerate")]
        metrics[model] = {
            **macro_average(task, list(entries.values())),
            "groups": {group: macro_average(task, [entries[name] for name in members])
                       for group, members in groups.items()},
            "sets": entries,
            "degenerate": "; ".join(degenerate) or None,
            **{key: value for key, value in per_set[names[0]][model].items() if key in ("speed", "vs_teachers")},
        }
    metrics_path = out_dir / "metrics.json"
    write_json(metrics_path, metrics)
    return SetsEvaluation(task, str(metrics_path), results)


def macro_average(task: Task, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The unweighted mean of each of the task's macro metrics over `entries` (one model's metrics on several sets), the
    summed `total` and the number of sets."""
    averages: dict[str, Any] = {key: sum(entry[key] for entry in entries) / len(entries)
                                for key in task_traits(task).macro_metrics}
    return {**averages, "total": sum(entry["total"] for entry in entries), "sets_averaged": len(entries)}


def _check_windows(features: FeaturesSpec) -> None:
    """QA windows need room for context after the question and 3 special tokens, and must overlap by less."""
    room = features.max_seq_len - features.max_query_len - 3
    if room <= 0 or features.doc_stride >= room:
        raise EvaluationError(
            f"features: max_seq_len {features.max_seq_len} - max_query_len {features.max_query_len} - 3 leaves "
            f"{room} context tokens per window; doc_stride ({features.doc_stride}) must be smaller. Lower doc_stride "
            "or max_query_len, or raise max_seq_len")


def _meta_label_names(examples_dir: Path) -> list[str]:
    meta_path = examples_dir / "meta.json"
    names = json.loads(meta_path.read_text(encoding="utf-8"))["label_names"] if meta_path.is_file() else None
    if not names:
        raise EvaluationError(f"no label names: pass label_names, or read the examples with "
                              f"augment.readers.read_examples so that {meta_path} records them")
    return names


def _count_examples(examples_dir: Path) -> int:
    """Rows in all shards, from their Parquet footers; the shards must share one schema."""
    paths = shard_paths(examples_dir)
    schema = pq.read_schema(paths[0])
    for path in paths[1:]:
        if not pq.read_schema(path).equals(schema):
            raise EvaluationError(f"{path} has a different schema from {paths[0]}:\n{pq.read_schema(path)}\n"
                                  f"expected:\n{schema}\nrewrite the folder with augment.readers.read_examples")
    return sum(pq.read_metadata(path).num_rows for path in paths)


def _check_labelled(examples_dir: Path) -> None:
    """Classification is scored against labels: refuse unlabelled examples before any model runs."""
    labels = [batch.column("label") for batch in iter_shard_batches(examples_dir, columns=["label"])]
    unlabelled = sum(column.null_count for column in labels)
    if unlabelled:
        total = sum(len(column) for column in labels)
        raise EvaluationError(f"{unlabelled} of {total} evaluation examples have no label; evaluation "
                              "needs labelled data (e.g. a dev split, not a test split)")


def _evaluate_one(name: str, ref: ModelRef, task: Task, examples_dir: Path, num_examples: int,
                  features: FeaturesSpec, config: EvaluateSpec, device: torch.device, precision: str, model_dir: Path,
                  label_names: list[str] | None, progress: bool, scoring: Scoring) -> ModelEvaluation:
    """Features, inference and scores of one model, EXAMPLES_PER_CHUNK examples at a time; writes its predictions
    into `model_dir`."""
    started = time.perf_counter()
    kind = task_kind(task)
    num_labels = len(label_names) if kind.traits.classes and label_names else None
    tokenizer = load_tokenizer(ref)
    model = load_scoring_model(ref, task, num_labels=num_labels)
    check_max_seq_len(model.config, features.max_seq_len, name)
    if num_labels is not None and model.config.num_labels != num_labels:
        raise EvaluationError(f"{name}: classifies into {model.config.num_labels} labels, the data has "
                              f"{num_labels} ({', '.join(label_names)})")
    if num_labels is not None:
        check_label_order(model.config, label_names, name)
    model = model.to(device)
    answers = kind.answers(config, scoring, label_names)
    examples_seen = features_seen = 0
    with Progress(f"evaluate {name}", total=num_examples, unit="ex", bar=progress) as done:
        for chunk in iter_shard_batches(examples_dir, EXAMPLES_PER_CHUNK):
            examples = pa.Table.from_batches([chunk])
            table = kind.build_features(examples, tokenizer, features)
            answers.add(examples, table, _infer(model, table, tokenizer.pad_token_id, config.batch_size, device,
                                                       precision))
            examples_seen += examples.num_rows
            features_seen += table.num_rows
            done.update(examples.num_rows, features=features_seen)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()

    model_dir.mkdir(parents=True, exist_ok=True)
    predictions_path = model_dir / "predictions.json"
    null_odds_path = model_dir / "null_odds.json" if kind.null_odds else None
    metrics = answers.score(predictions_path, null_odds_path)
    return ModelEvaluation(
        name=name, model=ref.name_or_path, examples=examples_seen, features=features_seen,
        seconds=time.perf_counter() - started, metrics=metrics, speed=None, predictions_path=str(predictions_path),
        null_odds_path=str(null_odds_path) if null_odds_path else None)


def _infer(model: torch.nn.Module, table: pa.Table, pad_token_id: int, batch_size: int,
           device: torch.device, precision: str) -> Any:
    """Model outputs for every feature row of one chunk, in row order.

    Rows are run longest first within the chunk, so a batch holds rows of similar length and little padding.

    Returns:
        QA: a list of (start, end) float32 arrays of each row's own length (padding cut off);
        classification: (N, C) float32 logits.
    """
    inputs = FlatFeatures.from_table(table, ["input_ids", "token_type_ids"])
    lengths = inputs.lengths  # (N,)
    longest = int(lengths.max(initial=1))
    order = np.argsort(-lengths, kind="stable")
    takes_token_types = "token_type_ids" in _forward_parameters(model)
    results: list[Any] = [None] * table.num_rows
    with torch.inference_mode(), autocast(device, precision):
        for begin in range(0, table.num_rows, batch_size):
            indices = order[begin:begin + batch_size]
            batch = inputs.batch(indices, pad_token_id, device=device, limit=longest)  # (B, T) tensors
            model_inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
            if takes_token_types:
                model_inputs["token_type_ids"] = batch["token_type_ids"]
            output = model(**{key: value.to(device) for key, value in model_inputs.items()})
            if hasattr(output, "start_logits"):
                starts = output.start_logits.float().cpu().numpy()  # (B, T)
                ends = output.end_logits.float().cpu().numpy()
                for row, index in enumerate(indices):
                    length = lengths[index]
                    results[index] = (starts[row, :length], ends[row, :length])
            else:
                logits = output.logits.float().cpu().numpy()  # (B, C)
                for row, index in enumerate(indices):
                    results[index] = logits[row]
    if results and not isinstance(results[0], tuple):
        return np.stack(results)
    return results


def _forward_parameters(model: torch.nn.Module) -> set[str]:
    return set(inspect.signature(model.forward).parameters)


def predict_qa(model: torch.nn.Module, tokenizer: Any, examples: pa.Table, features: FeaturesSpec,
               config: EvaluateSpec, device: torch.device, precision: str) -> dict[str, QAPrediction]:
    """Answers to one chunk of QA examples (id, question, context, answers): windows, batched inference and
    post-processing, as evaluation runs them. `distill.answer` serves questions through this."""
    table = QA.build_features(examples, tokenizer, features)
    outputs = _infer(model, table, tokenizer.pad_token_id, config.batch_size, device, precision)
    return qa_predictions(examples, table, outputs, config)


@dataclass(frozen=True)
class ValidationSet:
    """The slice of the evaluation examples a training phase scores itself on every `eval_every` steps: the first
    `examples` of `examples_dir`. Picklable, so a Ray Train worker builds its `Validator` from it."""

    examples_dir: Path
    examples: int
    features: FeaturesSpec
    config: EvaluateSpec
    label_names: list[str] | None = None
    scoring: Scoring = "squad_v2"

    def metric(self, task: Task) -> str:
        """The score that picks the best checkpoint: SQuAD F1, or accuracy."""
        return task_traits(task).headline_metric


class Validator:
    """Scores a model in training on a `ValidationSet`; the features are built once, nothing is written.

    Example::

        validator = Validator(ValidationSet(Path("runs/x/prepare/eval"), 1000, spec.features, spec.evaluate),
                              "qa", tokenizer, device)
        validator.score(student)["f1"]
    """

    def __init__(self, validation: ValidationSet, task: Task, tokenizer: Any, device: torch.device,
                 precision: str = "fp32"):
        self.validation, self.task, self.device, self.precision = validation, task, device, precision
        self.pad_token_id = tokenizer.pad_token_id
        batches, rows = [], 0
        for batch in iter_shard_batches(validation.examples_dir, EXAMPLES_PER_CHUNK):
            batches.append(batch.slice(0, validation.examples - rows))
            rows += batches[-1].num_rows
            if rows >= validation.examples:
                break
        if not rows:
            raise EvaluationError(f"{validation.examples_dir} holds no examples to validate on")
        self.examples = pa.Table.from_batches(batches)
        kind = task_kind(task)
        if not kind.traits.windows:
            _check_labelled(validation.examples_dir)
        self.table = kind.build_features(self.examples, tokenizer, validation.features)

    def score(self, model: torch.nn.Module) -> dict[str, float]:
        """The model's scalar scores on the slice (QA: exact, f1, HasAns_*, NoAns_*; classification: accuracy,
        macro_f1, ...), computed in eval mode; the model's mode is restored after."""
        was_training = model.training
        model.eval()
        try:
            outputs = _infer(model, self.table, self.pad_token_id, self.validation.config.batch_size, self.device,
                             self.precision)
        finally:
            model.train(was_training)
        answers = task_kind(self.task).answers(self.validation.config, self.validation.scoring,
                                               self.validation.label_names)
        answers.add(self.examples, self.table, outputs)
        return {key: float(value) for key, value in answers.score().items()
                if isinstance(value, (int, float)) and not isinstance(value, bool)}


def _measure(ref: ModelRef, task: Task, features: FeaturesSpec, config: EvaluateSpec,
             device: torch.device, precision: str) -> dict[str, speed.SpeedReport]:
    """Speed on CPU always (the usual serving target), and on the GPU too when evaluation runs on one (not for an
    ONNX graph: onnxruntime runs it on the CPU here)."""
    on_gpu = device.type == "cuda" and not ref.name_or_path.endswith(".onnx")
    devices = ["cpu"] + (["cuda"] if on_gpu else [])
    # the requested precision applies to the GPU; CPU is measured in fp32, what auto picks there
    return {dev: speed.measure_model(ref, features.max_seq_len, config.speed_repeats, dev, task=task,
                                     precision=precision if dev == "cuda" else "auto")
            for dev in devices}


def _with_speed(evaluation: ModelEvaluation, reports: dict[str, speed.SpeedReport]) -> ModelEvaluation:
    return replace(evaluation, speed={dev: asdict(report) for dev, report in reports.items()})

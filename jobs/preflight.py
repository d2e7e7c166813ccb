"""Preflight: a job's models and data checked against each other in seconds, before any stage runs.

`check_job` is the one entry point. `python -m jobs validate SPEC --check-models` prints what it finds, and
`submit` refuses a job with any problem before its first stage. Without it these mismatches surface in the label
stage, after augmentation (hours at full size), or as a traceback in the prepare stage. It loads every model's
config and tokenizer, never weights, and reads only the head of each local data file (and, for classification
data that declares no label names, its labels):

- tokenization: every teacher tokenizes as the features tokenizer does (`distill.models.check_same_vocabulary`);
- length: `features.max_seq_len` fits every model's positions (`check_max_seq_len`);
- heads and classes: a teacher used as it is has the task's head and, for classification, the data's number of
  classes in the data's order (`check_task_head`, `check_label_order`); a fine-tuned or random-init teacher gets
  a fresh head, so only its base model's config and tokenizer are checked;
- data: each local data file holds the task's data in the layout its format reads (`augment.readers.peek_source`);
- layers: the intermediate layer map fits the teacher and the student (`distill.layer_map.resolve_layer_map`),
  `student.init_from_teacher_layers` names layers its teacher has, and an attention term has equal head counts
  (`distill.losses.attention_mse.AttentionMSE`);
- names: a model that is neither a local folder nor loadable from the hub (cache) gets one line saying so.

Every problem is collected, one line each starting with the spec field it is about; a model that cannot be loaded
is left out of the checks that need it.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from transformers import PretrainedConfig, PreTrainedTokenizerBase

from augment.readers import DataReadError, peek_source, read_label_names
from core.tasks import task_traits
from distill.layer_map import LayerMapError, resolve_layer_map
from distill.losses.attention_mse import AttentionMSE, HeadCountMismatch
from distill.models import (
    ModelCheckError,
    ModelRef,
    check_label_order,
    check_max_seq_len,
    check_same_vocabulary,
    check_task_head,
    load_config,
    load_tokenizer,
)
from jobs.spec import JobSpec


@dataclass(frozen=True)
class LoadedModel:
    """A model the spec names, with its config and tokenizer."""

    field: str      # where the spec names it: teachers.0.model, student.model, augment.mlm_model
    ref: ModelRef
    config: PretrainedConfig
    tokenizer: PreTrainedTokenizerBase

    @property
    def name(self) -> str:
        return f"{self.field} ({self.ref.name_or_path})"


def check_job(spec: JobSpec) -> list[str]:
    """Every problem between `spec`'s models and data, one line each starting with the spec field; [] when none.

    Hub names are loaded as transformers does (the local cache, else the hub unless HF_HUB_OFFLINE is set).
    """
    problems: list[str] = []
    loaded: dict[tuple[str, bool], tuple[PretrainedConfig, PreTrainedTokenizerBase] | Exception] = {}
    hub: dict[str, bool] = {}

    def load(field: str, name: str, trust_remote_code: bool = False) -> LoadedModel | None:
        ref = ModelRef(name, trust_remote_code=trust_remote_code)
        key = (name, trust_remote_code)
        if key not in loaded:
            # with the hub down, transformers retries each file for ~20 s before it looks in the cache
            if not Path(name).exists() and "up" not in hub:
                hub["up"] = hub_reachable()
            cache_only = not Path(name).exists() and not hub["up"]
            try:
                loaded[key] = (load_config(ref, cache_only), load_tokenizer(ref, cache_only))
            except Exception as error:  # transformers raises OSError, ValueError, KeyError...: each is one line
                loaded[key] = error
        if isinstance(loaded[key], Exception):
            problems.append(_unloadable(field, name, loaded[key], hub.get("up", True)))
            return None
        config, tokenizer = loaded[key]
        return LoadedModel(field, ref, config, tokenizer)

    teachers = [load(f"teachers.{i}.model", t.model, t.trust_remote_code) for i, t in enumerate(spec.teachers)]
    problems += _data_problems(spec)
    student = mlm = None
    if spec.student is not None:  # without one, the teachers are only fine-tuned, each with its own tokenizer
        student = (load("student.model", spec.student.model, spec.student.trust_remote_code)
                   if spec.student.model is not None else None)
        mlm = (load("augment.mlm_model", spec.augment.mlm_model)
               if spec.augment.enabled and spec.augment.mlm_model is not None else None)
        problems += _tokenization_problems(spec, teachers, student)
    # the masked LM is trained on windows of max_seq_len; used as it is, it makes its own windows
    problems += _length_problems(spec, [*teachers, student, mlm if spec.augment.mlm_training is not None else None])
    problems += _head_problems(spec, teachers)
    if spec.student is not None:
        problems += _layer_problems(spec, teachers, student)
    problems += _extra_problems(spec)
    return problems


def _extra_problems(spec: JobSpec) -> list[str]:
    """Optional packages the spec needs: found now rather than after hours of training."""
    import importlib.util

    if spec.evaluate.enabled and spec.evaluate.onnx:
        missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
        if missing:
            return [f"evaluate.onnx: needs {', '.join(missing)}; pip install -e \".[onnx]\" (or set it false)"]
    return []


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the hub answers a TCP connection within `timeout_s`; assumed so behind a proxy (which may be the only
    way out) and not asked at all in offline mode (transformers then reads only the cache anyway)."""
    from huggingface_hub import constants, is_offline_mode

    if is_offline_mode():
        return True
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                                        "all_proxy")):
        return True
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout_s).close()
    except OSError:
        return False
    return True


def _unloadable(field: str, name: str, error: Exception, hub_up: bool = True) -> str:
    """One line for a model whose config or tokenizer cannot be loaded, saying where it was looked for."""
    from huggingface_hub import is_offline_mode
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError

    if isinstance(error, ModelCheckError):  # loaded, but unusable (a slow tokenizer)
        return f"{field}: {error}"
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if Path(name).exists():
        return f"{field}: cannot load the config and tokenizer of {name}: {message}"
    causes, cause = [], error
    while cause is not None and len(causes) < 10:  # transformers re-raises the hub's errors as OSError
        causes.append(cause)
        cause = cause.__cause__ or cause.__context__
    if any(isinstance(e, RepositoryNotFoundError) for e in causes):
        return (f"{field}: {name} is not found locally (no such folder) and the hub has no model of that name (or "
                "it is private: log in with `hf auth login`)")
    unreachable = (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError)
    if any(isinstance(e, unreachable) for e in causes) or (
            (is_offline_mode() or not hub_up) and isinstance(error, OSError)):
        hub = "offline (HF_HUB_OFFLINE is set)" if is_offline_mode() else "unreachable"
        return (f"{field}: {name} is not found locally (no such folder, not in the hub cache) and the hub is {hub}; "
                "give a local folder, or download the model once where the hub is reachable")
    return f"{field}: cannot load the config and tokenizer of {name}: {message}"


def _data_problems(spec: JobSpec) -> list[str]:
    problems = []
    for field, source in spec.data_sources():
        if field == "augment.corpus" and not spec.augment.enabled:
            continue
        peek = peek_source(source, spec.task)  # None for a hub dataset: not fetched here
        if peek is not None and peek.problem is not None:
            problems.append(f"{field}.path: {peek.problem}")
    return problems


def _data_label_names(spec: JobSpec) -> list[str] | None:
    """Classification: the label names the prepare stage will find, in id order; None when not known here (a hub
    dataset declaring no data.label_names) or when the training data cannot be read (a data problem already)."""
    if spec.data.label_names:
        return list(spec.data.label_names)
    source = spec.data.train[0]  # the prepare stage reads the other training sources with its label names
    if source.format == "hf" and not Path(source.path).exists():
        return None
    try:
        return read_label_names(source)
    except DataReadError:
        return None


def _tokenization_problems(spec: JobSpec, teachers: list[LoadedModel | None],
                           student: LoadedModel | None) -> list[str]:
    """Each teacher against the tokenizer the features are built with: the student's own, else the first
    teacher's (jobs.stages.tokenizer_ref)."""
    reference = student if spec.student.model is not None else (teachers[0] if teachers else None)
    if reference is None:
        return []
    problems = []
    for teacher in teachers:
        if teacher is None or teacher.ref.name_or_path == reference.ref.name_or_path:
            continue
        try:
            check_same_vocabulary({reference.name: reference.tokenizer, teacher.name: teacher.tokenizer})
        except ModelCheckError as error:
            problems.append(str(error))
    return problems


def _length_problems(spec: JobSpec, models: list[LoadedModel | None]) -> list[str]:
    """A student built from a teacher's config has the teacher's positions, so the teachers stand for it."""
    problems = []
    for model in filter(None, models):
        try:
            check_max_seq_len(model.config, spec.features.max_seq_len, model.name)
        except ModelCheckError as error:
            problems.append(str(error))
    return problems


def _head_problems(spec: JobSpec, teachers: list[LoadedModel | None]) -> list[str]:
    """Teachers used as they are: the task's head and, for classification, the data's classes in its order.

    A teacher with `finetune` is trained from its base model with a fresh head, and one with `init: random` is
    built with one: neither has classes to compare.
    """
    used_as_is = [model for teacher, model in zip(spec.teachers, teachers)
                  if model is not None and teacher.finetune is None and teacher.init == "pretrained"]
    if not used_as_is:
        return []
    label_names = _data_label_names(spec) if task_traits(spec.task).classes else None
    problems, class_counts = [], {}
    for model in used_as_is:
        try:
            check_task_head(model.config, spec.task, len(label_names) if label_names else None, model.name)
            if task_traits(spec.task).classes and model.config.architectures:
                class_counts[model.name] = model.config.num_labels
                if label_names:
                    check_label_order(model.config, label_names, model.name)
        except ModelCheckError as error:
            problems.append(str(error))
    if not label_names and len(set(class_counts.values())) > 1:
        found = ", ".join(f"{name}: {count}" for name, count in class_counts.items())
        problems.append(f"teachers: classify into different numbers of labels ({found}); an ensemble needs one "
                        "label set")
    return problems


def _config_count(model: LoadedModel | None, attribute: str) -> int | None:
    """num_hidden_layers or num_attention_heads of a loaded model (DistilBERT's n_layers, n_heads included)."""
    return getattr(model.config, attribute, None) if model is not None else None


def _layer_problems(spec: JobSpec, teachers: list[LoadedModel | None], student: LoadedModel | None) -> list[str]:
    """Phase 1 pairs student layers with teacher layers (the layer map) and, for attention, heads one to one."""
    problems = []
    intermediate = spec.distill.intermediate
    copied = spec.student.init_from_teacher_layers
    # a student built from a teacher's config comes from phase 1's teacher, or the first when phase 1 is off
    source = teachers[intermediate.teacher if intermediate.enabled else 0] if teachers else None
    source_layers = _config_count(source, "num_hidden_layers")
    if copied is not None and source_layers is not None:
        bad = [layer for layer in copied if layer >= source_layers]
        if bad:
            problems.append(f"student.init_from_teacher_layers: names layers {bad}, but {source.name} has layers "
                            f"0..{source_layers - 1}")
    if not intermediate.enabled or not teachers or teachers[intermediate.teacher] is None:
        return problems
    teacher = teachers[intermediate.teacher]
    if spec.student.architecture is not None:
        student_name = "student.architecture"
        student_layers = spec.student.architecture.num_hidden_layers
        student_heads = spec.student.architecture.num_attention_heads
    elif copied is not None:
        student_name, student_layers = "student.init_from_teacher_layers", len(copied)
        student_heads = _config_count(teacher, "num_attention_heads")
    else:
        student_name = student.name if student is not None else "student.model"
        student_layers = _config_count(student, "num_hidden_layers")
        student_heads = _config_count(student, "num_attention_heads")
    teacher_layers = _config_count(teacher, "num_hidden_layers")
    if teacher_layers is not None and student_layers is not None:
        try:
            resolve_layer_map(intermediate.layer_map, student_layers, teacher_layers)
        except LayerMapError as error:
            problems.append(f"distill.intermediate.layer_map: {error} (teacher {teacher.name}: {teacher_layers} "
                            f"layers; student {student_name}: {student_layers} layers)")
    teacher_heads = _config_count(teacher, "num_attention_heads")
    if "attention" in intermediate.losses and teacher_heads is not None and student_heads is not None:
        try:
            AttentionMSE(student_heads, teacher_heads)
        except HeadCountMismatch as error:
            problems.append(f"distill.intermediate.losses: {error} (teacher {teacher.name}; student {student_name})")
    return problems

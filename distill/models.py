"""Loading teachers, students and tokenizers, by hub name or local folder, with checks before any work starts."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from core.positions import usable_positions
from core.tasks import Task
from distill.tasks import TASKS, task_kind

log = logging.getLogger(__name__)

# A job's teacher with init="random" gets this plus its index among the teachers as ModelRef.seed
# (jobs.stages.teacher_refs), so that every stage that builds it (each labelling actor, the online teacher of
# phase 2, init_from_teacher_layers, evaluation) holds the weights of the teacher that labelled.
RANDOM_INIT_SEED = 0


class ModelCheckError(ValueError):
    """A model that does not fit the task, the tokenizer or the sequence length asked for."""


@dataclass(frozen=True)
class ModelRef:
    """Where a model comes from. `init="random"` builds it from the config at `name_or_path` with fresh weights
    (for demos and tests that have no pretrained weights), drawn with `seed` when set, else from the global torch
    RNG; `weight` is its share in a teacher ensemble."""

    name_or_path: str
    weight: float = 1.0
    trust_remote_code: bool = False
    init: Literal["pretrained", "random"] = "pretrained"
    seed: int | None = None


def _folder(ref: ModelRef) -> str:
    """Where the config and tokenizer are: the model's folder or hub name, or the folder of an ONNX graph."""
    path = ref.name_or_path
    return str(Path(path).parent) if path.endswith(".onnx") else path


def load_config(ref: ModelRef, local_files_only: bool = False) -> PretrainedConfig:
    """`local_files_only`: a hub name only from the hub cache, never asking the hub (jobs.preflight, hub down)."""
    return AutoConfig.from_pretrained(_folder(ref), trust_remote_code=ref.trust_remote_code,
                                      local_files_only=local_files_only)


def from_config(ref: ModelRef, head: type, config: PretrainedConfig) -> PreTrainedModel:
    """`head` (an Auto*Model class) built from `config` with fresh weights for `ref` (init="random"): drawn with
    `ref.seed` when it has one, leaving the global RNG as it was; else drawn from the global RNG."""
    if ref.seed is None:
        return head.from_config(config, trust_remote_code=ref.trust_remote_code)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ref.seed)
        return head.from_config(config, trust_remote_code=ref.trust_remote_code)


def load_tokenizer(ref: ModelRef, local_files_only: bool = False) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(_folder(ref), trust_remote_code=ref.trust_remote_code,
                                              local_files_only=local_files_only)
    if not tokenizer.is_fast:
        raise ModelCheckError(f"{ref.name_or_path}: a fast tokenizer is needed for character offsets")
    return tokenizer


def load_model(ref: ModelRef, task: Task, num_labels: int | None = None) -> PreTrainedModel:
    """A model with the task's head, in eval mode (an ONNX graph: `distill.onnx_export.load_scoring_model`)."""
    if ref.init == "pretrained":
        check_task_head(load_config(ref), task, num_labels, ref.name_or_path)
    kind = task_kind(task)
    kwargs = kind.head_config(num_labels)
    if ref.init == "random":
        config = AutoConfig.from_pretrained(ref.name_or_path, trust_remote_code=ref.trust_remote_code, **kwargs)
        model = from_config(ref, kind.head, config)
    else:
        model = kind.head.from_pretrained(ref.name_or_path, trust_remote_code=ref.trust_remote_code, **kwargs)
    return model.eval()


def task_of(config, name: str) -> Task:
    """The task of a model, from the head named in its config (`...ForQuestionAnswering` or `...Classification`).

    Raises:
        ModelCheckError: the config names no task's head.
    """
    heads = config.architectures or []
    for kind in TASKS.values():
        if kind.recognizes(config):
            return kind.name
    raise ModelCheckError(f"{name}: cannot tell the task from its architectures {heads or '(none)'}; "
                          f"name the task ({' or '.join(TASKS)})")


def check_task_head(config: PretrainedConfig, task: Task, num_labels: int | None, name: str) -> None:
    """Refuse a pretrained model (a teacher used as it is) without the task's head or, for classification, with
    another number of classes than the data's `num_labels`. A config that names no architectures is not checked."""
    head_names = list(config.architectures or [])
    if not head_names:
        return
    kind = task_kind(task)
    if not kind.recognizes(config):
        problem = f" (problem_type {config.problem_type})" if getattr(config, "problem_type", None) else ""
        raise ModelCheckError(
            f"{name}: has a {', '.join(head_names)} head{problem}, not a *{kind.architecture_suffix} head for task "
            f"'{task}'; give a model fine-tuned for the task, or fine-tune it first (teachers[].finetune)")
    if kind.traits.classes and num_labels is not None and config.num_labels != num_labels:
        raise ModelCheckError(f"{name}: classifies into {config.num_labels} labels, the data has {num_labels}")


def check_max_seq_len(config: PretrainedConfig, max_seq_len: int, name: str) -> None:
    positions = usable_positions(config)
    if positions is not None and max_seq_len > positions:
        raise ModelCheckError(f"{name}: features.max_seq_len {max_seq_len} exceeds the model's "
                              f"{positions} positions; lower features.max_seq_len")


def _generic_class_names(names: list[str]) -> bool:
    """LABEL_0, LABEL_1, ... (transformers' default) or 0, 1, ... (labels read as ids): names that say nothing."""
    return all(name.upper() in (f"LABEL_{i}", str(i)) for i, name in enumerate(names))


def check_label_order(config: PretrainedConfig, label_names: list[str], name: str) -> None:
    """Refuse a classifier whose named classes are not the data's, in the data's order, ignoring case.

    Class i of the model is taken as the data's class i; a model trained on [positive, negative] would otherwise
    label data read as [negative, positive] with swapped classes, silently. Generic names on either side cannot be
    compared: accepted, with a logged warning.
    """
    model_names = [str(config.id2label[i]) for i in range(config.num_labels)]
    if _generic_class_names(model_names) or _generic_class_names(label_names):
        log.warning("%s: class order not checked, its classes %s or the data's %s are unnamed; class i of the "
                    "model is taken as the data's class i", name, model_names, label_names)
        return
    if [n.lower() for n in model_names] == [n.lower() for n in label_names]:
        return
    found = f"{name}: classifies into {model_names} (in id order), the data's labels are {label_names}"
    if sorted(n.lower() for n in model_names) == sorted(n.lower() for n in label_names):
        raise ModelCheckError(f"{found}: the same classes in another order, so its ids would label the data with "
                              "swapped classes. Use a model trained on the data's order, or, when the data's labels "
                              "are names, set data.label_names to the model's order")
    raise ModelCheckError(f"{found}: other classes. If they are the same classes in this order, give "
                          "data.label_names the model's names")


# Texts that tokenizers sharing a vocabulary may still split differently: case, accents, punctuation, non-ASCII
# scripts, emoji and odd whitespace (lower-casing, accent stripping and pre-tokenisation are not in the vocabulary).
_PROBE_TEXTS = (
    "Where is the Eiffel Tower in Paris?",
    "Café, naïve façade, São Paulo, Zürich, Œuvre",
    "Don't stop—it's 3.14 (roughly), e.g. U.S.A.! #1 @home $5 50% a/b",
    "Москва, Αθήνα, 東京, मुंबई, 🙂",
    "  two  spaces\tand a tab\n",
)


def check_same_vocabulary(tokenizers: dict[str, PreTrainedTokenizerBase]) -> None:
    """Teachers and student must tokenize alike, or teacher logits would not line up with student positions.

    The same vocabulary is not enough: with lower-casing off, "Paris" is [UNK] where an uncased tokenizer finds
    "paris". So the token ids of `_PROBE_TEXTS` (special tokens included) must agree as well.
    """
    names = list(tokenizers)
    reference_name, reference = names[0], tokenizers[names[0]]
    reference_vocab = reference.get_vocab()
    reference_ids = reference(list(_PROBE_TEXTS))["input_ids"]
    for name in names[1:]:
        tokenizer = tokenizers[name]
        if tokenizer.get_vocab() != reference_vocab:
            raise ModelCheckError(f"{name} uses a different vocabulary from {reference_name}; every teacher and the "
                                  "student must share one tokenizer vocabulary")
        for text, ids, expected in zip(_PROBE_TEXTS, tokenizer(list(_PROBE_TEXTS))["input_ids"], reference_ids):
            if ids != expected:
                raise ModelCheckError(
                    f"{name} tokenizes the probe {text!r} as {tokenizer.convert_ids_to_tokens(ids)}, but "
                    f"{reference_name} as {reference.convert_ids_to_tokens(expected)}: same vocabulary, different "
                    "normalisation (lower-casing, accents) or pre-tokenisation; every teacher and the student must "
                    "tokenize alike")

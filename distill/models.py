"""Loading teachers, students and tokenizers, by hub name or local folder, with checks before any work starts."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Literal

import torch
from transformers import (
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

Task = Literal["qa", "classification"]
# Models built with init="random" are seeded with this (plus their index among the teachers) wherever they are
# built, so every Ray actor and the online teacher of phase 2 hold the same weights.
RANDOM_INIT_SEED = 0
_HEADS = {"qa": AutoModelForQuestionAnswering, "classification": AutoModelForSequenceClassification}


class ModelCheckError(ValueError):
    """A model that does not fit the task, the tokenizer or the sequence length asked for."""


@dataclass(frozen=True)
class ModelRef:
    """Where a model comes from. `init="random"` builds it from the config at `name_or_path` with fresh weights
    (for demos and tests that have no pretrained weights); `weight` is its share in a teacher ensemble."""

    name_or_path: str
    weight: float = 1.0
    trust_remote_code: bool = False
    init: Literal["pretrained", "random"] = "pretrained"


def load_config(ref: ModelRef) -> PretrainedConfig:
    return AutoConfig.from_pretrained(ref.name_or_path, trust_remote_code=ref.trust_remote_code)


def load_tokenizer(ref: ModelRef) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(ref.name_or_path, trust_remote_code=ref.trust_remote_code)
    if not tokenizer.is_fast:
        raise ModelCheckError(f"{ref.name_or_path}: a fast tokenizer is needed for character offsets")
    return tokenizer


def load_model(ref: ModelRef, task: Task, num_labels: int | None = None,
               output_attentions: bool = False) -> PreTrainedModel:
    """A model with the task's head, in eval mode; attention weights are returned only by the eager kernel."""
    config = load_config(ref)
    head_names = [a for a in (config.architectures or [])]
    expected = "ForQuestionAnswering" if task == "qa" else "ForSequenceClassification"
    if ref.init == "pretrained" and head_names and not any(a.endswith(expected) for a in head_names):
        raise ModelCheckError(
            f"{ref.name_or_path}: has a {', '.join(head_names)} head, not a *{expected} head for task '{task}'; "
            "give a model fine-tuned for the task, or fine-tune it first (teachers[].finetune)")
    if task == "classification" and num_labels is not None and ref.init == "pretrained" and head_names:
        if config.num_labels != num_labels:
            raise ModelCheckError(f"{ref.name_or_path}: classifies into {config.num_labels} labels, the data has "
                                  f"{num_labels}")
    kwargs = {"attn_implementation": "eager"} if output_attentions else {}
    if task == "classification" and num_labels is not None:
        kwargs["num_labels"] = num_labels
    if ref.init == "random":
        config = AutoConfig.from_pretrained(ref.name_or_path, trust_remote_code=ref.trust_remote_code, **kwargs)
        model = _HEADS[task].from_config(config, trust_remote_code=ref.trust_remote_code)
    else:
        model = _HEADS[task].from_pretrained(ref.name_or_path, trust_remote_code=ref.trust_remote_code, **kwargs)
    return model.eval()


def check_max_seq_len(config: PretrainedConfig, max_seq_len: int, name: str) -> None:
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and max_seq_len > positions:
        raise ModelCheckError(f"{name}: features.max_seq_len {max_seq_len} exceeds the model's "
                              f"{positions} positions; lower features.max_seq_len")


def check_same_vocabulary(tokenizers: dict[str, PreTrainedTokenizerBase]) -> None:
    """Teachers and student must tokenize alike, or teacher logits would not line up with student positions."""
    names = list(tokenizers)
    reference = tokenizers[names[0]].get_vocab()
    for name in names[1:]:
        if tokenizers[name].get_vocab() != reference:
            raise ModelCheckError(f"{name} uses a different vocabulary from {names[0]}; every teacher and the "
                                  "student must share one tokenizer vocabulary")


def pick_device(gpus_per_worker: float | None) -> torch.device:
    """CUDA when asked for (or, when unset, when present); CPU otherwise."""
    want_gpu = torch.cuda.is_available() if gpus_per_worker is None else gpus_per_worker > 0
    if want_gpu and not torch.cuda.is_available():
        raise ModelCheckError("resources.gpus_per_worker > 0 but CUDA is not available on this machine")
    return torch.device("cuda" if want_gpu else "cpu")


@contextlib.contextmanager
def autocast(device: torch.device) -> Iterator[None]:
    """Mixed precision on GPU (bf16 where supported, else fp16); plain fp32 on CPU, where bf16 is far slower."""
    if device.type != "cuda":
        yield
        return
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    with torch.autocast("cuda", dtype=dtype):
        yield

"""What the objectives share: the model inputs of a batch, teachers held frozen, and saving a trained model whole.
Logits, gold targets and teacher logits in one (B, G, N) layout are the task's (`distill.tasks.TaskKind`)."""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from core.tasks import Task
from distill.models import ModelRef, check_same_vocabulary, load_model, load_tokenizer

# Feature columns every model input comes from (distill.features schemas); the task's labels and teacher logits
# are its own (distill.tasks).
INPUT_COLUMNS = ("input_ids", "token_type_ids")


def takes_token_types(model: PreTrainedModel) -> bool:
    """Whether the model's forward takes token_type_ids (BERT does, DistilBERT does not)."""
    return "token_type_ids" in inspect.signature(model.forward).parameters


def model_inputs(batch: dict[str, torch.Tensor], token_types: bool = True) -> dict[str, torch.Tensor]:
    """The keys of a padded batch that the model takes."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if token_types:
        inputs["token_type_ids"] = batch["token_type_ids"]
    return inputs


def load_teacher(ref: ModelRef, task: Task, num_labels: int | None, device: torch.device) -> PreTrainedModel:
    """A teacher, frozen, in eval mode on `device`; a random-init one is rebuilt from its `ref.seed`, so it is the
    teacher whose logits the features hold."""
    teacher = load_model(ref, task, num_labels).to(device)
    teacher.requires_grad_(False)
    return teacher.eval()


def check_vocabularies(student_tokenizer: ModelRef, teachers: tuple[ModelRef, ...] | list[ModelRef]) -> None:
    """Teachers and student must tokenize alike; compared only when the tokenizers come from different places."""
    sources = {student_tokenizer.name_or_path: student_tokenizer,
               **{t.name_or_path: t for t in teachers}}
    if len(sources) > 1:
        check_same_vocabulary({name: load_tokenizer(ref) for name, ref in sources.items()})


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path) -> str:
    """save_pretrained into a temp folder, then rename: a folder that exists is always whole."""
    temp = folder.with_name(f".{folder.name}.tmp")
    if temp.exists():
        shutil.rmtree(temp)
    model.save_pretrained(temp)
    tokenizer.save_pretrained(temp)
    if folder.exists():
        shutil.rmtree(folder)
    temp.rename(folder)
    return str(folder)


class Frozen:
    """Holds teachers outside nn.Module registration: not trained, not synchronised by DDP, not checkpointed,
    and left in eval mode when the trained module is switched to train mode."""

    def __init__(self, *models: PreTrainedModel):
        self.models = models

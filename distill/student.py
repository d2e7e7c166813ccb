"""Building the student (and any model to be trained) with the task's head.

Three ways in, one per `StudentSpec` source:

- `model`: a pretrained model by name or folder (a general TinyBERT, or a folder saved by a previous phase); a
  fresh task head is added when it has none; with `init: random`, the model's config with fresh weights;
- `architecture`: the first teacher's config with smaller sizes, fresh weights;
- `init_from_teacher_layers`: the teacher's config with fewer layers, its embeddings and the chosen layers copied
  (the task head starts fresh).
"""

from __future__ import annotations

import re

import torch
from transformers import PreTrainedModel

from core.tasks import Task
from distill.models import ModelCheckError, ModelRef, from_config, load_config
from distill.spec import StudentSpec
from distill.tasks import task_kind



def load_for_training(ref: ModelRef, task: Task, num_labels: int | None = None) -> PreTrainedModel:
    """`ref` with the task's head, ready to train: its own head when it has one for the task, else a fresh one.

    Unlike `distill.models.load_model` (which loads teachers and refuses a model without the task's head), this
    accepts base models such as bert-base-uncased or a general TinyBERT: that is what fine-tuning starts from.
    """
    kind = task_kind(task)
    kwargs = kind.head_config(num_labels)
    head = kind.head
    if ref.init == "random":
        config = load_config(ref)
        for key, value in kwargs.items():
            setattr(config, key, value)
        return from_config(ref, head, config)
    return head.from_pretrained(ref.name_or_path, trust_remote_code=ref.trust_remote_code, **kwargs)


def tokenizer_source(spec: StudentSpec, teacher: ModelRef | None) -> ModelRef:
    """Where the student's tokenizer comes from: its own folder, or the teacher's when built from the teacher."""
    if spec.model is not None:
        return ModelRef(spec.model, trust_remote_code=spec.trust_remote_code)
    if teacher is None:
        raise ModelCheckError("a student built from a teacher's config needs a teacher")
    return teacher


def build_student(spec: StudentSpec, teacher: ModelRef | None, task: Task, num_labels: int | None) -> PreTrainedModel:
    """The student model with the task's head, in train mode, from whichever source `spec` names.

    `teacher` is needed for `architecture` and `init_from_teacher_layers` (its config, and for the latter its
    weights); it may be None for a student given by `model`. Fresh weights come from the global torch RNG, so
    seed it first for a reproducible student.
    """
    if spec.model is not None:
        return load_for_training(ModelRef(spec.model, trust_remote_code=spec.trust_remote_code, init=spec.init),
                                 task, num_labels).train()
    if teacher is None:
        raise ModelCheckError("student.architecture and student.init_from_teacher_layers are built from a teacher; "
                              "give one (teachers) or name a student model (student.model)")
    config = load_config(teacher)
    for key, value in task_kind(task).head_config(num_labels).items():
        setattr(config, key, value)
    if spec.architecture is not None:
        for key, value in spec.architecture.model_dump().items():
            setattr(config, key, value)
        return task_kind(task).head.from_config(config, trust_remote_code=teacher.trust_remote_code).train()
    return _from_teacher_layers(spec.init_from_teacher_layers, teacher, config, task, num_labels).train()


def _from_teacher_layers(layers: list[int], teacher: ModelRef, config, task: Task,
                         num_labels: int | None) -> PreTrainedModel:
    """A student with `len(layers)` layers: teacher layer layers[i] becomes student layer i; embeddings copied."""
    teacher_layers = config.num_hidden_layers
    bad = [layer for layer in layers if layer >= teacher_layers]
    if bad:
        raise ModelCheckError(f"student.init_from_teacher_layers names layers {bad}, but the teacher "
                              f"{teacher.name_or_path} has layers 0..{teacher_layers - 1}")
    source = load_for_training(teacher, task, num_labels)
    config.num_hidden_layers = len(layers)
    student = task_kind(task).head.from_config(config, trust_remote_code=teacher.trust_remote_code)
    prefix = re.escape(student.base_model_prefix)
    layer_key = re.compile(rf"^({prefix}\.encoder\.layers?\.)(\d+)(\..+)$")  # bert.encoder.layer.3.attention...
    embedding_key = re.compile(rf"^{prefix}\.embeddings\.")
    source_state = source.state_dict()
    copied: dict[str, torch.Tensor] = {}
    for key in student.state_dict():
        match = layer_key.match(key)
        if match:
            copied[key] = source_state[f"{match[1]}{layers[int(match[2])]}{match[3]}"]
        elif embedding_key.match(key):
            copied[key] = source_state[key]
    if not any(layer_key.match(key) for key in copied):
        raise ModelCheckError(f"{teacher.name_or_path}: init_from_teacher_layers needs a BERT-like encoder with "
                              f"parameters named {student.base_model_prefix}.encoder.layer.N.*; use "
                              "student.architecture or student.model for this model")
    student.load_state_dict(copied, strict=False)
    return student

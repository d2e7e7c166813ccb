"""The spec sections the model stages read: teachers and their fine-tuning, the student, features, labelling,
the two distillation phases and evaluation.

The defaults reproduce the reference recipe (bert-base-uncased-squad2 teacher, TinyBERT General 6L-768D student,
5 + 5 epochs, batch 26, lr 5e-5 / 3e-5, max_seq_len 384, doc_stride 128, temperature 1, distillation weight 1.0).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from augment.spec import DataSource
from core.config import Ref, StrictModel
from core.loop import LoopSpec

DEFAULT_TEACHER = "deepset/bert-base-uncased-squad2"
DEFAULT_STUDENT = "huawei-noah/TinyBERT_General_6L_768D"


class FinetuneSpec(LoopSpec):
    train: DataSource | None = Field(
        None, description="labelled data to fine-tune on; unset: data.train (give a larger set when data.train is "
                          "a small transfer set)")
    epochs: float = Field(2.0, gt=0, description="epochs of fine-tuning")
    batch_size: int = Field(32, gt=0)
    learning_rate: float = Field(3e-5, gt=0)


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


class PhaseSpec(LoopSpec):
    enabled: bool = True


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

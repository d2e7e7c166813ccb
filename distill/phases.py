"""The training stages the job runner calls: fine-tune a teacher, the two TinyBERT distillation phases, and
masked-LM training of the augmentation's candidate model.

    pretrain_masked_lm    BERT's masked-LM objective on unlabelled text    -> out_dir/model/
    finetune_teacher      hard labels on the original data                 -> out_dir/model/
    distill_intermediate  MSE on embeddings, hidden states, attentions      -> out_dir/student/, projections
    distill_prediction    w * KL(teacher || student) * T^2 + (1 - w) * CE   -> out_dir/student/

Each builds a `TrainPlan` and hands it to `distill.trainer.run_plan`, which runs it in this process or on Ray
Train workers and writes train_config.json, metrics.jsonl and checkpoints/ beside the model. Rerunning a stage
with the same arguments and out_dir resumes from its latest complete checkpoint.
"""

from __future__ import annotations

import inspect
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import safetensors.torch
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from augment.spec import MaskedLMTrainingSpec
from core.resources import ResourcesSpec
from distill.attention_maps import recorded_attention, use_pre_dropout_attention
from distill.ensemble import mix_teacher_logits
from distill.evaluate import ValidationSet
from distill.features import FlatFeatures
from distill.layer_map import LayerMap, resolve_layer_map
from distill.losses import AttentionMSE, HardLabelCE, HiddenStateMSE, SoftTargetKL
from distill.models import (ModelCheckError, ModelRef, Task, check_same_vocabulary, load_config, load_model,
                            load_tokenizer)
from distill.spec import FinetuneSpec, IntermediateSpec, PhaseSpec, PredictionSpec, StudentSpec
from distill.student import build_student, load_for_training, tokenizer_source
from distill.trainer import PhaseResult, TrainingError, TrainPlan, require_filled, run_plan

Ensemble = Literal["probs", "logits"]

# Feature columns each task's model inputs and gold labels come from (distill.features schemas).
_INPUT_COLUMNS = ("input_ids", "token_type_ids")
_LABEL_COLUMNS = {"qa": ("start_position", "end_position"), "classification": ("label",)}
_TEACHER_COLUMNS = {"qa": ("teacher_start_logits", "teacher_end_logits"), "classification": ("teacher_logits",)}


# ---------------------------------------------------------------------------------------------------------------
# Entry points


def pretrain_masked_lm(base: ModelRef, task: Task, features_dir: Path, config: MaskedLMTrainingSpec,
                       resources: ResourcesSpec, out_dir: Path, progress: bool = True) -> PhaseResult:
    """Train `base` (a masked LM, or its config with init="random") on the inputs of `features_dir` with BERT's
    masked-LM objective; the model and its tokenizer go to out_dir/model/. Seeded by `config.seed`.

    Loop settings MaskedLMTrainingSpec does not name take PhaseSpec's defaults, as in `finetune_teacher`.
    """
    phase_config = PhaseSpec(**config.model_dump(exclude={"mask_prob", "seed"}))
    options = _MaskedLMOptions(base=base, mask_prob=config.mask_prob)
    return run_plan(TrainPlan("masked_lm", _build_masked_lm, options, task, Path(features_dir), phase_config,
                              resources, config.seed, Path(out_dir), progress))


def finetune_teacher(base: ModelRef, task: Task, features_dir: Path, config: FinetuneSpec, resources: ResourcesSpec,
                     seed: int, out_dir: Path, num_labels: int | None = None, progress: bool = True) -> PhaseResult:
    """Fine-tune `base` (a base model, or one with the task's head) on hard labels; the model goes to out_dir/model/.

    The loop settings FinetuneSpec does not name (weight decay, clipping, logging, checkpoints) take PhaseSpec's
    defaults; train_config.json records them. `config.train` is the caller's business (it built the features).
    """
    phase_config = PhaseSpec(**config.model_dump(exclude={"train"}))
    options = _PredictionOptions(student=None, base=base, teachers=(), ensemble="logits", num_labels=num_labels,
                                 output="model")
    return run_plan(TrainPlan("finetune", _build_prediction, options, task, Path(features_dir), phase_config,
                              resources, seed, Path(out_dir), progress))


def distill_intermediate(student: StudentSpec, teacher: ModelRef, task: Task, features_dir: Path,
                         config: IntermediateSpec, resources: ResourcesSpec, seed: int, out_dir: Path,
                         num_labels: int | None = None, progress: bool = True) -> PhaseResult:
    """Phase 1: the student learns the teacher's embeddings, hidden states and attentions (`config.losses`).

    Writes out_dir/student/ (with the teacher's tokenizer when the student is built from it) and, when the
    student is narrower than the teacher, out_dir/projections.safetensors (the learned student -> teacher maps).
    `teacher` is the one `config.teacher` picks; the caller resolves the index.
    """
    options = _IntermediateOptions(student=student, teacher=teacher, num_labels=num_labels)
    return run_plan(TrainPlan("intermediate", _build_intermediate, options, task, Path(features_dir), config,
                              resources, seed, Path(out_dir), progress))


def distill_prediction(student: StudentSpec | Path, teachers: list[ModelRef], task: Task, features_dir: Path,
                       config: PredictionSpec, ensemble: Ensemble, resources: ResourcesSpec, seed: int,
                       out_dir: Path, num_labels: int | None = None, progress: bool = True,
                       validation: ValidationSet | None = None) -> PhaseResult:
    """Phase 2: loss = w * KL(teacher || student) at temperature T (x T^2) + (1 - w) * hard-label CE.

    `student` is a folder saved by phase 1 or a StudentSpec to build fresh. Teacher logits come from the features
    (`config.teacher_logits == "labelled"`, written by the label stage) or from running `teachers` each step
    ("online", combined by `ensemble` with ModelRef.weight); with distill_weight 0 no teacher is used at all.
    With `config.eval_every` the student is scored on `validation` that often, the best kept in out_dir/best/.
    """
    if config.eval_every is not None and validation is None:
        raise TrainingError("distill.prediction.eval_every is set but no validation examples were given")
    student_spec, student_dir = (None, Path(student)) if isinstance(student, (str, Path)) else (student, None)
    options = _PredictionOptions(student=student_spec, base=None if student_dir is None else ModelRef(str(student_dir)),
                                 teachers=tuple(teachers), ensemble=ensemble, num_labels=num_labels, output="student")
    return run_plan(TrainPlan("prediction", _build_prediction, options, task, Path(features_dir), config,
                              resources, seed, Path(out_dir), progress,
                              validation if config.eval_every is not None else None, config.eval_every))


# ---------------------------------------------------------------------------------------------------------------
# Shared pieces


def takes_token_types(model: PreTrainedModel) -> bool:
    """Whether the model's forward takes token_type_ids (BERT does, DistilBERT does not)."""
    return "token_type_ids" in inspect.signature(model.forward).parameters


def model_inputs(batch: dict[str, torch.Tensor], token_types: bool = True) -> dict[str, torch.Tensor]:
    """The keys of a padded batch that the model takes."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if token_types:
        inputs["token_type_ids"] = batch["token_type_ids"]
    return inputs


def task_logits(outputs: Any, task: Task) -> torch.Tensor:
    """(B, G, N) logits: QA start and end over the L positions (G=2, N=L); classification (G=1, N=C)."""
    if task == "qa":
        return torch.stack([outputs.start_logits, outputs.end_logits], 1)
    return outputs.logits[:, None, :]


def gold_targets(batch: dict[str, torch.Tensor], task: Task) -> torch.Tensor:
    """(B, G) gold entries matching `task_logits`."""
    if task == "qa":
        return torch.stack([batch["start_positions"], batch["end_positions"]], 1)
    return batch["labels"][:, None]


def labelled_teacher_logits(batch: dict[str, torch.Tensor], task: Task) -> torch.Tensor:
    """(B, G, N) teacher logits read from the features, matching `task_logits`."""
    if task == "qa":
        return torch.stack([batch["teacher_start_logits"], batch["teacher_end_logits"]], 1)
    return batch["teacher_logits"][:, None, :]


def distribution_mask(batch: dict[str, torch.Tensor], task: Task) -> torch.Tensor | None:
    """(B, N) entries that take part in a distribution: QA real tokens; classification every class (None)."""
    return batch["attention_mask"] if task == "qa" else None


def _load_teacher(ref: ModelRef, task: Task, num_labels: int | None, device: torch.device) -> PreTrainedModel:
    """A teacher, frozen, in eval mode on `device`; a random-init one is rebuilt from its `ref.seed`, so it is the
    teacher whose logits the features hold."""
    teacher = load_model(ref, task, num_labels).to(device)
    teacher.requires_grad_(False)
    return teacher.eval()


def _check_vocabularies(student_tokenizer: ModelRef, teachers: tuple[ModelRef, ...] | list[ModelRef]) -> None:
    """Teachers and student must tokenize alike; compared only when the tokenizers come from different places."""
    sources = {student_tokenizer.name_or_path: student_tokenizer,
               **{t.name_or_path: t for t in teachers}}
    if len(sources) > 1:
        check_same_vocabulary({name: load_tokenizer(ref) for name, ref in sources.items()})


def _save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path) -> str:
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


class _Frozen:
    """Holds teachers outside nn.Module registration: not trained, not synchronised by DDP, not checkpointed,
    and left in eval mode when the trained module is switched to train mode."""

    def __init__(self, *models: PreTrainedModel):
        self.models = models


# ---------------------------------------------------------------------------------------------------------------
# Phase 1


@dataclass(frozen=True)
class _IntermediateOptions:
    student: StudentSpec
    teacher: ModelRef
    num_labels: int | None


class IntermediateObjective(nn.Module):
    """Phase 1: the student and its projections; forward returns the MSE terms named in `losses`.

    `embeddings`: MSE between embedding outputs; `hidden`: the sum over mapped layers of the hidden-state MSE;
    `attention`: the sum over mapped layers of the attention MSE, on probabilities before dropout. Each is
    averaged over real tokens (see distill.losses). Loss = embeddings + hidden + attention, as TinyBERT.
    """

    find_unused_parameters = True  # the task head (and any layer no term reaches) gets no gradient in phase 1

    def __init__(self, student: PreTrainedModel, teacher: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 losses: list[str], layer_map: LayerMap, spec: dict[str, Any]):
        super().__init__()
        self.student = student
        self._teacher = _Frozen(teacher)
        self.tokenizer = tokenizer
        self.pad_token_id = tokenizer.pad_token_id
        self.layer_map = layer_map
        self.columns = _INPUT_COLUMNS
        self.term_weights = {name: 1.0 for name in losses}
        self._spec = spec
        s_config, t_config = student.config, teacher.config
        # TinyBERT: one map W_e for the embeddings, one W_h shared by every hidden layer
        self.embeddings_loss = (HiddenStateMSE(s_config.hidden_size, t_config.hidden_size)
                                if "embeddings" in losses else None)
        self.hidden_loss = HiddenStateMSE(s_config.hidden_size, t_config.hidden_size) if "hidden" in losses else None
        self.attention_loss = (AttentionMSE(s_config.num_attention_heads, t_config.num_attention_heads)
                               if "attention" in losses else None)
        if self.attention_loss is not None:
            use_pre_dropout_attention(student)
            use_pre_dropout_attention(teacher)

    @property
    def teacher(self) -> PreTrainedModel:
        return self._teacher.models[0]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mask = batch["attention_mask"]  # (B, L)
        # attention maps before dropout, of the mapped layers only (distill.attention_maps); none without the term
        pairs = self.layer_map.attention_pairs if self.attention_loss is not None else []
        student_layers, teacher_layers = [s for s, _ in pairs], [t for _, t in pairs]
        with recorded_attention(self.student, student_layers) as student_maps:
            student = self.student(**model_inputs(batch, takes_token_types(self.student)), output_hidden_states=True)
        with torch.no_grad(), recorded_attention(self.teacher, teacher_layers) as teacher_maps:
            teacher = self.teacher(**model_inputs(batch, takes_token_types(self.teacher)), output_hidden_states=True)
        terms = {}
        if self.embeddings_loss is not None:
            terms["embeddings"] = self.embeddings_loss(student.hidden_states[0], teacher.hidden_states[0], mask)
        if self.hidden_loss is not None:
            terms["hidden"] = sum(self.hidden_loss(student.hidden_states[s], teacher.hidden_states[t], mask)
                                  for s, t in self.layer_map.hidden_pairs)
        if self.attention_loss is not None:
            terms["attention"] = sum(self.attention_loss(student_maps[s], teacher_maps[t], mask) for s, t in pairs)
        return terms

    def check_features(self, data: FlatFeatures) -> None:
        pass  # inputs only: the schema has them on every row

    def projections(self) -> dict[str, torch.Tensor]:
        """The learned student -> teacher maps, by term: {"hidden.weight": (teacher, student), ...}."""
        found = {}
        for name in ("embeddings", "hidden"):
            loss = getattr(self, f"{name}_loss")
            if loss is not None and loss.projection is not None:
                for key, value in loss.projection.state_dict().items():
                    found[f"{name}.{key}"] = value.detach().cpu().contiguous()
        return found

    def settings(self) -> dict[str, Any]:
        return {**self._spec,
                "losses": {name: {"weight": w, "reduction": "per-example mean over real tokens"}
                           for name, w in self.term_weights.items()},
                "layer_map": {"student_layers": len(self.layer_map.teacher_layers),
                              "teacher_layers": self.layer_map.teacher_count,
                              "teacher_layer_per_student_layer": list(self.layer_map.teacher_layers)},
                "projections": {name: list(value.shape) for name, value in self.projections().items()},
                "attention_compared": ("post-softmax probabilities before dropout"
                                       if self.attention_loss is not None else None)}

    def save_outputs(self, out_dir: Path) -> dict[str, str | None]:
        model_dir = _save_model(self.student, self.tokenizer, out_dir / "student")
        projections = self.projections()
        path = None
        if projections:
            path = str(out_dir / "projections.safetensors")
            safetensors.torch.save_file(projections, path, metadata={"maps": "student hidden -> teacher hidden"})
        return {"model_dir": model_dir, "projections": path}


def _build_intermediate(plan: TrainPlan, device: torch.device) -> IntermediateObjective:
    options: _IntermediateOptions = plan.options
    config: IntermediateSpec = plan.config  # type: ignore[assignment]
    teacher = _load_teacher(options.teacher, plan.task, options.num_labels, device)
    student = build_student(options.student, options.teacher, plan.task, options.num_labels)
    token_source = tokenizer_source(options.student, options.teacher)
    _check_vocabularies(token_source, [options.teacher])
    layer_map = resolve_layer_map(config.layer_map, student.config.num_hidden_layers,
                                  teacher.config.num_hidden_layers)
    spec = {"student": options.student.model_dump(mode="json"), "teacher": asdict(options.teacher),
            "teacher_index": config.teacher, "tokenizer": token_source.name_or_path}
    objective = IntermediateObjective(student, teacher, load_tokenizer(token_source), list(config.losses),
                                      layer_map, spec)
    return objective.to(device)


# ---------------------------------------------------------------------------------------------------------------
# Phase 2 (and teacher fine-tuning: phase 2 with distill_weight 0)


@dataclass(frozen=True)
class _PredictionOptions:
    student: StudentSpec | None          # build fresh from this spec ...
    base: ModelRef | None                # ... or load this folder / base model
    teachers: tuple[ModelRef, ...]
    ensemble: Ensemble
    num_labels: int | None
    output: str                          # folder under out_dir for the trained model


class PredictionObjective(nn.Module):
    """Phase 2 (and fine-tuning): forward returns `kl` (when w > 0) and `hard` (when w < 1).

    kl: SoftTargetKL at the configured temperature between the student's and the teachers' output
    distributions (QA: start and end over real tokens, averaged; classification: over classes); teacher logits
    from the batch ("labelled") or from running the teachers ("online", combined by `ensemble`).
    hard: HardLabelCE against the gold positions or classes. Loss = w * kl + (1 - w) * hard.
    """

    find_unused_parameters = False

    def __init__(self, student: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: Task,
                 distill_weight: float, temperature: float, teacher_logits: Literal["labelled", "online"],
                 teachers: list[PreTrainedModel], teacher_weights: list[float], ensemble: Ensemble,
                 output: str, spec: dict[str, Any]):
        super().__init__()
        if distill_weight > 0 and teacher_logits == "online" and not teachers:
            raise TrainingError("distill_weight > 0 with online teacher logits needs at least one teacher")
        self.student = student
        self.tokenizer = tokenizer
        self.pad_token_id = tokenizer.pad_token_id
        self.task = task
        self.source = teacher_logits
        self._teachers = _Frozen(*teachers)
        self.teacher_weights = teacher_weights
        self.ensemble = ensemble
        self.output = output
        self._spec = spec
        self.soft = SoftTargetKL(temperature)
        self.hard = HardLabelCE()
        self.term_weights = {name: w for name, w in (("kl", distill_weight), ("hard", 1.0 - distill_weight)) if w > 0}
        columns = [*_INPUT_COLUMNS, *_LABEL_COLUMNS[task]]
        if "kl" in self.term_weights and teacher_logits == "labelled":
            columns += _TEACHER_COLUMNS[task]
        self.columns = tuple(columns)

    @property
    def teachers(self) -> tuple[PreTrainedModel, ...]:
        return self._teachers.models

    def teacher_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, G, N) soft-target logits for `batch`, from the features or from the teachers."""
        if self.source == "labelled":
            return labelled_teacher_logits(batch, self.task)
        with torch.no_grad():
            each = [task_logits(teacher(**model_inputs(batch, takes_token_types(teacher))), self.task)
                    for teacher in self.teachers]  # K x (B, G, N)
        mask = distribution_mask(batch, self.task)
        mask = None if mask is None else mask.bool()
        weights = torch.tensor(self.teacher_weights, device=each[0].device)
        weights = weights / weights.sum()
        return torch.stack([mix_teacher_logits([t[:, g].float() for t in each], weights, self.ensemble, mask,
                                               self.soft.temperature)
                            for g in range(each[0].shape[1])], 1)  # (B, G, N)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = task_logits(self.student(**model_inputs(batch, takes_token_types(self.student))),
                             self.task)  # (B, G, N)
        mask = distribution_mask(batch, self.task)
        terms = {}
        if "kl" in self.term_weights:
            terms["kl"] = self.soft(logits, self.teacher_logits(batch), mask)
        if "hard" in self.term_weights:
            terms["hard"] = self.hard(logits, gold_targets(batch, self.task), mask)
        return terms

    def check_features(self, data: FlatFeatures) -> None:
        if "hard" in self.term_weights and self.task == "classification":
            require_filled(data, "label", "hard labels are needed while distill_weight < 1; label the data or "
                                           "set distill_weight: 1")
        if "kl" in self.term_weights and self.source == "labelled":
            for column in _TEACHER_COLUMNS[self.task]:
                require_filled(data, column, "run the label stage on these features, set "
                                              "distill.prediction.teacher_logits: online, or distill_weight: 0")

    def settings(self) -> dict[str, Any]:
        return {**self._spec,
                "losses": {"kl": {"weight": self.term_weights.get("kl", 0.0), "temperature": self.soft.temperature,
                                  "scaled_by_t_squared": True, "teacher_logits": self.source,
                                  "ensemble": self.ensemble if self.source == "online" else "as labelled",
                                  "reduction": "mean over (example, distribution) rows, padding masked"},
                           "hard": {"weight": self.term_weights.get("hard", 0.0),
                                    "reduction": "mean over (example, distribution) rows, padding masked"}}}

    def save_outputs(self, out_dir: Path) -> dict[str, str | None]:
        return {"model_dir": _save_model(self.student, self.tokenizer, out_dir / self.output), "projections": None}


def _build_prediction(plan: TrainPlan, device: torch.device) -> PredictionObjective:
    options: _PredictionOptions = plan.options
    config = plan.config
    if isinstance(config, PredictionSpec):
        distill_weight, temperature, source = config.distill_weight, config.temperature, config.teacher_logits
    else:  # fine-tuning: hard labels only
        distill_weight, temperature, source = 0.0, 1.0, "labelled"
    first_teacher = options.teachers[0] if options.teachers else None
    if options.student is not None:
        student = build_student(options.student, first_teacher, plan.task, options.num_labels)
        token_source = tokenizer_source(options.student, first_teacher)
    else:
        student = load_for_training(options.base, plan.task, options.num_labels).train()
        token_source = options.base
    online = distill_weight > 0 and source == "online"
    if online and not options.teachers:
        raise TrainingError("distill.prediction.teacher_logits is online and distill_weight > 0, but no teacher "
                            "was given; add one or use labelled logits")
    teachers = [_load_teacher(ref, plan.task, options.num_labels, device) for ref in options.teachers] if online else []
    if teachers:
        _check_vocabularies(token_source, options.teachers)
    spec = {"student": (options.student.model_dump(mode="json") if options.student is not None
                        else options.base.name_or_path),
            "teachers": [asdict(t) for t in options.teachers], "tokenizer": token_source.name_or_path}
    objective = PredictionObjective(student, load_tokenizer(token_source), plan.task, distill_weight, temperature,
                                    source, teachers, [t.weight for t in options.teachers] if online else [],
                                    options.ensemble, options.output, spec)
    return objective.to(device)


# ---------------------------------------------------------------------------------------------------------------
# Masked-LM training (the augmentation's candidate model, for users without a pretrained one)


@dataclass(frozen=True)
class _MaskedLMOptions:
    base: ModelRef
    mask_prob: float


class MaskedLMObjective(nn.Module):
    """BERT's masked-LM objective: forward returns `mlm`, the cross-entropy at the masked positions.

    Each real, non-special wordpiece is chosen with probability `mask_prob` (at least one per batch); a chosen
    piece becomes the mask token 80% of the time, a random token 10%, and stays 10%. Masks come from the torch
    RNG, which checkpoints restore, so a resumed run masks as an uninterrupted one. The LM head runs only at the
    chosen positions (`augment.candidates.lm_head_only_at`), not over the whole vocabulary at every token.
    """

    find_unused_parameters = False

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, mask_prob: float,
                 spec: dict[str, Any]):
        super().__init__()
        if tokenizer.mask_token_id is None:
            raise ModelCheckError(f"the tokenizer of {spec['model']} has no mask token; give a masked LM's folder")
        self.model = model
        self.tokenizer = tokenizer
        self.pad_token_id = tokenizer.pad_token_id
        self.mask_prob = mask_prob
        self.columns = _INPUT_COLUMNS
        self.term_weights = {"mlm": 1.0}
        self.register_buffer("special_ids", torch.tensor(sorted(tokenizer.all_special_ids)), persistent=False)
        self._spec = spec

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        from augment.candidates import lm_head_only_at

        ids, real = batch["input_ids"], batch["attention_mask"].bool()  # (B, T)
        maskable = real & ~torch.isin(ids, self.special_ids)
        chosen = (torch.rand(ids.shape, device=ids.device) < self.mask_prob) & maskable
        if not chosen.any():  # a batch of very short texts: mask its first maskable piece
            chosen.view(-1)[maskable.view(-1).nonzero()[0]] = True
        roll = torch.rand(ids.shape, device=ids.device)
        random_ids = torch.randint(self.model.get_output_embeddings().weight.shape[0], ids.shape, device=ids.device)
        inputs = torch.where(chosen & (roll < 0.8), self.tokenizer.mask_token_id, ids)
        inputs = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), random_ids, inputs)
        rows, cols = chosen.nonzero(as_tuple=True)
        with lm_head_only_at(self.model, rows, cols):
            logits = self.model(**model_inputs({**batch, "input_ids": inputs}, takes_token_types(self.model))).logits
        return {"mlm": nn.functional.cross_entropy(logits[0].float(), ids[rows, cols])}

    def check_features(self, data: FlatFeatures) -> None:
        pass  # inputs only: the schema has them on every row

    def settings(self) -> dict[str, Any]:
        return {**self._spec, "losses": {"mlm": {"weight": 1.0, "mask_prob": self.mask_prob,
                                                 "replacement": "80% mask token, 10% random token, 10% kept",
                                                 "reduction": "mean over masked positions"}}}

    def save_outputs(self, out_dir: Path) -> dict[str, str | None]:
        return {"model_dir": _save_model(self.model, self.tokenizer, out_dir / "model"), "projections": None}


def _build_masked_lm(plan: TrainPlan, device: torch.device) -> MaskedLMObjective:
    from transformers import AutoModelForMaskedLM

    options: _MaskedLMOptions = plan.options
    base = options.base
    if base.init == "random":
        model = AutoModelForMaskedLM.from_config(load_config(base), trust_remote_code=base.trust_remote_code)
    else:
        model = AutoModelForMaskedLM.from_pretrained(base.name_or_path, trust_remote_code=base.trust_remote_code)
    spec = {"model": base.name_or_path, "init": base.init}
    return MaskedLMObjective(model.train(), load_tokenizer(base), options.mask_prob, spec).to(device)

"""The training stages the job runner calls: fine-tune a teacher, the two TinyBERT distillation phases, and
masked-LM training of the augmentation's candidate model.

    pretrain_masked_lm    BERT's masked-LM objective on unlabelled text    -> out_dir/model/
    finetune_teacher      hard labels on the original data                 -> out_dir/model/
    distill_intermediate  MSE on embeddings, hidden states, attentions      -> out_dir/student/, projections
    distill_prediction    w * KL(teacher || student) * T^2 + (1 - w) * CE   -> out_dir/student/

Each builds a `TrainPlan` around its objective (`distill.objectives`) and hands it to `distill.trainer.run_plan`,
which runs it in this process or on Ray Train workers and writes train_config.json, metrics.jsonl and checkpoints/
beside the model. Rerunning a stage with the same arguments and out_dir resumes from its latest complete checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from augment.spec import MaskedLMTrainingSpec
from core.resources import ResourcesSpec
from core.tasks import Task
from distill.evaluate import ValidationSet
from distill.models import ModelRef
from distill.objectives.finetune import FinetuneOptions
from distill.objectives.intermediate import IntermediateOptions
from distill.objectives.masked_lm import MaskedLMOptions
from distill.objectives.prediction import Ensemble, PredictionOptions
from distill.spec import FinetuneSpec, IntermediateSpec, PredictionSpec, StudentSpec
from distill.trainer import PhaseResult, TrainingError, TrainPlan, run_plan


# ---------------------------------------------------------------------------------------------------------------
# Entry points


def pretrain_masked_lm(base: ModelRef, task: Task, features_dir: Path, config: MaskedLMTrainingSpec,
                       resources: ResourcesSpec, out_dir: Path, progress: bool = True) -> PhaseResult:
    """Train `base` (a masked LM, or its config with init="random") on the inputs of `features_dir` with BERT's
    masked-LM objective; the model and its tokenizer go to out_dir/model/. Seeded by `config.seed`.

    """
    options = MaskedLMOptions(base=base, mask_prob=config.mask_prob)
    return run_plan(TrainPlan("masked_lm", options, task, Path(features_dir), config,
                              resources, config.seed, Path(out_dir), progress))


def finetune_teacher(base: ModelRef, task: Task, features_dir: Path, config: FinetuneSpec, resources: ResourcesSpec,
                     seed: int, out_dir: Path, num_labels: int | None = None, progress: bool = True) -> PhaseResult:
    """Fine-tune `base` (a base model, or one with the task's head) on hard labels; the model goes to out_dir/model/.

    `config.train` is the caller's business (it built the features).
    """
    options = FinetuneOptions(base=base, num_labels=num_labels)
    return run_plan(TrainPlan("finetune", options, task, Path(features_dir), config,
                              resources, seed, Path(out_dir), progress))


def distill_intermediate(student: StudentSpec, teacher: ModelRef, task: Task, features_dir: Path,
                         config: IntermediateSpec, resources: ResourcesSpec, seed: int, out_dir: Path,
                         num_labels: int | None = None, progress: bool = True) -> PhaseResult:
    """Phase 1: the student learns the teacher's embeddings, hidden states and attentions (`config.losses`).

    Writes out_dir/student/ (with the teacher's tokenizer when the student is built from it) and, when the
    student is narrower than the teacher, out_dir/projections.safetensors (the learned student -> teacher maps).
    `teacher` is the one `config.teacher` picks; the caller resolves the index.
    """
    options = IntermediateOptions(student=student, teacher=teacher, num_labels=num_labels)
    return run_plan(TrainPlan("intermediate", options, task, Path(features_dir), config,
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
    options = PredictionOptions(student=student_spec, base=None if student_dir is None else ModelRef(str(student_dir)),
                                 teachers=tuple(teachers), ensemble=ensemble, num_labels=num_labels)
    return run_plan(TrainPlan("prediction", options, task, Path(features_dir), config,
                              resources, seed, Path(out_dir), progress,
                              validation if config.eval_every is not None else None, config.eval_every))

"""The pipeline's stages, in order, and how the spec maps onto each stage module's one entry point.

    prepare -> finetune_teachers -> train_mlm -> augment -> label -> distill_intermediate
            -> distill_prediction -> evaluate -> report

A job without a student (`student: null`) runs prepare, finetune_teachers, evaluate and report: its teachers are
fine-tuned where asked and scored side by side.

A stage declares which upstream outputs it reads and which part of the spec decides its output; the runner
hashes both into the stage's cache key. Stages never call each other: each gets the folders of its inputs.
Stage modules are imported when the stage runs, so `validate` and `status` stay fast.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from core.tasks import task_traits
from distill.spec import StudentSpec
from jobs.layout import eval_sets, finetune_examples
from jobs.spec import JobSpec

if TYPE_CHECKING:  # distill.models imports torch and transformers: stages import it when they run
    from distill.models import ModelRef

STAGE_VERSION = 2  # bump when a stage's outputs change for the same config, so old cache entries are not reused


@dataclass(frozen=True)
class StageContext:
    spec: JobSpec
    out_dir: Path              # the stage's output folder; may hold partial work from an interrupted attempt
    inputs: dict[str, Path]    # output folders of the enabled upstream stages, by stage name
    run_dir: Path
    progress: bool             # draw progress bars (a terminal) or only log lines (a log file)


@dataclass(frozen=True)
class Stage:
    name: str
    description: str
    inputs: tuple[str, ...]
    enabled: Callable[[JobSpec], bool]
    config: Callable[[JobSpec], Any]          # the part of the spec that decides the output
    run: Callable[[StageContext], dict[str, Any]]
    uses_ray: bool = False                    # the runner starts Ray (or joins the cluster) before it runs
    cached: bool = True                       # False: written into the run folder, redone on every run


# ---------------------------------------------------------------------------------------------------------------
# Helpers shared by several stages: which models a stage uses, resolved against upstream outputs.

def label_names(ctx: StageContext) -> list[str] | None:
    meta = json.loads((ctx.inputs["prepare"] / "train" / "meta.json").read_text())
    return meta.get("label_names")


def num_labels(ctx: StageContext) -> int | None:
    names = label_names(ctx)
    return len(names) if task_traits(ctx.spec.task).classes and names else None


def teacher_refs(ctx: StageContext) -> list[ModelRef]:
    """The teachers as the later stages use them: a fine-tuned teacher is read from the fine-tuning output; a
    random-init one gets its seed, so that each stage rebuilds the teacher that labelled."""
    from distill.models import RANDOM_INIT_SEED, ModelRef

    refs = []
    for i, teacher in enumerate(ctx.spec.teachers):
        if teacher.finetune is not None:
            refs.append(ModelRef(str(ctx.inputs["finetune_teachers"] / f"teacher_{i}" / "model"), teacher.weight))
        else:
            seed = RANDOM_INIT_SEED + i if teacher.init == "random" else None
            refs.append(ModelRef(teacher.model, teacher.weight, teacher.trust_remote_code, teacher.init, seed))
    return refs


def tokenizer_ref(ctx: StageContext) -> ModelRef:
    """Features are tokenized by the student's tokenizer when it has its own, else by the first teacher's."""
    from distill.models import ModelRef

    student = ctx.spec.student
    if student is not None and student.model is not None:
        return ModelRef(student.model, trust_remote_code=student.trust_remote_code)
    return teacher_refs(ctx)[0]


def final_student(ctx: StageContext) -> Path:
    phase = "distill_prediction" if "distill_prediction" in ctx.inputs else "distill_intermediate"
    return ctx.inputs[phase] / "student"


def _summary(result: Any) -> dict[str, Any]:
    return asdict(result)


# ---------------------------------------------------------------------------------------------------------------
# The stages

def _prepare(ctx: StageContext) -> dict[str, Any]:
    from augment.readers import WeightedSet, mix_examples, read_examples

    spec = ctx.spec
    sources = spec.data.train
    summary: dict[str, Any] = {}
    if len(sources) == 1 and sources[0].weight == 1:
        train = read_examples(sources[0], spec.task, spec.data.label_names, ctx.out_dir / "train")
    else:  # each source read on its own, then mixed by weight into the one training set later stages read
        names, weighted, summary["train_sets"] = spec.data.label_names, [], {}
        for source in sources:
            folder = ctx.out_dir / "train_sets" / source.name
            read = read_examples(source, spec.task, names, folder)
            names = read.label_names  # one set of label ids: the first source's names hold for the rest
            weighted.append(WeightedSet(source.name, folder, source.weight))
            summary["train_sets"][source.name] = _summary(read)
        train = mix_examples(weighted, spec.task, ctx.out_dir / "train", spec.seed)
    # the rows the later stages read: the examples after weighting
    rows = json.loads(Path(train.meta_path).read_text(encoding="utf-8"))["counts"].get("rows", train.written)
    summary["train"] = _summary(train) | {"rows": rows}
    # eval labels must use the train label ids, so the names found in train are passed on
    evaluation = {source.name: _summary(read_examples(source, spec.task, train.label_names, folder))
                  for source, folder in eval_sets(spec, ctx.out_dir)}
    summary["eval"] = next(iter(evaluation.values())) if len(evaluation) == 1 else {
        "written": sum(result["written"] for result in evaluation.values()), "sets": evaluation}
    # a teacher's own fine-tuning data, read with the training data's label ids
    for i, teacher in enumerate(spec.teachers):
        if teacher.finetune is not None and teacher.finetune.train is not None:
            summary[f"finetune_teacher_{i}"] = _summary(read_examples(
                teacher.finetune.train, spec.task, train.label_names, finetune_examples(ctx.out_dir, i)))
    if spec.augment.enabled and spec.augment.corpus is not None:  # texts only: labels are not read
        summary["corpus"] = _summary(read_examples(spec.augment.corpus, spec.task, None, ctx.out_dir / "corpus"))
    return summary


def _finetune_teachers(ctx: StageContext) -> dict[str, Any]:
    from distill.label import featurize_examples
    from distill.models import ModelRef
    from distill.phases import finetune_teacher

    spec = ctx.spec
    results = {}
    for i, teacher in enumerate(spec.teachers):
        if teacher.finetune is None:
            continue
        base = ModelRef(teacher.model, teacher.weight, teacher.trust_remote_code, teacher.init)
        examples_dir = (finetune_examples(ctx.inputs["prepare"], i) if teacher.finetune.train is not None
                        else ctx.inputs["prepare"] / "train")
        features_dir = ctx.out_dir / f"teacher_{i}" / "features"
        featurize_examples(examples_dir, spec.task, base, spec.features, spec.resources.for_stage("label"),
                           features_dir, num_labels(ctx), ctx.progress,
                           examples_per_shard=spec.label.examples_per_shard)
        result = finetune_teacher(base, spec.task, features_dir, teacher.finetune, spec.resources.for_stage("train"),
                                  spec.seed, ctx.out_dir / f"teacher_{i}", num_labels(ctx), ctx.progress)
        results[f"teacher_{i}"] = _summary(result)
    return results


def _train_mlm(ctx: StageContext) -> dict[str, Any]:
    from distill.label import featurize_examples
    from distill.models import ModelRef
    from distill.phases import pretrain_masked_lm

    spec, config = ctx.spec, ctx.spec.augment
    examples_dir = ctx.inputs["prepare"] / ("corpus" if config.corpus is not None else "train")
    base = ModelRef(config.mlm_model, init=config.mlm_init)
    features_dir = ctx.out_dir / "features"
    featurize_examples(examples_dir, spec.task, base, spec.features, spec.resources.for_stage("label"), features_dir,
                       progress=ctx.progress, examples_per_shard=spec.label.examples_per_shard)
    result = pretrain_masked_lm(base, spec.task, features_dir, config.mlm_training, spec.resources.for_stage("train"),
                                ctx.out_dir, ctx.progress)
    return _summary(result)


def _augment(ctx: StageContext) -> dict[str, Any]:
    from augment.pipeline import augment_examples

    spec = ctx.spec
    config = spec.augment
    if "train_mlm" in ctx.inputs:  # candidates from the masked LM trained by the previous stage
        config = config.model_copy(update={"mlm_model": str(ctx.inputs["train_mlm"] / "model"),
                                           "mlm_init": "pretrained", "mlm_training": None})
    corpus = ctx.inputs["prepare"] / "corpus" if config.corpus is not None else None
    result = augment_examples(ctx.inputs["prepare"] / "train", spec.task, config, spec.resources.for_stage("augment"),
                              spec.seed, ctx.out_dir, ctx.progress, block_rows=config.examples_per_shard,
                              corpus_dir=corpus)
    return _summary(result)


def _label(ctx: StageContext) -> dict[str, Any]:
    from distill.label import featurize_examples, label_examples

    spec = ctx.spec
    examples = ctx.inputs["augment"] if "augment" in ctx.inputs else ctx.inputs["prepare"] / "train"
    resources = spec.resources.for_stage("label")
    if not spec.teachers:  # a student trained on the gold labels alone
        return _summary(featurize_examples(examples, spec.task, tokenizer_ref(ctx), spec.features, resources,
                                           ctx.out_dir, num_labels(ctx), ctx.progress,
                                           examples_per_shard=spec.label.examples_per_shard))
    result = label_examples(examples, spec.task, teacher_refs(ctx), tokenizer_ref(ctx), spec.features, spec.label,
                            resources, ctx.out_dir, num_labels(ctx), ctx.progress,
                            examples_per_shard=spec.label.examples_per_shard,
                            temperature=spec.distill.prediction.temperature)
    return _summary(result)


def _distill_intermediate(ctx: StageContext) -> dict[str, Any]:
    from distill.phases import distill_intermediate

    spec = ctx.spec
    teacher = teacher_refs(ctx)[spec.distill.intermediate.teacher]
    result = distill_intermediate(spec.student, teacher, spec.task, ctx.inputs["label"], spec.distill.intermediate,
                                  spec.resources.for_stage("train"), spec.seed, ctx.out_dir, num_labels(ctx),
                                  ctx.progress)
    return _summary(result)


def _distill_prediction(ctx: StageContext) -> dict[str, Any]:
    from distill.evaluate import ValidationSet
    from distill.phases import distill_prediction

    spec = ctx.spec
    student: StudentSpec | Path = spec.student
    if "distill_intermediate" in ctx.inputs:
        student = ctx.inputs["distill_intermediate"] / "student"
    config = spec.distill.prediction
    validation = None
    if config.eval_every is not None:  # on the first eval set
        source, examples_dir = eval_sets(spec, ctx.inputs["prepare"])[0]
        validation = ValidationSet(examples_dir, config.eval_examples, spec.features, spec.evaluate,
                                   label_names(ctx), source.metric)
    result = distill_prediction(student, teacher_refs(ctx), spec.task, ctx.inputs["label"], config,
                                spec.label.ensemble, spec.resources.for_stage("train"), spec.seed, ctx.out_dir,
                                num_labels(ctx), ctx.progress, validation)
    return _summary(result)


def _evaluate(ctx: StageContext) -> dict[str, Any]:
    from core.devices import needs_a_gpu_elsewhere
    from distill.evaluate import EvalSet, evaluate_sets
    from distill.models import ModelRef

    spec = ctx.spec
    models = {}
    if spec.student is not None:
        models["student"] = ModelRef(str(final_student(ctx)))
        if spec.evaluate.onnx:
            from distill.onnx_export import export_onnx

            graphs = export_onnx(final_student(ctx), out_dir=ctx.out_dir / "onnx")
            models |= {"student_onnx": ModelRef(str(graphs.fp32)), "student_onnx_int8": ModelRef(str(graphs.int8))}
    if spec.evaluate.evaluate_teachers:
        models |= {f"teacher_{i}": ref for i, ref in enumerate(teacher_refs(ctx))}
    sets = [EvalSet(source.name, folder, source.group, source.metric)
            for source, folder in eval_sets(spec, ctx.inputs["prepare"])]
    arguments = (models, spec.task, sets, spec.features, spec.evaluate, spec.resources, ctx.out_dir,
                 label_names(ctx), ctx.progress)
    if needs_a_gpu_elsewhere(spec.resources):  # this driver runs on a cluster's head node, without a GPU
        import ray

        on_gpu = ray.remote(num_gpus=spec.resources.gpus_per_worker, num_cpus=spec.resources.cpus_per_worker)
        return _summary(ray.get(on_gpu(evaluate_sets).remote(*arguments)))
    return _summary(evaluate_sets(*arguments))


def _report(ctx: StageContext) -> dict[str, Any]:
    from jobs.report import export_final_student, write_report

    export = ctx.spec.evaluate.export and ctx.spec.student is not None
    exported = export_final_student(ctx.run_dir, final_student(ctx)) if export else None
    # the report reads the state the runner keeps, so it is written last and shows every stage before it
    report = write_report(ctx.run_dir)
    return {"report": str(report), "export": str(exported) if exported else None}


def _label_config(spec: JobSpec) -> dict[str, Any]:
    from distill.tasks import task_kind  # torch: only when a job keys its label stage

    config = {"task": spec.task, "teachers": spec.teachers, "student": spec.student and spec.student.model,
              "features": spec.features,
              "label": spec.label, "precision": spec.resources.precision}
    # keyed only where the labels depend on it, so that a change of temperature relabels nothing else
    if task_kind(spec.task).labels_depend_on_temperature(spec.label.ensemble, len(spec.teachers)):
        config["temperature"] = spec.distill.prediction.temperature
    return config


def _prepare_config(spec: JobSpec) -> dict[str, Any]:
    config = {"task": spec.task, "data": spec.data,
              "finetune_data": [t.finetune.train if t.finetune is not None else None for t in spec.teachers],
              "corpus": spec.augment.corpus if spec.augment.enabled else None}
    # a fractional weight keeps a random share of a source's examples, drawn from the seed; otherwise jobs of other
    # seeds share the read data
    if any(not float(source.weight).is_integer() for source in spec.data.train):
        config["seed"] = spec.seed
    return config


def _phase_needs_online_teacher(spec: JobSpec) -> bool:
    return spec.distill.prediction.teacher_logits == "online" and spec.distill.prediction.distill_weight > 0


STAGES: tuple[Stage, ...] = (
    Stage("prepare", "read and check every data source (train, eval, the teachers' own fine-tuning data, the "
                     "augmentation corpus); bad records go to rejects.jsonl",
          inputs=(),
          enabled=lambda s: True,
          config=_prepare_config, run=_prepare),
    Stage("finetune_teachers", "fine-tune base teachers on the original training data (or their own)",
          inputs=("prepare",),
          enabled=lambda s: any(t.finetune is not None for t in s.teachers),
          config=lambda s: {"task": s.task, "teachers": s.teachers, "features": s.features, "seed": s.seed,
                            "precision": s.resources.precision},
          run=_finetune_teachers, uses_ray=True),
    Stage("train_mlm", "train the masked LM that proposes substitutions, on the corpus or training texts",
          inputs=("prepare",),
          enabled=lambda s: s.student is not None and s.augment.enabled and s.augment.mlm_training is not None,
          config=lambda s: {"task": s.task, "mlm_model": s.augment.mlm_model, "mlm_init": s.augment.mlm_init,
                            "mlm_training": s.augment.mlm_training, "corpus": s.augment.corpus,
                            "features": s.features, "precision": s.resources.precision},
          run=_train_mlm, uses_ray=True),
    Stage("augment", "expand the training set by word substitution",
          inputs=("prepare", "train_mlm"),
          enabled=lambda s: s.student is not None and s.augment.enabled,
          config=lambda s: {"task": s.task, "augment": s.augment, "seed": s.seed, "precision": s.resources.precision},
          run=_augment, uses_ray=True),
    Stage("label", "tokenize into features and store the teachers' soft logits",
          inputs=("prepare", "finetune_teachers", "augment"),
          enabled=lambda s: s.student is not None,
          config=_label_config, run=_label, uses_ray=True),
    Stage("distill_intermediate", "phase 1: embeddings, hidden states and attentions",
          inputs=("prepare", "finetune_teachers", "label"),
          enabled=lambda s: s.student is not None and s.distill.intermediate.enabled,
          config=lambda s: {"task": s.task, "student": s.student, "teachers": s.teachers,
                            "intermediate": s.distill.intermediate, "seed": s.seed,
                            "precision": s.resources.precision},
          run=_distill_intermediate, uses_ray=True),
    Stage("distill_prediction", "phase 2: soft start/end or class logits with temperature",
          inputs=("prepare", "finetune_teachers", "label", "distill_intermediate"),
          enabled=lambda s: s.student is not None and s.distill.prediction.enabled,
          config=lambda s: {"task": s.task, "student": s.student, "prediction": s.distill.prediction,
                            "ensemble": s.label.ensemble, "seed": s.seed, "precision": s.resources.precision,
                            "teachers": s.teachers if _phase_needs_online_teacher(s) else None,
                            # how the validation slice is scored, only where there is one
                            **({"evaluate": s.evaluate} if s.distill.prediction.eval_every is not None else {})},
          run=_distill_prediction, uses_ray=True),
    Stage("evaluate", "score teachers and student; measure size and speed",
          inputs=("prepare", "finetune_teachers", "distill_intermediate", "distill_prediction"),
          enabled=lambda s: s.evaluate.enabled,
          config=lambda s: {"task": s.task, "evaluate": s.evaluate, "features": s.features,
                            "precision": s.resources.precision,
                            "teachers": s.teachers if s.evaluate.evaluate_teachers else None},
          run=_evaluate, uses_ray=True),
    Stage("report", "write the report and plots; export the student",
          inputs=("prepare", "augment", "distill_intermediate", "distill_prediction", "evaluate"),
          enabled=lambda s: True,
          config=lambda s: None, run=_report, cached=False),
)

STAGE_NAMES = [stage.name for stage in STAGES]

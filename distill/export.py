"""The final student as a folder ready to serve: safetensors weights, config, tokenizer and a model card.

Classification folders load with the built-in pipeline and answer with the label names::

    pipeline("text-classification", model=DIR)("a charming journey")  # [{"label": "positive", "score": 0.93}]

transformers 5 removed the built-in "question-answering" pipeline. A QA folder serves three ways:

    import distill                                        # registers Distillery's pipeline, no remote code
    qa = pipeline("extractive-question-answering", model=DIR)
    qa = pipeline("question-answering", model=DIR, trust_remote_code=True)   # without Distillery installed
    python -m distill answer DIR --question Q --context C                    # the evaluation's own path

For the second, the folder carries `distillery_qa.py`, `qa_windows.py` and `postprocess.py`, byte-for-byte copies
of the package modules, registered in `config.json` under `custom_pipelines`. The settings the student was
evaluated with (windows, answer length, null threshold; the sequence length for classification) are stored in
`config.task_specific_params[<pipeline task>]` and are every route's defaults, `python -m distill evaluate DIR`'s
too. The model card (README.md) is written with huggingface_hub's ModelCard: license, base model, datasets, tags,
a model-index of the scores, the recipe; it names models and data by hub name or file name, never by a path on
the machine that made it. Every file is world-readable.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypedDict

from core.positions import usable_positions
from core.tasks import Task, task_traits
from distill.qa_windows import DEFAULT_SETTINGS

QA_PIPELINE_FILE = "distillery_qa.py"
QA_PIPELINE_CLASS = "ExtractiveQuestionAnsweringPipeline"
# The standalone QA pipeline of an export: file in the folder -> package module it is copied from.
QA_PIPELINE_SOURCES = {QA_PIPELINE_FILE: "qa_pipeline.py", "qa_windows.py": "qa_windows.py",
                       "postprocess.py": "postprocess.py"}

# A hub repository id, "name" or "owner/name".
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_DATA_FILE_SUFFIXES = (".json", ".jsonl", ".tsv", ".csv", ".txt", ".gz", ".parquet", ".arrow")


class ExportError(ValueError):
    """A student folder that cannot be exported, or card information that does not fit it."""


class CardData(TypedDict, total=False):
    """Where the training and evaluation data came from (a path or hub name each, a list for several sources) and
    how many examples of each the job used."""

    train: str | list[str]
    eval: str | list[str]
    train_examples: int
    eval_examples: int


class CardAugmentation(TypedDict, total=False):
    """The augmentation's settings (`augment.spec.AugmentSpec`) and, once it ran, its counts (its stats.json)."""

    enabled: bool
    factor: int
    replace_prob: float
    mlm_model: str | None
    examples_in: int
    examples_out: int
    substitution_rate: float


class CardInference(TypedDict, total=False):
    """Serving defaults: for QA `DEFAULT_SETTINGS`' keys (unset ones take its values), for classification and
    regression `max_seq_len` only."""

    max_seq_len: int
    doc_stride: int
    max_question_len: int
    max_answer_len: int
    n_best: int
    null_threshold: float


@dataclass(frozen=True)
class ModelCardInfo:
    """What the model card says about how the student was made and how well it does.

    Attributes:
        task: the task (`core.tasks.Task`).
        teachers: hub names or folders of the teachers (empty: trained without a teacher).
        student_source: where the student started (a hub name, a folder, "architecture ..." or "teacher layers ...").
        data: where the data came from and how much of it (`CardData`).
        augmentation: augmentation settings and stats (`CardAugmentation`); empty or not enabled when augmentation
            was not used.
        phases: settings per distillation phase, e.g. {"intermediate": {...}, "prediction": {...}}; a disabled
            phase is left out.
        metrics: metrics.json of the evaluation, {model name: {metric: value, ..., "speed": {...}}}, with the
            student under "student" and teachers under "teacher_<i>".
        label_names: classification: the class names in id order; written to config.id2label / label2id.
        inference: serving defaults (`CardInference`).
        name: the model's name, the card's title.
        job_id: the Distillery job that made it, if any.
        intended_use: replaces the default "intended use" paragraph.
        limitations: replaces the default "limitations" paragraph.
        license: the card's license; the student's weights derive from its teachers and data, whose licenses
            bind too.
    """

    task: Task
    teachers: list[str]
    student_source: str
    data: CardData = field(default_factory=CardData)
    augmentation: CardAugmentation = field(default_factory=CardAugmentation)
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    label_names: list[str] | None = None
    inference: CardInference = field(default_factory=CardInference)
    name: str = "distilled-student"
    job_id: str | None = None
    intended_use: str | None = None
    limitations: str | None = None
    license: str = "apache-2.0"


def saved_settings(config: Any, task: Task) -> dict[str, Any]:
    """The settings an exported folder's `config` stores for `task` (QA: windows, answer length, null threshold;
    classification: max_seq_len); {} for a folder that was not exported by Distillery."""
    return dict((getattr(config, "task_specific_params", None) or {}).get(task_traits(task).pipeline_task) or {})


def export_student(student_dir: Path, out_dir: Path, card: ModelCardInfo, onnx_graphs: Path | None = None) -> Path:
    """Write the student in `student_dir` as a pipeline-ready folder at `out_dir` and return `out_dir`.

    The folder holds `model.safetensors`, `config.json` (label names for classification; the QA pipeline's
    registration and defaults for QA), the tokenizer files, `README.md` (the model card) and, for QA, the
    standalone pipeline (`QA_PIPELINE_SOURCES`). `onnx_graphs`, a folder of `.onnx` files exported from the same
    student (distill.onnx_export), is carried as `onnx/` with this config and tokenizer beside the graphs. The
    folder is written beside `out_dir` first and moved into place at the end, so `out_dir` is either the previous
    export or the complete new one.

    Raises:
        ExportError: `student_dir` holds no model or no tokenizer, the model's head does not fit `card.task`,
            or the label names do not match the classifier's outputs.
    """
    # imported here so that building a ModelCardInfo (the report does) needs no torch
    from distill import models

    student_dir, out_dir = Path(student_dir), Path(out_dir)
    if not (student_dir / "config.json").is_file():
        raise ExportError(f"{student_dir} holds no config.json; pass the student's model folder (the one "
                          "save_pretrained wrote), e.g. <distill_prediction output>/student")
    if not any((student_dir / name).is_file() for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        raise ExportError(f"{student_dir} holds no tokenizer files; save the tokenizer beside the student")
    ref = models.ModelRef(str(student_dir))
    traits = task_traits(card.task)
    num_labels = len(card.label_names) if traits.classes and card.label_names else None
    try:
        model = models.load_model(ref, card.task, num_labels=num_labels)
    except models.ModelCheckError as err:
        raise ExportError(f"cannot export {student_dir}: {err}") from err
    tokenizer = models.load_tokenizer(ref)
    positions = usable_positions(model.config)

    if not traits.windows:
        if traits.classes:
            names = card.label_names or [model.config.id2label[i] for i in range(model.config.num_labels)]
            model.config.id2label = dict(enumerate(names))
            model.config.label2id = {name: index for index, name in enumerate(names)}
        max_seq_len = card.inference.get("max_seq_len", positions)
        if max_seq_len is not None:
            # the text-classification pipeline truncates to this when called with truncation=True
            tokenizer.model_max_length = max_seq_len
            model.config.task_specific_params = {traits.pipeline_task: {"max_seq_len": max_seq_len}}
    else:
        unknown = sorted(set(card.inference) - set(DEFAULT_SETTINGS))
        if unknown:
            raise ExportError(f"unknown QA inference settings {unknown}; valid: {sorted(DEFAULT_SETTINGS)}")
        settings = DEFAULT_SETTINGS | card.inference
        if positions is not None:
            settings["max_seq_len"] = min(settings["max_seq_len"], positions)
        model.config.task_specific_params = {traits.pipeline_task: settings}
        model.config.custom_pipelines = {traits.pipeline_task: {
            "impl": f"{QA_PIPELINE_FILE.removesuffix('.py')}.{QA_PIPELINE_CLASS}",
            "pt": ["AutoModelForQuestionAnswering"],
            "type": "text",
        }}

    staging = out_dir.with_name(f".{out_dir.name}.staging")
    if staging.exists():
        shutil.rmtree(staging)  # left by an interrupted export
    staging.mkdir(parents=True)
    model.save_pretrained(staging)  # safetensors: the only format transformers 5 writes
    tokenizer.save_pretrained(staging)
    if traits.windows:
        package = Path(__file__).parent
        for name, module in QA_PIPELINE_SOURCES.items():
            shutil.copyfile(package / module, staging / name)
    if onnx_graphs is not None:
        (staging / "onnx").mkdir()
        for graph in sorted(Path(onnx_graphs).glob("*.onnx")):
            shutil.copyfile(graph, staging / "onnx" / graph.name)
        model.config.save_pretrained(staging / "onnx")
        tokenizer.save_pretrained(staging / "onnx")
    (staging / "README.md").write_text(model_card(card, model.num_parameters()), encoding="utf-8")
    # safetensors writes its file 0600; a served folder is read by other users (a model server, a container)
    for path in staging.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    staging.chmod(0o755)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return out_dir


# ---------------------------------------------------------------------------------------------------------------
# The model card


def _number(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _settings_line(settings: dict[str, Any]) -> str:
    """Settings as written in a spec: 5e-05, 0.1, 20, 2,756,000."""
    def one(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:g}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(one(v) for v in value) + "]"
        return str(value)

    return ", ".join(f"{key} {one(value)}" for key, value in settings.items())


def _metrics_section(card: ModelCardInfo) -> str:
    if not card.metrics:
        return "Not evaluated (the evaluation stage was disabled)."
    names = ["student", *sorted(name for name in card.metrics if name != "student")]
    names = [name for name in names if name in card.metrics]
    keys = [key for key in task_traits(card.task).card_metrics if any(key in card.metrics[name] for name in names)]
    rows = [[key, *(_number(card.metrics[name].get(key)) for name in names)] for key in keys]
    unit = "percent (official SQuAD 2.0 metric)" if task_traits(card.task).percent_scores else "fractions, 0-1"
    return f"Scores on the evaluation data, in {unit}.\n\n" + _table(["metric", *names], rows)


def _speed_section(card: ModelCardInfo) -> str:
    rows = []
    for name, entry in card.metrics.items():
        for device, report in (entry.get("speed") or {}).items():
            if not isinstance(report, dict) or "latency_ms" not in report:
                continue
            size = report.get("size_bytes")
            rows.append([name, device, _number(report["parameters"]),
                         _number(size / 1e6 if size is not None else None, 1),
                         _number(report["latency_ms"]), _number(report["throughput"], 1)])
    if not rows:
        return "Not measured."
    text = ("Synthetic inputs of the evaluation sequence length; median of repeated runs.\n\n"
            + _table(["model", "device", "parameters", "size (MB)", "latency, batch 1 (ms)",
                      "throughput, batch 32 (examples/s)"], rows))
    comparisons = (card.metrics.get("student") or {}).get("vs_teachers") or {}
    for teacher, by_device in comparisons.items():
        for device, ratios in by_device.items():
            size = f", {ratios['size_ratio']:.2f}x smaller on disk" if ratios.get("size_ratio") else ""
            text += (f"\n\nAgainst {teacher} on {device}: {ratios['speedup']:.2f}x faster at batch 1"
                     f"{size}, {ratios['parameter_ratio']:.2f}x fewer parameters.")
    return text


def pipeline_call(task: Task, model: str) -> str:
    """How a folder exported for `task` loads with transformers' pipeline, Distillery installed or not: `model` is
    the folder as code names it (e.g. '"path/to/this/folder"')."""
    traits = task_traits(task)
    if traits.windows:  # the folder's own pipeline (transformers 5 has no built-in question answering)
        return f'pipeline("question-answering", model={model}, trust_remote_code=True)'
    # a regression head's one output is the score itself, not a logit for a sigmoid
    scores = "" if traits.classes else ', function_to_apply="none"'
    return f'pipeline("text-classification", model={model}{scores})'


def _usage(card: ModelCardInfo) -> str:
    folder = '"path/to/this/folder"'
    if task_traits(card.task).windows:
        return (
            "With Distillery installed, no remote code:\n\n"
            "```python\nimport distill  # registers the extractive-question-answering pipeline\n"
            "from transformers import pipeline\n\n"
            "qa = pipeline(\"extractive-question-answering\", model=\"path/to/this/folder\")\n"
            "qa(question=\"Where is the Eiffel Tower?\", context=\"The Eiffel Tower is in Paris.\")\n"
            "# {'answer': 'Paris', 'score': ..., 'start': 23, 'end': 28, 'null_odds': ...}\n```\n\n"
            "or from the command line, answering as the evaluation did:\n\n"
            "```bash\npython -m distill answer path/to/this/folder --question \"Where is the Eiffel Tower?\" "
            "--context \"The Eiffel Tower is in Paris.\"\n```\n\n"
            "Without Distillery (transformers 5 has no built-in question-answering pipeline; this folder brings "
            "its own, `distillery_qa.py`):\n\n"
            "```python\nfrom transformers import pipeline\n\n"
            f"qa = {pipeline_call(card.task, folder)}\n```\n\n"
            "Like transformers' old pipeline, it always returns a span; pass `handle_impossible_answer=True` to get "
            "`\"\"` where the model judges the question unanswerable (`null_odds` above `null_threshold`, as in "
            "the evaluation). Haystack's extractive reader and onnxruntime (`python -m distill export-onnx "
            "path/to/this/folder`) serve it too.")
    if not task_traits(card.task).classes:
        return ("```python\nfrom transformers import pipeline\n\n"
                f"score = {pipeline_call(card.task, folder)}\n"
                "score({\"text\": \"A man plays a guitar.\", \"text_pair\": \"A man is playing music.\"})  "
                "# {'label': 'LABEL_0', 'score': ...}: the score\n```\n\n"
                "onnxruntime serves it too: `python -m distill export-onnx path/to/this/folder`.")
    return ("```python\nfrom transformers import pipeline\n\n"
            f"classify = {pipeline_call(card.task, folder)}\n"
            "classify(\"a charming and often affecting journey\", truncation=True)\n```\n\n"
            "onnxruntime serves it too: `python -m distill export-onnx path/to/this/folder`.")


def public_name(value: str) -> str:
    """A path as its last part ("dev-v2.0.json"); anything else (a hub name, a description) as it is."""
    if os.path.isabs(value) or value.startswith(("~", "./", "../")):
        return Path(value).name
    return value


def _hub_id(value: Any) -> str | None:
    """`value` when it names a hub repository rather than a file or folder here."""
    if (isinstance(value, str) and _HUB_ID.fullmatch(value) and not value.lower().endswith(_DATA_FILE_SUFFIXES)
            and not Path(value).exists()):
        return value
    return None


def _public(value: Any) -> Any:
    """`value` with every path in it (nested in dicts and lists too) cut to its last part."""
    if isinstance(value, str):
        return public_name(value)
    if isinstance(value, dict):
        return {key: _public(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_public(item) for item in value]
    return value


def _eval_results(card: ModelCardInfo) -> list[Any]:
    """The student's scores as huggingface_hub EvalResults (the card's model-index)."""
    from huggingface_hub import EvalResult

    scores = card.metrics.get("student") or {}
    traits = task_traits(card.task)
    evaluated = card.data.get("eval") or ("squad_v2" if traits.windows else "evaluation data")
    dataset = ", ".join(evaluated) if isinstance(evaluated, list) else str(evaluated)  # several: macro averages
    return [EvalResult(task_type=traits.pipeline_task, dataset_type=_hub_id(dataset) or dataset,
                       dataset_name=dataset, metric_type=key, metric_name=name,
                       metric_value=round(float(scores[key]), 4))
            for key, name in traits.indexed_metrics if isinstance(scores.get(key), (int, float))]


def model_card(card: ModelCardInfo, parameters: int) -> str:
    """The README.md of an exported student: metadata (huggingface_hub's ModelCardData), usage, recipe, results,
    size and speed, intended use and limits; no path of the machine that made it."""
    from huggingface_hub import ModelCard, ModelCardData

    card = replace(card, **{f.name: _public(getattr(card, f.name)) for f in fields(card)
                            if f.name not in ("metrics", "license")})
    eval_results = _eval_results(card)
    datasets = sorted({name for name in map(_hub_id, (card.data.get("train"), card.data.get("eval"))) if name})
    metadata = ModelCardData(
        license=card.license, library_name="transformers", pipeline_tag=task_traits(card.task).pipeline_task,
        tags=["distillation", "knowledge-distillation", "distillery"], base_model=_hub_id(card.student_source),
        datasets=datasets or None, model_name=card.name, eval_results=eval_results or None,
        teachers=card.teachers or None)
    teachers = ", ".join(f"`{t}`" for t in card.teachers) or "none (trained on hard labels only)"
    recipe = [f"- Teachers: {teachers}", f"- Student initialised from: `{card.student_source}`"]
    if card.data:
        recipe.append(f"- Data: {_settings_line(card.data)}")
    if card.augmentation and card.augmentation.get("enabled", True):
        recipe.append(f"- Augmentation: {_settings_line(card.augmentation)}")
    else:
        recipe.append("- Augmentation: none")
    phase_titles = {"intermediate": "Phase 1, intermediate layers", "prediction": "Phase 2, prediction layer"}
    for phase, settings in card.phases.items():
        recipe.append(f"- {phase_titles.get(phase, phase)}: {_settings_line(settings)}")
    if card.job_id:
        recipe.append(f"- Distillery job: `{card.job_id}`")
    if task_traits(card.task).classes and card.label_names:
        recipe.append(f"- Labels: {', '.join(f'{i} = {n}' for i, n in enumerate(card.label_names))}")

    what = task_traits(card.task).description
    intended = card.intended_use or (
        f"{what[0].upper()}{what[1:]} on English text like the training data, where a smaller, faster model than "
        "the teacher is needed. The scores above hold for data like the evaluation set.")
    limits = card.limitations or (
        "The student inherits the teachers' errors and biases and adds its own; it is weaker than the teacher, most "
        "on data unlike the training set. Augmented training text is machine-made (word substitution) and can be "
        "ungrammatical. Inputs longer than the sequence length are split into windows (QA) or truncated "
        "(classification). Not for decisions about people without human review.")
    sections = [
        f"# {card.name}",
        f"A {parameters / 1e6:.1f}M-parameter student for {what}, distilled from "
        f"{len(card.teachers) or 'no'} teacher(s) with task-specific knowledge distillation (TinyBERT-style: "
        "augmented data, intermediate-layer then prediction-layer distillation) by Distillery.",
        "## How to use", _usage(card),
        "## Training recipe", "\n".join(recipe),
        "## Results", _metrics_section(card),
        "## Size and speed", _speed_section(card),
        "## Intended use", intended,
        "## Limitations", limits,
    ]
    return str(ModelCard(f"---\n{metadata.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n"))

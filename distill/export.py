"""The final student as a folder ready to serve: safetensors weights, config, tokenizer and a model card.

Classification folders load with the built-in pipeline and answer with the label names::

    pipeline("text-classification", model=DIR)("a charming journey")  # [{"label": "positive", "score": 0.93}]

transformers 5 removed the built-in "question-answering" pipeline (its registry sends users to chat models), so a
QA folder carries its own extractive pipeline, `distillery_qa.py`, registered in `config.json` under
`custom_pipelines`. Loading it runs that file, which is why transformers asks for `trust_remote_code=True`::

    qa = pipeline("question-answering", model=DIR, trust_remote_code=True)
    qa(question="Where is the Eiffel Tower?", context="The Eiffel Tower is in Paris.")
    # {"answer": "Paris", "score": 0.71, "start": 22, "end": 27, "null_odds": -3.2}

The pipeline's window and answer settings default to the ones the student was evaluated with, stored in
`config.task_specific_params["question-answering"]`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Task = Literal["qa", "classification"]

PIPELINE_TASK = {"qa": "question-answering", "classification": "text-classification"}
QA_PIPELINE_FILE = "distillery_qa.py"
QA_PIPELINE_CLASS = "ExtractiveQuestionAnsweringPipeline"
#: Pipeline defaults when the card gives none: the reference recipe's features and evaluation settings.
QA_INFERENCE_DEFAULTS = {"max_seq_len": 384, "doc_stride": 128, "max_question_len": 64, "max_answer_len": 30,
                         "n_best": 20, "null_threshold": 0.0}

# Metrics shown in the card, per task, in this order (keys of metrics.json; percentages for QA, 0-1 otherwise).
CARD_METRICS = {
    "qa": ["exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "best_exact", "best_f1"],
    "classification": ["accuracy", "macro_f1", "macro_precision", "macro_recall"],
}


class ExportError(ValueError):
    """A student folder that cannot be exported, or card information that does not fit it."""


@dataclass(frozen=True)
class ModelCardInfo:
    """What the model card says about how the student was made and how well it does.

    Attributes:
        task: "qa" or "classification".
        teachers: hub names or folders of the teachers (empty: trained without a teacher).
        student_source: where the student started (a hub name, a folder, "architecture ..." or "teacher layers ...").
        data: where the data came from and how much of it, e.g. {"train": path, "eval": path, "train_examples": n}.
        augmentation: augmentation settings and stats, e.g. {"enabled": True, "factor": 20, "examples_out": n};
            empty when augmentation was not used.
        phases: settings per distillation phase, e.g. {"intermediate": {...}, "prediction": {...}}; a disabled
            phase is left out.
        metrics: metrics.json of the evaluation, {model name: {metric: value, ..., "speed": {...}}}, with the
            student under "student" and teachers under "teacher_<i>".
        label_names: classification: the class names in id order; written to config.id2label / label2id.
        inference: serving defaults: QA max_seq_len, doc_stride, max_question_len, max_answer_len, n_best,
            null_threshold (see QA_INFERENCE_DEFAULTS); classification max_seq_len.
        name: the model's name, the card's title.
        job_id: the Distillery job that made it, if any.
        intended_use: replaces the default "intended use" paragraph.
        limitations: replaces the default "limitations" paragraph.
    """

    task: Task
    teachers: list[str]
    student_source: str
    data: dict[str, Any] = field(default_factory=dict)
    augmentation: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    label_names: list[str] | None = None
    inference: dict[str, Any] = field(default_factory=dict)
    name: str = "distilled-student"
    job_id: str | None = None
    intended_use: str | None = None
    limitations: str | None = None


def export_student(student_dir: Path, out_dir: Path, card: ModelCardInfo) -> Path:
    """Write the student in `student_dir` as a pipeline-ready folder at `out_dir` and return `out_dir`.

    The folder holds `model.safetensors`, `config.json` (label names for classification; the QA pipeline's
    registration and defaults for QA), the tokenizer files, `README.md` (the model card) and, for QA,
    `distillery_qa.py`. It is written beside `out_dir` first and moved into place at the end, so `out_dir` is
    either the previous export or the complete new one.

    Raises:
        ExportError: `student_dir` holds no model or no tokenizer, the model's head does not fit `card.task`,
            or the label names do not match the classifier's outputs.
    """
    # imported here so that reading CARD_METRICS or building a ModelCardInfo (the report does) needs no torch
    from distill import models

    student_dir, out_dir = Path(student_dir), Path(out_dir)
    if not (student_dir / "config.json").is_file():
        raise ExportError(f"{student_dir} holds no config.json; pass the student's model folder (the one "
                          "save_pretrained wrote), e.g. <distill_prediction output>/student")
    if not any((student_dir / name).is_file() for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        raise ExportError(f"{student_dir} holds no tokenizer files; save the tokenizer beside the student")
    ref = models.ModelRef(str(student_dir))
    num_labels = len(card.label_names) if card.task == "classification" and card.label_names else None
    try:
        model = models.load_model(ref, card.task, num_labels=num_labels)
    except models.ModelCheckError as err:
        raise ExportError(f"cannot export {student_dir}: {err}") from err
    tokenizer = models.load_tokenizer(ref)
    positions = getattr(model.config, "max_position_embeddings", None)

    if card.task == "classification":
        names = card.label_names or [model.config.id2label[i] for i in range(model.config.num_labels)]
        model.config.id2label = dict(enumerate(names))
        model.config.label2id = {name: index for index, name in enumerate(names)}
        max_seq_len = card.inference.get("max_seq_len", positions)
        if max_seq_len is not None:
            # the text-classification pipeline truncates to this when called with truncation=True
            tokenizer.model_max_length = max_seq_len
    else:
        unknown = sorted(set(card.inference) - set(QA_INFERENCE_DEFAULTS))
        if unknown:
            raise ExportError(f"unknown QA inference settings {unknown}; valid: {sorted(QA_INFERENCE_DEFAULTS)}")
        settings = QA_INFERENCE_DEFAULTS | card.inference
        if positions is not None:
            settings["max_seq_len"] = min(settings["max_seq_len"], positions)
        model.config.task_specific_params = {PIPELINE_TASK["qa"]: settings}
        model.config.custom_pipelines = {PIPELINE_TASK["qa"]: {
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
    if card.task == "qa":
        (staging / QA_PIPELINE_FILE).write_text(QA_PIPELINE_SOURCE, encoding="utf-8")
    (staging / "README.md").write_text(model_card(card, model.num_parameters()), encoding="utf-8")
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
    keys = [key for key in CARD_METRICS[card.task] if any(key in card.metrics[name] for name in names)]
    rows = [[key, *(_number(card.metrics[name].get(key)) for name in names)] for key in keys]
    unit = "percent (official SQuAD 2.0 metric)" if card.task == "qa" else "fractions, 0-1"
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


def _usage(card: ModelCardInfo) -> str:
    if card.task == "qa":
        return ("```python\nfrom transformers import pipeline\n\n"
                "# transformers 5 has no built-in question-answering pipeline; this folder brings its own\n"
                "qa = pipeline(\"question-answering\", model=\"path/to/this/folder\", trust_remote_code=True)\n"
                "qa(question=\"Where is the Eiffel Tower?\", context=\"The Eiffel Tower is in Paris.\")\n```\n\n"
                "An empty `answer` means the model judges the question unanswerable from the context "
                "(`null_odds` above `null_threshold`); pass `handle_impossible_answer=False` to always get a span.")
    return ("```python\nfrom transformers import pipeline\n\n"
            "classify = pipeline(\"text-classification\", model=\"path/to/this/folder\")\n"
            "classify(\"a charming and often affecting journey\", truncation=True)\n```")


def model_card(card: ModelCardInfo, parameters: int) -> str:
    """The README.md of an exported student: front matter, usage, recipe, results, size and speed, limits."""
    tags = ["distillation", "knowledge-distillation", "distillery"]
    front = ["---", "library_name: transformers", f"pipeline_tag: {PIPELINE_TASK[card.task]}",
             "tags:", *(f"  - {tag}" for tag in tags), "---", ""]
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
    if card.task == "classification" and card.label_names:
        recipe.append(f"- Labels: {', '.join(f'{i} = {n}' for i, n in enumerate(card.label_names))}")

    what = "extractive question answering (SQuAD 2.0 style: a span of the context, or no answer)" \
        if card.task == "qa" else "text classification"
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
    return "\n".join(front) + "\n\n".join(sections) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# The QA pipeline written into exported QA folders. It must stand alone (torch, numpy and transformers only):
# it runs wherever the folder is served, without Distillery installed.

QA_PIPELINE_SOURCE = '''\
"""Extractive question answering for this model (written by Distillery's export).

transformers 5 removed the built-in "question-answering" pipeline; this file brings it back for this folder:

    from transformers import pipeline
    qa = pipeline("question-answering", model="path/to/this/folder", trust_remote_code=True)
    qa(question="Where is the Eiffel Tower?", context="The Eiffel Tower is in Paris.")
    # {"answer": "Paris", "score": 0.71, "start": 22, "end": 27, "null_odds": -3.2}

A long context is split into overlapping windows. In every window the n_best best start and end tokens inside the
context are paired into spans of at most max_answer_len tokens; the best span over all windows competes with "no
answer", scored at the [CLS] token (minimum over windows): the answer is "" when null score - best span score (the
null odds) exceeds null_threshold. Defaults come from config.task_specific_params["question-answering"], the
settings the model was evaluated with.
"""

import numpy as np
import torch
from transformers import Pipeline

_DEFAULTS = {"max_seq_len": 384, "doc_stride": 128, "max_question_len": 64, "max_answer_len": 30, "n_best": 20,
             "null_threshold": 0.0}


def _softmax(scores):
    shifted = np.exp(scores - scores.max())
    return shifted / shifted.sum()


class ExtractiveQuestionAnsweringPipeline(Pipeline):
    """question + context -> {"answer", "score", "start", "end", "null_odds"}; "" when unanswerable."""

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False

    def _settings(self):
        params = getattr(self.model.config, "task_specific_params", None) or {}
        return {**_DEFAULTS, **params.get("question-answering", {})}

    def __call__(self, inputs=None, question=None, context=None, **kwargs):
        if inputs is None:
            if question is None or context is None:
                raise ValueError("give question= and context=, or a dict {'question': ..., 'context': ...}")
            if isinstance(question, list):
                inputs = [{"question": q, "context": c} for q, c in zip(question, context, strict=True)]
            else:
                inputs = {"question": question, "context": context}
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(self, max_seq_len=None, doc_stride=None, max_question_len=None, max_answer_len=None,
                             n_best=None, null_threshold=None, handle_impossible_answer=None, top_k=None):
        given = {"max_seq_len": max_seq_len, "doc_stride": doc_stride, "max_question_len": max_question_len}
        preprocess = {key: value for key, value in given.items() if value is not None}
        given = {"max_answer_len": max_answer_len, "n_best": n_best, "null_threshold": null_threshold,
                 "handle_impossible_answer": handle_impossible_answer, "top_k": top_k}
        postprocess = {key: value for key, value in given.items() if value is not None}
        return preprocess, {}, postprocess

    def preprocess(self, inputs, max_seq_len=None, doc_stride=None, max_question_len=None):
        settings = self._settings()
        max_seq_len = max_seq_len or settings["max_seq_len"]
        doc_stride = doc_stride or settings["doc_stride"]
        max_question_len = max_question_len or settings["max_question_len"]
        question, context = inputs["question"].lstrip(), inputs["context"]
        # keep at most max_question_len question tokens, cut at a token boundary of the original text
        question_offsets = self.tokenizer(question, add_special_tokens=False,
                                          return_offsets_mapping=True)["offset_mapping"]
        if len(question_offsets) > max_question_len:
            question = question[:question_offsets[max_question_len - 1][1]]
        encoded = self.tokenizer(question, context, truncation="only_second", max_length=max_seq_len,
                                 stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True,
                                 padding=True, return_tensors="pt")
        # (W, T) per window W: offsets only for context tokens, (-1, -1) elsewhere
        offsets = encoded.pop("offset_mapping").numpy()
        encoded.pop("overflow_to_sample_mapping", None)
        for window in range(offsets.shape[0]):
            sequence_ids = encoded.sequence_ids(window)
            for token, sequence in enumerate(sequence_ids):
                if sequence != 1:
                    offsets[window, token] = (-1, -1)
        cls_index = (encoded["input_ids"] == self.tokenizer.cls_token_id).int().argmax(dim=1).numpy()
        model_inputs = {key: value for key, value in encoded.items()}
        return {"model_inputs": model_inputs, "offsets": offsets, "cls_index": cls_index, "context": context}

    def _forward(self, inputs):
        outputs = self.model(**inputs["model_inputs"])
        return {"start": outputs.start_logits, "end": outputs.end_logits, "offsets": inputs["offsets"],
                "cls_index": inputs["cls_index"], "context": inputs["context"]}

    def postprocess(self, outputs, max_answer_len=None, n_best=None, null_threshold=None,
                    handle_impossible_answer=True, top_k=1):
        settings = self._settings()
        max_answer_len = max_answer_len or settings["max_answer_len"]
        n_best = n_best or settings["n_best"]
        null_threshold = settings["null_threshold"] if null_threshold is None else null_threshold
        starts = outputs["start"].float().numpy()  # (W, T)
        ends = outputs["end"].float().numpy()
        offsets, context = outputs["offsets"], outputs["context"]
        null_score, null_probability = float("inf"), 0.0
        spans = []
        for window in range(starts.shape[0]):
            cls = int(outputs["cls_index"][window])
            in_context = np.flatnonzero(offsets[window, :, 0] >= 0)
            if not in_context.size:
                continue
            # probabilities over the tokens a prediction can point at: [CLS] and the context
            allowed = np.concatenate([[cls], in_context])
            start_probs = dict(zip(allowed, _softmax(starts[window, allowed])))
            end_probs = dict(zip(allowed, _softmax(ends[window, allowed])))
            window_null = float(starts[window, cls] + ends[window, cls])
            if window_null < null_score:
                null_score, null_probability = window_null, float(start_probs[cls] * end_probs[cls])
            best_starts = in_context[np.argsort(-starts[window, in_context], kind="stable")[:n_best]]
            best_ends = in_context[np.argsort(-ends[window, in_context], kind="stable")[:n_best]]
            for start in best_starts:
                for end in best_ends:
                    if end < start or end - start + 1 > max_answer_len:
                        continue
                    char_start, char_end = int(offsets[window, start, 0]), int(offsets[window, end, 1])
                    spans.append({"score": float(start_probs[start] * end_probs[end]),
                                  "logit": float(starts[window, start] + ends[window, end]),
                                  "start": char_start, "end": char_end, "answer": context[char_start:char_end]})
        spans.sort(key=lambda span: span["logit"], reverse=True)
        null_odds = null_score - spans[0]["logit"] if spans else float("inf")
        answers = [{"answer": s["answer"], "score": s["score"], "start": s["start"], "end": s["end"],
                    "null_odds": null_odds} for s in spans[:top_k]]
        if handle_impossible_answer and null_odds > null_threshold:
            answers = [{"answer": "", "score": null_probability, "start": 0, "end": 0, "null_odds": null_odds},
                       *answers][:top_k]
        if not answers:
            answers = [{"answer": "", "score": null_probability, "start": 0, "end": 0, "null_odds": null_odds}]
        return answers[0] if top_k == 1 else answers
'''

"""The run report: one Markdown file with plots, written from what a run folder holds; and the student's export.

`write_report(run_dir)` reads the resolved spec, the run state and each stage's outputs, and writes

    run_dir/report/
      report.md                 warnings (models that give one answer to everything), spec summary, stages,
                                data counts, augmentation, labelling, training, teacher vs student scores, size
                                and speed
      loss_<stage>.png          total loss and each loss/<term> per logged step (one per training stage/teacher)
      lr.png                    learning rate per step, one panel per training stage
      validation_<stage>.png    a phase run with eval_every: its validation scores per step, the best circled
      scores.png                teacher vs student scores, grouped bars

A piece that is missing (a stage disabled, skipped, failed or still running, a file not written yet) is shown as
such; an unreadable file is named with its error. The report never fails because a stage did not produce
something. `export_final_student(run_dir, student_dir)` writes `run_dir/export/` with a model card built from the
same files.

Example::

    write_report(Path("runs/squad-20250101-120000-abc123"))   # -> .../report/report.md
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from matplotlib.figure import Figure

from augment.spec import EvalSource, TrainSource
from core.tasks import TRAITS, task_traits
from distill.export import (CardAugmentation, CardData, CardInference, ModelCardInfo, export_student,
                            pipeline_call)
from jobs.layout import eval_sets
from jobs.spec import JobSpec, SpecError, parse_spec
from jobs.store import RunState, StageState

TRAINING_STAGES = ["finetune_teachers", "train_mlm", "distill_intermediate", "distill_prediction"]
# Phase settings that say how the student was trained (logging and checkpoint cadence do not).
_BOOKKEEPING = {"enabled", "log_every", "checkpoint_every", "checkpoint_minutes"}
_NONE = "—"
_DONE = {"completed", "cached", "skipped"}


# ---------------------------------------------------------------------------------------------------------------
# Reading the run folder, tolerating whatever is missing


@dataclass
class _Run:
    """What the report knows about a run; `problems` lists files that exist but could not be read."""

    path: Path
    spec: JobSpec | None
    state: RunState | None     # None: state.json missing or unreadable (named in `problems`)
    problems: list[str]

    def stage(self, name: str) -> StageState | None:
        return self.state.stages.get(name) if self.state is not None else None

    def output(self, name: str) -> Path | None:
        """The stage's output folder, when the state names one that exists."""
        stage = self.stage(name)
        return Path(stage.output) if stage is not None and stage.output and Path(stage.output).is_dir() else None

    def stage_note(self, name: str) -> str:
        """Why a stage has nothing to show: its status, or that the state does not list it."""
        stage = self.stage(name)
        if stage is None:
            return f"stage `{name}` is not in the run state"
        error = f": {stage.error}" if stage.error else ""
        return f"stage `{name}` {stage.status}{error}"

    def json(self, path: Path) -> Any | None:
        """The parsed JSON file, or None when absent; an unreadable file is noted in `problems`."""
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            self.problems.append(f"`{path}` is unreadable: {err}")
            return None

    def jsonl(self, path: Path) -> list[dict[str, Any]]:
        """The JSON objects of a JSON-lines file; torn or bad lines (a crash mid-write) are skipped and counted."""
        if not path.is_file():
            return []
        records, bad = [], 0
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(record, dict):
                records.append(record)
            else:
                bad += 1
        if bad:
            self.problems.append(f"`{path}`: {bad} line(s) are not JSON objects and were skipped")
        return records


def _load_run(run_dir: Path) -> _Run:
    problems: list[str] = []
    state = None
    state_path = run_dir / "state.json"
    if state_path.is_file():
        try:
            state = RunState.model_validate_json(state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:  # pydantic's ValidationError is a ValueError
            problems.append(f"`{state_path}` is unreadable: {err}")
    else:
        problems.append(f"`{state_path}` is missing: no stage information")
    spec = None
    spec_path = run_dir / "spec.yaml"
    if spec_path.is_file():
        try:
            document = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
            spec = parse_spec(document if document is not None else {}, run_dir, str(spec_path))
        except (OSError, yaml.YAMLError, SpecError) as err:
            problems.append(f"`{spec_path}` could not be read as a job spec: {err}")
    else:
        problems.append(f"`{spec_path}` is missing: no spec summary")
    return _Run(run_dir, spec, state, problems)


# ---------------------------------------------------------------------------------------------------------------
# Formatting


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return _NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):
            return str(value)
        if value != 0 and abs(value) < 10 ** -digits:
            return f"{value:.2e}"
        return f"{value:,.{digits}f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or _NONE
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v, digits)}" for k, v in value.items()) or _NONE
    return str(value)


def _settings(values: dict[str, Any]) -> str:
    """Spec settings on one line, numbers as written in a spec (5, 3e-05, 0.1), not rounded for display."""
    def one(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:g}"
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(one(v) for v in value) + "]"
        return _fmt(value)

    return ", ".join(f"{key} {one(value)}" for key, value in values.items()) or _NONE


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell if isinstance(cell, str) else _fmt(cell) for cell in row) + " |"
              for row in rows]
    return "\n".join(lines)


def _duration(started_at: str | None, ended_at: str | None) -> str:
    try:
        started = dt.datetime.fromisoformat(started_at)  # type: ignore[arg-type]
        ended = dt.datetime.fromisoformat(ended_at)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return _NONE
    seconds = (ended - started).total_seconds()
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _student_source(spec: JobSpec) -> str:
    student = spec.student
    if student is None:
        return "none: the teachers are fine-tuned and evaluated side by side"
    if student.model is not None:
        return student.model if student.init == "pretrained" else f"{student.model} (config only, fresh weights)"
    if student.architecture is not None:
        a = student.architecture
        return (f"fresh {a.num_hidden_layers}-layer, {a.hidden_size}-hidden, {a.num_attention_heads}-head model "
                "built from teacher 0's config")
    return f"layers {student.init_from_teacher_layers} and embeddings of teacher 0"


def _source_line(source: TrainSource | EvalSource, several: bool) -> str:
    line = f"{source.path} ({source.format})"
    notes = [f"weight {source.weight:g}"] if isinstance(source, TrainSource) and source.weight != 1 else []
    if isinstance(source, EvalSource):
        notes += [f"group {source.group}"] if source.group else []
        notes += [f"{source.metric} scoring"] if source.format == "mrqa" or source.scoring else []
    line += f", {', '.join(notes)}" if notes else ""
    return f"{source.name}: {line}" if several else line


def _teacher_names(spec: JobSpec) -> list[str]:
    names = []
    for teacher in spec.teachers:
        name = teacher.model + (" (random init)" if teacher.init == "random" else "")
        if teacher.finetune is not None:
            name += f" (fine-tuned {teacher.finetune.epochs:g} epochs)"
        names.append(name)
    return names


def _phase_settings(spec: JobSpec) -> dict[str, dict[str, Any]]:
    phases = {}
    for name in ("intermediate", "prediction"):
        phase = getattr(spec.distill, name)
        if phase.enabled:
            phases[name] = {k: v for k, v in phase.model_dump(mode="json").items() if k not in _BOOKKEEPING}
    return phases


# ---------------------------------------------------------------------------------------------------------------
# Sections


def _written_by_the_job(state: RunState | None) -> bool:
    """Whether the job's own report stage is writing this report: every other stage is done."""
    if state is None or state.status != "running" or "report" not in state.stages:
        return False
    return (state.stages["report"].status == "running"
            and all(stage.status in _DONE for name, stage in state.stages.items() if name != "report"))


def _header(run: _Run) -> str:
    state = run.state
    written = dt.datetime.now(dt.timezone.utc)
    lines = [f"# Distillery report: {state.job_id if state is not None else run.path.name}", ""]
    if state is None:
        lines.append(_table(["job", "status", "wall time", "created", "report written"], [[
            _NONE, _NONE, _NONE, _NONE, written.isoformat(timespec="seconds")]]))
        return "\n".join(lines)
    # the report is the last stage: the job ends as this is written
    status = "succeeded" if _written_by_the_job(state) else state.status
    wall = _duration(state.created_at, state.ended_at or written.isoformat())
    lines.append(_table(["job", "status", "wall time", "created", "report written"], [[
        state.name, status, wall, state.created_at, written.isoformat(timespec="seconds")]]))
    if state.error:
        lines += ["", f"**Error:** {state.error}"]
    return "\n".join(lines)


def evaluation_warnings(metrics: dict[str, dict[str, Any]]) -> list[str]:
    """One line per model of metrics.json whose predictions are degenerate, and per comparison with such a
    teacher: `jobs status` prints them, the report lists them under Warnings."""
    notes = {name: entry["degenerate"] for name, entry in metrics.items() if entry.get("degenerate")}
    lines = [f"`{name}` {note}: its scores measure the evaluation data, not the model" for name, note in notes.items()]
    if "student" in metrics:
        lines += [f"the student is compared with `{name}`, which {note}: the share of its score the student keeps "
                  "says nothing about what it learned" for name, note in notes.items() if name != "student"]
    return lines


def _warnings_section(metrics: dict[str, dict[str, Any]] | None) -> str | None:
    lines = evaluation_warnings(metrics or {})
    return "## Warnings\n\n" + "\n".join(f"- {line}" for line in lines) if lines else None


def _spec_section(run: _Run) -> str:
    spec = run.spec
    if spec is None:
        return "## Spec\n\nNo readable spec.yaml."
    augment = spec.augment
    rows = [
        ["task", spec.task],
        ["seed", spec.seed],
        ["train data", "; ".join(_source_line(source, len(spec.data.train) > 1) for source in spec.data.train)],
        ["eval data", "; ".join(_source_line(source, len(spec.data.eval) > 1) for source in spec.data.eval)],
        ["teachers", "; ".join(_teacher_names(spec)) or "none"],
        ["student", _student_source(spec)],
        ["augmentation", (f"x{augment.factor}, replace_prob {augment.replace_prob}, top_k {augment.top_k}, "
                          f"mlm {augment.mlm_model or 'none'} ({augment.mlm_mode}), keep original "
                          f"{_fmt(augment.keep_original)}") if augment.enabled else "disabled"],
        ["features", _settings(_feature_settings(spec))],
        ["label", _settings(spec.label.model_dump())],
    ]
    phases = _phase_settings(spec)
    for name in ("intermediate", "prediction"):
        rows.append([f"phase {name}", _settings(phases[name]) if name in phases else "disabled"])
    if spec.student is None:  # the sections a fine-tuning job does not run
        rows = [[setting, "not run: no student"] if setting in _DISTILLATION_ROWS else [setting, value]
                for setting, value in rows]
    evaluate = {k: v for k, v in spec.evaluate.model_dump().items() if k != "enabled"}
    rows.append(["evaluate", _settings(evaluate) if spec.evaluate.enabled else "disabled"])
    rows.append(["resources", _settings(spec.resources.model_dump())])
    return "## Spec\n\n" + _table(["setting", "value"], rows)


_DISTILLATION_ROWS = ("augmentation", "label", "phase intermediate", "phase prediction")


def _feature_settings(spec: JobSpec) -> dict[str, Any]:
    """The features settings the task uses: QA's window settings (doc_stride, max_query_len) do nothing for
    labelled text."""
    settings = spec.features.model_dump()
    return settings if task_traits(spec.task).windows else {"max_seq_len": settings["max_seq_len"]}


def _stages_section(run: _Run) -> str:
    stages = run.state.stages if run.state is not None else {}
    if not stages:
        return "## Stages\n\nNo stage information (state.json missing or empty)."
    rows = []
    for name, stage in stages.items():  # the runner's order: it writes every stage into the state first
        status: str = stage.status
        if name == "report" and _written_by_the_job(run.state):
            status = "completed (this report)"
        if stage.error:
            status += f": {stage.error}"
        rows.append([f"`{name}`", status, _duration(stage.started_at, stage.ended_at),
                     f"`{stage.output}`" if stage.output else _NONE])
    return "## Stages\n\n" + _table(["stage", "status", "duration", "output"], rows)


def _data_section(run: _Run) -> str:
    prepare = run.output("prepare")
    if prepare is None:
        return f"## Data\n\nNo data counts: {run.stage_note('prepare')}."
    # (row label, split, examples folder, whether its rejects count in the split's): each training source (counted
    # again in the training set mixed from them), the training set, each eval set
    names = ([source.name for source in run.spec.data.train] if run.spec is not None
             else sorted(path.name for path in (prepare / "train_sets").glob("*")))
    sources = [(f"train: {name}", "train", prepare / "train_sets" / name, False) for name in names
               if (prepare / "train_sets" / name).is_dir()]
    sets = eval_sets(run.spec, prepare) if run.spec is not None else [(None, prepare / "eval")]
    folders = [*sources, ("train", "train", prepare / "train", True),
               *((f"eval: {source.name}" if len(sets) > 1 else "eval", "eval", path, True) for source, path in sets)]
    # a source's rows in the training set, after its weight: recorded by the mix
    mixed = ((run.json(prepare / "train" / "meta.json") or {}).get("sets") or {})
    rows, reasons = [], {}
    for label, split, folder, counted in folders:
        counts = (run.json(folder / "meta.json") or {}).get("counts") or {}
        if not counts:
            rows.append([label, _NONE, _NONE, _NONE, _NONE])
            continue
        used = mixed.get(folder.name, {}).get("rows") if not counted else counts.get("rows", counts.get("written"))
        rows.append([label, counts.get("read"), counts.get("written"), counts.get("rejected"), used])
        if not counted:
            continue
        for reason, count in (counts.get("rejected_by_reason") or {}).items():
            reasons.setdefault(reason, {})[split] = reasons.get(reason, {}).get(split, 0) + count
    text = "## Data\n\n" + _table(["split", "read", "written", "rejected", "rows used"], rows)
    if sources:
        text += ("\n\nThe training sources are read each on its own, then mixed into the training set by weight: "
                 "`rows used` counts each example as many times as it is used.")
    if reasons:
        text += "\n\nRejected records by reason (details in each split's `rejects.jsonl`):\n\n" + _table(
            ["reason", "train", "eval"],
            [[f"`{reason}`", by.get("train", 0), by.get("eval", 0)] for reason, by in sorted(reasons.items())])
    else:
        text += "\n\nNo record was rejected."
    return text


def _augment_section(run: _Run) -> str:
    if run.spec is not None and not run.spec.augment.enabled:
        return "## Augmentation\n\nDisabled in the spec."
    output = run.output("augment")
    stats = run.json(output / "stats.json") if output else None
    if not stats:
        return f"## Augmentation\n\nNo statistics: {run.stage_note('augment')}."
    rows = [["examples in", stats.get("examples_in")], ["examples out", stats.get("examples_out")]]
    if stats.get("examples_in"):
        rows.append(["expansion", f"x{stats['examples_out'] / stats['examples_in']:.2f}"
                     if stats.get("examples_out") is not None else _NONE])
    rows.append(["substitution rate", stats.get("substitution_rate")])
    for source, count in (stats.get("substitutions_by_source") or {}).items():
        rows.append([f"substitutions from {source}", count])
    shown = {"examples_in", "examples_out", "substitution_rate", "substitutions_by_source"}
    rows += [[key, value] for key, value in stats.items() if key not in shown and not isinstance(value, (dict, list))]
    return "## Augmentation\n\n" + _table(["statistic", "value"], rows)


def _label_section(run: _Run) -> str:
    output = run.output("label")
    stats = run.json(output / "stats.json") if output else None
    if not stats:
        return f"## Labelling\n\nNo statistics: {run.stage_note('label')}."
    # folders are in the stage table already; nested values (per-teacher details) would not fit a cell
    rows = [[key, value] for key, value in stats.items()
            if not isinstance(value, dict) and not key.endswith("_dir")]
    return "## Labelling\n\n" + _table(["statistic", "value"], rows)


def _training_folders(run: _Run) -> dict[str, Path]:
    """The folder of each training run (metrics.jsonl, train_config.json): "finetune_teacher_<i>",
    "distill_intermediate", ..."""
    folders = {}
    for stage in TRAINING_STAGES:
        output = run.output(stage)
        if output is None:
            continue
        if stage == "finetune_teachers":
            folders |= {f"finetune_{folder.name}": folder for folder in sorted(output.glob("teacher_*"))}
        else:
            folders[stage] = output
    return folders


def _training_logs(run: _Run) -> dict[str, list[dict[str, Any]]]:
    """metrics.jsonl records per training run, by the names of `_training_folders`."""
    logs = {}
    for name, folder in _training_folders(run).items():
        records = run.jsonl(folder / "metrics.jsonl")
        if records:
            logs[name] = records
    return logs


@dataclass(frozen=True)
class _Validation:
    """A phase run with eval_every: its validation.jsonl records and the student best/ holds."""

    records: list[dict[str, Any]]
    metrics: list[str]        # the score that picks the best (SQuAD F1 or accuracy), then its companion
    best_step: int
    best_value: float


def _validations(run: _Run) -> dict[str, _Validation]:
    """Per training run (by `_training_folders` names) with validation.jsonl; the best from best/best.json, else
    the first step with the top score (as the trainer keeps it)."""
    found = {}
    for name, folder in _training_folders(run).items():
        records = run.jsonl(folder / "validation.jsonl")
        metrics = [key for key in ("f1", "exact", "accuracy", "macro_f1") if records and key in records[0]]
        if not metrics:
            continue
        recorded = run.json(folder / "best" / "best.json")
        if isinstance(recorded, dict) and {"step", "value"} <= set(recorded):
            step, value = recorded["step"], recorded["value"]
        else:
            best = max(records, key=lambda r: (r[metrics[0]], -r["step"]))
            step, value = best["step"], best[metrics[0]]
        found[name] = _Validation(records, metrics, step, value)
    return found


def _validation_rows(validation: _Validation) -> list[list[Any]]:
    metric, last = validation.metrics[0], validation.records[-1]
    return [["validations", len(validation.records)],
            [f"best validation {metric}", f"{_fmt(validation.best_value, 4)} at step {validation.best_step} "
                                          "(kept in best/)"],
            [f"last validation {metric}", f"{_fmt(last[metric], 4)} at step {last['step']}"]]


def _lr_schedules(run: _Run) -> dict[str, list[tuple[int, float]]]:
    """Each training run's learning rate at every step from 0 (at most ~500 points), from its train_config.json:
    the trainer's linear warm-up then linear decay to 0. The logged points start only at the first log step."""
    schedules = {}
    for name, folder in _training_folders(run).items():
        record = run.json(folder / "train_config.json")
        try:
            peak = float(record["config"]["learning_rate"])
            total, warmup = int(record["schedule"]["total_steps"]), int(record["schedule"]["warmup_steps"])
        except (TypeError, KeyError, ValueError):
            continue
        steps = sorted(set(range(0, total + 1, max(1, total // 500))) | {warmup, total})
        schedules[name] = [(step, peak * (step / warmup if step < warmup
                                          else max(0.0, (total - step) / max(1, total - warmup))))
                           for step in steps]
    return schedules


def _loss_keys(records: list[dict[str, Any]]) -> list[str]:
    """"loss" and its terms; with one term, "loss" alone (the term's curve is the same, scaled by its weight)."""
    keys = {key for record in records for key in record if key == "loss" or key.startswith("loss/")}
    ordered = sorted(keys, key=lambda key: (key != "loss", key))
    return ordered[:1] if len(ordered) == 2 and ordered[0] == "loss" else ordered


def _training_section(run: _Run, logs: dict[str, list[dict[str, Any]]], validations: dict[str, _Validation],
                      plots: dict[str, str]) -> str:
    lines = ["## Training"]
    folders = _training_folders(run)
    for stage in TRAINING_STAGES:
        if (run.stage(stage) or StageState()).status == "skipped":
            if stage.startswith("distill_"):  # a phase turned off is worth saying; the others simply do not apply
                lines += ["", f"### `{stage}`", "", "Disabled in the spec."]
            continue
        names = [name for name in logs if name == stage or (stage == "finetune_teachers"
                                                             and name.startswith("finetune_teacher_"))]
        if not names:
            lines += ["", f"### `{stage}`", "", f"No metrics: {run.stage_note(stage)}."]
            continue
        for name in names:
            records = logs[name]
            last = records[-1]
            speeds = [r["examples_per_s"] for r in records if isinstance(r.get("examples_per_s"), (int, float))]
            rows = [["logged steps", len(records)], ["last step", last.get("step")], ["last epoch", last.get("epoch")]]
            rows += [[f"last {key}", last.get(key)] for key in _loss_keys(records)]
            rows.append(["mean examples/s", sum(speeds) / len(speeds) if speeds else None])
            trained = run.json(folders[name] / "train_config.json") or {}
            if trained.get("precision"):
                rows.append(["precision", f"{trained['precision']} on {trained.get('device', '?')}"])
            if name in validations:
                rows += _validation_rows(validations[name])
            lines += ["", f"### `{name}`", "", _table(["", "value"], rows)]
            if name in plots:
                lines += ["", f"![loss of {name}]({plots[name]})"]
            if f"validation_{name}" in plots:
                lines += ["", f"![validation of {name}]({plots[f'validation_{name}']})"]
    if "lr" in plots:
        lines += ["", "### Learning rate", "", f"![learning rate per step]({plots['lr']})"]
    return "\n".join(lines)


def _metric_names(task: str, metrics: dict[str, dict[str, Any]]) -> list[str]:
    return [key for key in task_traits(task).card_metrics if any(key in entry for entry in metrics.values())]


def _results_section(run: _Run, metrics: dict[str, dict[str, Any]] | None, plots: dict[str, str]) -> str:
    if metrics is None:
        if run.spec is not None and not run.spec.evaluate.enabled:
            return "## Results\n\nEvaluation is disabled in the spec."
        return f"## Results\n\nNo metrics: {run.stage_note('evaluate')}."
    task = _task(run, metrics)
    names = sorted(metrics, key=lambda name: (name != "student", name))
    keys = _metric_names(task, metrics)
    first = metrics[names[0]]
    scorings = {entry.get("scoring", "squad_v2") for entry in (first.get("sets") or {"": first}).values()}
    metric = " and ".join(sorted(_SCORING_NAMES[scoring] for scoring in scorings))
    unit = f"percent, {metric}" if task_traits(task).percent_scores else "fractions 0-1"
    where = (f"Macro averages over the {len(first['sets'])} evaluation sets, each counting once"
             if "sets" in first else "Scores on the evaluation data")
    rows = [[f"`{key}`", *(metrics[name].get(key) for name in names)] for key in keys]
    text = f"## Results\n\n{where} ({unit}).\n\n" + _table(["metric", *names], rows)
    if "sets" in first:
        text += "\n\n" + _sets_table(task, metrics, names)
    headline = task_traits(task).headline_metric
    student = (metrics.get("student") or {}).get(headline)
    for teacher in (name for name in names if name != "student"):
        score = metrics[teacher].get(headline)
        if isinstance(student, (int, float)) and isinstance(score, (int, float)) and score:
            text += f"\n\nThe student keeps {student / score:.1%} of `{teacher}`'s {headline}"
            degenerate = metrics[teacher].get("degenerate")
            text += f", but `{teacher}` {degenerate} (see Warnings)." if degenerate else "."
    if task_traits(task).classes:
        for name in names:
            per_class = metrics[name].get("per_class") or {}
            if per_class:
                text += f"\n\nPer class, `{name}`:\n\n" + _table(
                    ["class", "precision", "recall", "f1", "support"],
                    [[c, v.get("precision"), v.get("recall"), v.get("f1"), v.get("support")]
                     for c, v in per_class.items()])
    if "scores" in plots:
        text += f"\n\n![teacher vs student scores]({plots['scores']})"
    return text


_SCORING_NAMES = {"squad_v2": "the official SQuAD 2.0 metric",
                  "mrqa": "the MRQA shared task's metric: SQuAD 1.1 normalisation, no null answer"}


def _sets_table(task: str, metrics: dict[str, dict[str, Any]], names: list[str]) -> str:
    """Each evaluation set's scores per model, then each group's macro average and the one over all sets."""
    keys = task_traits(task).macro_metrics
    first = metrics[names[0]]

    def cell(entry: dict[str, Any] | None) -> str:
        return " / ".join(_fmt(entry.get(key)) for key in keys) if entry else _NONE

    rows = [[f"`{set_name}`", entry.get("total"), *(cell(metrics[name]["sets"].get(set_name)) for name in names)]
            for set_name, entry in first["sets"].items()]
    rows += [[f"**{group}** (macro, {entry['sets_averaged']} sets)", entry.get("total"),
              *(cell(metrics[name]["groups"].get(group)) for name in names)]
             for group, entry in first["groups"].items()]
    rows.append([f"**all** (macro, {first['sets_averaged']} sets)", first.get("total"),
                 *(cell(metrics[name]) for name in names)])
    return f"Per evaluation set ({' / '.join(keys)}):\n\n" + _table(["set", "examples", *names], rows)


def _speed_section(run: _Run, metrics: dict[str, dict[str, Any]] | None) -> str:
    if run.spec is not None and not (run.spec.evaluate.enabled and run.spec.evaluate.measure_speed):
        return "## Size and speed\n\nNot measured (evaluate.measure_speed is off or evaluation is disabled)."
    rows = []
    for name in sorted(metrics or {}, key=lambda name: (name != "student", name)):
        for device, report in ((metrics[name].get("speed") or {}).items()):
            if not isinstance(report, dict):
                continue
            size, throughput = report.get("size_bytes"), report.get("throughput")
            rows.append([f"`{name}`", device, report.get("parameters"),
                         _fmt(size / 1e6 if isinstance(size, (int, float)) else None, 1),
                         report.get("latency_ms"), report.get("latency_p90_ms"),
                         _fmt(1000 / throughput if isinstance(throughput, (int, float)) and throughput else None, 2),
                         _fmt(throughput, 1), report.get("seq_len")])
    if not rows:
        return f"## Size and speed\n\nNo measurements: {run.stage_note('evaluate')}."
    onnx = " `student_onnx` rows are its ONNX graphs on onnxruntime (evaluate.onnx)." if any(
        name.startswith("student_onnx") for name in metrics or {}) else ""
    text = ("## Size and speed\n\nSynthetic fixed-length inputs; latency per example at batch 1 and at batch 32 "
            f"(and the throughput that gives); median of the timed runs (p90 of batch 1 beside it).{onnx}\n\n"
            + _table(["model", "device", "parameters", "size (MB)", "latency b1 (ms)", "p90 (ms)",
                      "per example b32 (ms)", "throughput b32 (ex/s)", "seq len"], rows))
    comparisons = ((metrics or {}).get("student") or {}).get("vs_teachers") or {}
    compare_rows = [[f"`{teacher}`", device, f"{c['speedup']:.2f}x" if c.get("speedup") else _NONE,
                     f"{c['throughput_ratio']:.2f}x" if c.get("throughput_ratio") else _NONE,
                     f"{c['size_ratio']:.2f}x" if c.get("size_ratio") else _NONE,
                     f"{c['parameter_ratio']:.2f}x" if c.get("parameter_ratio") else _NONE]
                    for teacher, by_device in comparisons.items() for device, c in by_device.items()]
    if compare_rows:
        text += ("\n\nStudent against each teacher (above 1: the student is faster or smaller):\n\n"
                 + _table(["teacher", "device", "speed-up (latency)", "throughput ratio", "size ratio",
                           "parameter ratio"], compare_rows))
    return text


def _export_section(run: _Run) -> str:
    export = run.path / "export"
    if (export / "README.md").is_file():
        task = run.spec.task if run.spec is not None else "qa"
        return (f"## Export\n\nThe final student is ready to serve in `{export}` (weights, config, tokenizer, "
                f"model card). Load it with `{pipeline_call(task, 'DIR')}`.")
    if run.spec is not None and run.spec.student is None:
        return "## Export\n\nNo student to export: the job fine-tunes and evaluates its teachers."
    if run.spec is not None and not run.spec.evaluate.export:
        return "## Export\n\nDisabled in the spec (evaluate.export)."
    return "## Export\n\nNot exported (yet)."


# ---------------------------------------------------------------------------------------------------------------
# Plots (matplotlib's object API: no pyplot, no global backend state)


def _plot_losses(name: str, records: list[dict[str, Any]], path: Path) -> bool:
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.subplots()
    drawn = False
    for key in _loss_keys(records):
        points = [(r["step"], r[key]) for r in records
                  if isinstance(r.get("step"), (int, float)) and isinstance(r.get(key), (int, float))]
        if points:
            steps, values = zip(*points)
            axes.plot(steps, values, label=key, linewidth=2 if key == "loss" else 1)
            drawn = True
    if not drawn:
        return False
    values = [r[k] for r in records for k in _loss_keys(records) if isinstance(r.get(k), (int, float))]
    if values and min(values) > 0 and max(values) / min(values) > 100:
        axes.set_yscale("log")  # terms of very different sizes (attention MSE vs hidden MSE) stay readable
    axes.set(title=f"loss per term: {name}", xlabel="step", ylabel="loss")
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    figure.savefig(path, dpi=100)
    return True


def _plot_validation(name: str, validation: _Validation, path: Path) -> None:
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.subplots()
    for key in validation.metrics:
        axes.plot([r["step"] for r in validation.records], [r[key] for r in validation.records], marker="o",
                  markersize=3, label=key, linewidth=2 if key == validation.metrics[0] else 1)
    axes.scatter([validation.best_step], [validation.best_value], s=80, facecolors="none", edgecolors="black",
                 label=f"best {validation.metrics[0]} (best/)", zorder=3)
    axes.set(title=f"validation: {name}", xlabel="step", ylabel="score")
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    figure.savefig(path, dpi=100)


def _plot_lr(logs: dict[str, list[dict[str, Any]]], schedules: dict[str, list[tuple[int, float]]],
             path: Path) -> bool:
    """One panel per training run: the schedule from step 0 as a line, the logged learning rates as dots."""
    series = {}
    for name, records in logs.items():
        points = [(r["step"], r["lr"]) for r in records
                  if isinstance(r.get("step"), (int, float)) and isinstance(r.get("lr"), (int, float))]
        if points:
            series[name] = points
    if not series:
        return False
    figure = Figure(figsize=(4 * len(series), 3.5), layout="constrained")
    for axes, (name, points) in zip(figure.subplots(1, len(series), squeeze=False)[0], series.items()):
        if name in schedules:
            axes.plot(*zip(*schedules[name]), label="schedule")
        axes.plot(*zip(*points), linestyle="none", marker=".", label="logged")
        axes.legend(fontsize="small")
        axes.set(title=name, xlabel="step", ylabel="learning rate")
        axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        axes.grid(alpha=0.3)
    figure.savefig(path, dpi=100)
    return True


def _plot_scores(task: str, metrics: dict[str, dict[str, Any]], path: Path) -> bool:
    keys = [key for key in _metric_names(task, metrics)
            if all(isinstance(entry.get(key), (int, float)) for entry in metrics.values())]
    if not keys:
        return False
    names = sorted(metrics, key=lambda name: (name != "student", name))
    figure = Figure(figsize=(max(6, 1.2 * len(keys) * len(names) / 2 + 2), 4), layout="constrained")
    axes = figure.subplots()
    width = 0.8 / len(names)
    for index, name in enumerate(names):
        positions = [k + (index - (len(names) - 1) / 2) * width for k in range(len(keys))]
        bars = axes.bar(positions, [metrics[name][key] for key in keys], width, label=name)
        axes.bar_label(bars, fmt="%.1f" if task_traits(task).percent_scores else "%.3f", fontsize="x-small")
    axes.set_xticks(range(len(keys)), keys, rotation=30, ha="right")
    axes.set(title="teacher vs student", ylabel="score (%)" if task_traits(task).percent_scores else "score")
    axes.legend(fontsize="small")
    axes.grid(axis="y", alpha=0.3)
    figure.savefig(path, dpi=100)
    return True


# ---------------------------------------------------------------------------------------------------------------
# Entry points


def _task(run: _Run, metrics: dict[str, dict[str, Any]]) -> str:
    """The spec's task; without a readable spec, the first whose headline metric the scores hold."""
    if run.spec is not None:
        return run.spec.task
    return next((name for name, traits in TRAITS.items()
                 if any(traits.headline_metric in entry for entry in metrics.values())), "classification")


def _evaluation_metrics(run: _Run) -> dict[str, dict[str, Any]] | None:
    output = run.output("evaluate")
    metrics = run.json(output / "metrics.json") if output else None
    return metrics if isinstance(metrics, dict) and metrics else None


def write_report(run_dir: Path) -> Path:
    """Write run_dir/report/report.md and its plots (layout in the module doc) and return the report's path."""
    run_dir = Path(run_dir)
    report_dir = run_dir / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    for old in report_dir.glob("*.png"):
        old.unlink()  # a plot whose data is gone must not survive from an earlier report
    run = _load_run(run_dir)
    metrics = _evaluation_metrics(run)
    logs = _training_logs(run)
    validations = _validations(run)

    plots: dict[str, str] = {}
    for name, records in logs.items():
        if _plot_losses(name, records, report_dir / f"loss_{name}.png"):
            plots[name] = f"loss_{name}.png"
    for name, validation in validations.items():
        _plot_validation(name, validation, report_dir / f"validation_{name}.png")
        plots[f"validation_{name}"] = f"validation_{name}.png"
    if _plot_lr(logs, _lr_schedules(run), report_dir / "lr.png"):
        plots["lr"] = "lr.png"
    if metrics is not None:
        if _plot_scores(_task(run, metrics), metrics, report_dir / "scores.png"):
            plots["scores"] = "scores.png"

    sections = [
        _header(run), _warnings_section(metrics), _spec_section(run), _stages_section(run), _data_section(run),
        _augment_section(run), _label_section(run), _training_section(run, logs, validations, plots),
        _results_section(run, metrics, plots), _speed_section(run, metrics),
    ]
    sections.append(_export_section(run))
    if run.problems:
        sections.append("## Problems reading the run\n\n" + "\n".join(f"- {p}" for p in run.problems))
    path = report_dir / "report.md"
    temp = report_dir / ".report.md.tmp"
    temp.write_text("\n\n".join(section for section in sections if section is not None) + "\n", encoding="utf-8")
    temp.replace(path)
    return path


def card_info(run_dir: Path) -> ModelCardInfo:
    """The model card information of a run: recipe from spec.yaml, counts and metrics from the stage outputs.

    Raises:
        SpecError: run_dir/spec.yaml is missing or not a valid job spec (the card cannot say how the student
            was made without it).
    """
    run = _load_run(Path(run_dir))
    spec = run.spec
    if spec is None:
        raise SpecError(run.problems or ["spec.yaml: unreadable"], str(Path(run_dir) / "spec.yaml"))
    def paths(sources: list[Any]) -> str | list[str]:
        return sources[0].path if len(sources) == 1 else [source.path for source in sources]

    data = CardData(train=paths(spec.data.train), eval=paths(spec.data.eval))
    label_names = spec.data.label_names
    prepare = run.output("prepare")
    if prepare is not None:
        folders = {"train": [prepare / "train"], "eval": [folder for _, folder in eval_sets(spec, prepare)]}
        for split, split_folders in folders.items():
            counts = [(run.json(folder / "meta.json") or {}).get("counts") or {} for folder in split_folders]
            used = [entry.get("rows", entry.get("written")) for entry in counts]
            if None not in used:
                data[f"{split}_examples"] = sum(used)
        label_names = (run.json(prepare / "train" / "meta.json") or {}).get("label_names") or label_names
    augmentation = CardAugmentation(enabled=False)
    if spec.augment.enabled:
        augmentation = CardAugmentation(enabled=True, factor=spec.augment.factor,
                                        replace_prob=spec.augment.replace_prob, mlm_model=spec.augment.mlm_model)
        output = run.output("augment")
        stats = (run.json(output / "stats.json") if output else None) or {}
        augmentation |= {key: stats[key] for key in ("examples_in", "examples_out", "substitution_rate")
                         if key in stats}
    inference = CardInference(max_seq_len=spec.features.max_seq_len)
    if task_traits(spec.task).windows:
        inference |= {"doc_stride": spec.features.doc_stride, "max_question_len": spec.features.max_query_len,
                      "max_answer_len": spec.evaluate.max_answer_len, "n_best": spec.evaluate.n_best,
                      "null_threshold": spec.evaluate.null_threshold}
    return ModelCardInfo(
        task=spec.task, teachers=_teacher_names(spec), student_source=_student_source(spec), data=data,
        augmentation=augmentation, phases=_phase_settings(spec), metrics=_evaluation_metrics(run) or {},
        label_names=label_names if task_traits(spec.task).classes else None, inference=inference,
        name=f"{spec.name}-student", job_id=run.state.job_id if run.state is not None else None,
        license=spec.evaluate.license)


def export_final_student(run_dir: Path, student_dir: Path) -> Path:
    """Export the run's final student to run_dir/export (see distill.export) with a card from the run's files,
    carrying the ONNX graphs the evaluation scored (evaluate.onnx)."""
    run_dir = Path(run_dir)
    evaluated = _load_run(run_dir).output("evaluate")
    graphs = evaluated / "onnx" if evaluated is not None and (evaluated / "onnx").is_dir() else None
    return export_student(Path(student_dir), run_dir / "export", card_info(run_dir), onnx_graphs=graphs)

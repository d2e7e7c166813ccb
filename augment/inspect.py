"""Looking inside an examples folder: totals, an example next to its variants, and an answer-span check.

An examples folder holds `shards/` (rows in an `core.schema` schema), usually `meta.json`, and, when the
augmentation stage wrote it, `stats.json` (at least examples_in, examples_out, substitutions_by_source; the
substitution rate needs substituted_words and eligible_words too) and `rejects.jsonl`. `inspect_examples` reads
it in one streaming pass into an `InspectReport`; `render_plain`, `render_rich` and `report_json` show that
report. Used by ``python -m augment inspect``.

Example::

    report = inspect_examples(Path("runs/x/augmented"), example_id="56ddde6b9a695914005b9628")
    report.invalid_span_count, report.totals["variants_per_example"]
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

import pyarrow.parquet as pq

from core.shards import iter_shard_batches, shard_paths
from core.tasks import task_traits

# How many invalid answer spans a report lists (all of them are counted).
MAX_INVALID_SPANS_LISTED = 20

QA_FIELDS = ("question", "context")
# the columns every examples shard has, whatever its task (core.schema)
EXAMPLE_COLUMNS = ("id", "source_id", "variant", "substitutions")
CLASSIFICATION_FIELDS = ("text", "text_pair")

# rich styles: the replaced word is struck through and dim, its replacement bold in the colour of its source
ORIGINAL_STYLE = "strike dim"
REPLACEMENT_STYLES = {"mlm": "bold green", "embedding": "bold cyan"}
OTHER_REPLACEMENT_STYLE = "bold magenta"
ANSWER_STYLE = "underline"


class InspectError(ValueError):
    """An examples folder or an option that inspect cannot work with."""


@dataclasses.dataclass(frozen=True)
class InvalidSpan:
    """An answer whose text is not found at its answer_start in the context of its row."""

    id: str
    answer: int          # index into the row's answers
    text: str
    answer_start: int
    found: str           # what the context holds at that place


@dataclasses.dataclass(frozen=True)
class InspectReport:
    """What `inspect_examples` found.

    Attributes:
        folder: the examples folder.
        task: the examples' task (meta.json's; else qa or classification, from the shard schema).
        totals: counts and rates; keys are listed in `inspect_examples`.
        invalid_span_count: answers whose text is not at their answer_start (0 for classification).
        invalid_spans: the first MAX_INVALID_SPANS_LISTED of them.
        groups: the examples shown: per original, its rows in variant order (original first when present).
        warnings: inconsistencies worth a look that do not make a span invalid.
    """

    folder: str
    task: str
    totals: dict[str, Any]
    invalid_span_count: int
    invalid_spans: list[InvalidSpan]
    groups: list[list[dict[str, Any]]]
    warnings: list[str]


def inspect_examples(folder: Path, example_id: str | None = None, limit: int = 3) -> InspectReport:
    """Read every row of `folder` once: count, check answer spans, and keep the examples to show.

    Args:
        folder: an examples folder (shards/ plus optional meta.json, stats.json, rejects.jsonl).
        example_id: show this example: an original id shows the original and all its variants; a variant id
            shows that variant. None: show the first `limit` originals with their variants.
        limit: how many originals to show when `example_id` is None.

    Returns:
        The report. Its totals hold examples_in (stats.json, else distinct source ids), examples_out (rows),
        originals, variants, variants_per_example, substitutions, substitutions_per_variant,
        substitution_rate (substituted / eligible words, only when stats.json gives both, else None),
        substitutions_by_source and source_share (stats.json when it has them, else counted from the rows),
        misplaced_substitutions (offsets that do not point at the replacement), rejected and rejects_by_reason
        (rejects.jsonl, else meta.json), answer_spans_checked and invalid_answer_spans.

    Raises:
        InspectError: `folder` is not an examples folder (no shards, or shards without the example columns, such
            as a label stage's features), `example_id` is not in the folder, or `limit` < 1.
    """
    if limit < 1:
        raise InspectError(f"limit must be >= 1, got {limit}")
    folder = Path(folder)
    stats = _optional_json(folder / "stats.json")
    meta = _optional_json(folder / "meta.json")
    warnings: list[str] = []

    columns = _example_columns(folder)
    task = meta.get("task") or ("qa" if "context" in columns else "classification")
    fields = QA_FIELDS if task_traits(task).windows else CLASSIFICATION_FIELDS
    rows_out = variants = spans_checked = misplaced = 0
    source_ids: set[str] = set()
    counted_by_source: Counter[str] = Counter()
    invalid: list[InvalidSpan] = []
    invalid_count = 0
    shown: dict[str, list[dict[str, Any]]] = {}
    for batch in iter_shard_batches(folder):
        for row in batch.to_pylist():
            rows_out += 1
            source_ids.add(row["source_id"])
            variants += row["variant"] > 0
            for substitution in row["substitutions"]:
                counted_by_source[substitution["source"]] += 1
            misplaced += sum(_place(row.get(field) or "", row["substitutions"], field)[1] for field in fields)
            misplaced += sum(s["field"] not in fields for s in row["substitutions"])
            if task_traits(task).windows:
                spans_checked += len(row["answers"]["text"])
                for span in answer_span_errors(row):
                    invalid_count += 1
                    if len(invalid) < MAX_INVALID_SPANS_LISTED:
                        invalid.append(span)
            if _wanted(row, example_id, shown, limit):
                shown.setdefault(row["source_id"], []).append(row)
    if example_id is not None and not shown:
        raise InspectError(f"no example with id or source_id {example_id!r} in {folder}")

    examples_in = stats["examples_in"] if "examples_in" in stats else len(source_ids)
    if "examples_out" in stats and stats["examples_out"] != rows_out:
        warnings.append(f"stats.json says examples_out {stats['examples_out']}, but the shards hold {rows_out} rows")
    if misplaced:
        warnings.append(f"{misplaced} substitution(s) have offsets that do not point at their replacement (or "
                        "name a field the row does not have); they are not highlighted")
    by_source = dict(stats.get("substitutions_by_source") or counted_by_source)
    substitutions = sum(by_source.values())
    rejects_by_reason = _rejects_by_reason(folder, meta, warnings)
    rate = None
    if stats.get("eligible_words"):
        rate = stats["substituted_words"] / stats["eligible_words"] if "substituted_words" in stats else None
    totals = {
        "examples_in": examples_in,
        "examples_out": rows_out,
        "originals": rows_out - variants,
        "variants": variants,
        "variants_per_example": variants / examples_in if examples_in else 0.0,
        "substitutions": substitutions,
        "substitutions_per_variant": substitutions / variants if variants else None,
        "substitution_rate": rate,
        "substitutions_by_source": by_source,
        "source_share": {source: n / substitutions for source, n in by_source.items()} if substitutions else {},
        "misplaced_substitutions": misplaced,
        "rejected": sum(rejects_by_reason.values()),
        "rejects_by_reason": rejects_by_reason,
        "answer_spans_checked": spans_checked,
        "invalid_answer_spans": invalid_count,
    }
    groups = [sorted(rows, key=lambda r: r["variant"]) for rows in shown.values()]
    return InspectReport(str(folder), task, totals, invalid_count, invalid, groups, warnings)


def answer_span_errors(row: dict[str, Any]) -> list[InvalidSpan]:
    """The answers of a QA row whose text is not `context[answer_start : answer_start + len(text)]`."""
    context, answers = row["context"], row["answers"]
    return [InvalidSpan(row["id"], i, text, start, context[start:start + len(text)] if start >= 0 else "")
            for i, (text, start) in enumerate(zip(answers["text"], answers["answer_start"]))
            if start < 0 or context[start:start + len(text)] != text]


def mark_substitutions(text: str, substitutions: list[dict[str, Any]], field: str) -> str:
    """`text` with each substitution of `field` written as [original→replacement] (plain-text highlight)."""
    placed, _ = _place(text, substitutions, field)
    parts, end = [], 0
    for s in placed:
        parts += [text[end:s["start"]], f"[{s['original']}→{s['replacement']}]"]
        end = s["end"]
    return "".join(parts) + text[end:]


def highlight_substitutions(text: str, substitutions: list[dict[str, Any]], field: str,
                            answers: Sequence[tuple[int, int]] = ()) -> Text:
    """`text` as rich Text: each replaced word struck and dim, then its replacement bold in its source's colour.

    `answers` are (start, end) spans of `text` to underline; they are given in the offsets of `text` itself.
    """
    placed, _ = _place(text, substitutions, field)
    base = Text(text)
    for start, end in answers:
        base.stylize(ANSWER_STYLE, start, end)
    out, end = Text(), 0
    for s in placed:
        out.append_text(base[end:s["start"]])
        out.append(s["original"], style=ORIGINAL_STYLE)
        out.append(" ")
        replacement = base[s["start"]:s["end"]]
        replacement.stylize(REPLACEMENT_STYLES.get(s["source"], OTHER_REPLACEMENT_STYLE))
        out.append_text(replacement)
        end = s["end"]
    out.append_text(base[end:])
    return out


def _place(text: str, substitutions: list[dict[str, Any]], field: str) -> tuple[list[dict[str, Any]], int]:
    """The substitutions of `field` whose offsets point at their replacement in `text`, by start (no overlaps),
    and how many of that field do not."""
    placed, misplaced, end = [], 0, 0
    for s in sorted((s for s in substitutions if s["field"] == field), key=lambda s: s["start"]):
        if s["start"] >= end and text[s["start"]:s["end"]] == s["replacement"]:
            placed.append(s)
            end = s["end"]
        else:
            misplaced += 1
    return placed, misplaced


def _wanted(row: dict[str, Any], example_id: str | None, shown: dict[str, list], limit: int) -> bool:
    if example_id is not None:
        return example_id in (row["id"], row["source_id"])
    return row["source_id"] in shown or len(shown) < limit


def _example_columns(folder: Path) -> list[str]:
    """The columns of `folder`'s first shard, once they are known to be an examples shard's."""
    try:
        first = shard_paths(folder)[0]
    except FileNotFoundError as err:
        raise InspectError(f"{folder} is not an examples folder: {err}") from None
    columns = pq.read_schema(first).names
    missing = [name for name in EXAMPLE_COLUMNS if name not in columns]
    if missing:
        raise InspectError(f"{folder} is not an examples folder: its shards have no {', '.join(missing)} column(s) "
                           f"(found {', '.join(columns)}); inspect the output of a prepare or augment stage")
    return columns


def _optional_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InspectError(f"{path} cannot be read: {err}") from None
    if not isinstance(value, dict):
        raise InspectError(f"{path} holds a JSON {type(value).__name__}, expected an object")
    return value


def _rejects_by_reason(folder: Path, meta: dict[str, Any], warnings: list[str]) -> dict[str, int]:
    """Rejects per reason from rejects.jsonl when present, else from meta.json's counts."""
    path = folder / "rejects.jsonl"
    if not path.exists():
        return dict((meta.get("counts") or {}).get("rejected_by_reason") or {})
    reasons: Counter[str] = Counter()
    with open(path, encoding="utf-8", errors="replace") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                reasons[json.loads(line).get("reason", "(no reason)")] += 1
            except (json.JSONDecodeError, AttributeError):
                warnings.append(f"{path} line {lineno} is not a JSON object")
    return dict(sorted(reasons.items()))


# ---------------------------------------------------------------------------------------------------------------
# Showing a report


def _fields(report: InspectReport) -> tuple[str, ...]:
    return QA_FIELDS if task_traits(report.task).windows else CLASSIFICATION_FIELDS


def _summary_lines(report: InspectReport) -> list[str]:
    t = report.totals
    lines = [f"examples folder: {report.folder} ({report.task})",
             f"examples in: {t['examples_in']:,}  out: {t['examples_out']:,}  "
             f"variants per example: {t['variants_per_example']:.2f}"]
    if t["substitution_rate"] is not None:
        subs = f"substitution rate: {t['substitution_rate']:.1%} of eligible words"
    elif t["substitutions_per_variant"] is not None:
        subs = f"substitutions per variant: {t['substitutions_per_variant']:.2f}"
    else:
        subs = "no variants"
    share = ", ".join(f"{source} {share:.1%}" for source, share in sorted(t["source_share"].items()))
    lines.append(f"{subs}  ({t['substitutions']:,} substitutions{': ' + share if share else ''})")
    reasons = ", ".join(f"{reason} {n:,}" for reason, n in t["rejects_by_reason"].items())
    lines.append(f"rejects: {t['rejected']:,}{' (' + reasons + ')' if reasons else ''}")
    if task_traits(report.task).windows:
        lines.append(f"answer spans: {t['answer_spans_checked']:,} checked, {report.invalid_span_count:,} invalid")
        lines += [f"  invalid: {s.id} answer {s.answer}: {s.text!r} at {s.answer_start}, context has {s.found!r}"
                  for s in report.invalid_spans]
    lines += [f"warning: {w}" for w in report.warnings]
    return lines


def _describe_row(row: dict[str, Any]) -> str:
    kind = "original" if row["variant"] == 0 else f"variant {row['variant']}"
    return f"{kind} {row['id']} ({len(row['substitutions'])} substitutions)"


def _answers_text(row: dict[str, Any]) -> str:
    pairs = [f"{text!r}@{start}" for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"])]
    return ", ".join(pairs) or "(unanswerable)"


def render_plain(report: InspectReport) -> str:
    """The report as plain text; substitutions written as [original→replacement]."""
    lines = _summary_lines(report)
    for rows in report.groups:
        lines += ["", f"== {rows[0]['source_id']}: {len(rows)} row(s)"]
        for row in rows:
            lines.append(f"  [{_describe_row(row)}]")
            for field in _fields(report):
                if row.get(field) is not None:
                    lines.append(f"    {field}: {mark_substitutions(row[field], row['substitutions'], field)}")
            if task_traits(report.task).windows:
                lines.append(f"    answers: {_answers_text(row)}")
            else:
                lines.append(f"    label: {row['label']}")
    return "\n".join(lines)


def render_rich(report: InspectReport) -> Group:
    """The report for a terminal: per original, a table with one row per variant, fields side by side."""
    parts: list[Any] = [Text("\n".join(_summary_lines(report)))]
    legend = Text("legend: ")
    legend.append("replaced", style=ORIGINAL_STYLE).append(" ")
    for source, style in REPLACEMENT_STYLES.items():
        legend.append(source, style=style).append(" ")
    if task_traits(report.task).windows:
        legend.append("answer", style=ANSWER_STYLE)
    parts.append(legend)
    fields = _fields(report)
    for rows in report.groups:
        table = Table(title=f"{rows[0]['source_id']}: {len(rows)} row(s)", show_lines=True, expand=True)
        table.add_column("row", ratio=2)
        for field in fields:
            if any(row.get(field) is not None for row in rows):
                table.add_column(field, ratio=6 if field == "context" else 3)
        table.add_column("answers" if task_traits(report.task).windows else "label", ratio=2)
        for row in rows:
            kind = "original" if row["variant"] == 0 else f"variant {row['variant']}"
            cells = [Text(f"{kind}\n{row['id']}\n{len(row['substitutions'])} substitutions")]
            for field in fields:
                if any(r.get(field) is not None for r in rows):
                    spans = []
                    if field == "context":
                        answers = row["answers"]
                        spans = [(s, s + len(t)) for t, s in zip(answers["text"], answers["answer_start"])]
                    cells.append(highlight_substitutions(row.get(field) or "", row["substitutions"], field, spans))
            cells.append(Text(_answers_text(row) if task_traits(report.task).windows else str(row["label"])))
            table.add_row(*cells)
        parts.append(table)
    return Group(*parts)


def report_json(report: InspectReport) -> dict[str, Any]:
    """The report as one JSON-serialisable object; each example shown carries its fields with plain markers."""
    examples = []
    for rows in report.groups:
        for row in rows:
            marked = {field: mark_substitutions(row[field], row["substitutions"], field)
                      for field in _fields(report) if row.get(field) is not None}
            examples.append({**row, "marked": marked})
    return {
        "folder": report.folder,
        "task": report.task,
        "totals": report.totals,
        "invalid_answer_spans": report.invalid_span_count,
        "invalid_answer_span_examples": [dataclasses.asdict(s) for s in report.invalid_spans],
        "warnings": report.warnings,
        "examples": examples,
    }


def print_report(report: InspectReport, mode: str) -> None:
    """Print `report` as "json", "rich" (terminal colours and tables) or "plain" text."""
    if mode == "json":
        print(json.dumps(report_json(report), ensure_ascii=False, indent=2))
    elif mode == "rich":
        Console().print(render_rich(report))
    else:
        print(render_plain(report))

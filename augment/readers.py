"""Reading training data into example shards: SQuAD JSON, MRQA JSONL, Hugging Face datasets, TSV/CSV and JSONL.

`read_examples` is the entry point for a source. It turns a `DataSource` into an examples folder::

    out_dir/
      shards/part-00000.parquet ...   rows in the task's schema (core.schema), variant 0, source_id == id
      rejects.jsonl                   one JSON object per bad record: source, location, id, reason, detail, record
      meta.json                       task, label_names (in id order), source, counts; written last

A file whose name ends in .gz is read through gzip (the MRQA shared task ships `<dataset>.jsonl.gz`). Bad
records are never dropped silently: each one is written to rejects.jsonl with a reason from
`REJECT_REASONS`, and `read == written + rejected` always holds. A file that cannot be read at all (missing,
broken JSON, not UTF-8 text, a needed column absent) raises `DataReadError` and leaves no outputs behind.

Example::

    result = read_examples(DataSource(path="dev-v2.0.json"), "qa", None, Path("runs/x/examples"))
    result.written, result.rejected_by_reason

A job with several training sources reads each into a folder of its own, then `mix_examples` writes them into one
training set, each example used as many times as its source's weight says.

Two more functions look at a source without writing anything, for checks before a job starts (jobs.preflight):
`peek_source` says whether the head of a local source holds the task's data in the layout its format reads, and
`read_label_names` finds the label names `read_examples` would use.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import itertools
import json
import math
import os
import re
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from augment.spec import DataSource
from core.schema import SUBSTITUTION, schema_for
from core.shards import DEFAULT_ROWS_PER_SHARD, SHARD_GLOB, ShardWriter, atomic_output, iter_shard_batches, write_json
from core.tasks import Task, task_traits

# Texts up to 100k characters are ordinary (long articles); beyond this a record is far more likely a broken
# file (a whole book in one cell, a missing closing quote in a CSV) than an example, so it is rejected.
MAX_TEXT_CHARS = 1_000_000
# Raw records in rejects.jsonl are cut to this many characters: enough to find and fix the record.
MAX_REJECT_RECORD_CHARS = 2_000
# A line-based file with more undecodable lines than this share is not UTF-8 text (say, Latin-1): fail the read
# instead of rejecting most of it line by line.
MAX_BAD_UTF8_SHARE = 0.5

REJECT_REASONS: dict[str, str] = {
    "missing_field": "a required field is absent, null or empty",
    "wrong_type": "a field holds the wrong JSON type (say, a number where text is expected)",
    "malformed_line": "a TSV/CSV line with the wrong number of fields, or a JSONL line that is not a JSON object",
    "invalid_utf8": "bytes that are not UTF-8, or a lone surrogate escape in JSON",
    "empty_context": "QA: the context is empty or only whitespace",
    "empty_question": "QA: the question is empty or only whitespace",
    "empty_text": "classification: the text (or text pair) is empty or only whitespace",
    "empty_answer": "QA: an answer text is empty",
    "answer_out_of_range": "QA: an answer_start is negative or the answer runs past the end of the context",
    "answer_mismatch": "QA: the answer text is not found at its answer_start in the context",
    "impossible_with_answers": "QA: is_impossible is true but answers are given",
    "answerable_without_answers": "QA: is_impossible is false but there are no answers",
    "duplicate_id": "the id was already used by an earlier record (the first one is kept)",
    "unknown_label": "classification: the label is neither one of label_names nor a valid label id",
    "bad_score": "regression: the label is not a finite number",
    "too_long": f"a text is longer than {MAX_TEXT_CHARS:,} characters",
}



class DataReadError(ValueError):
    """A data file that cannot be read at all: missing, broken JSON, not UTF-8 text, or a needed column absent."""


@dataclasses.dataclass(frozen=True)
class ReadResult:
    """What `read_examples` wrote; `dataclasses.asdict` of it is JSON-serialisable.

    Attributes:
        task: "qa" or "classification".
        source: the path (or hub name) that was read.
        label_names: classification: label names in id order; None for QA.
        read: records read from the source (limit applied); always written + rejected.
        written: examples written to the shards.
        rejected: records written to rejects.jsonl.
        rejected_by_reason: rejected records per reason (keys from REJECT_REASONS).
        out_dir: the examples folder.
        shards: the shard files, in order.
        rejects_path: rejects.jsonl (present even when empty).
        meta_path: meta.json.
    """

    task: Task
    source: str
    label_names: list[str] | None
    read: int
    written: int
    rejected: int
    rejected_by_reason: dict[str, int]
    out_dir: str
    shards: list[str]
    rejects_path: str
    meta_path: str


def read_examples(source: DataSource, task: Task, label_names: list[str] | None, out_dir: Path,
                  rows_per_shard: int = DEFAULT_ROWS_PER_SHARD) -> ReadResult:
    """Read `source`, check every record, and write the examples folder `out_dir` (layout in the module doc).

    Args:
        source: where the data is and how to read it; `source.format` picks the reader.
        task: "qa" (SQuAD-style context/question/answers) or "classification" (text, optional pair, label).
        label_names: classification: label names in id order; labels in the data may then be names or ids.
            None: ids become "0", "1", ... when the labels are integers, else the sorted distinct names.
        out_dir: the examples folder; outputs of an earlier read there are replaced.
        rows_per_shard: rows per Parquet shard.

    Returns:
        The counts, label names and paths written.

    Raises:
        DataReadError: the source cannot be read at all; no outputs are left in `out_dir`.
    """
    out_dir = Path(out_dir)
    shards_dir, rejects_path, meta_path = out_dir / "shards", out_dir / "rejects.jsonl", out_dir / "meta.json"
    _clear_outputs(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        items, class_label_names = _items(source, task)
        items = tqdm(itertools.islice(items, source.limit), desc=f"reading {Path(source.path).name}",
                     unit=" records", total=source.limit, disable=not sys.stderr.isatty())
        with atomic_output(rejects_path) as temp, open(temp, "w", encoding="utf-8") as handle:
            log = _RejectLog(handle, source.path)
            writer = ShardWriter(shards_dir, schema_for(task), rows_per_shard)
            if task_traits(task).windows:
                written = _write_qa(items, writer, log)
            elif task_traits(task).classes:
                written, label_names = _write_classification(items, writer, log, label_names, class_label_names)
            else:
                written = _write_scores(items, writer, log)
            shards = writer.close()
    except BaseException:
        _clear_outputs(out_dir)  # a failed read leaves nothing a later stage could mistake for its output
        raise
    result = ReadResult(
        task=task, source=source.path, label_names=label_names if task_traits(task).classes else None,
        read=log.read, written=written, rejected=sum(log.by_reason.values()),
        rejected_by_reason=dict(sorted(log.by_reason.items())), out_dir=str(out_dir),
        shards=[str(p) for p in shards], rejects_path=str(rejects_path), meta_path=str(meta_path))
    if result.read != result.written + result.rejected:
        raise RuntimeError(f"internal error: read {result.read} != written {result.written} + rejected "
                           f"{result.rejected}")
    write_json(meta_path, {
        "task": task,
        "label_names": result.label_names,
        "source": source.model_dump(mode="json"),
        "counts": {"read": result.read, "written": result.written, "rejected": result.rejected,
                   "rejected_by_reason": result.rejected_by_reason},
        "shards": [p.name for p in shards],
        "max_text_chars": MAX_TEXT_CHARS,
    })
    return result


@dataclasses.dataclass(frozen=True)
class WeightedSet:
    """An examples folder written by `read_examples`, its name, and how many times each example is used."""

    name: str
    examples_dir: Path
    weight: float = 1.0


def mix_examples(sets: list[WeightedSet], task: Task, out_dir: Path, seed: int,
                 rows_per_shard: int = DEFAULT_ROWS_PER_SHARD) -> ReadResult:
    """Write the examples of several folders into one, each example used `weight` times, set after set.

    An example is used floor(weight) times, and once more with probability weight - floor(weight), drawn from
    `seed` and the set's position, so a weight of 0.5 keeps a random half and 1.5 repeats a random half. Its first
    use keeps its id; the k-th repeat is `<id>#rep<k>` (its own source_id, so augmentation varies it on its own).
    An id already used by an earlier set is rejected (`duplicate_id`) into out_dir/rejects.jsonl.

    Returns:
        The counts over all sets (`read`, `rejected` and `written` count examples, before weighting, so that read
        == written + rejected); meta.json adds `rows` (examples after weighting) and each set's counts.
    """
    out_dir = Path(out_dir)
    shards_dir, rejects_path, meta_path = out_dir / "shards", out_dir / "rejects.jsonl", out_dir / "meta.json"
    _clear_outputs(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metas = [json.loads((weighted.examples_dir / "meta.json").read_text(encoding="utf-8")) for weighted in sets]
    seen: set[str] = set()
    per_set: dict[str, dict[str, Any]] = {}
    rows_written = 0
    try:
        with atomic_output(rejects_path) as temp, open(temp, "w", encoding="utf-8") as handle:
            log = _RejectLog(handle, "+".join(weighted.name for weighted in sets))
            writer = ShardWriter(shards_dir, schema_for(task), rows_per_shard)
            for index, (weighted, meta) in enumerate(zip(sets, metas)):
                rng = np.random.default_rng([seed, index])
                whole, fraction = divmod(weighted.weight, 1.0)
                used = 0
                for batch in iter_shard_batches(weighted.examples_dir):
                    copies = int(whole) + (rng.random(batch.num_rows) < fraction)  # (rows,)
                    for row, count in zip(batch.to_pylist(), copies.tolist()):
                        if row["id"] in seen:
                            log.add(_Item(f"{weighted.name}:{row['id']}", row, lambda: row),
                                    _BadRecord("duplicate_id", f"id {row['id']!r} is used by an earlier set",
                                               row["id"]))
                            continue
                        seen.add(row["id"])
                        for k in range(count):
                            repeat = row if k == 0 else {**row, "id": f"{row['id']}#rep{k}",
                                                         "source_id": f"{row['id']}#rep{k}"}
                            writer.add(repeat)
                        used += count
                rows_written += used
                per_set[weighted.name] = {"weight": weighted.weight, **meta["counts"], "rows": used}
            shards = writer.close()
    except BaseException:
        _clear_outputs(out_dir)
        raise
    read = sum(meta["counts"]["read"] for meta in metas)
    by_reason: Counter[str] = Counter(log.by_reason)
    for meta in metas:
        by_reason.update(meta["counts"]["rejected_by_reason"])
    rejected = sum(by_reason.values())
    result = ReadResult(
        task=task, source="+".join(weighted.name for weighted in sets), label_names=metas[0]["label_names"],
        read=read, written=read - rejected, rejected=rejected, rejected_by_reason=dict(sorted(by_reason.items())),
        out_dir=str(out_dir), shards=[str(p) for p in shards], rejects_path=str(rejects_path),
        meta_path=str(meta_path))
    write_json(meta_path, {
        "task": task,
        "label_names": result.label_names,
        "source": [meta["source"] for meta in metas],
        "counts": {"read": result.read, "written": result.written, "rejected": result.rejected,
                   "rejected_by_reason": result.rejected_by_reason, "rows": rows_written},
        "sets": per_set,
        "shards": [p.name for p in shards],
        "max_text_chars": MAX_TEXT_CHARS,
    })
    return result


# ---------------------------------------------------------------------------------------------------------------
# Looking before reading: the head of a source and its label names, with nothing written

# `peek_source` reads at most this much of a file: a header row, the first records of a JSON Lines file or the start
# of a SQuAD JSON, never the whole of a large file.
PEEK_BYTES = 1 << 20
_SQUAD_FOUND = "SQuAD JSON (QA data: an object whose 'data' lists articles with paragraphs and questions)"
_EXPECTED = {"qa": "SQuAD JSON, MRQA JSONL (format mrqa), JSONL records with fields context, question, answers, "
                    "or an HF dataset",
             "classification": "TSV, CSV or JSONL records with a text and a label column, or an HF dataset",
             "regression": "TSV, CSV or JSONL records with a text and a numeric label column, or an HF dataset"}


@dataclasses.dataclass(frozen=True)
class SourcePeek:
    """What the head of a local data source holds, as `peek_source` found it.

    Attributes:
        found: the head in words, e.g. "JSON Lines records with fields label, sentence".
        problem: why `read_examples` cannot read the source for the task, saying what was found and the fix; None
            when the head reads as the task's data.
    """

    found: str
    problem: str | None


def peek_source(source: DataSource, task: Task) -> SourcePeek | None:
    """Whether a local `source` holds `task` data in the layout `source.format` reads, from its head only.

    A file's first PEEK_BYTES are read (the format is told by content, not by suffix: a SQuAD file named .jsonl is
    found to be SQuAD); a local HF dataset is opened for its columns. Records are not checked one by one: that is
    `read_examples`' work, and a bad record is a reject, not a failed job.

    Returns:
        What was found and any problem; None for a hub dataset, which is not fetched here.
    """
    columns = _Columns(source.text_column, source.text_pair_column, source.label_column)
    needed = _MRQA_COLUMNS if source.format == "mrqa" else columns.needed_for(task)
    path = Path(source.path)
    if source.format == "hf":
        return _peek_hf(source, task, columns) if path.exists() else None
    try:
        head, whole = _head_text(path)
    except DataReadError as err:
        return SourcePeek("an unreadable file", str(err))
    layout = _head_layout(head, whole, source.format)
    if layout is None:  # one record longer than the head: left to the reader
        return SourcePeek(f"a first line longer than {PEEK_BYTES:,} bytes", None)
    found, fields = layout
    if found == _SQUAD_FOUND:
        if not task_traits(task).windows:
            return SourcePeek(found, f"{path}: holds {found}, but the task is {task}; set task: qa, or give "
                                     f"{task} data ({_EXPECTED[task]})")
        if source.format != "squad":
            return SourcePeek(found, f"{path}: holds {found}, but format is {source.format}; set format: squad")
        return SourcePeek(found, None)
    if source.format == "squad":
        fix = "; set format: jsonl" if fields is not None else f"; give {task} data ({_EXPECTED[task]})"
        task_note = "" if task_traits(task).windows else f", which is QA data, but the task is {task}"
        return SourcePeek(found, f"{path}: format squad (the default for .json files) reads SQuAD JSON{task_note}; "
                                 f"found {found}{fix}")
    if fields is None:
        return SourcePeek(found, f"{path}: format {source.format} cannot read it: found {found}; expected "
                                 f"{_EXPECTED[task]}")
    if source.format == "mrqa":
        if not task_traits(task).windows:
            return SourcePeek(found, f"{path}: MRQA files hold QA data, but the task is {task}; set task: qa")
        if fields == ["header"]:  # only the header fits in the head: the reader checks the rest
            return SourcePeek(found, None)
    try:
        if source.format in ("tsv", "csv"):
            # the reader's own header checks (and its refusal of QA data in TSV/CSV), on the header row only
            next(_delimited_items(path, task, columns, "\t" if source.format == "tsv" else ","), None)
        else:
            _require_columns(f"{path} (first records)", fields, needed)
    except DataReadError as err:
        return SourcePeek(found, f"{err}{_other_task_hint(fields, task, columns)}")
    return SourcePeek(found, None)


def read_label_names(source: DataSource, label_names: list[str] | None = None) -> list[str]:
    """The label names, in id order, that `read_examples(source, "classification", label_names, ...)` gives.

    `label_names` when given, else the names an HF ClassLabel column fixes, else those inferred from every label
    that reads (ids "0".."max", or the sorted distinct names): a pass over the whole source, writing nothing.

    Raises:
        DataReadError: the source cannot be read at all.
    """
    if label_names:
        return list(label_names)
    items, class_label_names = _items(source, "classification")
    if class_label_names is not None:
        return class_label_names
    with open(os.devnull, "w", encoding="utf-8") as nowhere:
        rows = _checked(itertools.islice(items, source.limit), _RejectLog(nowhere, source.path),
                        _check_text_row)
        return _infer_label_names([row["label"] for _, row in rows])


def _head_text(path: Path) -> tuple[str, bool]:
    """The first PEEK_BYTES of `path` as text, and whether that is the whole file."""
    with _open_binary(path) as handle:
        data = handle.read(PEEK_BYTES + 1)
    whole = len(data) <= PEEK_BYTES
    data = data[:PEEK_BYTES]
    _check_text_start(path, data)
    if b"\x00" in data:
        raise DataReadError(f"{path}: holds NUL bytes: it is binary or UTF-16/32, not UTF-8 text")
    # a cut in the middle of a character only spoils that character
    return data.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "replace"), whole


def _head_layout(head: str, whole: bool, file_format: str | None) -> tuple[str, list[str] | None] | None:
    """What the head of a file holds, in words, and the fields (or header columns) of its records, if it has any;
    None when its first line does not end within the head."""
    start = head.lstrip()
    if start.startswith("{") and re.search(r'"data"\s*:\s*\[', head) and re.search(r'"(paragraphs|qas)"', head):
        return _SQUAD_FOUND, None
    lines = head.splitlines(keepends=True)
    if not whole:
        lines = lines[:-1]  # the last line may be cut short
    lines = [line for line in lines if line.strip()]
    if not lines:
        return ("an empty file", None) if whole else None
    if file_format in ("tsv", "csv"):
        delimiter = "\t" if file_format == "tsv" else ","
        quoting = csv.QUOTE_NONE if file_format == "tsv" else csv.QUOTE_MINIMAL
        header = next(csv.reader([lines[0].rstrip("\r\n")], delimiter=delimiter, quoting=quoting), [])
        return f"a header row with columns {', '.join(header)}", header
    records = []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        elif i == 0:  # JSON Lines starts with an object; a bad line further on is only a reject
            break
    if records:
        fields = sorted({key for record in records for key in record})
        return f"JSON Lines records with fields {', '.join(fields)}", fields
    if start[:1] in ("{", "["):
        return f"JSON that is neither SQuAD nor one object per line (it starts {_short(start[:40])})", None
    return f"text whose first line is {_short(lines[0].rstrip())}", None


def _peek_hf(source: DataSource, task: Task, columns: _Columns) -> SourcePeek:
    try:
        dataset = _load_hf(source)
    except DataReadError as err:
        return SourcePeek("an unreadable dataset", str(err))
    found = f"an HF dataset with columns {', '.join(dataset.column_names)}"
    try:
        _require_columns(f"{source.path} (split {source.split})", dataset.column_names, columns.needed_for(task))
    except DataReadError as err:
        return SourcePeek(found, f"{err}{_other_task_hint(dataset.column_names, task, columns)}")
    return SourcePeek(found, None)


def _other_task_hint(fields: list[str], task: Task, columns: _Columns) -> str:
    """A note when the fields found are those of the other task: the likelier mistake is the task."""
    if not task_traits(task).windows and set(_QA_COLUMNS) <= set(fields):
        return "; these are QA fields (context, question, answers): set task: qa"
    if task_traits(task).windows and set(columns.needed) <= set(fields):
        return f"; these are classification fields ({', '.join(columns.needed)}): set task: classification"
    return ""


# ---------------------------------------------------------------------------------------------------------------
# The read loop: items in, checked rows to the shard writer, rejects to rejects.jsonl


class _BadRecord(Exception):
    """One record that cannot become an example; `reason` is a key of REJECT_REASONS."""

    def __init__(self, reason: str, detail: str, example_id: str | None = None):
        if reason not in REJECT_REASONS:
            raise ValueError(f"unknown reject reason {reason!r}; valid: {', '.join(REJECT_REASONS)}")
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.example_id = reason, detail, example_id


@contextmanager
def _known_id(example_id: str) -> Iterator[None]:
    """Name `example_id` in any _BadRecord raised inside the block."""
    try:
        yield
    except _BadRecord as bad:
        bad.example_id = bad.example_id or example_id
        raise


@dataclasses.dataclass(frozen=True)
class _Item:
    """One input record: where it is, its raw form (for rejects.jsonl), and how to turn it into a row.

    `convert` returns a row dict in the task's schema (classification: the label still raw) or raises
    _BadRecord; format readers yield items lazily so that a large file is never held as rows in memory.
    """

    location: str
    raw: Any
    convert: Callable[[], dict[str, Any]]


def _fail(reason: str, detail: str) -> dict[str, Any]:
    raise _BadRecord(reason, detail)


class _RejectLog:
    """Counts records read and writes one JSON line per rejected record."""

    def __init__(self, handle, source: str):
        self.handle, self.source = handle, source
        self.read = 0
        self.by_reason: Counter[str] = Counter()

    def add(self, item: _Item, bad: _BadRecord) -> None:
        self.by_reason[bad.reason] += 1
        raw = item.raw if isinstance(item.raw, str) else json.dumps(item.raw, ensure_ascii=False, default=str)
        raw = _printable(raw)
        self.handle.write(json.dumps({
            "source": self.source, "location": item.location,
            "id": None if bad.example_id is None else _printable(bad.example_id),
            "reason": bad.reason, "detail": _printable(bad.detail),
            "record": raw[:MAX_REJECT_RECORD_CHARS], "truncated": len(raw) > MAX_REJECT_RECORD_CHARS,
        }, ensure_ascii=False) + "\n")


def _checked(items, log: _RejectLog, check: Callable[[dict[str, Any]], None]) -> Iterator[tuple[_Item, dict]]:
    """Rows that convert and pass `check`, first of each id only; everything else goes to `log`."""
    first_seen: dict[str, str] = {}
    for item in items:
        log.read += 1
        try:
            row = item.convert()
            with _known_id(row["id"]):
                check(row)
            if row["id"] in first_seen:
                raise _BadRecord("duplicate_id", f"id {row['id']!r} was first used at {first_seen[row['id']]}",
                                 row["id"])
            first_seen[row["id"]] = item.location
        except _BadRecord as bad:
            log.add(item, bad)
            continue
        yield item, row


def _write_qa(items, writer: ShardWriter, log: _RejectLog) -> int:
    written = 0
    for _, row in _checked(items, log, _check_qa):
        writer.add(row)
        written += 1
    return written


def _write_scores(items, writer: ShardWriter, log: _RejectLog) -> int:
    """Regression rows, streamed: each label read as a finite number (TSV cells are strings)."""
    return _write_labelled(_checked(items, log, _check_text_row), writer, log, _score)


def _score(label: Any) -> float:
    try:
        value = float(label)
    except ValueError:
        raise _BadRecord("bad_score", f"label {_short(label)} is not a number") from None
    if not math.isfinite(value):
        raise _BadRecord("bad_score", f"label {_short(label)} is not a finite number")
    return value


def _write_classification(items, writer: ShardWriter, log: _RejectLog, label_names: list[str] | None,
                          class_label_names: list[str] | None) -> tuple[int, list[str]]:
    # Label ids can only be assigned once every label is known (names sorted), so rows wait in memory.
    kept = list(_checked(items, log, _check_text_row))
    names = label_names or class_label_names or _infer_label_names([row["label"] for _, row in kept])
    index = {name: i for i, name in enumerate(names)}
    return _write_labelled(kept, writer, log, lambda label: _label_id(label, names, index)), list(names)


def _write_labelled(rows, writer: ShardWriter, log: _RejectLog, convert: Callable[[Any], Any]) -> int:
    """Write checked (item, row) pairs with each label converted; a label that does not convert is a reject."""
    written = 0
    for item, row in rows:
        try:
            with _known_id(row["id"]):
                row["label"] = convert(row["label"])
        except _BadRecord as bad:
            log.add(item, bad)
            continue
        writer.add(row)
        written += 1
    return written


def _clear_outputs(out_dir: Path) -> None:
    """Remove what an earlier read wrote to `out_dir` (meta.json first: it marks a finished read)."""
    (out_dir / "meta.json").unlink(missing_ok=True)
    (out_dir / "rejects.jsonl").unlink(missing_ok=True)
    for shard in (out_dir / "shards").glob(SHARD_GLOB):
        shard.unlink()


# ---------------------------------------------------------------------------------------------------------------
# Checks shared by every format


def _check_text(value: str, field: str, empty_reason: str) -> None:
    if not _is_utf8(value):
        raise _BadRecord("invalid_utf8", f"{field} is not valid UTF-8: {_printable(value)[:80]}")
    if not value.strip():
        raise _BadRecord(empty_reason, f"{field} is empty")
    if len(value) > MAX_TEXT_CHARS:
        raise _BadRecord("too_long", f"{field} has {len(value):,} characters, more than {MAX_TEXT_CHARS:,}")


def _check_qa(row: dict[str, Any]) -> None:
    """Check a QA row in place; fill `is_impossible` when the source left it out (no answers: impossible)."""
    for field in ("id", "title"):
        if not _is_utf8(row[field]):
            raise _BadRecord("invalid_utf8", f"{field} is not valid UTF-8")
    _check_text(row["context"], "context", "empty_context")
    _check_text(row["question"], "question", "empty_question")
    context, answers = row["context"], row["answers"]
    for i, (text, start) in enumerate(zip(answers["text"], answers["answer_start"])):
        if not _is_utf8(text):
            raise _BadRecord("invalid_utf8", f"answer {i} is not valid UTF-8")
        if not text:
            raise _BadRecord("empty_answer", f"answer {i} has an empty text")
        if start < 0 or start + len(text) > len(context):
            raise _BadRecord("answer_out_of_range", f"answer {i} {text!r} at {start}..{start + len(text)} lies "
                                                    f"outside the context (0..{len(context)})")
        found = context[start:start + len(text)]
        if found != text:
            raise _BadRecord("answer_mismatch", f"answer {i} is {text!r} but the context at {start} reads "
                                                f"{found!r}")
    if not all(map(_is_utf8, row.get("gold_answers") or [])):
        raise _BadRecord("invalid_utf8", "a gold answer is not valid UTF-8")
    if row["is_impossible"] is None:
        row["is_impossible"] = not answers["text"]
    elif row["is_impossible"] and answers["text"]:
        raise _BadRecord("impossible_with_answers", f"is_impossible is true but {len(answers['text'])} "
                                                    "answer(s) are given")
    elif not row["is_impossible"] and not answers["text"]:
        raise _BadRecord("answerable_without_answers", "is_impossible is false but there are no answers")


def _check_text_row(row: dict[str, Any]) -> None:
    if not _is_utf8(row["id"]):
        raise _BadRecord("invalid_utf8", "id is not valid UTF-8")
    _check_text(row["text"], "text", "empty_text")
    if row["text_pair"] is not None:
        _check_text(row["text_pair"], "text_pair", "empty_text")
    if isinstance(row["label"], str) and not _is_utf8(row["label"]):
        raise _BadRecord("invalid_utf8", "label is not valid UTF-8")


def _is_utf8(text: str) -> bool:
    """False when `text` holds lone surrogates: undecodable bytes (surrogateescape) or a bad JSON escape."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(text: str) -> str:
    """`text` safe to write as UTF-8: undecodable bytes shown as \\xNN, other lone surrogates as \\udNNN."""
    if _is_utf8(text):
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


# ---------------------------------------------------------------------------------------------------------------
# Labels

_INT = re.compile(r"-?[0-9]+")


def _as_int(value: Any) -> int | None:
    """`value` as a label id when it is an integer or a string of digits (TSV cells are always strings)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INT.fullmatch(value):
        return int(value)
    return None


def _infer_label_names(labels: list[Any]) -> list[str]:
    """Integer labels keep their ids as names "0".."max"; any other labels: the sorted distinct names."""
    ids = [_as_int(label) for label in labels]
    if all(i is not None for i in ids):
        return [str(i) for i in range(max(ids, default=-1) + 1)]
    return sorted({str(label) for label in labels})


def _label_id(label: Any, names: list[str], index: dict[str, int]) -> int:
    if isinstance(label, str) and label in index:
        return index[label]
    label_id = _as_int(label)
    if label_id is not None and 0 <= label_id < len(names):
        return label_id
    raise _BadRecord("unknown_label", f"label {label!r} is neither one of {names} nor an id in "
                                      f"0..{len(names) - 1}")


# ---------------------------------------------------------------------------------------------------------------
# Turning one raw record into a row

_ABSENT = object()


def _str_field(record: dict[str, Any], key: str, required: bool = True) -> str:
    value = record.get(key, _ABSENT)
    if value is _ABSENT or value is None:
        if required:
            raise _BadRecord("missing_field", f"no {key!r}")
        return ""
    if not isinstance(value, str):
        raise _BadRecord("wrong_type", f"{key!r} is {type(value).__name__} {_short(value)}, expected a string")
    return value


def _example_id(record: dict[str, Any], default_id: str | None) -> str:
    """The record's own `id` (a string or integer) or, when it has none, `default_id`."""
    value = record.get("id", _ABSENT)
    if value is _ABSENT and default_id is not None:
        return default_id
    if value is _ABSENT or value is None or value == "":
        raise _BadRecord("missing_field", "no 'id'")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise _BadRecord("wrong_type", f"'id' is {type(value).__name__} {_short(value)}, expected a string")
    return value


def _answer_list(texts: Any, starts: Any) -> dict[str, list]:
    """Answers in squad_v2 layout, each text a string and each start an integer."""
    if not isinstance(texts, list) or not isinstance(starts, list):
        raise _BadRecord("wrong_type", "answers.text and answers.answer_start must be lists")
    if len(texts) != len(starts):
        raise _BadRecord("wrong_type", f"{len(texts)} answer texts but {len(starts)} answer starts")
    for i, (text, start) in enumerate(zip(texts, starts)):
        if not isinstance(text, str):
            raise _BadRecord("wrong_type", f"answer {i} text is {type(text).__name__}, expected a string")
        if not isinstance(start, int) or isinstance(start, bool):
            raise _BadRecord("wrong_type", f"answer {i} answer_start is {type(start).__name__} {_short(start)}, "
                                           "expected an integer")
    return {"text": texts, "answer_start": starts}


_SUBSTITUTION_TYPES = {f.name: int if pa.types.is_integer(f.type) else str for f in SUBSTITUTION}


def _provenance(record: dict[str, Any], example_id: str) -> dict[str, Any]:
    """source_id, variant and substitutions: as given (an exported augmented set), else those of an original."""
    source_id = record.get("source_id", example_id)
    variant = record.get("variant", 0)
    substitutions = record.get("substitutions", [])
    if not isinstance(source_id, str):
        raise _BadRecord("wrong_type", f"'source_id' is {type(source_id).__name__}, expected a string")
    if not isinstance(variant, int) or isinstance(variant, bool) or variant < 0:
        raise _BadRecord("wrong_type", f"'variant' is {_short(variant)}, expected an integer >= 0")
    if not isinstance(substitutions, list) or not all(
            isinstance(s, dict) and s.keys() == _SUBSTITUTION_TYPES.keys()
            and all(isinstance(s[k], t) for k, t in _SUBSTITUTION_TYPES.items()) for s in substitutions):
        raise _BadRecord("wrong_type", f"'substitutions' must be a list of objects with fields "
                                       f"{list(_SUBSTITUTION_TYPES)}")
    return {"source_id": source_id, "variant": variant, "substitutions": substitutions}


def _optional_bool(record: dict[str, Any], key: str) -> bool | None:
    value = record.get(key)
    if value is not None and not isinstance(value, bool):
        raise _BadRecord("wrong_type", f"{key!r} is {type(value).__name__} {_short(value)}, expected true/false")
    return value


def _qa_row(example_id: str, record: dict[str, Any], context: Any, answers: dict[str, list]) -> dict[str, Any]:
    return {"id": example_id, **_provenance(record, example_id), "title": _str_field(record, "title", False),
            "context": context, "question": _str_field(record, "question"), "answers": answers,
            "is_impossible": _optional_bool(record, "is_impossible"), "gold_answers": _gold_answers(record)}


def _gold_answers(record: dict[str, Any]) -> list[str] | None:
    """The optional `gold_answers` a SQuAD file written by augment.export.export_squad_json carries."""
    value = record.get("gold_answers")
    if value is not None and not (isinstance(value, list) and all(isinstance(text, str) for text in value)):
        raise _BadRecord("wrong_type", f"'gold_answers' is {_short(value)}, expected a list of answer texts")
    return value


def _squad_question(article: dict[str, Any], paragraph: dict[str, Any], qa: Any) -> dict[str, Any]:
    """A question of a SQuAD JSON file (answers as a list of {text, answer_start}; plausible_answers dropped)."""
    if not isinstance(qa, dict):
        raise _BadRecord("wrong_type", f"question is {type(qa).__name__}, expected an object")
    example_id = _example_id(qa, None)
    with _known_id(example_id):
        context = _str_field(paragraph, "context")
        answers = qa.get("answers", _ABSENT)
        if answers is _ABSENT:
            raise _BadRecord("missing_field", "no 'answers' (unanswerable questions have an empty list)")
        if not isinstance(answers, list) or not all(isinstance(a, dict) for a in answers):
            raise _BadRecord("wrong_type", "'answers' must be a list of {text, answer_start} objects")
        for i, answer in enumerate(answers):
            for key in ("text", "answer_start"):
                if key not in answer:
                    raise _BadRecord("missing_field", f"answer {i} has no {key!r}")
        answers = _answer_list([a["text"] for a in answers], [a["answer_start"] for a in answers])
        return _qa_row(example_id, {"title": article.get("title"), **qa}, context, answers)


def _flat_question(record: dict[str, Any], default_id: str) -> dict[str, Any]:
    """A squad_v2-style record (JSONL line or HF row): answers as {text: [...], answer_start: [...]}."""
    example_id = _example_id(record, default_id)
    with _known_id(example_id):
        answers = record.get("answers", _ABSENT)
        if answers is _ABSENT or answers is None:
            raise _BadRecord("missing_field", "no 'answers' (unanswerable questions have empty lists)")
        if not isinstance(answers, dict) or not {"text", "answer_start"} <= answers.keys():
            raise _BadRecord("wrong_type", "'answers' must be an object {text: [...], answer_start: [...]}")
        answers = _answer_list(answers["text"], answers["answer_start"])
        return _qa_row(example_id, record, _str_field(record, "context"), answers)


def _text_row(record: dict[str, Any], default_id: str, columns: _Columns, task: Task) -> dict[str, Any]:
    """A labelled text (or pair) of a classification or regression source; the label as the source gives it."""
    example_id = _example_id(record, default_id)
    with _known_id(example_id):
        label = record.get(columns.label, _ABSENT)
        if label is _ABSENT or label is None or label == "":
            raise _BadRecord("missing_field", f"no label in {columns.label!r}")
        classes = task_traits(task).classes
        if not isinstance(label, (str, int) if classes else (str, int, float)) or isinstance(label, bool):
            expected = "a name or an integer id" if classes else "a number"
            raise _BadRecord("wrong_type", f"label {_short(label)} is {type(label).__name__}, expected {expected}")
        return {"id": example_id, "source_id": example_id, "variant": 0,
                "text": _str_field(record, columns.text),
                "text_pair": None if columns.text_pair is None else _str_field(record, columns.text_pair),
                "label": label, "substitutions": []}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------------------------------------------------
# Formats: each yields _Item objects in file order


@dataclasses.dataclass(frozen=True)
class _Columns:
    """Classification columns named by the DataSource."""

    text: str
    text_pair: str | None
    label: str

    @property
    def needed(self) -> list[str]:
        return [c for c in (self.text, self.text_pair, self.label) if c is not None]

    def needed_for(self, task: Task) -> list[str]:
        """The fields each record of `task` must have: QA's own, or these text and label columns."""
        return _QA_COLUMNS if task_traits(task).windows else self.needed


_QA_COLUMNS = ["context", "question", "answers"]
# What an MRQA line holds: one context and the questions about it (the first line is a {"header": ...}).
_MRQA_COLUMNS = ["context", "qas"]


def _items(source: DataSource, task: Task) -> tuple[Iterator[_Item], list[str] | None]:
    """The records of `source`, and the label names the source itself fixes (an HF ClassLabel column)."""
    columns = _Columns(source.text_column, source.text_pair_column, source.label_column)
    if source.format == "hf":
        return _hf_items(source, task, columns)
    path = Path(source.path)
    if source.format == "squad":
        if not task_traits(task).windows:
            raise DataReadError(f"{path}: SQuAD JSON holds QA data, but the task is {task}")
        return _squad_items(path), None
    if source.format == "mrqa":
        if not task_traits(task).windows:
            raise DataReadError(f"{path}: MRQA files hold QA data, but the task is {task}")
        return _mrqa_items(path), None
    if source.format == "jsonl":
        return _jsonl_items(path, task, columns), None
    return _delimited_items(path, task, columns, delimiter="\t" if source.format == "tsv" else ","), None


def _require_columns(where: str, found: list[str], expected: list[str]) -> None:
    missing = [c for c in expected if c not in found]
    if missing:
        raise DataReadError(f"{where}: missing column(s) {', '.join(missing)}; found columns: "
                            f"{', '.join(found) or '(none)'}; expected: {', '.join(expected)} (for classification, "
                            "name the columns with text_column / text_pair_column / label_column)")


def _squad_items(path: Path) -> Iterator[_Item]:
    document = _load_json(path)
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        found = list(document)[:10] if isinstance(document, dict) else type(document).__name__
        raise DataReadError(f"{path}: not a SQuAD file: expected an object with a 'data' list, found {found}")
    # Containers that cannot be opened are rejected as one record; everything below them is a question.
    for a, article in enumerate(document["data"]):
        where = f"data[{a}]"
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            problem = ("missing_field", "article has no 'paragraphs'") if isinstance(article, dict) and \
                "paragraphs" not in article else ("wrong_type", "expected an object with a 'paragraphs' list")
            yield _Item(where, article, partial(_fail, *problem))
            continue
        for p, paragraph in enumerate(article["paragraphs"]):
            where = f"data[{a}].paragraphs[{p}]"
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("qas"), list):
                problem = ("missing_field", "paragraph has no 'qas'") if isinstance(paragraph, dict) and \
                    "qas" not in paragraph else ("wrong_type", "expected an object with a 'qas' list")
                yield _Item(where, paragraph, partial(_fail, *problem))
                continue
            for q, qa in enumerate(paragraph["qas"]):
                # qa first: rejects.jsonl cuts records at 2,000 characters and the context can be long
                raw = {"qa": qa, "title": article.get("title"), "context": paragraph.get("context")}
                yield _Item(f"{where}.qas[{q}]", raw, partial(_squad_question, article, paragraph, qa))


def _json_lines(path: Path) -> Iterator[_Item | tuple[int, str, dict[str, Any]]]:
    """The non-blank lines of a JSON Lines file: (line number, text, object) for each JSON object, an _Item that
    rejects the line for anything else (bytes that are not UTF-8, text that is not JSON, JSON that is no object)."""
    for lineno, text, error in _text_lines(path):
        if not text.strip():
            continue
        where, text = f"line {lineno}", text.rstrip("\r\n")
        if error:
            yield _Item(where, text, partial(_fail, "invalid_utf8", error))
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            yield _Item(where, text, partial(_fail, "malformed_line", f"not valid JSON at column {err.colno}: "
                                                                       f"{err.msg}"))
            continue
        if not isinstance(record, dict):
            yield _Item(where, text, partial(_fail, "malformed_line", f"a JSON {type(record).__name__}, expected "
                                                                       "an object"))
            continue
        yield lineno, text, record


def _jsonl_items(path: Path, task: Task, columns: _Columns) -> Iterator[_Item]:
    windows = task_traits(task).windows
    needed = columns.needed_for(task)
    fields_seen: set[str] = set()
    objects = 0
    for line in _json_lines(path):
        if isinstance(line, _Item):
            yield line
            continue
        lineno, text, record = line
        objects += 1
        fields_seen.update(record)
        default_id = f"{path.stem}-{lineno}"
        convert = (partial(_flat_question, record, default_id) if windows
                   else partial(_text_row, record, default_id, columns, task))
        yield _Item(f"line {lineno}", text, convert)
    # A field that no line has is a file in another layout, not a few bad records.
    if objects:
        _require_columns(str(path), sorted(fields_seen), needed)


def _mrqa_items(path: Path) -> Iterator[_Item]:
    """The questions of an MRQA shared-task file: a {"header": {"dataset", "split"}} line, then one line per context
    with its "qas". A line that is not such an object is one reject; each of its questions is a record."""
    dataset = ""
    first = True
    for line in _json_lines(path):
        if isinstance(line, _Item):
            yield line
            continue
        lineno, text, record = line
        if first and "header" in record:
            header = record["header"] if isinstance(record["header"], dict) else {}
            dataset = str(header.get("dataset") or "")  # the title of every example
            first = False
            continue
        first = False
        where = f"line {lineno}"
        if not isinstance(record.get("qas"), list):
            yield _Item(where, text, partial(_fail, "missing_field", "no 'qas' list"))
            continue
        for q, qa in enumerate(record["qas"]):
            # the question first: rejects.jsonl cuts records at 2,000 characters and the context can be long
            raw = {"qa": qa, "context": record.get("context")}
            yield _Item(f"{where}.qas[{q}]", raw, partial(_mrqa_question, dataset, record, qa))


def _mrqa_question(dataset: str, paragraph: dict[str, Any], qa: Any) -> dict[str, Any]:
    """One MRQA question: `detected_answers` give each answer's character spans, end inclusive; an answer is the
    context's text at its first span (the span, not the answer's `text`, is what the shared task trains on).
    `answers`, the annotated texts with aliases that may not occur in the context, become `gold_answers`: the
    shared task scores a prediction by the best of them."""
    if not isinstance(qa, dict):
        raise _BadRecord("wrong_type", f"question is {type(qa).__name__}, expected an object")
    example_id = _str_field(qa, "qid")
    with _known_id(example_id):
        context = _str_field(paragraph, "context")
        detected = qa.get("detected_answers", _ABSENT)
        if detected is _ABSENT or detected is None:
            raise _BadRecord("missing_field", "no 'detected_answers'")
        if not isinstance(detected, list) or not all(isinstance(a, dict) for a in detected):
            raise _BadRecord("wrong_type", "'detected_answers' must be a list of objects with char_spans")
        texts, starts = [], []
        for i, answer in enumerate(detected):
            spans = answer.get("char_spans")
            if not isinstance(spans, list) or not spans or not all(
                    isinstance(span, list) and len(span) == 2 and all(isinstance(x, int) and not isinstance(x, bool)
                                                                      for x in span) for span in spans):
                raise _BadRecord("wrong_type", f"detected answer {i}: 'char_spans' must be a non-empty list of "
                                               "[start, end] integer pairs (end inclusive)")
            start, end = spans[0]
            if start < 0 or end < start or end >= len(context):
                raise _BadRecord("answer_out_of_range", f"detected answer {i}: span [{start}, {end}] lies outside "
                                                        f"the context (0..{len(context) - 1})")
            texts.append(context[start:end + 1])
            starts.append(start)
        aliases = qa.get("answers")
        if aliases is not None and not (isinstance(aliases, list) and all(isinstance(a, str) for a in aliases)):
            raise _BadRecord("wrong_type", "'answers' must be a list of answer texts")
        return {"id": example_id, "source_id": example_id, "variant": 0, "title": dataset, "context": context,
                "question": _str_field(qa, "question"), "answers": {"text": texts, "answer_start": starts},
                "is_impossible": False, "substitutions": [],
                "gold_answers": list(aliases) if aliases else None}


def _delimited_items(path: Path, task: Task, columns: _Columns, delimiter: str) -> Iterator[_Item]:
    if task_traits(task).windows:
        raise DataReadError(f"{path}: QA data is read from SQuAD JSON, JSONL or HF datasets, not TSV/CSV")
    lines = _text_lines(path)
    header = next(lines, None)
    if header is None:
        raise DataReadError(f"{path}: the file is empty; expected a header row naming the columns")
    if header[2]:
        raise DataReadError(f"{path}: the header row is not UTF-8 text ({header[2]})")
    # TSV follows the GLUE convention: no quoting, so a quote character is text; CSV uses standard quoting,
    # where a quoted field may span lines.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    found = next(csv.reader([header[1].rstrip("\r\n")], delimiter=delimiter, quoting=quoting), [])
    _require_columns(str(path), found, columns.needed)
    csv.field_size_limit(max(csv.field_size_limit(), 2 * MAX_TEXT_CHARS))  # long texts are rejected, not fatal

    # The physical lines (line number, text, byte error) of the record being parsed, and lines to parse again: a
    # record the csv module cannot parse (an unclosed quote, a carriage return inside a field) is rejected by its
    # first line, and the lines it swallowed are read again as records of their own.
    record: list[tuple[int, str, str | None]] = []
    pending: deque[tuple[int, str, str | None]] = deque()

    def physical_lines() -> Iterator[str]:
        while (line := pending.popleft() if pending else next(lines, None)) is not None:
            if not record and not line[1].strip() and delimiter not in line[1]:
                continue  # blank lines between records carry nothing; a line of empty fields is a record
            record.append(line)
            yield line[1]

    # strict: a quote that does not close where a field ends is an error, not text glued to the field
    def parser() -> Iterator[list[str]]:
        return csv.reader(physical_lines(), delimiter=delimiter, quoting=quoting, strict=True)

    reader = parser()
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            (start, first, _), *swallowed = record
            record.clear()
            pending.extendleft(reversed(swallowed))
            problem = f"cannot parse ({err}): an unclosed quote, or a line break inside a field?"
            yield _Item(f"line {start}", first.rstrip("\r\n"), partial(_fail, "malformed_line", problem))
            reader = parser()
            continue
        start = record[0][0]
        where, raw = f"line {start}", "".join(text for _, text, _ in record).rstrip("\r\n")
        error = next((error for _, _, error in record if error), None)
        record.clear()
        if error:
            yield _Item(where, raw, partial(_fail, "invalid_utf8", error))
        elif len(fields) != len(found):
            yield _Item(where, raw, partial(_fail, "malformed_line", f"{len(fields)} field(s), the header has "
                                                                      f"{len(found)}"))
        else:
            yield _Item(where, raw, partial(_text_row, dict(zip(found, fields)), f"{path.stem}-{start}", columns,
                                            task))


def _hf_items(source: DataSource, task: Task, columns: _Columns) -> tuple[Iterator[_Item], list[str] | None]:
    """Rows of an HF dataset, located as `row <index>` (0-based, as `dataset[index]`)."""
    import datasets  # heavy; only this reader needs it

    dataset = _load_hf(source)
    windows = task_traits(task).windows
    _require_columns(f"{source.path} (split {source.split})", dataset.column_names, columns.needed_for(task))
    label_feature = dataset.features.get(columns.label)
    # a ClassLabel column fixes the names and their id order
    class_label_names = list(label_feature.names) if isinstance(label_feature, datasets.ClassLabel) else None
    name = Path(source.path).name
    prefix = f"{name}-{source.split}" if source.split else name

    def items() -> Iterator[_Item]:
        position = 0
        for batch in dataset.iter(batch_size=1_000):
            keys = list(batch)
            for values in zip(*batch.values()):
                record = dict(zip(keys, values))
                default_id = f"{prefix}-{position}"
                convert = (partial(_flat_question, record, default_id) if windows
                           else partial(_text_row, record, default_id, columns, task))
                yield _Item(f"row {position}", record, convert)
                position += 1

    return items(), class_label_names


def _load_hf(source: DataSource):
    """The split named by `source` of a save_to_disk folder, a local parquet/json folder or a hub dataset."""
    import datasets  # heavy; only this reader needs it

    path = Path(source.path)
    try:
        if path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
            loaded = datasets.load_from_disk(str(path))
        else:
            loaded = datasets.load_dataset(source.path, split=source.split)
    except Exception as err:  # datasets raises many kinds; all mean the same thing here
        raise DataReadError(f"{source.path}: cannot load as a Hugging Face dataset (split {source.split}): "
                            f"{type(err).__name__}: {err}") from err
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if source.split is None and len(splits) == 1:
            return loaded[splits[0]]  # a folder of data files has one split, "train"
        if source.split not in loaded:
            raise DataReadError(f"{source.path}: split {source.split!r} not found; set split to one of "
                                f"{', '.join(splits)}")
        return loaded[source.split]
    if source.split is not None and loaded.split is not None and str(loaded.split) != source.split:
        raise DataReadError(f"{source.path}: holds the {loaded.split} split, but split {source.split!r} was asked")
    return loaded


# ---------------------------------------------------------------------------------------------------------------
# Bytes to text

_NOT_UTF8_MARKS = {b"\xff\xfe": "UTF-16 (little-endian)", b"\xfe\xff": "UTF-16 (big-endian)"}


def _open_binary(path: Path):
    try:
        return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")
    except FileNotFoundError:
        raise DataReadError(f"{path}: no such file") from None
    except OSError as err:
        raise DataReadError(f"{path}: cannot open: {err.strerror}") from None


def _check_text_start(path: Path, head: bytes) -> None:
    for mark, encoding in _NOT_UTF8_MARKS.items():
        if head.startswith(mark):
            raise DataReadError(f"{path}: the file is {encoding} text, not UTF-8; re-save it as UTF-8")


def _decode_error(raw: bytes, err: UnicodeDecodeError) -> str:
    return f"byte 0x{raw[err.start]:02x} at column {err.start + 1} is not UTF-8"


def _text_lines(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """(1-based line number, text with its line break, None or what is wrong with its bytes) per line.

    Line breaks stay in the text because the CSV reader needs them inside quoted fields that span lines.

    A line with bytes that are not UTF-8 comes back decoded with `surrogateescape`, to be rejected by the caller;
    a file mostly of such lines, or with NUL bytes (UTF-16, binary), is not text and raises DataReadError.
    """
    bad = total = 0
    with _open_binary(path) as handle:
        for lineno, raw in enumerate(handle, start=1):
            if lineno == 1:
                _check_text_start(path, raw)
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark is not part of the text
            if b"\x00" in raw:
                raise DataReadError(f"{path}: line {lineno} holds NUL bytes: the file is binary or UTF-16/32, "
                                    "not UTF-8 text")
            total += 1
            try:
                yield lineno, raw.decode("utf-8"), None
            except UnicodeDecodeError as err:
                bad += 1
                yield lineno, raw.decode("utf-8", "surrogateescape"), _decode_error(raw, err)
    if bad and bad > MAX_BAD_UTF8_SHARE * total:
        raise DataReadError(f"{path}: {bad} of {total} lines are not valid UTF-8; the file is in another "
                            "encoding (Latin-1?); re-save it as UTF-8")


def _load_json(path: Path) -> Any:
    """The parsed JSON document at `path`; bytes that are not UTF-8 come back as lone surrogates."""
    with _open_binary(path) as handle:
        data = handle.read()
    _check_text_start(path, data[:4])
    if b"\x00" in data:
        raise DataReadError(f"{path}: the file holds NUL bytes: it is binary or UTF-16/32, not UTF-8 JSON")
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # a few stray bytes: the records holding them are rejected as invalid_utf8, the rest is read
        text = data.decode("utf-8", "surrogateescape")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataReadError(f"{path}: not valid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None

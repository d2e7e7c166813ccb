"""inspect on a hand-made augmented folder: totals, highlighting, filtering by id and the answer-span check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console

from augment.__main__ import main
from augment.inspect import highlight_substitutions, inspect_examples, mark_substitutions, render_rich
from core.schema import QA_SCHEMA
from core.shards import ShardWriter, write_json

REPO = Path(__file__).resolve().parents[1]
CONTEXT = "The quick brown fox jumps over the lazy dog."
QUICK = {"field": "context", "start": 4, "end": 8, "original": "quick", "replacement": "fast", "source": "mlm"}
LEAPS = {"field": "context", "start": 19, "end": 24, "original": "jumps", "replacement": "leaps",
         "source": "embedding"}
HOPS = {"field": "question", "start": 5, "end": 9, "original": "jumps", "replacement": "hops",
        "source": "embedding"}


def _rows(variant_answer_start: int = 15) -> list[dict]:
    base = {"source_id": "q1", "title": "Animals", "question": "What jumps?", "is_impossible": False,
            "gold_answers": None}
    return [
        {**base, "id": "q1", "variant": 0, "context": CONTEXT,
         "answers": {"text": ["fox"], "answer_start": [16]}, "substitutions": []},
        {**base, "id": "q1#aug1", "variant": 1, "context": "The fast brown fox leaps over the lazy dog.",
         "answers": {"text": ["fox"], "answer_start": [variant_answer_start]}, "substitutions": [QUICK, LEAPS]},
        {**base, "id": "q1#aug2", "variant": 2, "context": CONTEXT, "question": "What hops?",
         "answers": {"text": ["fox"], "answer_start": [16]}, "substitutions": [HOPS]},
        {**base, "id": "q2", "source_id": "q2", "variant": 0, "context": CONTEXT, "question": "Who sleeps?",
         "answers": {"text": [], "answer_start": []}, "is_impossible": True, "substitutions": []},
    ]


def _folder(tmp_path: Path, stats: bool = True, variant_answer_start: int = 15) -> Path:
    folder = tmp_path / "augmented"
    writer = ShardWriter(folder / "shards", QA_SCHEMA, rows_per_shard=2)
    for row in _rows(variant_answer_start):
        writer.add(row)
    writer.close()
    write_json(folder / "meta.json", {"task": "qa", "label_names": None})
    if stats:
        write_json(folder / "stats.json", {"examples_in": 2, "examples_out": 4, "eligible_words": 12,
                                           "substituted_words": 3,
                                           "substitutions_by_source": {"mlm": 1, "embedding": 2}})
    (folder / "rejects.jsonl").write_text(json.dumps({"id": "q9", "reason": "answer_mismatch"}) + "\n")
    return folder


def test_cli_prints_plain_markers_when_piped(tmp_path):
    folder = _folder(tmp_path)
    done = subprocess.run([sys.executable, "-m", "augment", "inspect", str(folder), "--limit", "1"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "context: The [quick→fast] brown fox [jumps→leaps] over the lazy dog." in out
    assert "question: What [jumps→hops]?" in out
    assert "examples in: 2  out: 4  variants per example: 1.00" in out
    assert "substitution rate: 25.0% of eligible words" in out
    assert "rejects: 1 (answer_mismatch 1)" in out
    assert "answer spans: 3 checked, 0 invalid" in out
    assert "q2" not in out  # --limit 1: only the first original and its variants


def test_json_totals(tmp_path, capsys):
    assert main(["inspect", str(_folder(tmp_path)), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)

    assert report["totals"] == {
        "examples_in": 2, "examples_out": 4, "originals": 2, "variants": 2, "variants_per_example": 1.0,
        "substitutions": 3, "substitutions_per_variant": 1.5, "substitution_rate": 0.25,
        "substitutions_by_source": {"mlm": 1, "embedding": 2},
        "source_share": {"mlm": 1 / 3, "embedding": 2 / 3}, "misplaced_substitutions": 0,
        "rejected": 1, "rejects_by_reason": {"answer_mismatch": 1},
        "answer_spans_checked": 3, "invalid_answer_spans": 0}
    assert report["invalid_answer_spans"] == 0
    assert [e["id"] for e in report["examples"]] == ["q1", "q1#aug1", "q1#aug2", "q2"]
    marked = report["examples"][1]["marked"]["context"]
    assert marked == "The [quick→fast] brown fox [jumps→leaps] over the lazy dog."


def test_totals_without_stats_are_counted_from_rows(tmp_path):
    folder = _folder(tmp_path, stats=False)
    (folder / "rejects.jsonl").unlink()
    totals = inspect_examples(folder).totals

    assert totals["examples_in"] == 2  # distinct source ids
    assert totals["substitution_rate"] is None and totals["substitutions_per_variant"] == 1.5
    assert totals["substitutions_by_source"] == {"mlm": 1, "embedding": 2}
    assert totals["rejects_by_reason"] == {}


def test_filter_by_id(tmp_path, capsys):
    folder = _folder(tmp_path)
    assert [[r["id"] for r in rows] for rows in inspect_examples(folder, "q1").groups] == [
        ["q1", "q1#aug1", "q1#aug2"]]
    assert [[r["id"] for r in rows] for rows in inspect_examples(folder, "q1#aug2").groups] == [["q1#aug2"]]

    assert main(["inspect", str(folder), "--id", "nope"]) == 2
    assert "no example with id or source_id 'nope'" in capsys.readouterr().err


def test_invalid_answer_span_exits_1(tmp_path, capsys):
    folder = _folder(tmp_path, variant_answer_start=16)  # the variant's fox moved to 15
    assert main(["inspect", str(folder), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["invalid_answer_spans"] == 1
    assert report["invalid_answer_span_examples"] == [
        {"id": "q1#aug1", "answer": 0, "text": "fox", "answer_start": 16, "found": "ox "}]


def test_rich_highlight_strikes_the_original_and_colours_the_replacement():
    variant = "The fast brown fox leaps over the lazy dog."
    text = highlight_substitutions(variant, [QUICK, LEAPS], "context", answers=[(15, 18)])

    assert text.plain == "The quick fast brown fox jumps leaps over the lazy dog."
    styles = {text.plain[span.start:span.end]: str(span.style) for span in text.spans}
    assert styles["quick"] == "strike dim" and styles["jumps"] == "strike dim"
    assert styles["fast"] == "bold green" and styles["leaps"] == "bold cyan"
    assert styles["fox"] == "underline"
    assert mark_substitutions(variant, [QUICK, LEAPS], "question") == variant  # other field: untouched


def test_rich_report_renders(tmp_path):
    console = Console(record=True, width=160, force_terminal=True)
    console.print(render_rich(inspect_examples(_folder(tmp_path), "q1")))
    shown = console.export_text(clear=False)
    assert "q1#aug1" in shown and "legend" in shown
    assert "\x1b[2;9mquick" in console.export_text(styles=True)  # dim + strike-through reached the terminal


def test_a_folder_that_is_not_an_examples_folder_exits_2(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    # a label stage's output: shards of features, not of examples
    features = tmp_path / "label"
    (features / "shards").mkdir(parents=True)
    pq.write_table(pa.table({"input_ids": [[101, 102]], "attention_mask": [[1, 1]]}),
                   features / "shards" / "part-00000.parquet")
    for folder, found in ((empty, "no shards"), (features, "no id, source_id, variant, substitutions column")):
        assert main(["inspect", str(folder)]) == 2
        error = capsys.readouterr().err
        assert f"{folder} is not an examples folder" in error and found in error

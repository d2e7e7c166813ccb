"""Checking substitution records from the outside: an augmented text and its records give back the original."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def undo_substitutions(text: str, records: Sequence[dict[str, Any]]) -> str:
    """The original text, rebuilt from an augmented `text` and its substitution records."""
    pieces, cursor = [], 0
    for record in sorted(records, key=lambda r: r["start"]):
        pieces += [text[cursor:record["start"]], record["original"]]
        cursor = record["end"]
    pieces.append(text[cursor:])
    return "".join(pieces)

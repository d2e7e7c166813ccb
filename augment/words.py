"""Words of a text with character offsets, which of them may be replaced, and applying replacements.

Texts are never re-tokenized or re-joined: a word is a span `text[start:end]`, and an augmented text is the
original with some of those spans replaced, so every other character (whitespace, punctuation, digits, case of
untouched words) survives. `apply_substitutions` also moves answer spans to their new offsets, so an answer
stays at `context[start:start + len(text)]` whatever was replaced before or inside it.

Example::

    text = "The Eiffel Tower is in Paris."
    eligible_words(text, protected=[(23, 28)])      # "Paris" is an answer; "The", "is", "in" are stopwords
    # [Word(start=4, end=10, word='Eiffel'), Word(start=11, end=16, word='Tower')]
    result = apply_substitutions(text, "context", [Substitution(11, 16, "Building", "mlm")], answers=[(23, "Paris")])
    # result.text == "The Eiffel Building is in Paris."; result.answers == [(26, "Paris")]
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

STOPWORDS_FILE = Path(__file__).with_name("stopwords.txt")

# A word is a maximal run of word characters (letters, digits, underscore, any script). Only all-letter runs are
# eligible, so "1990s", "B52" and "snake_case" are never cut into pieces, while apostrophes and hyphens separate
# words ("don't" -> don, t; "well-known" -> well, known), as BERT's basic tokenizer does.
_WORD = re.compile(r"\w+")
# Single letters are initials ("J. R. R. Tolkien") or stopwords ("a", "I"), never content words worth replacing.
MIN_WORD_LENGTH = 2


@dataclass(frozen=True)
class Word:
    """One word of a text: `text[start:end] == word`."""

    start: int
    end: int
    word: str


@dataclass(frozen=True)
class Substitution:
    """Replace the word at `start:end` of the ORIGINAL text by `replacement` (already in the word's case)."""

    start: int
    end: int
    replacement: str
    source: str  # "mlm" or "embedding"


@dataclass(frozen=True)
class Applied:
    """An augmented text, its answers moved to their new offsets, and a record per substitution.

    `records` follow `core.schema.SUBSTITUTION`: offsets are into the NEW text, so
    `text[r["start"]:r["end"]] == r["replacement"]` for every record.
    """

    text: str
    answers: list[tuple[int, str]]
    records: list[dict[str, Any]]


@lru_cache(maxsize=4)
def load_stopwords(path: str = str(STOPWORDS_FILE)) -> frozenset[str]:
    """Lower-case stopwords, one per line; blank lines and `#` comments are skipped."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return frozenset(w for w in (line.split("#", 1)[0].strip().lower() for line in lines) if w)


def segment(text: str) -> list[Word]:
    """Every word of `text` (see `_WORD`) with its character offsets, in order."""
    return [Word(m.start(), m.end(), m.group()) for m in _WORD.finditer(text)]


def is_candidate_word(word: str, stopwords: frozenset[str] | None = None) -> bool:
    """Could `word` be replaced anywhere: all letters, at least MIN_WORD_LENGTH of them, not a stopword."""
    stopwords = load_stopwords() if stopwords is None else stopwords
    return len(word) >= MIN_WORD_LENGTH and word.isalpha() and word.lower() not in stopwords


def eligible_words(text: str, protected: Iterable[tuple[int, int]] = (), straddling: Iterable[tuple[int, int]] = (),
                   stopwords: frozenset[str] | None = None) -> list[Word]:
    """The words of `text` that may be replaced, in order.

    Args:
        text: the text to look at.
        protected: (start, end) character spans whose words must not change (answers, when answers are not
            augmented): a word overlapping any of them is left out.
        straddling: spans whose words may change only when wholly inside (answers, when they are augmented): a
            word that crosses one of their boundaries is left out, since the answer would then start or end
            inside a replaced word.
        stopwords: lower-case words never replaced; default: `augment/stopwords.txt`.
    """
    protected, straddling = list(protected), list(straddling)
    words = []
    for w in segment(text):
        if not is_candidate_word(w.word, stopwords):
            continue
        if any(w.start < end and start < w.end for start, end in protected):
            continue
        if any(w.start < end and start < w.end and not (start <= w.start and w.end <= end)
               for start, end in straddling):
            continue
        words.append(w)
    return words


def restore_case(original: str, replacement: str) -> str:
    """Give `replacement` the case pattern of `original`: UPPER, Title or lower (mixed case counts as Title
    when it starts upper-case, like "McDonald", else as lower, like "iPhone")."""
    if len(original) > 1 and original.isupper():
        return replacement.upper()
    if original[:1].isupper():
        return replacement[:1].upper() + replacement[1:].lower()
    return replacement.lower()


def apply_substitutions(text: str, field: str, substitutions: Sequence[Substitution],
                        answers: Sequence[tuple[int, str]] = ()) -> Applied:
    """Replace words of `text` and move `answers` along.

    Args:
        text: the original text.
        field: name written into each record ("context", "question", "text", "text_pair").
        substitutions: non-overlapping word replacements with offsets into `text`, in any order.
        answers: (answer_start, answer_text) pairs with `text[start:start + len(answer_text)] == answer_text`.
            A substitution may lie before, after or wholly inside an answer; one crossing an answer boundary
            is an error (`eligible_words` never proposes such a word).

    Returns:
        The new text; each answer as (new_start, new_text), where new_text differs from the old one only at
        substitutions wholly inside it; and one record per substitution, with offsets into the new text.
    """
    subs = sorted(substitutions, key=lambda s: s.start)
    for before, after in zip(subs, subs[1:]):
        if after.start < before.end:
            raise ValueError(f"substitutions overlap at {before.start}:{before.end} and {after.start}:{after.end} "
                             f"of the {field}; each word may be replaced once")
    spans = [(start, start + len(answer)) for start, answer in answers]
    for sub in subs:
        for start, end in spans:
            if sub.start < end and start < sub.end and not (start <= sub.start and sub.end <= end):
                raise ValueError(f"substitution at {sub.start}:{sub.end} ({text[sub.start:sub.end]!r}) crosses the "
                                 f"answer at {start}:{end} of the {field}; only whole words inside an answer "
                                 "may be replaced")

    pieces, records = [], []
    cursor = shift = 0  # shift: length change so far, i.e. new offset = old offset + shift
    for sub in subs:
        pieces += [text[cursor:sub.start], sub.replacement]
        new_start = sub.start + shift
        records.append({"field": field, "start": new_start, "end": new_start + len(sub.replacement),
                        "original": text[sub.start:sub.end], "replacement": sub.replacement, "source": sub.source})
        shift += len(sub.replacement) - (sub.end - sub.start)
        cursor = sub.end
    pieces.append(text[cursor:])
    new_text = "".join(pieces)

    def moved(offset: int) -> int:
        # substitutions ending at or before `offset` shift it; none straddles an answer boundary
        return offset + sum(len(s.replacement) - (s.end - s.start) for s in subs if s.end <= offset)

    new_answers = [(moved(start), new_text[moved(start):moved(end)]) for start, end in spans]
    return Applied(new_text, new_answers, records)

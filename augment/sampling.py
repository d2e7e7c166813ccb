"""Turning one example and its word candidates into augmented variants, TinyBERT's way.

For each of `factor` draws, every eligible word is replaced with probability `replace_prob` by a candidate drawn
uniformly from its options. Each draw has its own random generator seeded from (seed, source id, draw index)
through SHA-256, so a variant depends on nothing but its example: not on the worker, the batch or the block it
was made in. Variants equal to the original or to an earlier variant are dropped; kept variants are numbered
1, 2, ... with ids `<source_id>#aug<k>`.

QA: the context is augmented with every answer moved to its new offset (`context[start:start + len(text)] ==
text` holds after augmentation); words inside an answer change only with `augment_answers` (the answer text then
changes with them); questions change only with `augment_questions`; unanswerable questions stay unanswerable.
Classification: text and text pair are augmented, the label is kept.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from augment.candidates import TextOptions
from augment.spec import AugmentSpec
from augment.words import Substitution, Word, apply_substitutions, eligible_words, restore_case


@dataclass
class Tally:
    """Counts over the examples of one block, summed into the stage's stats.json.

    eligible_words counts eligible word slots in the variants written (eligible words of the example times its
    kept variants), so substituted_words / eligible_words is the share of replaceable words that changed.
    """

    examples_in: int = 0
    examples_out: int = 0
    variants: int = 0
    eligible_words: int = 0
    substituted_words: int = 0
    by_source: Counter = field(default_factory=Counter)

    def add(self, other: Tally) -> None:
        self.examples_in += other.examples_in
        self.examples_out += other.examples_out
        self.variants += other.variants
        self.eligible_words += other.eligible_words
        self.substituted_words += other.substituted_words
        self.by_source.update(other.by_source)


def variant_rng(seed: int, source_id: str, draw: int) -> np.random.Generator:
    """The generator of draw `draw` of example `source_id`: the same in every process and run."""
    digest = hashlib.sha256(f"{seed}\x1f{source_id}\x1f{draw}".encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def draw_substitutions(words: Sequence[Word], options: TextOptions, replace_prob: float,
                       rng: np.random.Generator) -> list[Substitution]:
    """Replace each of `words` with probability `replace_prob` by a uniformly drawn candidate (case restored).

    Two numbers are drawn for every word, with or without candidates, so a change to one word's options never
    shifts the draws of the words after it.
    """
    substitutions = []
    for word in words:
        chance, pick = rng.random(2)
        found = options.get((word.start, word.end))
        if found is None or not found.candidates or chance >= replace_prob:
            continue
        choice = found.candidates[int(pick * len(found.candidates))]
        substitutions.append(Substitution(word.start, word.end, restore_case(word.word, choice), found.source))
    return substitutions


def augment_qa(row: dict[str, Any], context_options: TextOptions, question_options: TextOptions | None,
               config: AugmentSpec, seed: int) -> tuple[list[dict[str, Any]], Tally]:
    """The rows written for one QA example (original first when `keep_original`) and their counts.

    Args:
        row: an original example in `core.schema.QA_SCHEMA` (variant 0).
        context_options: candidates for the words of its context (`candidates.propose`, computed once per
            paragraph; words of this question's answers are skipped here unless `augment_answers`).
        question_options: candidates for the question's words, or None when questions are not augmented.
        config: factor, replace_prob, keep_original, augment_answers.
        seed: the job seed.
    """
    context, question = row["context"], row["question"]
    answers = list(zip(row["answers"]["answer_start"], row["answers"]["text"]))
    spans = []
    for start, text in answers:
        if context[start:start + len(text)] != text:
            raise ValueError(f"example {row['id']}: answer {text!r} is not at answer_start {start} of its context "
                             f"(found {context[start:start + len(text)]!r}); re-read the data with "
                             "augment.readers, which rejects such answers")
        spans.append((start, start + len(text)))
    if config.augment_answers:
        context_words = eligible_words(context, straddling=spans)
    else:
        context_words = eligible_words(context, protected=spans)
    question_words = eligible_words(question) if question_options is not None else []

    rows = [row] if config.keep_original else []
    tally = Tally(examples_in=1)
    seen = {(context, question)}
    for draw in range(1, config.factor + 1):
        rng = variant_rng(seed, row["source_id"], draw)
        new_context = apply_substitutions(
            context, "context", draw_substitutions(context_words, context_options, config.replace_prob, rng), answers)
        new_question = apply_substitutions(
            question, "question", draw_substitutions(question_words, question_options or {}, config.replace_prob, rng))
        if (new_context.text, new_question.text) in seen:
            continue
        seen.add((new_context.text, new_question.text))
        k = tally.variants + 1
        records = new_context.records + new_question.records
        rows.append({
            "id": f"{row['source_id']}#aug{k}", "source_id": row["source_id"], "variant": k, "title": row["title"],
            "context": new_context.text, "question": new_question.text,
            "answers": {"text": [text for _, text in new_context.answers],
                        "answer_start": [start for start, _ in new_context.answers]},
            "is_impossible": row["is_impossible"], "substitutions": records, "gold_answers": None,
        })
        tally.variants += 1
        tally.eligible_words += len(context_words) + len(question_words)
        tally.substituted_words += len(records)
        tally.by_source.update(r["source"] for r in records)
    tally.examples_out = len(rows)
    return rows, tally


def augment_classification(row: dict[str, Any], text_options: TextOptions, pair_options: TextOptions | None,
                           config: AugmentSpec, seed: int) -> tuple[list[dict[str, Any]], Tally]:
    """The rows written for one classification example (original first when `keep_original`), label kept.

    Args:
        row: an original example in `core.schema.CLASSIFICATION_SCHEMA` (variant 0).
        text_options, pair_options: candidates for the words of `text` and of `text_pair` (None: no pair).
        config: factor, replace_prob, keep_original.
        seed: the job seed.
    """
    text, pair = row["text"], row["text_pair"]
    text_words = eligible_words(text)
    pair_words = eligible_words(pair) if pair is not None else []

    rows = [row] if config.keep_original else []
    tally = Tally(examples_in=1)
    seen = {(text, pair)}
    for draw in range(1, config.factor + 1):
        rng = variant_rng(seed, row["source_id"], draw)
        new_text = apply_substitutions(
            text, "text", draw_substitutions(text_words, text_options, config.replace_prob, rng))
        new_pair = None
        if pair is not None:
            new_pair = apply_substitutions(
                pair, "text_pair", draw_substitutions(pair_words, pair_options or {}, config.replace_prob, rng))
        key = (new_text.text, new_pair.text if new_pair else None)
        if key in seen:
            continue
        seen.add(key)
        k = tally.variants + 1
        records = new_text.records + (new_pair.records if new_pair else [])
        rows.append({
            "id": f"{row['source_id']}#aug{k}", "source_id": row["source_id"], "variant": k,
            "text": new_text.text, "text_pair": key[1], "label": row["label"], "substitutions": records,
        })
        tally.variants += 1
        tally.eligible_words += len(text_words) + len(pair_words)
        tally.substituted_words += len(records)
        tally.by_source.update(r["source"] for r in records)
    tally.examples_out = len(rows)
    return rows, tally

"""Sampling variants: TinyBERT's draws, stable seeding, answers kept, duplicates dropped, labels kept."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from augment.candidates import WordOptions
from augment.sampling import augment_classification, augment_qa, draw_substitutions, variant_rng
from augment.spec import AugmentSpec
from augment.words import eligible_words, load_stopwords, segment
from tests.substitutions import undo_substitutions

CANDIDATES = ("alpha", "beta", "gamma", "delta")


def every_word(text: str, candidates=CANDIDATES, source="mlm") -> dict:
    """Options for every eligible word of `text` (answers included), as `candidates.propose` returns them."""
    return {(w.start, w.end): WordOptions(candidates, source) for w in eligible_words(text)}


@pytest.fixture(scope="module")
def squad_rows(squad_dev_path):
    """A few real SQuAD 2.0 questions (answerable and not) as rows of QA_SCHEMA."""
    data = json.loads(squad_dev_path.read_text(encoding="utf-8"))["data"]
    rows = []
    for paragraph in data[0]["paragraphs"][:6]:
        for qa in paragraph["qas"][:4]:
            rows.append({"id": qa["id"], "source_id": qa["id"], "variant": 0, "title": data[0]["title"],
                         "context": paragraph["context"], "question": qa["question"],
                         "answers": {"text": [a["text"] for a in qa["answers"]],
                                     "answer_start": [a["answer_start"] for a in qa["answers"]]},
                         "is_impossible": qa.get("is_impossible", False), "substitutions": [],
                         "gold_answers": None})
    assert any(r["is_impossible"] for r in rows) and not all(r["is_impossible"] for r in rows)
    return rows


def test_variant_rng_is_stable_and_distinct():
    first = variant_rng(42, "q1", 1).random(3)
    assert (variant_rng(42, "q1", 1).random(3) == first).all()
    # SHA-256 seeding, not hash(): the same numbers in every process; pinned so a change of scheme is noticed
    assert float(first[0]) == pytest.approx(0.5409869016639297, abs=1e-15)
    assert len({float(variant_rng(s, i, d).random()) for s in (1, 2) for i in ("a", "b") for d in (1, 2)}) == 8


def test_draws_are_uniform_over_candidates_at_the_replace_rate():
    text = " ".join(["river"] * 400)
    words = eligible_words(text)
    options = every_word(text)
    picked = Counter()
    replaced = 0
    for draw in range(1, 11):
        subs = draw_substitutions(words, options, 0.4, variant_rng(0, "x", draw))
        replaced += len(subs)
        picked.update(s.replacement for s in subs)
    assert 0.35 < replaced / (400 * 10) < 0.45
    assert set(picked) == set(CANDIDATES)
    assert all(abs(n - replaced / 4) < 0.2 * replaced / 4 for n in picked.values())  # uniform within 20%


def test_one_words_options_do_not_shift_the_next_words_draws():
    text = "river mountain valley"
    words = eligible_words(text)
    full = every_word(text)
    fewer = dict(full)
    del fewer[(0, 5)]  # "river" has no candidates now
    a = draw_substitutions(words, full, 0.9, variant_rng(1, "x", 1))
    b = draw_substitutions(words, fewer, 0.9, variant_rng(1, "x", 1))
    assert [s for s in a if s.start > 0] == b


def test_qa_variants_keep_answers_and_everything_else(squad_rows):
    config = AugmentSpec(factor=6, mlm_model=None)
    stopwords = load_stopwords()
    for row in squad_rows:
        rows, tally = augment_qa(row, every_word(row["context"]), None, config, seed=5)
        assert rows[0] is row and tally.examples_out == len(rows) > 1
        assert [r["variant"] for r in rows] == list(range(len(rows)))
        assert [r["id"] for r in rows[1:]] == [f"{row['id']}#aug{k}" for k in range(1, len(rows))]
        for variant in rows[1:]:
            assert variant["answers"]["text"] == row["answers"]["text"]  # answers untouched
            for start, text in zip(variant["answers"]["answer_start"], variant["answers"]["text"]):
                assert variant["context"][start:start + len(text)] == text
            assert variant["is_impossible"] == row["is_impossible"] and variant["question"] == row["question"]
            assert undo_substitutions(variant["context"], variant["substitutions"]) == row["context"]
            assert all(s["original"].lower() not in stopwords for s in variant["substitutions"])
            assert all(s["replacement"].lower() in CANDIDATES for s in variant["substitutions"])


def test_augmented_answers_and_questions_change_consistently(squad_rows):
    config = AugmentSpec(factor=4, replace_prob=1.0, augment_answers=True, augment_questions=True, mlm_model=None)
    changed_answers = changed_questions = 0
    for row in squad_rows:
        rows, _ = augment_qa(row, every_word(row["context"]), every_word(row["question"]), config, seed=5)
        for variant in rows[1:]:
            for start, text in zip(variant["answers"]["answer_start"], variant["answers"]["text"]):
                assert variant["context"][start:start + len(text)] == text
            changed_answers += variant["answers"]["text"] != row["answers"]["text"]
            changed_questions += variant["question"] != row["question"]
            question_subs = [s for s in variant["substitutions"] if s["field"] == "question"]
            assert undo_substitutions(variant["question"], question_subs) == row["question"]
    assert changed_answers > 0 and changed_questions > 0


def test_duplicates_and_copies_of_the_original_are_dropped(squad_rows):
    row = squad_rows[0]
    one_choice = every_word(row["context"], candidates=("same",))
    rows, tally = augment_qa(row, one_choice, None, AugmentSpec(factor=5, replace_prob=1.0), seed=0)
    assert len(rows) == 2 and tally.variants == 1  # every draw gives the same text
    rows, _ = augment_qa(row, {}, None, AugmentSpec(factor=5, keep_original=False), seed=0)
    assert rows == []  # no candidates: every draw equals the original


def test_classification_keeps_the_label_and_the_case(sst2_dir):
    lines = (sst2_dir / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:6]
    config = AugmentSpec(factor=3, replace_prob=0.8, mlm_model=None)
    for i, line in enumerate(lines):
        text, label = line.rsplit("\t", 1)
        pair = "The Movie WAS Long" if i % 2 else None
        row = {"id": f"s{i}", "source_id": f"s{i}", "variant": 0, "text": text, "text_pair": pair,
               "label": int(label), "substitutions": []}
        options = every_word(pair, ("film", "show")) if pair else None
        rows, _ = augment_classification(row, every_word(text, source="embedding"), options, config, seed=1)
        assert all(r["label"] == int(label) for r in rows) and len(rows) > 1
        for variant in rows[1:]:
            assert undo_substitutions(variant["text"], [s for s in variant["substitutions"]
                                                        if s["field"] == "text"]) == text
            if pair:
                words = [w.word for w in segment(variant["text_pair"])]
                assert words[0] == "The" and words[1] in ("Movie", "Film", "Show") and words[2] == "WAS"
            else:
                assert variant["text_pair"] is None

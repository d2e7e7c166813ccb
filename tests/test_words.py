"""Word segmentation, eligibility, case restoration and substitution with answer spans moved along."""

from __future__ import annotations

import json
import random

import pytest

from augment.words import Substitution, apply_substitutions, eligible_words, load_stopwords, restore_case, segment
from tests.substitutions import undo_substitutions

TEXT = "The Eiffel Tower (built 1887-89) isn't in LONDON; it's in Paris, France."


def test_segment_keeps_offsets_and_splits_like_bert():
    words = segment(TEXT)
    assert all(TEXT[w.start:w.end] == w.word for w in words)
    assert [w.word for w in words][:6] == ["The", "Eiffel", "Tower", "built", "1887", "89"]
    assert "isn" in [w.word for w in words] and "t" in [w.word for w in words]  # apostrophes separate


def test_eligibility_skips_stopwords_numbers_short_words_and_protected_spans():
    paris = TEXT.index("Paris")
    words = [w.word for w in eligible_words(TEXT, protected=[(paris, paris + len("Paris"))])]
    assert words == ["Eiffel", "Tower", "built", "LONDON", "France"]
    stopwords = load_stopwords()
    assert {"the", "in", "it", "isn", "t", "s"} <= stopwords
    assert all(w == w.lower() and " " not in w for w in stopwords)


def test_words_crossing_an_augmented_answer_are_not_eligible():
    start = TEXT.index("ower")  # an answer starting inside "Tower"
    span = (start, TEXT.index(")") + 1)
    words = [w.word for w in eligible_words(TEXT, straddling=[span])]
    assert "Tower" not in words and "built" in words  # "built" is wholly inside the answer


@pytest.mark.parametrize("original, replacement, expected", [
    ("Paris", "london", "London"), ("PARIS", "london", "LONDON"), ("paris", "London", "london"),
    ("McDonald", "burger", "Burger"), ("iPhone", "Phone", "phone"), ("A", "word", "Word"),
])
def test_restore_case(original, replacement, expected):
    assert restore_case(original, replacement) == expected


def test_substitutions_move_answers_before_inside_and_after():
    text = "Alpha beta gamma delta epsilon."
    answers = [(text.index("gamma"), "gamma delta"), (text.index("epsilon"), "epsilon")]
    subs = [Substitution(0, 5, "Omega-long", "mlm"), Substitution(text.index("delta"), text.index("delta") + 5,
                                                                    "d", "embedding")]
    applied = apply_substitutions(text, "context", subs, answers)
    assert applied.text == "Omega-long beta gamma d epsilon."
    assert applied.answers == [(applied.text.index("gamma"), "gamma d"), (applied.text.index("epsilon"), "epsilon")]
    for record in applied.records:
        assert applied.text[record["start"]:record["end"]] == record["replacement"]
    assert undo_substitutions(applied.text, applied.records) == text


def test_bad_substitutions_are_refused():
    text = "Alpha beta gamma"
    with pytest.raises(ValueError, match="overlap"):
        apply_substitutions(text, "text", [Substitution(0, 5, "x", "mlm"), Substitution(3, 10, "y", "mlm")])
    with pytest.raises(ValueError, match="crosses the answer"):
        apply_substitutions(text, "context", [Substitution(6, 10, "x", "mlm")], answers=[(8, "ta gamma")])


def test_random_substitutions_on_squad_keep_answers_and_everything_else(squad_dev_path):
    """On real paragraphs: answers stay at their offsets, and only substituted words differ."""
    data = json.loads(squad_dev_path.read_text(encoding="utf-8"))["data"]
    rng = random.Random(0)
    checked = 0
    for article in data[:4]:
        for paragraph in article["paragraphs"][:5]:
            context = paragraph["context"]
            for qa in paragraph["qas"][:3]:
                answers = [(a["answer_start"], a["text"]) for a in qa["answers"]]
                spans = [(s, s + len(t)) for s, t in answers]
                for augment_answers in (False, True):
                    words = (eligible_words(context, straddling=spans) if augment_answers
                             else eligible_words(context, protected=spans))
                    subs = [Substitution(w.start, w.end, rng.choice(["x", "longer-word", "Mid"]), "mlm")
                            for w in words if rng.random() < 0.5]
                    applied = apply_substitutions(context, "context", subs, answers)
                    for (start, text), (old_start, old_text) in zip(applied.answers, answers):
                        assert applied.text[start:start + len(text)] == text
                        if not augment_answers:
                            assert text == old_text
                    assert undo_substitutions(applied.text, applied.records) == context
                    checked += 1
    assert checked > 50

"""Classification metrics against hand computations, including classes never predicted and never present."""

from __future__ import annotations

import numpy as np
import pytest

from distill.classification_metrics import (
    ClassScores,
    MetricInputError,
    accuracy,
    classification_report,
    confusion_matrix,
    macro_f1,
)

# Class 2 occurs but is never predicted; class 3 neither occurs nor is predicted.
LABELS = [0, 0, 1, 1, 1, 2]
PREDICTIONS = [0, 1, 1, 1, 0, 0]


def test_confusion_matrix_by_hand():
    expected = [[1, 1, 0, 0], [1, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert confusion_matrix(LABELS, PREDICTIONS, num_classes=4).tolist() == expected


@pytest.mark.filterwarnings("error")  # no division warnings for the empty classes
def test_report_by_hand():
    report = classification_report(LABELS, PREDICTIONS, num_classes=4, label_names=["neg", "pos", "mixed", "none"])
    # TP = [1, 2, 0, 0]; predicted = [3, 3, 0, 0]; support = [2, 3, 1, 0].
    assert report.per_class == (
        ClassScores("neg", precision=pytest.approx(1 / 3), recall=0.5, f1=pytest.approx(0.4), support=2),
        ClassScores("pos", precision=pytest.approx(2 / 3), recall=pytest.approx(2 / 3), f1=pytest.approx(2 / 3),
                    support=3),
        ClassScores("mixed", precision=0.0, recall=0.0, f1=0.0, support=1),
        ClassScores("none", precision=0.0, recall=0.0, f1=0.0, support=0),
    )
    assert report.accuracy == 0.5 and report.total == 6
    # macro averages over the classes in the labels or predictions (as scikit-learn's): "mixed", never predicted,
    # counts with 0; "none", in neither, is left out
    assert report.macro_precision == pytest.approx((1 / 3 + 2 / 3) / 3)
    assert report.macro_recall == pytest.approx((0.5 + 2 / 3) / 3)
    assert report.macro_f1 == pytest.approx((0.4 + 2 / 3) / 3)
    assert macro_f1(LABELS, PREDICTIONS, num_classes=4) == report.macro_f1
    assert macro_f1(LABELS, PREDICTIONS, num_classes=3) == report.macro_f1


def test_an_unused_class_id_does_not_lower_the_macro_average():
    """Star ratings 1..5 read as class ids leave id 0 unused: perfect predictions still score macro-F1 1."""
    ratings = np.array([1, 2, 3, 4, 5, 5, 3])
    report = classification_report(ratings, ratings, num_classes=6)
    assert (report.accuracy, report.macro_f1, report.macro_precision, report.macro_recall) == (1.0, 1.0, 1.0, 1.0)
    assert report.per_class[0].support == 0 and len(report.per_class) == 6


def test_accuracy_and_perfect_predictions():
    assert accuracy(np.array([1, 0, 1, 1]), np.array([1, 1, 1, 0])) == 0.5
    report = classification_report([0, 1, 1], [0, 1, 1], num_classes=2)
    assert (report.accuracy, report.macro_f1) == (1.0, 1.0)
    assert [c.name for c in report.per_class] == ["0", "1"]


@pytest.mark.parametrize(
    ("labels", "predictions", "match"),
    [
        ([0, 1, 1], [0, 1], "got 3 labels and 2 predictions"),
        ([0, 1], np.zeros((2, 2)), r"shape \(2, 2\); take the argmax"),
        ([0, 1], [0.0, 1.0], "integer class indices, got dtype float64"),
        ([0, -1], [0, 1], "negative class index -1"),
        ([0, 1], [0, 5], "class index 5 appears but num_classes is 2"),
        ([], [], "empty set"),
    ],
)
def test_invalid_inputs_raise(labels, predictions, match):
    with pytest.raises(MetricInputError, match=match):
        classification_report(labels, predictions, num_classes=2)


def test_label_names_must_match_num_classes():
    with pytest.raises(MetricInputError, match="got 3 label names for 2 classes"):
        classification_report([0, 1], [0, 1], num_classes=2, label_names=["a", "b", "c"])

"""Classification metrics from class indices: accuracy, macro-F1 and a per-class report, in plain numpy.

A class that is never predicted has precision 0, and a class that never occurs has recall 0 (no division
warnings, like scikit-learn's ``zero_division=0``). Macro averages run over the classes that occur in the
labels or the predictions, as scikit-learn's (and HF evaluate's) macro average does: a class id that neither
holds, such as the unused id 0 of labels numbered from 1, does not pull the average down.

Example::

    report = classification_report(labels, logits.argmax(-1), num_classes=2, label_names=["negative", "positive"])
    report.accuracy, report.macro_f1, report.per_class[1].recall
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike


class MetricInputError(ValueError):
    """Labels or predictions that cannot be scored: wrong shape, type, length or class range."""


@dataclass(frozen=True)
class ClassScores:
    """Scores of one class.

    Attributes:
        name: the class name (its index as a string when no names were given).
        precision: right predictions of the class / predictions of the class; 0.0 when it is never predicted.
        recall: right predictions of the class / examples of the class; 0.0 when it never occurs.
        f1: harmonic mean of precision and recall; 0.0 when both are 0.
        support: how many examples have this class as their label.
    """

    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ClassificationReport:
    """Overall and per-class scores of one set of predictions.

    Attributes:
        accuracy: fraction of examples predicted right (0-1).
        macro_precision: unweighted mean of the per-class precisions.
        macro_recall: unweighted mean of the per-class recalls.
        macro_f1: unweighted mean of the per-class F1 scores.
        total: number of examples.
        per_class: one entry per class, in class-index order.
    """

    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    total: int
    per_class: tuple[ClassScores, ...]


def _class_indices(values: ArrayLike, name: str) -> np.ndarray:
    """``values`` as a 1-D int64 array of non-negative class indices, or a MetricInputError saying what is wrong."""
    array = np.asarray(values)
    if array.ndim != 1:
        hint = "; take the argmax over the class axis first" if array.ndim == 2 else ""
        raise MetricInputError(f"{name} must be a 1-D array of class indices, got shape {array.shape}{hint}")
    if array.size and not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.bool_)):
        raise MetricInputError(
            f"{name} must hold integer class indices, got dtype {array.dtype}; convert labels to indices "
            "(and take the argmax of scores)"
        )
    array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise MetricInputError(f"{name} holds negative class index {array.min()}; class indices start at 0")
    return array


def _checked_pair(labels: ArrayLike, predictions: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predictions as index arrays of one non-zero length."""
    label_array = _class_indices(labels, "labels")
    prediction_array = _class_indices(predictions, "predictions")
    if label_array.shape != prediction_array.shape:
        raise MetricInputError(
            f"got {label_array.size} labels and {prediction_array.size} predictions; pass one prediction per label"
        )
    if label_array.size == 0:
        raise MetricInputError("got no labels and no predictions; metrics of an empty set are undefined")
    return label_array, prediction_array


def confusion_matrix(labels: ArrayLike, predictions: ArrayLike, num_classes: int) -> np.ndarray:
    """Count every (label, prediction) pair.

    Args:
        labels: (N,) true class indices in [0, num_classes).
        predictions: (N,) predicted class indices in [0, num_classes).
        num_classes: the number of classes C.

    Returns:
        (C, C) int64 array; row = true class, column = predicted class.

    Raises:
        MetricInputError: lengths differ, N is 0, an index lies outside [0, num_classes), or inputs are not 1-D
            integer arrays.
    """
    if num_classes < 1:
        raise MetricInputError(f"num_classes must be at least 1, got {num_classes}")
    label_array, prediction_array = _checked_pair(labels, predictions)
    largest = max(int(label_array.max()), int(prediction_array.max()))
    if largest >= num_classes:
        raise MetricInputError(
            f"class index {largest} appears but num_classes is {num_classes} (valid indices 0 to {num_classes - 1})"
        )
    flat = np.bincount(label_array * num_classes + prediction_array, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def accuracy(labels: ArrayLike, predictions: ArrayLike) -> float:
    """Fraction of examples whose prediction equals the label.

    Args:
        labels: (N,) true class indices.
        predictions: (N,) predicted class indices.

    Raises:
        MetricInputError: lengths differ, N is 0, or inputs are not 1-D non-negative integer arrays.
    """
    label_array, prediction_array = _checked_pair(labels, predictions)
    return float(np.mean(label_array == prediction_array))


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise numerator / denominator, 0.0 where the denominator is 0 (without a division warning)."""
    return np.divide(numerator, denominator, out=np.zeros(numerator.shape, dtype=np.float64), where=denominator > 0)


def classification_report(
    labels: ArrayLike,
    predictions: ArrayLike,
    num_classes: int,
    label_names: Sequence[str] | None = None,
) -> ClassificationReport:
    """Accuracy, macro averages and per-class precision, recall, F1 and support.

    Args:
        labels: (N,) true class indices in [0, num_classes).
        predictions: (N,) predicted class indices in [0, num_classes).
        num_classes: the number of classes C; classes absent from both arrays still get a (zero) entry in
            per_class, but no share of the macro averages.
        label_names: C names for the report, in class-index order; default "0", "1", ...

    Raises:
        MetricInputError: as :func:`confusion_matrix`, or a label_names length other than num_classes.
    """
    if label_names is not None and len(label_names) != num_classes:
        raise MetricInputError(f"got {len(label_names)} label names for {num_classes} classes; give one per class")
    names = [str(index) for index in range(num_classes)] if label_names is None else list(label_names)
    counts = confusion_matrix(labels, predictions, num_classes)
    true_positives = np.diag(counts)
    predicted = counts.sum(axis=0)
    support = counts.sum(axis=1)
    precision = _safe_ratio(true_positives, predicted)
    recall = _safe_ratio(true_positives, support)
    # 2TP / (2TP + FP + FN) equals the harmonic mean of precision and recall, and is 0 rather than 0/0 at TP = 0.
    f1 = _safe_ratio(2 * true_positives, predicted + support)
    total = int(counts.sum())
    seen = (support + predicted) > 0
    return ClassificationReport(
        accuracy=float(true_positives.sum() / total),
        macro_precision=float(precision[seen].mean()),
        macro_recall=float(recall[seen].mean()),
        macro_f1=float(f1[seen].mean()),
        total=total,
        per_class=tuple(
            ClassScores(name=names[index], precision=float(precision[index]), recall=float(recall[index]),
                        f1=float(f1[index]), support=int(support[index]))
            for index in range(num_classes)
        ),
    )


def macro_f1(labels: ArrayLike, predictions: ArrayLike, num_classes: int) -> float:
    """Unweighted mean of each class's F1 over the classes in ``labels`` or ``predictions``.

    Args:
        labels: (N,) true class indices in [0, num_classes).
        predictions: (N,) predicted class indices in [0, num_classes).
        num_classes: the number of classes C.

    Raises:
        MetricInputError: as :func:`confusion_matrix`.
    """
    return classification_report(labels, predictions, num_classes).macro_f1

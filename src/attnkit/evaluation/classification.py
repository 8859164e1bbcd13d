"""Scores of classifiers and regressors: confusion matrix, macro-F1, Pearson and Spearman
correlation (float64 NumPy; no SciPy or scikit-learn needed).

Conventions follow scikit-learn and SciPy: the confusion matrix counts true labels in rows and
predictions in columns; macro-F1 averages the per-class F1 over the classes that occur in the
true labels or the predictions (a class with no true and no predicted example is left out; a
class with precision and recall both 0 scores 0); Spearman's rho is Pearson's r of the ranks,
ties sharing their average rank. A correlation with a constant side is NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["confusion_matrix", "macro_f1", "per_class_f1", "pearson", "spearman", "rankdata"]


def confusion_matrix(
    targets: Sequence[int], predictions: Sequence[int], num_classes: int
) -> np.ndarray:
    """Counts of (true class, predicted class) pairs.

    Args:
        targets: N true class indices in ``[0, num_classes)``.
        predictions: N predicted class indices.
        num_classes: C.

    Returns:
        int64 array (C, C): row = true class, column = predicted class.
    """
    t, p = np.asarray(targets, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError(f"targets and predictions differ in length: {t.shape} vs {p.shape}")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= num_classes):
        raise ValueError(f"class indices must be in [0, {num_classes})")
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (t, p), 1)
    return matrix


def per_class_f1(matrix: np.ndarray) -> np.ndarray:
    """F1 of each class from a confusion matrix (0 where precision + recall is 0). (C,)."""
    m = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(m)
    predicted, actual = m.sum(0), m.sum(1)
    denominator = predicted + actual  # F1 = 2 tp / (2 tp + fp + fn) = 2 tp / (pred + actual)
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)


def macro_f1(targets: Sequence[int], predictions: Sequence[int], num_classes: int) -> float:
    """Unweighted mean F1 over the classes present in ``targets`` or ``predictions``."""
    matrix = confusion_matrix(targets, predictions, num_classes)
    present = (matrix.sum(0) + matrix.sum(1)) > 0
    if not present.any():
        return 0.0
    return float(per_class_f1(matrix)[present].mean())


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's correlation coefficient (NaN if a side is constant or shorter than 2)."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"x and y differ in length: {a.shape} vs {b.shape}")
    if a.size < 2:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    scale = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / scale) if scale > 0 else float("nan")


def rankdata(x: Sequence[float]) -> np.ndarray:
    """Ranks 1..N, ties getting the average of the ranks they span (SciPy's ``average``)."""
    a = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(a, kind="stable")
    where = np.empty(a.size, dtype=np.int64)
    where[order] = np.arange(a.size)  # position of each element in sorted order
    sorted_a = a[order]
    new_value = np.r_[True, sorted_a[1:] != sorted_a[:-1]]  # (N,) starts of runs of ties
    run = new_value.cumsum()[where]  # 1-based run index of each element
    bounds = np.r_[np.nonzero(new_value)[0], a.size]  # run k spans sorted [bounds[k-1], bounds[k])
    return 0.5 * (bounds[run] + bounds[run - 1] + 1)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson's r of the (average) ranks."""
    return pearson(rankdata(x), rankdata(y))

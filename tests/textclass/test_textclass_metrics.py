"""Classification and regression scores against scikit-learn and SciPy."""

from __future__ import annotations

import numpy as np
import pytest

from attnkit.evaluation.classification import (
    confusion_matrix,
    macro_f1,
    pearson,
    rankdata,
    spearman,
)

sklearn_metrics = pytest.importorskip("sklearn.metrics")
stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("seed", range(5))
def test_confusion_matrix_and_macro_f1_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    classes = 4
    y_true = rng.integers(0, classes - 1, 60)  # class 3 never true ...
    y_pred = np.where(rng.random(60) < 0.6, y_true, rng.integers(0, classes, 60))
    ours = confusion_matrix(y_true, y_pred, classes)
    theirs = sklearn_metrics.confusion_matrix(y_true, y_pred, labels=list(range(classes)))
    np.testing.assert_array_equal(ours, theirs)
    reference = sklearn_metrics.f1_score(y_true, y_pred, average="macro", zero_division=0)
    assert macro_f1(y_true, y_pred, classes) == pytest.approx(reference, abs=1e-12)


def test_macro_f1_edge_cases_match_sklearn() -> None:
    cases = [
        ([0, 0, 1, 1], [0, 0, 0, 0]),  # a class never predicted: its F1 is 0
        ([0, 1, 2], [0, 1, 2]),
        ([2, 2, 2], [2, 2, 2]),  # one class present
    ]
    for y_true, y_pred in cases:
        reference = sklearn_metrics.f1_score(y_true, y_pred, average="macro", zero_division=0)
        assert macro_f1(y_true, y_pred, 3) == pytest.approx(reference), (y_true, y_pred)
    with pytest.raises(ValueError, match="class indices"):
        confusion_matrix([0, 3], [0, 1], 3)


@pytest.mark.parametrize("seed", range(4))
def test_pearson_and_spearman_match_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=50)
    y = 0.5 * x + rng.normal(size=50)
    ties = np.round(x * 2) / 2  # many ties
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    assert spearman(ties, y) == pytest.approx(stats.spearmanr(ties, y)[0], abs=1e-12)
    np.testing.assert_array_equal(rankdata(ties), stats.rankdata(ties))


def test_correlation_of_a_constant_is_nan() -> None:
    assert np.isnan(pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert np.isnan(spearman([1.0], [2.0]))

"""Alternating timing: candidates run in turn within every repetition; medians are compared."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["alternate", "median", "sync"]


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work so wall-clock times are real."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def alternate(
    candidates: dict[str, Callable[[], object]],
    *,
    repeats: int = 5,
    warmup: int = 1,
    device: torch.device | str = "cpu",
) -> dict[str, list[float]]:
    """Time each candidate ``repeats`` times, interleaved (A B A B ...), after ``warmup`` rounds.

    Returns:
        ``{name: [seconds of each timed call]}`` (``repeats`` values per candidate).
    """
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for round_ in range(warmup + repeats):
        for name, fn in candidates.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    """The median of a candidate's times (robust to a slow outlier round)."""
    return statistics.median(values)

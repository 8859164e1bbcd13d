"""Training curves from a metrics log: losses on the left axis, BLEU/chrF on a right axis.

:func:`read_metrics` reads the CSV / JSONL logs a training run writes (one row per logging event,
blank or absent fields allowed) into a dict of columns; :func:`plot_curves` draws them like the
course's ``Animator``, but headless and in one call, after (or during) training.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnkit.files import read_json_lines
from attnkit.viz.heatmaps import save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["read_metrics", "plot_curves", "pivot_splits"]

logger = logging.getLogger(__name__)

_X_CANDIDATES = ("step", "epoch")
_LEFT_WORDS = ("loss", "ppl", "perplexity")
_RIGHT_WORDS = ("bleu", "chrf")


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, str) and v.strip() == "")


def _column(values: list[Any]) -> list[Any]:
    """Floats (NaN where missing) if every present value is numeric, else raw values (None)."""
    try:
        return [math.nan if _is_missing(v) else float(v) for v in values]
    except (TypeError, ValueError):
        return [None if _is_missing(v) else v for v in values]


def _records_to_columns(records: list[Mapping[str, Any]], where: str) -> dict[str, list[Any]]:
    keys: dict[str, None] = {}  # ordered union of keys
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise ValueError(
                f"{where}: record {i + 1} is a {type(rec).__name__}, expected an object"
            )
        keys.update(dict.fromkeys(k for k in rec if k is not None))
    return {k: _column([rec.get(k) for rec in records]) for k in keys}


def read_metrics(path: str | Path) -> dict[str, list[Any]]:
    """Read a metrics log into columns.

    Formats (by extension): ``.csv`` / ``.tsv`` with a header row; ``.jsonl`` / ``.ndjson`` with
    one JSON object per line; ``.json`` holding a list of objects, an object of lists, or JSON
    lines. Rows may lack fields (e.g. validation BLEU logged once per epoch).

    Args:
        path: the log file.

    Returns:
        ``{column: values}`` with one value per row. Numeric columns hold floats with ``nan`` for
        missing values; other columns keep their values with ``None`` for missing ones.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"metrics file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ",")
        if not reader.fieldnames:
            raise ValueError(f"{path}: empty CSV, expected a header row such as 'step,train_loss'")
        return _records_to_columns(list(reader), str(path))
    if suffix not in (".jsonl", ".ndjson", ".json"):
        raise ValueError(f"{path}: unknown metrics format {suffix!r}; use .csv, .tsv or .jsonl")
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # maybe JSON lines with a .json name
        if isinstance(data, Mapping):
            lengths = {len(v) for v in data.values() if isinstance(v, list)}
            if len(lengths) != 1 or not all(isinstance(v, list) for v in data.values()):
                raise ValueError(f"{path}: an object of columns needs equally long lists")
            return {str(k): _column(list(v)) for k, v in data.items()}
        if isinstance(data, list):
            return _records_to_columns(data, str(path))
    return _records_to_columns(read_json_lines(path), str(path))


def pivot_splits(
    history: Mapping[str, Sequence[Any]], column: str = "split"
) -> dict[str, list[Any]]:
    """Spread a log with a ``split`` column into one column per (split, metric).

    A run's ``metrics.jsonl`` holds rows like ``{"split": "train", "step": 20, "loss": 2.1}`` and
    ``{"split": "valid", "step": 40, "loss": 1.8, "bleu": 30.2}``; this turns them into columns
    ``train_loss``, ``valid_loss``, ``valid_bleu``... (NaN in the other splits' rows), keeping
    ``step`` and ``epoch`` as they are. Columns that are empty in every row are dropped.

    Args:
        history: ``{column: values}`` as returned by :func:`read_metrics`.
        column: the name of the split column.

    Returns:
        a new ``{column: values}`` dict with the same number of rows; ``history`` itself when it
        has no such column.
    """
    if column not in history:
        return dict(history)
    splits = [None if _is_missing(v) else str(v) for v in history[column]]
    out: dict[str, list[Any]] = {}
    for name, values in history.items():
        if name == column:
            continue
        values = list(values)
        if name in _X_CANDIDATES or not _is_numeric(values):
            out[name] = values
            continue
        for split in dict.fromkeys(s for s in splits if s is not None):
            spread = [
                v if s == split else math.nan for v, s in zip(_column(values), splits, strict=True)
            ]
            if not all(math.isnan(v) for v in spread):
                out[f"{split}_{name}"] = spread
    return out


def _numeric(history: Mapping[str, Sequence[Any]], name: str) -> list[float]:
    try:
        return [math.nan if _is_missing(v) else float(v) for v in history[name]]
    except (TypeError, ValueError):
        raise ValueError(
            f"column {name!r} is not numeric; choose numeric columns for y/y2"
        ) from None


def _is_numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, float) for v in _column(list(values)))


def _pick(names: list[str], words: tuple[str, ...]) -> list[str]:
    return [n for n in names if any(w in n.lower() for w in words)]


def plot_curves(
    history: Mapping[str, Sequence[Any]] | list[Mapping[str, Any]] | str | Path,
    path: str | Path | None = None,
    x: str | None = None,
    y: Sequence[str] | None = None,
    y2: Sequence[str] | None = None,
    figsize: tuple[float, float] = (4.5, 3.0),
    dpi: float = 100,
    title: str | None = None,
) -> Figure:
    """Plot training curves: losses on the left axis, translation scores on a second axis.

    Args:
        history: ``{column: values}``, a list of rows (``{column: value}``), or a path to a
            CSV/JSONL log (read with :func:`read_metrics`);
            a text ``split`` column (a run's ``metrics.jsonl``) is spread by :func:`pivot_splits`.
        path: if given, save the figure there (``.png``, ``.svg`` or ``.pdf``).
        x: the x column; default ``"step"`` if present, else ``"epoch"``, else the row number.
        y: left-axis columns; default every column whose name contains loss/ppl/perplexity
            (or, if there is none, every other numeric column).
        y2: right-axis columns; default every column whose name contains bleu/chrf.
        figsize: figure size in inches; a PNG is ``figsize * dpi`` pixels.
        dpi: figure resolution.
        title: optional figure title.

    Returns:
        The matplotlib ``Figure``.

    Shapes:
        With an x column every series has its length (missing values as None/NaN are skipped);
        without one each series is drawn against its own positions 1..n.
    """
    from matplotlib.figure import Figure

    if isinstance(history, str | Path):
        history = read_metrics(history)
    elif isinstance(history, list):  # rows of a log, e.g. a run's metrics.jsonl
        history = _records_to_columns(history, "history")
    if not isinstance(history, Mapping) or not history:
        raise ValueError("history must be a non-empty dict of lists or a path to a metrics log")
    if "split" in history and not _is_numeric(history["split"]):
        history = pivot_splits(history)  # a run's log: train_loss, valid_loss, valid_bleu...
    names = list(history)
    if x is None:
        x = next((c for c in _X_CANDIDATES if c in history), None)
    elif x not in history:
        raise ValueError(f"x column {x!r} not in history; columns are {names}")
    xs = _numeric(history, x) if x is not None else None

    others = [n for n in names if n != x and n not in _X_CANDIDATES]
    for label, chosen in (("y", y), ("y2", y2)):
        missing = [c for c in chosen or () if c not in history]
        if missing:
            raise ValueError(f"{label} columns {missing} not in history; columns are {names}")
    right = list(y2) if y2 is not None else _pick(others, _RIGHT_WORDS)
    if y is not None:
        left = list(y)
    else:
        left = _pick(others, _LEFT_WORDS) or [
            n for n in others if n not in right and _is_numeric(history[n])
        ]
    if not left and not right:
        raise ValueError(f"nothing to plot: no numeric columns besides {x!r} in {names}")

    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    lines = []
    axes = [(ax, left, "-")]
    if right:
        axes.append((ax.twinx(), right, "--"))
    for axis, columns, style in axes:
        for name in columns:
            values = _numeric(history, name)
            if xs is not None and len(values) != len(xs):
                raise ValueError(
                    f"column {name!r} has {len(values)} values but x column {x!r} has {len(xs)}; "
                    "give every column one value per row (None for missing)"
                )
            positions = xs if xs is not None else [float(i + 1) for i in range(len(values))]
            pairs = zip(positions, values, strict=True)
            pts = [(a, b) for a, b in pairs if not (math.isnan(a) or math.isnan(b))]
            if not pts:
                logger.debug("skipping column %r: no values with a valid x", name)
                continue
            marker = "o" if len(pts) <= 30 else None
            color = f"C{len(lines) % 10}"  # one colour cycle across both axes
            (line,) = axis.plot(
                *zip(*pts, strict=True), style, color=color, marker=marker, ms=3, label=name
            )
            lines.append(line)
        axis.set_ylabel(", ".join(columns) if len(columns) <= 2 else "value")
    if all("loss" in n.lower() for n in left) and left:
        ax.set_ylabel("loss")
    ax.set_xlabel(x if x is not None else "index")
    ax.grid(True, alpha=0.3)
    if lines:
        top = axes[-1][0]  # the twin axis is drawn above the first: put the legend on top
        top.legend(lines, [ln.get_label() for ln in lines], fontsize="small")
    if title:
        ax.set_title(title)
    if path is not None:
        save_figure(fig, path, dpi=dpi)
    return fig

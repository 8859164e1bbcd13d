"""Attention heatmaps: the course's grid of matrices, plus a translator-oriented wrapper.

matplotlib is imported inside the functions and only its object-oriented API is used
(``matplotlib.figure.Figure``, never ``pyplot``), so nothing here needs a display or changes the
global backend. The returned figure shows inline in Jupyter and can be saved with ``path=``.

Unlike the course's version, all panels share one colour scale (the global min and max, or
``vmin``/``vmax``), so the single colorbar is true for every panel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["show_heatmaps", "attention_grid", "save_figure"]

_FORMATS = (".png", ".svg", ".pdf")


def _to_numpy(x: Any) -> Any:
    """Recursively turn tensors into float64 arrays; lists, arrays and numbers pass through."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    if isinstance(x, list | tuple):
        return [_to_numpy(v) for v in x]
    return x


def _as_grid(matrices: Any, name: str = "matrices") -> np.ndarray:
    """Convert input to a float64 array of shape (rows, cols, Q, K)."""
    try:
        arr = np.asarray(_to_numpy(matrices), dtype=np.float64)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"{name} must be a (rows, cols, Q, K) tensor/array or nested lists of equally shaped "
            f"2-D matrices; could not stack it ({err})"
        ) from None
    if arr.ndim == 2:
        arr = arr[None, None]  # (1, 1, Q, K)
    elif arr.ndim == 3:
        arr = arr[None]  # (1, cols, Q, K)
    if arr.ndim != 4 or 0 in arr.shape:
        raise ValueError(
            f"{name} must have shape (rows, cols, Q, K), (cols, Q, K) or (Q, K) with no empty "
            f"axis; got shape {tuple(np.shape(matrices))}"
        )
    return arr


def _check_labels(labels: Sequence[str] | None, size: int, name: str, axis: str) -> None:
    if labels is not None and len(labels) != size:
        raise ValueError(
            f"{name} has {len(labels)} labels but the matrices have {size} {axis}; "
            f"pass one label per {axis[:-1]} (crop padded weights first, e.g. w[..., :q, :k])"
        )


def save_figure(fig: Figure, path: str | Path, dpi: float | None = None) -> Path:
    """Save a figure as PNG, SVG or PDF (chosen by the file extension), creating parent folders.

    Args:
        fig: the figure to save.
        path: output file ending in ``.png``, ``.svg`` or ``.pdf``.
        dpi: pixels per inch for PNG (default: the figure's own dpi).

    Returns:
        The path written.
    """
    path = Path(path)
    if path.suffix.lower() not in _FORMATS:
        raise ValueError(f"path must end in one of {', '.join(_FORMATS)}; got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi if dpi is not None else fig.dpi, format=path.suffix[1:].lower())
    return path


def show_heatmaps(
    matrices: Any,
    xlabel: str,
    ylabel: str | Sequence[str],
    titles: Sequence[str] | None = None,
    figsize: tuple[float, float] = (2.5, 2.5),
    cmap: str = "Reds",
    xticklabels: Sequence[str] | None = None,
    yticklabels: Sequence[str] | None = None,
    path: str | Path | None = None,
    dpi: float = 100,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Figure:
    """Draw a grid of heatmaps (e.g. attention weights) sharing axes and one colorbar.

    Args:
        matrices: tensor, array or nested lists of 2-D matrices, all the same shape.
        xlabel: label under the bottom row (e.g. ``"Keys"``).
        ylabel: label left of the first column; a list gives one label per row.
        titles: optional per-column titles, shown above the top row.
        figsize: size of the whole figure in inches.
        cmap: matplotlib colormap name.
        xticklabels: optional K labels for the columns of each matrix (e.g. key tokens);
            drawn vertically.
        yticklabels: optional Q labels for the rows of each matrix (e.g. query tokens).
        path: if given, save the figure there (``.png``, ``.svg`` or ``.pdf``).
        dpi: figure resolution; a PNG is ``figsize * dpi`` pixels.
        vmin: lower limit of the colour scale (default: the minimum over all matrices).
        vmax: upper limit of the colour scale (default: the maximum over all matrices).

    Returns:
        The matplotlib ``Figure``; ``fig.axes`` lists the panels row by row, then the colorbar.

    Shapes:
        matrices (rows, cols, Q, K); (cols, Q, K) means one row and (Q, K) a single panel.
    """
    from matplotlib.figure import Figure

    grid = _as_grid(matrices)
    rows, cols, q, k = grid.shape
    if titles is not None and len(titles) != cols:
        raise ValueError(
            f"titles has {len(titles)} entries for {cols} columns; pass one per column"
        )
    ylabels = [ylabel] * rows if isinstance(ylabel, str) else list(ylabel)
    if len(ylabels) != rows:
        raise ValueError(f"ylabel has {len(ylabels)} entries for {rows} rows; pass one per row")
    _check_labels(xticklabels, k, "xticklabels", "columns")
    _check_labels(yticklabels, q, "yticklabels", "rows")
    lo = float(np.nanmin(grid)) if vmin is None else vmin
    hi = float(np.nanmax(grid)) if vmax is None else vmax

    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)
    image = None
    for i in range(rows):
        for j in range(cols):
            ax = axes[i, j]
            image = ax.imshow(grid[i, j], cmap=cmap, vmin=lo, vmax=hi)
            if i == rows - 1:
                ax.set_xlabel(xlabel)
            if j == 0:
                ax.set_ylabel(ylabels[i])
            if titles is not None and i == 0:
                ax.set_title(titles[j])
    # Shared axes: setting ticks on one panel sets them on all; inner labels are hidden below.
    if xticklabels is not None:
        axes[0, 0].set_xticks(range(k), labels=list(xticklabels))
        for ax in axes[-1]:
            ax.tick_params(axis="x", labelrotation=90)
    if yticklabels is not None:
        axes[0, 0].set_yticks(range(q), labels=list(yticklabels))
    for ax in axes.flat:
        ax.label_outer()
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6)
    if path is not None:
        save_figure(fig, path, dpi=dpi)
    return fig


def _weights_array(weights: Any, name: str) -> np.ndarray:
    """(layers, heads, Q, K) float64 array from a tensor or a list of per-layer (heads, Q, K)."""
    if isinstance(weights, list | tuple) and weights and isinstance(weights[0], torch.Tensor):
        shapes = {tuple(w.shape) for w in weights}
        if len(shapes) != 1 or len(next(iter(shapes))) != 3:
            raise ValueError(
                f"{name} as a list must hold per-layer (heads, Q, K) tensors of one shape; "
                f"got shapes {sorted(shapes)}"
            )
        weights = torch.stack([w.detach() for w in weights])  # (layers, heads, Q, K)
    arr = np.asarray(_to_numpy(weights), dtype=np.float64)
    if arr.ndim == 3:
        arr = arr[None]  # (1, heads, Q, K)
    if arr.ndim != 4:
        hint = " (select one example first, e.g. weights[0])" if arr.ndim == 5 else ""
        raise ValueError(
            f"{name} must have shape (layers, heads, Q, K) or (heads, Q, K); "
            f"got shape {arr.shape}{hint}"
        )
    return arr


def attention_grid(
    weights: Any,
    src_tokens: Sequence[str] | None = None,
    tgt_tokens: Sequence[str] | None = None,
    key: str | None = None,
    xlabel: str = "Source (keys)",
    ylabel: str = "Target (queries)",
    figsize: tuple[float, float] | None = None,
    cmap: str = "Reds",
    path: str | Path | None = None,
    dpi: float = 100,
) -> Figure:
    """Show a model's attention weights: one row per layer, one column per head.

    Args:
        weights: a (layers, heads, Q, K) tensor/array, a list of per-layer (heads, Q, K) tensors,
            or a dict of those (e.g. ``{"encoder": ..., "cross": ...}``) with ``key`` naming one.
        src_tokens: labels for the K keys (x axis); for self-attention pass the same tokens
            as ``tgt_tokens``.
        tgt_tokens: labels for the Q queries (y axis).
        key: which entry of a dict to show (optional when the dict has a single entry).
        xlabel: title of the x axis.
        ylabel: title of the y axis; with several layers the rows are labelled ``layer 1``,
            ``layer 2``... and ``ylabel`` goes to the left of the whole figure.
        figsize: whole-figure size in inches (default grows with the number of panels and tokens).
        cmap: matplotlib colormap name.
        path: if given, save there (``.png``, ``.svg`` or ``.pdf``).
        dpi: figure resolution.

    Returns:
        The matplotlib ``Figure`` (panels row by row, then the colorbar, in ``fig.axes``).

    Shapes:
        weights (layers, heads, Q, K); ``len(src_tokens) == K``, ``len(tgt_tokens) == Q``.
    """
    name = "weights"
    if isinstance(weights, Mapping):
        if key is None:
            if len(weights) != 1:
                raise ValueError(
                    f"weights is a dict with entries {sorted(weights)}; pass key= to pick one"
                )
            key = next(iter(weights))
        elif key not in weights:
            raise ValueError(f"key {key!r} not in weights; available: {sorted(weights)}")
        weights, name = weights[key], f"weights[{key!r}]"
    arr = _weights_array(weights, name)
    layers, heads, q, k = arr.shape
    if figsize is None:
        cell = max(1.6, 0.22 * max(q, k))
        figsize = (cell * heads + 1.5, cell * layers + 0.8)
    fig = show_heatmaps(
        arr,
        xlabel=xlabel,
        ylabel=[f"layer {i + 1}" for i in range(layers)] if layers > 1 else ylabel,
        titles=[f"head {j + 1}" for j in range(heads)],
        figsize=figsize,
        cmap=cmap,
        xticklabels=src_tokens,
        yticklabels=tgt_tokens,
        dpi=dpi,
        vmin=min(0.0, float(arr.min())),  # weights are probabilities: anchor the scale at 0
    )
    if layers > 1:
        fig.supylabel(ylabel)
    if path is not None:
        save_figure(fig, path, dpi=dpi)
    return fig

"""The course's figures, each from the library's own functions, plus a translation's attention.

Every function returns :class:`CourseFigure` records (a name, a matplotlib ``Figure`` and a short
caption); :func:`write_figures` saves them as PNGs with an ``index.md`` and ``index.html``. The
drawings only *show* what the library returns: the heatmaps are the very weight tensors that
:func:`~attnkit.attention.kernel_regression.nadaraya_watson`, the scoring modules or a model's
``encode``/``decode`` gave back.

Figures (the numbers of the ``attnkit figures`` command):

1. :func:`kernel_regression_figures`: Nadaraya–Watson fits and their attention weights;
2. :func:`scoring_figures`: masked softmax, additive and scaled dot-product attention on toy inputs;
3. :func:`positional_figures`: the sinusoidal table, its columns, and relative positions;
4. :func:`attention_figures`: a translator's attention (of an :class:`AttentionSample`);
5. training curves (:func:`attnkit.viz.curves.plot_curves` on a run's ``metrics.jsonl``).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from attnkit.viz.heatmaps import attention_grid, save_figure, show_heatmaps
from attnkit.viz.samples import KIND_TITLES, KINDS, AttentionSample

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "CourseFigure",
    "kernel_regression_figures",
    "scoring_figures",
    "relative_position_map",
    "positional_figures",
    "attention_figures",
    "write_figures",
]


_AXES = {  # (xlabel, ylabel) per attention kind
    "encoder": ("Source (keys)", "Source (queries)"),
    "self": ("Decoder input (keys)", "Decoder input (queries)"),
    "cross": ("Source (keys)", "Output token (queries)"),
}


@dataclass
class CourseFigure:
    """A figure to save as ``name.png``, with a one-sentence caption for the index."""

    name: str
    figure: Figure
    caption: str


# ----------------------------------------------------------------- (1) Nadaraya–Watson
def kernel_regression_figures(
    n_train: int = 50, epochs: int = 5, seed: int = 0, dpi: float = 100
) -> list[CourseFigure]:
    """Nadaraya–Watson regression on the course's toy data, non-parametric and parametric.

    Args:
        n_train: number of noisy training points.
        epochs: full-batch SGD steps for the parametric version's ``w``.
        seed: data seed.
        dpi: figure resolution.

    Returns:
        ``nw_regression`` (data, truth, average pooling, both fits) and ``nw_attention`` (the
        two weight matrices, test inputs x training inputs).
    """
    from matplotlib.figure import Figure

    from attnkit.attention.kernel_regression import (
        NWKernelRegression,
        fit_kernel_regression,
        make_kernel_regression_data,
        nadaraya_watson,
    )

    data = make_kernel_regression_data(n_train, seed=seed)
    y_nonparam, w_nonparam = nadaraya_watson(data.x_test, data.x_train, data.y_train)  # (Q,K)
    model = NWKernelRegression()
    losses = fit_kernel_regression(model, data.x_train, data.y_train, epochs=epochs)
    with torch.no_grad():
        y_param, w_param = model(data.x_test, data.x_train, data.y_train)  # (Q,), (Q, K)
    w = float(model.w.detach())

    fig = Figure(figsize=(4.5, 3.0), dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(data.x_train, data.y_train, "o", color="C7", alpha=0.5, ms=3, label="data")
    ax.plot(data.x_test, data.y_test, "-", color="k", label="truth")
    mean = torch.full_like(data.x_test, float(data.y_train.mean()))
    ax.plot(data.x_test, mean, ":", label="average pooling")
    ax.plot(data.x_test, y_nonparam, "--", label="non-parametric")
    ax.plot(data.x_test, y_param, "-.", label=f"parametric (w = {w:.1f})")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(fontsize="x-small")
    heat = show_heatmaps(
        torch.stack([w_nonparam, w_param])[None],  # (1, 2, Q, K)
        xlabel="Sorted training inputs",
        ylabel="Sorted testing inputs",
        titles=["non-parametric", f"parametric (w = {w:.1f})"],
        figsize=(5.5, 3.0),
        dpi=dpi,
    )
    return [
        CourseFigure(
            "nw_regression",
            fig,
            (
                f"Nadaraya–Watson regression of y = 2 sin(x) + x^0.8 from {n_train} noisy points: "
                f"average pooling ignores x; the Gaussian-kernel estimate follows the truth; the "
                f"parametric version (w learned in {epochs} SGD steps, summed squared error "
                f"{losses[0]:.1f} -> {losses[-1]:.1f}) is sharper and noisier."
            ),
        ),
        CourseFigure(
            "nw_attention",
            heat,
            (
                "Attention weights of Nadaraya–Watson regression: each test input (row) attends "
                "to the training inputs (columns) near it; the learned w narrows the kernel."
            ),
        ),
    ]


# ----------------------------------------------------------------- (2) scoring functions
def scoring_figures(seed: int = 0, dpi: float = 100) -> list[CourseFigure]:
    """Masked softmax and the two scoring functions on small random inputs.

    Returns:
        ``masked_softmax`` (plain vs masked softmax of the same scores) and ``scoring``
        (additive vs scaled dot-product weights with valid lengths 2 and 6).
    """
    from attnkit.attention.functional import masked_softmax
    from attnkit.attention.scoring import AdditiveAttention, DotProductAttention

    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(2, 4, 6, generator=gen)  # (B, L, S)
    lens = torch.tensor([3, 5])
    plain = torch.softmax(scores, dim=-1)  # (B, L, S)
    masked = masked_softmax(scores, valid_lens=lens)  # (B, L, S)
    softmax_fig = show_heatmaps(
        torch.stack([plain, masked]),  # (2, B, L, S)
        xlabel="Keys",
        ylabel=["softmax", "masked softmax"],
        titles=[f"valid_len = {int(n)}" for n in lens],
        figsize=(4.5, 3.6),
        dpi=dpi,
    )

    torch.manual_seed(seed)  # the additive MLP's initial weights
    keys = torch.randn(2, 10, 2, generator=gen)  # (B, S, 2)
    values = torch.arange(40.0).reshape(1, 10, 4).repeat(2, 1, 1)  # (B, S, 4)
    lens = torch.tensor([2, 6])
    additive = AdditiveAttention(key_size=2, query_size=20, num_hiddens=8).eval()
    dot = DotProductAttention().eval()
    with torch.no_grad():
        _, w_add = additive(torch.randn(2, 3, 20, generator=gen), keys, values, valid_lens=lens)
        _, w_dot = dot(
            torch.randn(2, 3, 2, generator=gen), keys, values, valid_lens=lens, need_weights=True
        )
    scoring_fig = show_heatmaps(
        torch.stack([w_add, w_dot]),  # (2, B, L, S)
        xlabel="Keys",
        ylabel=["additive", "dot-product"],
        titles=[f"valid_len = {int(n)}" for n in lens],
        figsize=(5.5, 3.0),
        dpi=dpi,
    )
    return [
        CourseFigure(
            "masked_softmax",
            softmax_fig,
            (
                "Masked softmax: the same random scores with a plain softmax (top) and with keys "
                "beyond each example's valid length getting exactly zero weight (bottom)."
            ),
        ),
        CourseFigure(
            "scoring",
            scoring_fig,
            (
                "Additive (Bahdanau) and scaled dot-product attention weights for 3 queries over "
                "10 random keys, keys past the valid length masked."
            ),
        ),
    ]


# ----------------------------------------------------------------- (3) positions
def relative_position_map(delta: int, d_model: int, base: float = 10000.0) -> torch.Tensor:
    """The fixed linear map with ``P[p + delta] = P[p] @ M`` for the sinusoidal table ``P``.

    Each (sin, cos) column pair of frequency ``w`` is rotated by the angle ``delta * w``; ``M``
    depends on the offset only, never on the position ``p``.

    Args:
        delta: position offset.
        d_model: encoding size (even).
        base: the table's wavelength base.

    Returns:
        block-diagonal float64 matrix. Shapes: (D, D).
    """
    if d_model <= 0 or d_model % 2:
        raise ValueError(f"d_model must be a positive even int, got {d_model}")
    inv_freq = base ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (D/2,)
    angle = delta * inv_freq  # (D/2,)
    cos, sin = torch.cos(angle), torch.sin(angle)
    m = torch.zeros(d_model, d_model, dtype=torch.float64)
    idx = torch.arange(0, d_model, 2)
    # [sin a, cos a] @ [[cos b, -sin b], [sin b, cos b]] = [sin(a + b), cos(a + b)]
    m[idx, idx], m[idx, idx + 1] = cos, -sin
    m[idx + 1, idx], m[idx + 1, idx + 1] = sin, cos
    return m


def positional_figures(
    max_len: int = 60,
    d_model: int = 32,
    dims: Sequence[int] = (6, 7, 8, 9),
    delta: int = 5,
    dpi: float = 100,
) -> list[CourseFigure]:
    """The sinusoidal encoding: its table, some of its columns, and its relative-position map.

    Returns:
        ``positional_table``, ``positional_curves`` and ``positional_relative``.
    """
    from matplotlib.figure import Figure

    from attnkit.layers.positional import sinusoidal_table

    bad = [d for d in dims if not 0 <= d < d_model]
    if bad or not 0 < delta < max_len:
        raise ValueError(
            f"dims {list(dims)} must lie in [0, d_model={d_model}) and delta {delta} "
            f"in (0, max_len={max_len})"
        )
    table = sinusoidal_table(max_len, d_model, dtype=torch.float64)  # (max_len, D)
    table_fig = show_heatmaps(
        table,
        xlabel="Column (encoding dimension)",
        ylabel="Row (position)",
        figsize=(3.5, 4.0),
        cmap="Blues",
        dpi=dpi,
    )
    curves = Figure(figsize=(5.0, 2.6), dpi=dpi, layout="constrained")
    ax = curves.add_subplot()
    for d in dims:
        ax.plot(np.arange(max_len), table[:, d].numpy(), label=f"col {d}")
    ax.set_xlabel("Row (position)")
    ax.legend(fontsize="small")

    m = relative_position_map(delta, d_model)  # (D, D)
    shifted = table[:-delta] @ m  # (max_len - delta, D)
    error = float((shifted - table[delta:]).abs().max())
    rel = Figure(figsize=(7.0, 3.0), dpi=dpi, layout="constrained")
    ax_m, ax_dot = rel.subplots(1, 2)
    image = ax_m.imshow(m.numpy(), cmap="RdBu", vmin=-1, vmax=1)
    rel.colorbar(image, ax=ax_m, shrink=0.8)
    ax_m.set_title(f"M for offset {delta}")
    starts = (0, max_len // 6, max_len // 3)
    offsets = np.arange(max_len - starts[-1])
    for width, p in zip((3, 2, 1), starts, strict=True):
        dots = [float(table[p] @ table[p + k]) for k in offsets]
        ax_dot.plot(offsets, dots, label=f"p = {p}", lw=width)
    ax_dot.set_xlabel("offset k")
    ax_dot.set_ylabel("P[p] · P[p + k]")
    ax_dot.legend(fontsize="small")
    return [
        CourseFigure(
            "positional_table",
            table_fig,
            (
                f"The sinusoidal positional encoding for {max_len} positions and d = {d_model}: "
                "frequencies fall along the columns."
            ),
        ),
        CourseFigure(
            "positional_curves",
            curves,
            (
                f"Columns {', '.join(map(str, dims))} of the table: sine and cosine pairs, lower "
                "frequency in higher columns."
            ),
        ),
        CourseFigure(
            "positional_relative",
            rel,
            (
                f"Relative positions: P[p + {delta}] = P[p] M with one rotation matrix M for "
                f"every p (largest error {error:.1e}); so the dot product of two positions "
                "depends only on their offset (the curves for different p coincide)."
            ),
        ),
    ]


def attention_figures(
    sample: AttentionSample,
    kinds: Sequence[str] | None = None,
    dpi: float = 100,
    name: str = "attention",
) -> list[CourseFigure]:
    """One grid (rows: layers, columns: heads) per attention kind of a translated sentence.

    Args:
        sample: the sentence, its tokens and weights.
        kinds: which of ``encoder``, ``self``, ``cross`` to draw (default: all the model has).
        dpi: figure resolution.
        name: prefix of the figure names (``{name}_{kind}``).

    Returns:
        one :class:`CourseFigure` per kind, whose panel (l, h) shows ``sample.weights[kind][l][h]``.
    """
    if kinds is None:
        kinds = [k for k in KINDS if k in sample.weights]
    out = []
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)} or all, got {kind!r}")
        if kind not in sample.weights:
            raise ValueError(
                f"this model has no {kind!r} attention; it has "
                f"{', '.join(sample.weights) or 'none'}"
            )
        layers = sample.weights[kind]
        if kind == "self":  # rows and columns: the tokens each decoder step reads
            queries = keys = sample.tgt_inputs
        else:
            keys = sample.src_tokens
            queries = sample.tgt_tokens if kind == "cross" else sample.src_tokens
        grid = np.stack(layers)  # (layers, H, Q, K)
        figsize = None  # attention_grid's default, except a single panel gets more room
        if grid.shape[0] * grid.shape[1] == 1:
            figsize = (max(4.5, 0.3 * len(keys) + 2.0), max(4.0, 0.3 * len(queries) + 2.0))
        fig = attention_grid(
            grid,
            src_tokens=keys,
            tgt_tokens=queries,
            xlabel=_AXES[kind][0],
            ylabel=_AXES[kind][1],
            figsize=figsize,
            dpi=dpi,
        )
        fig.suptitle(
            f"{KIND_TITLES[kind]}\n{sample.source} → {sample.translation}", fontsize="small"
        )
        out.append(
            CourseFigure(
                f"{name}_{kind}",
                fig,
                (
                    f"{KIND_TITLES[kind].capitalize()} of every layer (rows) and head "
                    f"(columns) while translating {sample.source!r} into "
                    f"{sample.translation!r}."
                ),
            )
        )
    return out


# ----------------------------------------------------------------- index
def write_figures(
    figures: Sequence[CourseFigure],
    out_dir: str | Path,
    dpi: float | None = None,
    title: str = "attnkit figures",
) -> list[Path]:
    """Save each figure as ``out_dir/NAME.png`` and write ``index.md`` and ``index.html``.

    Returns:
        the PNG paths, in order.
    """
    out_dir = Path(out_dir)
    names = [f.name for f in figures]
    if len(set(names)) != len(names):
        raise ValueError(f"figure names must be unique, got {names}")
    paths = [save_figure(f.figure, out_dir / f"{f.name}.png", dpi=dpi) for f in figures]
    md = [f"# {title}", ""]
    body = []
    for i, f in enumerate(figures, 1):
        md += [f"## {i}. {f.name}", "", f"![{f.name}]({f.name}.png)", "", f.caption, ""]
        body.append(
            f'<figure id="{html.escape(f.name)}"><img src="{html.escape(f.name)}.png" '
            f'alt="{html.escape(f.name)}"><figcaption><b>{i}. {html.escape(f.name)}'
            f"</b> — {html.escape(f.caption)}</figcaption></figure>"
        )
    (out_dir / "index.md").write_text("\n".join(md), encoding="utf-8")
    (out_dir / "index.html").write_text(
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}img{max-width:100%}"
        f"figure{{margin:2em 0}}</style></head><body><h1>{html.escape(title)}</h1>"
        + "\n".join(body)
        + "</body></html>\n",
        encoding="utf-8",
    )
    return paths

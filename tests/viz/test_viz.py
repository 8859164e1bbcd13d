"""Heatmaps and training curves: headless rendering, saved files, displayed data == input."""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from attnkit.viz import attention_grid, plot_curves, read_metrics, show_heatmaps


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) read from the IHDR chunk, after checking the PNG signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def panels(fig, n: int):
    """The heatmap panels: the first n axes (the colorbar comes last)."""
    assert len(fig.axes) == n + 1  # one shared colorbar
    return fig.axes[:n]


def weights(*shape: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(*shape, generator=gen), dim=-1)


# ---------------------------------------------------------------- show_heatmaps
def test_heatmap_grid_shows_exactly_the_input(tmp_path: Path) -> None:
    w = weights(2, 3, 4, 5)  # (rows, cols, Q, K), float32
    fig = show_heatmaps(w, "Keys", "Queries", titles=["a", "b", "c"], path=tmp_path / "h.png")
    axes = panels(fig, 6)
    for idx, ax in enumerate(axes):
        shown = np.asarray(ax.images[0].get_array())
        np.testing.assert_array_equal(shown, w[idx // 3, idx % 3].numpy())
    # One colour scale for every panel: the global range.
    for ax in axes:
        assert ax.images[0].get_clim() == pytest.approx((float(w.min()), float(w.max())))
    # Axis labels only on the bottom row / left column, titles on the top row.
    assert [ax.get_xlabel() for ax in axes] == ["", "", "", "Keys", "Keys", "Keys"]
    assert [ax.get_ylabel() for ax in axes] == ["Queries", "", "", "Queries", "", ""]
    assert [ax.get_title() for ax in axes] == ["a", "b", "c", "", "", ""]


@pytest.mark.parametrize(
    "make",
    [
        lambda m: m,  # (Q, K) tensor
        lambda m: m.numpy(),
        lambda m: m.tolist(),  # nested Python lists
        lambda m: [[m]],  # nested lists of 2-D tensors
        lambda m: m[None].numpy(),  # (cols, Q, K)
    ],
)
def test_heatmap_accepts_several_input_forms(make) -> None:
    m = weights(3, 4, seed=1)
    fig = show_heatmaps(make(m), "k", "q")
    (ax,) = panels(fig, 1)
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), m.numpy())


def test_heatmap_nested_lists_of_matrices() -> None:
    ms = [[np.arange(6.0).reshape(2, 3), -np.ones((2, 3))], [np.eye(2, 3), np.zeros((2, 3))]]
    fig = show_heatmaps(ms, "k", "q")
    for idx, ax in enumerate(panels(fig, 4)):
        np.testing.assert_array_equal(ax.images[0].get_array(), ms[idx // 2][idx % 2])


@pytest.mark.parametrize(("figsize", "dpi"), [((2.5, 2.5), 100), ((4.0, 2.0), 50)])
def test_saved_png_has_figsize_times_dpi_pixels(tmp_path: Path, figsize, dpi) -> None:
    out = tmp_path / "sub" / "heat.png"  # parent folder created on save
    show_heatmaps(weights(1, 2, 3, 3), "k", "q", figsize=figsize, dpi=dpi, path=out)
    assert png_size(out) == (round(figsize[0] * dpi), round(figsize[1] * dpi))
    import matplotlib.image

    img = matplotlib.image.imread(out)
    assert img.shape[:2] == (round(figsize[1] * dpi), round(figsize[0] * dpi))


def test_svg_output(tmp_path: Path) -> None:
    out = tmp_path / "heat.svg"
    show_heatmaps(weights(4, 4), "k", "q", path=out)
    text = out.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text and "</svg>" in text


def test_token_tick_labels() -> None:
    src, tgt = ["je", "suis", "là", "<eos>"], ["i", "am", "here"]
    fig = show_heatmaps(weights(2, 1, 3, 4), "src", "tgt", xticklabels=src, yticklabels=tgt)
    top, bottom = panels(fig, 2)
    assert [t.get_text() for t in bottom.get_xticklabels()] == src
    assert [t.get_text() for t in bottom.get_yticklabels()] == tgt
    assert all(t.get_rotation() == 90 for t in bottom.get_xticklabels())
    # Shared x axis: the top row's x tick labels are hidden, like the course's grid.
    assert not any(t.get_visible() for t in top.get_xticklabels())


@pytest.mark.parametrize("shape", [(5,), (1, 1, 1, 2, 3)])
def test_wrong_ndim_names_the_shape(shape) -> None:
    with pytest.raises(ValueError, match=re_shape(shape)):
        show_heatmaps(torch.zeros(shape), "k", "q")


def re_shape(shape: tuple[int, ...]) -> str:
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


def test_bad_labels_and_extension(tmp_path: Path) -> None:
    w = weights(1, 2, 3, 4)
    with pytest.raises(ValueError, match="xticklabels has 3 labels .* 4 columns"):
        show_heatmaps(w, "k", "q", xticklabels=["a", "b", "c"])
    with pytest.raises(ValueError, match="titles has 1 entries for 2 columns"):
        show_heatmaps(w, "k", "q", titles=["x"])
    with pytest.raises(ValueError, match=r"\.png, \.svg, \.pdf"):
        show_heatmaps(w, "k", "q", path=tmp_path / "h.jpg")
    with pytest.raises(ValueError, match="equally shaped"):
        show_heatmaps([np.zeros((2, 2)), np.zeros((3, 3))], "k", "q")


# ---------------------------------------------------------------- attention_grid
def test_attention_grid_layers_by_heads(tmp_path: Path) -> None:
    w = weights(2, 3, 4, 5)  # (layers, heads, Q, K)
    src, tgt = list("abcde"), list("wxyz")
    out = tmp_path / "attn.png"
    fig = attention_grid({"cross": w, "self": weights(2, 3, 4, 4)}, src, tgt, key="cross", path=out)
    axes = panels(fig, 6)
    for idx, ax in enumerate(axes):
        np.testing.assert_array_equal(ax.images[0].get_array(), w[idx // 3, idx % 3].numpy())
    assert [ax.get_title() for ax in axes[:3]] == ["head 1", "head 2", "head 3"]
    assert [t.get_text() for t in axes[-1].get_xticklabels()] == src
    assert [t.get_text() for t in axes[0].get_yticklabels()] == tgt
    assert axes[0].images[0].get_clim()[0] == 0.0  # probabilities: the scale starts at 0
    assert png_size(out) == tuple(round(s * 100) for s in fig.get_size_inches())


def test_attention_grid_other_inputs_and_errors() -> None:
    per_layer = [weights(2, 3, 3, seed=s) for s in range(2)]  # list of (heads, Q, K)
    fig = attention_grid(per_layer)
    np.testing.assert_array_equal(panels(fig, 4)[2].images[0].get_array(), per_layer[1][0].numpy())
    fig = attention_grid({"enc": weights(2, 3, 3)})  # single entry: key optional
    assert len(panels(fig, 2)) == 2
    with pytest.raises(ValueError, match="pass key="):
        attention_grid({"a": weights(1, 2, 2), "b": weights(1, 2, 2)})
    with pytest.raises(ValueError, match=r"\(2, 1, 1, 3, 3\).*weights\[0\]"):
        attention_grid(weights(2, 1, 1, 3, 3))
    with pytest.raises(ValueError, match="yticklabels has 2 labels"):
        attention_grid(weights(1, 1, 3, 3), src_tokens=list("abc"), tgt_tokens=["a", "b"])


def test_rendering_needs_no_display_or_pyplot(tmp_path: Path) -> None:
    # A GUI backend in the environment and no DISPLAY: we never touch pyplot, so this still works.
    code = (
        "import sys, torch; from attnkit.viz import show_heatmaps, plot_curves;"
        f"show_heatmaps(torch.rand(2, 2, 3, 3), 'k', 'q', path={str(tmp_path / 'a.png')!r});"
        f"plot_curves({{'loss': [2.0, 1.0]}}, path={str(tmp_path / 'b.png')!r});"
        "assert 'matplotlib.pyplot' not in sys.modules"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["MPLBACKEND"] = "TkAgg"
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
    assert png_size(tmp_path / "a.png") == (250, 250)


# ---------------------------------------------------------------- curves
def write_jsonl(path: Path, n: int = 12) -> list[dict]:
    rows = []
    for s in range(1, n + 1):
        row = {"step": 10 * s, "epoch": (s - 1) // 4, "train_loss": 3.0 * math.exp(-s / 5)}
        if s % 4 == 0:
            row.update(val_loss=3.5 - 0.2 * s, bleu=5.0 * s)
        rows.append(row)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    return rows


def test_read_metrics_jsonl_tolerates_missing(tmp_path: Path) -> None:
    rows = write_jsonl(tmp_path / "m.jsonl")
    cols = read_metrics(tmp_path / "m.jsonl")
    assert list(cols) == ["step", "epoch", "train_loss", "val_loss", "bleu"]
    assert cols["step"] == [float(r["step"]) for r in rows]
    assert cols["bleu"][3] == 20.0 and all(math.isnan(v) for v in cols["bleu"][:3])


def test_read_metrics_csv_and_json(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("epoch,loss,split\n1,2.5,train\n2,,val\n3,1.5,\n")
    cols = read_metrics(tmp_path / "m.csv")
    assert cols["epoch"] == [1.0, 2.0, 3.0]
    assert cols["loss"][0] == 2.5 and math.isnan(cols["loss"][1]) and cols["loss"][2] == 1.5
    assert cols["split"] == ["train", "val", None]  # non-numeric column kept as text
    (tmp_path / "m.json").write_text(json.dumps({"step": [1, 2], "loss": [1.0, None]}))
    cols = read_metrics(tmp_path / "m.json")
    assert cols["step"] == [1.0, 2.0] and math.isnan(cols["loss"][1])


def test_read_metrics_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"step": 1}\n{"step": \n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        read_metrics(tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match="does not exist"):
        read_metrics(tmp_path / "missing.csv")
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown metrics format"):
        read_metrics(tmp_path / "m.txt")


def test_plot_curves_from_log_puts_bleu_on_second_axis(tmp_path: Path) -> None:
    rows = write_jsonl(tmp_path / "m.jsonl")
    out = tmp_path / "curves.png"
    fig = plot_curves(tmp_path / "m.jsonl", path=out, figsize=(4.0, 3.0), dpi=60)
    assert png_size(out) == (240, 180)
    left, right = fig.axes  # the loss axis and its twin
    assert left.get_xlabel() == "step"
    lines = {ln.get_label(): ln for ln in left.lines}
    assert set(lines) == {"train_loss", "val_loss"}
    np.testing.assert_allclose(lines["train_loss"].get_ydata(), [r["train_loss"] for r in rows])
    # Missing validation values are skipped, not drawn as zeros.
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    np.testing.assert_allclose(lines["val_loss"].get_xdata(), [v[0] for v in val])
    np.testing.assert_allclose(lines["val_loss"].get_ydata(), [v[1] for v in val])
    assert [ln.get_label() for ln in right.lines] == ["bleu"]
    np.testing.assert_allclose(right.lines[0].get_ydata(), [5.0 * s for s in (4, 8, 12)])


def test_plot_curves_from_dict_and_csv(tmp_path: Path) -> None:
    fig = plot_curves({"train_loss": [3.0, 2.0, 1.0], "val_loss": [3.5, None, 2.0]}, x=None)
    (ax,) = fig.axes
    assert ax.get_xlabel() == "index"
    np.testing.assert_array_equal(ax.lines[1].get_xdata(), [1.0, 3.0])
    (tmp_path / "m.csv").write_text("epoch,train_loss,bleu\n1,2.0,\n2,1.0,12.5\n")
    out = tmp_path / "c.svg"
    fig = plot_curves(tmp_path / "m.csv", path=out, x="epoch")
    assert "<svg" in out.read_text()
    assert fig.axes[1].lines[0].get_xydata().tolist() == [[2.0, 12.5]]


def test_plot_curves_errors() -> None:
    with pytest.raises(ValueError, match="x column 'time' not in history"):
        plot_curves({"step": [1, 2], "loss": [1.0, 0.5]}, x="time")
    with pytest.raises(ValueError, match="'loss' has 3 values but x column 'step' has 2"):
        plot_curves({"step": [1, 2], "loss": [1.0, 0.5, 0.2]})
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_curves({"step": [1, 2], "note": ["a", "b"]})
    with pytest.raises(ValueError, match="not numeric"):
        plot_curves({"step": [1, 2], "note": ["a", "b"]}, y=["note"])

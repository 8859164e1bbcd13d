"""The course's figures: valid PNGs of the expected size, showing exactly the library's numbers."""

from __future__ import annotations

import math
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from attnkit.data.text import BOS_ID, EOS_ID
from attnkit.data.tokenizers import SPECIAL_TOKENS, WordTokenizer
from attnkit.models import build_seq2seq
from attnkit.viz.figures import (
    attention_figures,
    kernel_regression_figures,
    positional_figures,
    relative_position_map,
    scoring_figures,
    write_figures,
)
from attnkit.viz.samples import AttentionSample, translation_sample

torch.set_num_threads(1)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def shown(fig, n: int) -> list[np.ndarray]:
    """The arrays drawn in the first n heatmap panels (the colorbar axis comes last)."""
    return [np.asarray(ax.images[0].get_array()) for ax in fig.axes[:n]]


def by_name(figures) -> dict:
    return {f.name: f for f in figures}


# ---------------------------------------------------------------- files and index
def test_every_course_figure_is_a_png_of_its_size(tmp_path: Path) -> None:
    figures = (
        kernel_regression_figures(n_train=12, epochs=2, dpi=40)
        + scoring_figures(dpi=40)
        + positional_figures(max_len=16, d_model=8, dims=(2, 3), dpi=40)
    )
    paths = write_figures(figures, tmp_path / "out")
    assert [p.name for p in paths] == [f"{f.name}.png" for f in figures]
    for f, path in zip(figures, paths, strict=True):
        width, height = f.figure.get_size_inches() * 40
        assert png_size(path) == (round(width), round(height))
    index = (tmp_path / "out" / "index.md").read_text()
    page = (tmp_path / "out" / "index.html").read_text()
    for f in figures:
        assert f"({f.name}.png)" in index and f.caption in index
        assert f'src="{f.name}.png"' in page
    with pytest.raises(ValueError, match="unique"):
        write_figures(figures[:1] * 2, tmp_path / "dup")


# ---------------------------------------------------------------- (1) Nadaraya–Watson
def naive_nw_weights(queries, keys, w: float = 1.0) -> np.ndarray:
    """float64 softmax(-((q - x) w)^2 / 2) over the keys, with plain loops."""
    out = np.zeros((len(queries), len(keys)))
    for i, q in enumerate(queries):
        e = [math.exp(-(((float(q) - float(x)) * w) ** 2) / 2) for x in keys]
        out[i] = [v / sum(e) for v in e]
    return out


def test_nadaraya_watson_figures_show_the_kernel_weights() -> None:
    from attnkit.attention.kernel_regression import make_kernel_regression_data

    figures = by_name(kernel_regression_figures(n_train=15, epochs=3))
    data = make_kernel_regression_data(15)
    nonparam, param = shown(figures["nw_attention"].figure, 2)
    expected = naive_nw_weights(data.x_test, data.x_train)
    np.testing.assert_allclose(nonparam, expected, atol=1e-6)
    # Parametric panel: the same formula with the learned w (read back from the title).
    title = figures["nw_attention"].figure.axes[1].get_title()
    w = float(title.split("w = ")[1].rstrip(")"))
    np.testing.assert_allclose(param, naive_nw_weights(data.x_test, data.x_train, w), atol=0.05)
    np.testing.assert_allclose(param.sum(axis=1), 1.0, atol=1e-6)
    # The non-parametric curve is the weighted average of the targets.
    ax = figures["nw_regression"].figure.axes[0]
    line = next(ln for ln in ax.lines if ln.get_label() == "non-parametric")
    np.testing.assert_allclose(
        line.get_ydata(), expected @ data.y_train.double().numpy(), atol=1e-5
    )
    average = next(ln for ln in ax.lines if ln.get_label() == "average pooling")
    np.testing.assert_allclose(average.get_ydata(), float(data.y_train.mean()), rtol=1e-6)


# ---------------------------------------------------------------- (2) scoring
def test_masked_softmax_and_scoring_figures() -> None:
    figures = by_name(scoring_figures(seed=3))
    plain0, plain1, masked0, masked1 = shown(figures["masked_softmax"].figure, 4)
    for plain, masked, n in ((plain0, masked0, 3), (plain1, masked1, 5)):
        # masked = plain renormalised over the first n keys, exact zeros after them
        expected = plain[:, :n] / plain[:, :n].sum(axis=1, keepdims=True)
        np.testing.assert_allclose(masked[:, :n], expected, rtol=1e-5)
        assert (masked[:, n:] == 0).all()
    for panel, n in zip(shown(figures["scoring"].figure, 4), (2, 6, 2, 6), strict=True):
        assert panel.shape == (3, 10)
        assert (panel[:, n:] == 0).all() and (panel[:, :n] > 0).all()
        np.testing.assert_allclose(panel.sum(axis=1), 1.0, rtol=1e-6)


# ---------------------------------------------------------------- (3) positions
def naive_table(max_len: int, d: int) -> np.ndarray:
    p = np.zeros((max_len, d))
    for pos in range(max_len):
        for i in range(0, d, 2):
            p[pos, i] = math.sin(pos / 10000 ** (i / d))
            if i + 1 < d:
                p[pos, i + 1] = math.cos(pos / 10000 ** (i / d))
    return p


def test_positional_figures_and_relative_map() -> None:
    figures = by_name(positional_figures(max_len=20, d_model=8, dims=(2, 3), delta=3))
    (table,) = shown(figures["positional_table"].figure, 1)
    np.testing.assert_allclose(table, naive_table(20, 8), atol=1e-12)
    lines = figures["positional_curves"].figure.axes[0].lines
    np.testing.assert_allclose(lines[1].get_ydata(), naive_table(20, 8)[:, 3], atol=1e-12)
    np.testing.assert_allclose(
        figures["positional_relative"].figure.axes[0].images[0].get_array(),
        relative_position_map(3, 8).numpy(),
    )
    for delta in (1, 7):
        p = naive_table(40, 16)
        m = relative_position_map(delta, 16).numpy()
        np.testing.assert_allclose(p[:-delta] @ m, p[delta:], atol=1e-12)
        np.testing.assert_allclose(m @ m.T, np.eye(16), atol=1e-12)  # a rotation
    with pytest.raises(ValueError, match="even"):
        relative_position_map(1, 7)


# ---------------------------------------------------------------- (4) a model's attention
def tiny(model_type: str):
    torch.manual_seed(0)
    sizes = (
        {
            "d_model": 16,
            "num_heads": 2,
            "ffn_hidden": 32,
            "num_encoder_layers": 2,
            "num_decoder_layers": 3,
        }
        if model_type == "transformer"
        else {"embed_size": 8, "num_hiddens": 16, "num_layers": 1}
    )
    return build_seq2seq(
        model_type, {"src_vocab_size": 20, "tgt_vocab_size": 20, "dropout": 0.0, **sizes}
    ).eval()


def model_weights(model, src: torch.Tensor, tgt: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    with torch.no_grad():
        memory, enc = model.encode(src, need_weights=True)
        _, dec = model.decode(tgt, memory, need_weights=True)
    return {
        "encoder": [w[0] for w in enc],
        "self": [w[0] for w in dec["self"]],
        "cross": [w[0] for w in dec["cross"]],
    }


def test_attention_grids_show_the_model_weights(tmp_path: Path) -> None:
    model = tiny("transformer")
    src, tgt = torch.tensor([[5, 6, 7, 8, 9, 3]]), torch.tensor([[2, 10, 11, 12]])
    weights = model_weights(model, src, tgt)
    sample = AttentionSample("s", "t", list("abcdeZ"), ["x", "y", "z", "</s>"], weights)
    figures = attention_figures(sample, dpi=50)
    assert [f.name for f in figures] == ["attention_encoder", "attention_self", "attention_cross"]
    for f in figures:
        kind = f.name.split("_")[1]
        layers = weights[kind]
        heads = layers[0].shape[0]
        panels = shown(f.figure, len(layers) * heads)
        for idx, panel in enumerate(panels):  # row = layer, column = head
            expected = layers[idx // heads][idx % heads].double().numpy()
            np.testing.assert_array_equal(panel, expected)
        axes = f.figure.axes
        # self-attention: named by the tokens each step reads (BOS, then the previous output)
        keys = ["<s>", "x", "y", "z"] if kind == "self" else list("abcdeZ")
        queries = {"encoder": list("abcdeZ"), "self": keys, "cross": ["x", "y", "z", "</s>"]}[kind]
        assert [t.get_text() for t in axes[len(panels) - 1].get_xticklabels()] == keys
        assert [t.get_text() for t in axes[0].get_yticklabels()] == queries
        path = write_figures([f], tmp_path)[0]
        assert png_size(path) == tuple(round(s * 50) for s in f.figure.get_size_inches())


def test_bahdanau_has_cross_attention_only() -> None:
    model = tiny("bahdanau")
    src, tgt = torch.tensor([[5, 6, 7]]), torch.tensor([[2, 10]])
    weights = model_weights(model, src, tgt)  # encoder and self lists are empty
    sample = AttentionSample("s", "t", list("abc"), list("xy"), weights)
    assert list(sample.weights) == ["cross"]
    (fig,) = attention_figures(sample)
    np.testing.assert_array_equal(shown(fig.figure, 1)[0], weights["cross"][0][0].double())
    with pytest.raises(ValueError, match="no 'encoder' attention"):
        attention_figures(sample, ["encoder"])
    with pytest.raises(ValueError, match=r"\(1, 2, 3\); expected \(heads, 3, 3\)"):
        AttentionSample("s", "t", list("abc"), list("xyz"), weights)


def test_translation_sample_labels_pieces_and_eos() -> None:
    src_tok = WordTokenizer([*SPECIAL_TOKENS, "le", "chat"])
    tgt_tok = WordTokenizer([*SPECIAL_TOKENS, "the", "cat"])
    translator = SimpleNamespace(
        src_tok=src_tok, tgt_tok=tgt_tok, encode_sources=lambda ss: [src_tok.encode(x) for x in ss]
    )
    eos = tgt_tok.pieces([EOS_ID])[0]
    cross = torch.softmax(torch.randn(1, 3, 2), -1)  # (H, T, S): 2 tokens + EOS
    result = SimpleNamespace(
        source="le chat",
        text="the cat",
        tokens=[4, 5],
        weights={"encoder": [], "self": [], "cross": [cross]},
    )
    sample = translation_sample(translator, result, reference="the cat")
    assert sample.src_tokens == ["le", "chat"]
    assert sample.tgt_tokens == ["the", "cat", eos]
    assert sample.tgt_inputs == [tgt_tok.pieces([BOS_ID])[0], "the", "cat"]
    np.testing.assert_array_equal(sample.weights["cross"][0], cross.double().numpy())
    result.weights = None
    with pytest.raises(ValueError, match="need_weights=True"):
        translation_sample(translator, result)


# ---------------------------------------------------------------- (5) training curves
def test_curves_of_a_run_log_split_train_and_valid(tmp_path: Path) -> None:
    import json

    from attnkit.viz.curves import pivot_splits, plot_curves

    rows = [
        {"split": "train", "step": s, "epoch": 0, "loss": 5.0 / s, "lr": 1e-3} for s in (1, 2, 3, 4)
    ]
    rows.insert(2, {"split": "valid", "step": 2, "epoch": 1, "loss": 2.2, "bleu": 10.0})
    rows.append({"split": "valid", "step": 4, "epoch": 2, "loss": 1.1, "bleu": 30.0})
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    left, right = plot_curves(log, path=tmp_path / "c.png", dpi=50).axes
    lines = {ln.get_label(): ln.get_xydata().tolist() for ln in left.lines}
    assert lines == {
        "train_loss": [[1, 5.0], [2, 2.5], [3, 5 / 3], [4, 1.25]],
        "valid_loss": [[2, 2.2], [4, 1.1]],
    }
    assert [ln.get_label() for ln in right.lines] == ["valid_bleu"]
    assert right.lines[0].get_xydata().tolist() == [[2, 10.0], [4, 30.0]]
    assert png_size(tmp_path / "c.png") == (225, 150)
    columns = pivot_splits({"split": ["a", "b"], "step": [1.0, 2.0], "x": [1.0, None]})
    assert list(columns) == ["step", "a_x"]  # b_x has no value: dropped
    assert pivot_splits({"x": [1.0]}) == {"x": [1.0]}


# ---------------------------------------------------------------- the commands, on a tiny run
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    from attnkit.cli.viz import demo_run_config
    from attnkit.translation.config import RunConfig, TrainConfig
    from attnkit.translation.run import train_translator

    cfg = demo_run_config("transformer", quick=True)
    small = {**cfg.train.__dict__, "epochs": 1}
    model = {
        **cfg.model,
        "d_model": 16,
        "num_heads": 2,
        "ffn_hidden": 32,
        "num_encoder_layers": 1,
        "num_decoder_layers": 2,
    }
    data = cfg.data.__class__(**{**cfg.data.__dict__, "num_examples": 300, "valid_limit": 8})
    # Short outputs (an untrained model rarely stops by itself) keep the grids small and fast.
    decode = cfg.decode.__class__(**{**cfg.decode.__dict__, "max_len_a": 0.5, "max_len_b": 2})
    cfg = RunConfig(cfg.model_type, model, data, TrainConfig(**small), decode)
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    train_translator(cfg, run_dir)
    return run_dir


def test_attention_command_writes_one_grid_per_kind(tiny_run: Path, tmp_path: Path, capsys) -> None:
    from attnkit.cli import main

    out = tmp_path / "attn.png"
    assert (
        main(
            [
                "attention",
                "--run",
                str(tiny_run),
                "monday 3 may 1999",
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    for kind in ("encoder", "self", "cross"):
        assert png_size(tmp_path / f"attn-{kind}.png")[0] > 100
    assert (
        main(
            [
                "attention",
                "--run",
                str(tiny_run),
                "3 may 1999",
                "--out",
                str(out),
                "--kind",
                "cross",
                "--beam",
                "2",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert png_size(out)[0] > 100
    assert main(["attention", "--run", str(tiny_run), "x", "--out", str(tmp_path / "a.jpg")]) == 2
    assert "must end in .png" in capsys.readouterr().err


def test_figures_command_with_a_run(tiny_run: Path, tmp_path: Path) -> None:
    from attnkit.cli import main

    run = str(tiny_run)
    assert main(["figures", "--out", str(tmp_path), "--run", run, "--run", run, "--dpi", "30"]) == 0
    index = (tmp_path / "index.md").read_text()
    for name in (
        "nw_regression",
        "nw_attention",
        "masked_softmax",
        "scoring",
        "positional_table",
        "positional_curves",
        "positional_relative",
        "transformer_attention_encoder",
        "transformer_attention_self",
        "transformer_attention_cross",
        "transformer_curves",
        "transformer-tiny_attention_cross",  # a second run of the same kind: named by its folder
        "transformer-tiny_curves",
    ):
        assert f"({name}.png)" in index
        assert png_size(tmp_path / f"{name}.png")[0] > 50

"""Positional encodings, each checked against a reference written here (float64 formulas, PyTorch's
own interpolation, the ALiBi paper's published slopes)."""

from __future__ import annotations

import cmath
import math

import pytest
import torch
import torch.nn.functional as F

from attnkit.layers.positional import (
    LearnedPositionalEmbedding,
    LearnedPositionalEmbedding2D,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    alibi_bias,
    alibi_slopes,
    resize_1d,
    resize_grid,
    sincos_2d_table,
    sinusoidal_table,
)


def naive_sinusoidal(max_len: int, d: int, base: float = 10000.0) -> torch.Tensor:
    table = torch.zeros(max_len, d, dtype=torch.float64)
    for p in range(max_len):
        for j in range(d):
            angle = p / base ** (2 * (j // 2) / d)
            table[p, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    return table


# ---------------------------------------------------------------- sinusoidal


@pytest.mark.parametrize("d", [8, 7, 1])
def test_sinusoidal_table_matches_formula(d):
    ref = naive_sinusoidal(30, d)
    assert torch.allclose(sinusoidal_table(30, d, dtype=torch.float64), ref, atol=1e-12)
    table32 = sinusoidal_table(30, d)
    assert table32.dtype == torch.float32 and table32.shape == (30, d)
    assert torch.allclose(table32.double(), ref, atol=1e-6)


def test_sinusoidal_base_argument():
    assert torch.allclose(
        sinusoidal_table(12, 6, base=100.0, dtype=torch.float64), naive_sinusoidal(12, 6, 100.0)
    )


@pytest.mark.parametrize("k", [1, 3, 17])
def test_sinusoidal_shift_is_a_linear_map(k):
    """The course's property: PE[p + k] = M_k PE[p], M_k block-diagonal 2x2 rotations."""
    d, n = 10, 40
    table = sinusoidal_table(n + k, d, dtype=torch.float64)
    m = torch.zeros(d, d, dtype=torch.float64)
    for i in range(d // 2):
        b = k / 10000 ** (2 * i / d)
        # (sin(a + b), cos(a + b)) = [[cos b, sin b], [-sin b, cos b]] @ (sin a, cos a)
        m[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.tensor(
            [[math.cos(b), math.sin(b)], [-math.sin(b), math.cos(b)]], dtype=torch.float64
        )
    assert torch.allclose(table[:n] @ m.T, table[k : n + k], atol=1e-10)


def test_sinusoidal_forward_adds_with_offset():
    pe = SinusoidalPositionalEncoding(d_model=6, max_len=20)
    x = torch.randn(2, 5, 6)
    ref = naive_sinusoidal(20, 6).float()
    assert torch.allclose(pe(x), x + ref[:5], atol=1e-6)
    assert torch.allclose(pe(x, offset=15), x + ref[15:20], atol=1e-6)
    assert torch.allclose(pe.table, ref, atol=1e-6)
    assert pe.state_dict() == {}  # non-persistent buffer


def test_sinusoidal_forward_keeps_dtype():
    pe = SinusoidalPositionalEncoding(d_model=4, max_len=8)
    x = torch.randn(1, 3, 4, dtype=torch.bfloat16)
    assert pe(x).dtype == torch.bfloat16


def test_sinusoidal_dropout_after_adding():
    torch.manual_seed(0)
    pe = SinusoidalPositionalEncoding(d_model=8, dropout=0.5, max_len=16).train()
    x = torch.randn(3, 10, 8)
    out = pe(x)
    summed = 2 * (x + naive_sinusoidal(16, 8)[:10].float())  # inverted dropout scales by 1/(1-p)
    kept = out != 0
    assert 0 < kept.float().mean() < 1
    assert torch.allclose(out[kept], summed[kept], atol=1e-5)
    assert torch.equal(pe.eval()(x), pe.eval()(x))


@pytest.mark.parametrize("cls", ["sin", "learned"])
def test_positions_are_validated(cls):
    module = (
        SinusoidalPositionalEncoding(d_model=4, max_len=10)
        if cls == "sin"
        else LearnedPositionalEmbedding(max_len=10, d_model=4)
    )
    x = torch.zeros(1, 6, 4)
    with pytest.raises(ValueError, match=r"max_len = 10") as info:
        module(x, offset=5)
    assert "11" in str(info.value)  # the requested length
    with pytest.raises(ValueError, match="offset"):
        module(x, offset=-1)
    with pytest.raises(ValueError, match=r"\(B, L, 4\)"):
        module(torch.zeros(1, 6, 5))
    module(x, offset=4)  # exactly fits


# ---------------------------------------------------------------- learned 1-D / 2-D


def test_learned_embedding_adds_rows():
    emb = LearnedPositionalEmbedding(max_len=12, d_model=5)
    assert emb.weight.shape == (12, 5) and emb.table.shape == (12, 5)
    x = torch.randn(2, 4, 5)
    out = emb(x, offset=3)
    assert torch.allclose(out, x + emb.weight.detach()[3:7])
    out.sum().backward()
    used = emb.weight.grad.abs().sum(dim=1) > 0
    assert used.tolist() == [False] * 3 + [True] * 4 + [False] * 5


def test_sincos_2d_halves_depend_on_column_and_row():
    h, w, dim = 3, 5, 16
    q = dim // 4
    table = sincos_2d_table(h, w, dim, dtype=torch.float64)
    assert table.shape == (h * w, dim)
    for r in range(h):
        for c in range(w):
            row = table[r * w + c]
            for k in range(q):
                omega = 10000.0 ** (-k / q)
                expected = [
                    math.sin(c * omega),
                    math.cos(c * omega),
                    math.sin(r * omega),
                    math.cos(r * omega),
                ]
                got = [row[k], row[q + k], row[2 * q + k], row[3 * q + k]]
                assert torch.allclose(torch.stack(got), torch.tensor(expected, dtype=torch.float64))
    grid = table.reshape(h, w, dim)
    assert torch.equal(grid[:, :, : dim // 2], grid[:1, :, : dim // 2].expand(h, w, dim // 2))
    assert torch.equal(grid[:, :, dim // 2 :], grid[:, :1, dim // 2 :].expand(h, w, dim // 2))
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d_table(2, 2, 6)


def test_learned_2d_is_row_major():
    emb = LearnedPositionalEmbedding2D(grid_h=3, grid_w=4, dim=2)
    assert emb.weight.shape == (3, 4, 2)
    flat = emb()
    assert flat.shape == (12, 2) and torch.equal(flat, emb.flat())
    for r in range(3):
        for c in range(4):
            assert torch.equal(flat[r * 4 + c], emb.weight[r, c])


# ---------------------------------------------------------------- resizing


def test_resize_identity_when_equal():
    table = torch.randn(12, 7)
    assert torch.equal(resize_grid(table, (3, 4), (3, 4)), table)
    assert torch.equal(resize_grid(table.reshape(3, 4, 7), (3, 4), (3, 4)), table)
    assert torch.equal(resize_1d(table, 12), table)


@pytest.mark.parametrize(("old", "new"), [((4, 6), (7, 5)), ((8, 8), (5, 6)), ((3, 3), (6, 9))])
def test_resize_grid_matches_torch_bicubic(old, new):
    torch.manual_seed(0)
    (h, w), (h2, w2), d = old, new, 5
    table = torch.randn(h * w, d, dtype=torch.float64)
    image = table.reshape(1, h, w, d).permute(0, 3, 1, 2)  # (1, D, h, w)
    ref = F.interpolate(image, size=new, mode="bicubic", align_corners=False, antialias=True)
    ref = ref[0].permute(1, 2, 0).reshape(h2 * w2, d)
    assert torch.allclose(resize_grid(table, old, new), ref, atol=1e-10)


def test_resize_grid_keeps_linear_structure():
    h, w, h2, w2, d = 6, 4, 10, 7, 3
    slope = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    rows = torch.arange(h, dtype=torch.float64)
    table = (rows[:, None, None] * slope + 3.0).expand(h, w, d)  # linear in the row index
    out = resize_grid(table, (h, w), (h2, w2)).reshape(h2, w2, d)
    assert torch.allclose(out, out[:, :1].expand(h2, w2, d))  # still independent of the column
    col = out[:, 0, 0]
    assert bool((col[1:] > col[:-1]).all())  # still monotone in the row
    for i in range(h2):  # exact wherever the four bicubic taps lie inside the old grid
        src = (i + 0.5) * h / h2 - 0.5
        if 1 <= src <= h - 2:
            assert torch.allclose(out[i, 0], src * slope + 3.0, atol=1e-12)


def test_resize_grid_with_width_one():
    """(8, 1) -> (4, 1) must equal a grid of constant columns (8, 2) -> (4, 2)."""
    column = torch.randn(8, 1, 3, dtype=torch.float64)
    narrow = resize_grid(column, (8, 1), (4, 1))
    wide = resize_grid(column.expand(8, 2, 3), (8, 2), (4, 2)).reshape(4, 2, 3)
    assert torch.allclose(narrow, wide[:, 0], atol=1e-12)
    assert torch.allclose(resize_1d(column[:, 0], 4), narrow, atol=1e-12)


def test_resize_1d_matches_bicubic_and_keeps_dtype():
    table = torch.randn(9, 4, dtype=torch.float64)
    image = table.T[None, :, None, :].expand(1, 4, 2, 9)  # (1, D, 2, N), two equal rows
    ref = F.interpolate(image, size=(2, 13), mode="bicubic", align_corners=False, antialias=True)
    assert torch.allclose(resize_1d(table, 13), ref[0, :, 0].T, atol=1e-12)
    assert resize_1d(table.half(), 5).dtype == torch.float16


def test_resize_validates_shapes():
    with pytest.raises(ValueError, match="resize_grid"):
        resize_grid(torch.zeros(10, 3), (3, 4), (4, 4))
    with pytest.raises(ValueError, match="resize_1d"):
        resize_1d(torch.zeros(2, 3, 4), 5)


# ---------------------------------------------------------------- rotary


def naive_rotary(x: torch.Tensor, positions: list[int], base: float = 10000.0) -> torch.Tensor:
    """Rotate-half pairing as complex numbers: z_i = x_i + j x_{i+half}, times e^{j pos theta_i}."""
    half = x.shape[-1] // 2
    out = torch.zeros(x.shape, dtype=torch.float64)
    for t, pos in enumerate(positions):
        for i in range(half):
            theta = base ** (-2 * i / x.shape[-1])
            z = complex(x[..., t, i].item(), x[..., t, i + half].item())
            z = z * cmath.exp(1j * pos * theta)
            out[..., t, i], out[..., t, i + half] = z.real, z.imag
    return out


def test_rotary_matches_complex_reference():
    torch.manual_seed(0)
    rope = RotaryEmbedding(head_dim=8)
    x = torch.randn(1, 1, 5, 8, dtype=torch.float64)
    assert torch.allclose(rope.rotate(x), naive_rotary(x, list(range(5))), atol=1e-6)
    assert torch.allclose(rope(x, offset=7), naive_rotary(x, list(range(7, 12))), atol=1e-6)


def test_rotary_relative_property_and_norm():
    torch.manual_seed(1)
    rope = RotaryEmbedding(head_dim=16)
    q, k = torch.randn(2, 16, dtype=torch.float64)
    n = 12
    rq = rope.rotate(q.expand(1, 1, n, 16))[0, 0]  # (n, Dh): q at positions 0..n-1
    rk = rope.rotate(k.expand(1, 1, n, 16))[0, 0]
    scores = rq @ rk.T  # scores[m, p] = <rot(q, m), rot(k, p)>
    for m in range(n):
        for p in range(n):
            diag = torch.diagonal(scores, offset=p - m)  # all pairs with the same m - p
            assert torch.allclose(diag, scores[m, p].expand_as(diag), atol=1e-5)
    assert not torch.allclose(scores[0, 0], scores[0, 3])  # but it does depend on m - p
    assert torch.allclose(rq.norm(dim=-1), q.norm().expand(n), atol=1e-5)


def test_rotary_offset_consistency_dtype_and_cache_growth():
    torch.manual_seed(2)
    rope = RotaryEmbedding(head_dim=4, max_len=4)
    x = torch.randn(2, 3, 10, 4)
    full = rope.rotate(x)  # grows the caches past max_len
    assert rope.cos_cached.shape[0] >= 10 and rope.state_dict() == {}
    assert torch.allclose(rope.rotate(x[:, :, 6:], offset=6), full[:, :, 6:], atol=1e-6)
    xb = x.bfloat16()
    out = rope.rotate(xb, offset=100)
    assert out.dtype == torch.bfloat16 and out.shape == x.shape
    ref = naive_rotary(xb[0, 0].float(), list(range(100, 110)))
    assert torch.allclose(out[0, 0].double(), ref, atol=5e-2)


def test_rotary_validates():
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding(head_dim=5)
    with pytest.raises(ValueError, match="head_dim|\\(\\.\\.\\., L, 8\\)"):
        RotaryEmbedding(head_dim=8).rotate(torch.zeros(1, 1, 3, 6))


# ---------------------------------------------------------------- ALiBi


def test_alibi_slopes_published_values():
    assert torch.allclose(alibi_slopes(8), torch.tensor([1 / 2**i for i in range(1, 9)]))
    # non-powers of two: slopes for the largest power of two below, then every other slope of 2x
    assert torch.allclose(
        alibi_slopes(6), torch.tensor([1 / 4, 1 / 16, 1 / 64, 1 / 256, 1 / 2, 1 / 8])
    )
    twelve = [2.0**-i for i in range(1, 9)] + [2.0**-0.5, 2.0**-1.5, 2.0**-2.5, 2.0**-3.5]
    assert torch.allclose(alibi_slopes(12), torch.tensor(twelve))
    assert torch.allclose(alibi_slopes(16), torch.tensor([2.0 ** (-0.5 * i) for i in range(1, 17)]))
    assert alibi_slopes(1).tolist() == [2.0**-8]


@pytest.mark.parametrize(("L", "S"), [(5, 5), (2, 6), (1, 4)])
def test_alibi_bias_values(L, S):
    heads = 6
    bias = alibi_bias(heads, L, S)
    assert bias.shape == (heads, L, S) and bias.dtype == torch.float32
    slopes = alibi_slopes(heads)
    for h in range(heads):
        for i in range(L):
            q_pos = S - L + i
            for j in range(S):
                assert bias[h, i, j].item() == pytest.approx(-slopes[h].item() * abs(q_pos - j))
    assert alibi_bias(2, 3, 3, dtype=torch.float64).dtype == torch.float64
    with pytest.raises(ValueError, match="L=4"):
        alibi_bias(2, 4, 3)

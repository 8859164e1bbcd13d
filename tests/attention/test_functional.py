"""Tests for masked_softmax and attention() against float64 references written here."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from attnkit.attention.functional import attention, masked_softmax, uses_math_path

SETTINGS = settings(max_examples=30, deadline=None)
TOL = {torch.float32: 2e-5, torch.float64: 1e-10}


# -- independent references ----------------------------------------------------------------------
def naive_masked_softmax(scores: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """Row-by-row float64 softmax over the kept keys; a row with no kept key is all zeros."""
    scores = scores.double()
    keep = torch.ones_like(scores, dtype=torch.bool) if keep is None else keep
    keep = keep.expand(scores.shape)
    flat_s, flat_k = scores.reshape(-1, scores.shape[-1]), keep.reshape(-1, scores.shape[-1])
    out = torch.zeros_like(flat_s)
    for r in range(flat_s.shape[0]):
        idx = [j for j in range(flat_s.shape[1]) if flat_k[r, j]]
        if not idx:
            continue
        top = max(float(flat_s[r, j]) for j in idx)
        exps = {j: math.exp(float(flat_s[r, j]) - top) for j in idx}
        total = sum(exps.values())
        for j in idx:
            out[r, j] = exps[j] / total
    return out.reshape(scores.shape)


def course_masked_softmax(scores: torch.Tensor, valid_lens: torch.Tensor) -> torch.Tensor:
    """The course's definition, in float64: keys at positions >= the length get score -1e6,
    then an ordinary softmax over the last axis. ``valid_lens`` is (B,) or (B, Q)."""
    x = scores.double().clone()
    batch, num_q, num_k = x.shape
    for b in range(batch):
        for i in range(num_q):
            n = int(valid_lens[b]) if valid_lens.dim() == 1 else int(valid_lens[b, i])
            x[b, i, n:] = -1e6
    e = torch.exp(x - x.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def lens_to_keep(valid_lens: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """(B,) or (B, Q) lengths -> bool keep mask of ``shape`` (B, ..., Q, K), by loops."""
    keep = torch.zeros(shape, dtype=torch.bool)
    batch, num_q = shape[0], shape[-2]
    for b in range(batch):
        for i in range(num_q):
            n = int(valid_lens[b]) if valid_lens.dim() == 1 else int(valid_lens[b, i])
            keep[b, ..., i, :n] = True
    return keep


def naive_attention(q, k, v, keep=None, bias=None, scale=None):
    """float64 softmax(q k^T * scale + bias, masked) v; empty rows give zero output."""
    q, k, v = q.double(), k.double(), v.double()
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale
    if bias is not None:
        scores = scores + bias.double()
    if keep is not None:
        keep = keep.expand(scores.shape)
    weights = naive_masked_softmax(scores, keep)
    return weights @ v, weights


def causal_keep(query_len: int, key_len: int) -> torch.Tensor:
    """Bottom-right aligned: query i sees keys j <= key_len - query_len + i (loops)."""
    keep = torch.zeros(query_len, key_len, dtype=torch.bool)
    for i in range(query_len):
        for j in range(key_len):
            keep[i, j] = j <= key_len - query_len + i
    return keep


# -- masked_softmax -------------------------------------------------------------------------------
@SETTINGS
@given(
    batch=st.integers(1, 3),
    heads=st.sampled_from([0, 2]),
    num_q=st.integers(1, 4),
    num_k=st.integers(1, 6),
    per_query=st.booleans(),
    use_mask=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_masked_softmax_matches_naive(batch, heads, num_q, num_k, per_query, use_mask, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    shape = (batch, *([heads] if heads else []), num_q, num_k)
    scores = (3 * torch.randn(shape, generator=g)).to(dtype)
    lens_shape = (batch, num_q) if per_query else (batch,)
    valid_lens = torch.randint(0, num_k + 1, lens_shape, generator=g)
    mask = torch.rand(shape, generator=g) > 0.3 if use_mask else None

    got = masked_softmax(scores, valid_lens=valid_lens, mask=mask)

    keep = lens_to_keep(valid_lens, torch.Size(shape))
    if mask is not None:
        keep = keep & mask
    expected = naive_masked_softmax(scores, keep)
    assert got.dtype == dtype and got.shape == scores.shape
    assert not torch.isnan(got).any()
    torch.testing.assert_close(got.double(), expected, atol=TOL[dtype], rtol=0)
    assert (got[~keep] == 0.0).all(), "masked keys must get exactly 0"
    sums = got.double().sum(-1)
    has_key = keep.any(-1)
    torch.testing.assert_close(sums[has_key], torch.ones_like(sums[has_key]), atol=1e-5, rtol=0)
    assert (sums[~has_key] == 0).all(), "a row with no valid key must be all zeros"


@pytest.mark.parametrize("num_k", [1, 2, 7, 11, 15, 16, 17, 40])
@pytest.mark.parametrize("grad", [False, True])
def test_masked_softmax_short_rows_both_paths_match_float64(num_k: int, grad: bool) -> None:
    # Rows shorter than 16 take the composed softmax in inference (PyTorch's kernel is slow
    # there) and torch.softmax when a gradient is recorded: both must equal float64 softmax.
    g = torch.Generator().manual_seed(num_k)
    scores = (4 * torch.randn(37, 3, 5, num_k, generator=g)).requires_grad_(grad)
    mask = torch.rand(37, 1, 1, num_k, generator=g) > 0.3
    mask[:, :, :, 0] = True  # every row has a key
    got = masked_softmax(scores, mask=mask)
    ref = torch.softmax(scores.detach().double().masked_fill(~mask, -math.inf), dim=-1)
    torch.testing.assert_close(got.detach().double(), ref, atol=1e-6, rtol=0)
    assert (got[~mask.expand_as(got)] == 0).all()
    if grad:
        got.square().sum().backward()
        leaf = scores.detach().double().requires_grad_()
        expected = torch.softmax(leaf.masked_fill(~mask, -math.inf), dim=-1)
        expected.square().sum().backward()
        torch.testing.assert_close(scores.grad.double(), leaf.grad, atol=1e-6, rtol=0)


@SETTINGS
@given(
    batch=st.integers(1, 3),
    num_q=st.integers(1, 4),
    num_k=st.integers(1, 8),
    per_query=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_masked_softmax_equals_course_definition(batch, num_q, num_k, per_query, seed):
    """Where the course's -1e6 formula is meaningful (rows with >= 1 valid key), we agree."""
    g = torch.Generator().manual_seed(seed)
    scores = 2 * torch.randn(batch, num_q, num_k, generator=g, dtype=torch.float64)
    lens_shape = (batch, num_q) if per_query else (batch,)
    valid_lens = torch.randint(1, num_k + 1, lens_shape, generator=g)
    got = masked_softmax(scores, valid_lens)
    torch.testing.assert_close(got, course_masked_softmax(scores, valid_lens), atol=1e-12, rtol=0)


def test_masked_softmax_course_examples() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 2, 4)
    got = masked_softmax(x, torch.tensor([2, 3]))
    assert (got[0, :, 2:] == 0).all() and (got[1, :, 3:] == 0).all()
    assert (got[0, :, :2] > 0).all() and (got[1, :, :3] > 0).all()
    torch.testing.assert_close(got.double(), course_masked_softmax(x, torch.tensor([2, 3])))
    lens = torch.tensor([[1, 3], [2, 4]])
    got = masked_softmax(x, lens)
    torch.testing.assert_close(got.double(), course_masked_softmax(x, lens))
    assert got[0, 0, 0] == 1.0 and (got[0, 0, 1:] == 0).all()


def test_masked_softmax_empty_row_differs_from_course_on_purpose() -> None:
    # The course's formula gives uniform weights for a row with no valid key; we give zeros.
    x = torch.randn(1, 2, 3)
    got = masked_softmax(x, torch.tensor([0]))
    assert torch.equal(got, torch.zeros(1, 2, 3))
    assert torch.allclose(
        course_masked_softmax(x, torch.tensor([0])).float(), torch.full_like(x, 1 / 3)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masked_softmax_very_negative_scores(dtype) -> None:
    # A finite magic fill (-1e6, -1e9) would let masked keys win against scores this low.
    x = torch.tensor([[[-1e7, -1e7 + 1.0, 5.0, 0.0]]], dtype=dtype)
    got = masked_softmax(x, torch.tensor([2]))
    expected = naive_masked_softmax(x, torch.tensor([[[True, True, False, False]]]))
    torch.testing.assert_close(got.double(), expected)
    assert got[0, 0, 1] > got[0, 0, 0] > 0


def test_masked_softmax_without_mask_is_softmax() -> None:
    x = torch.randn(2, 3, 5)
    torch.testing.assert_close(masked_softmax(x), torch.softmax(x, dim=-1))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_masked_softmax_low_precision(dtype) -> None:
    x = torch.randn(2, 3, 5).to(dtype)
    lens = torch.tensor([0, 3])
    got = masked_softmax(x, lens)
    assert got.dtype == dtype and torch.isfinite(got).all()
    assert (got[0] == 0).all() and (got[1, :, 3:] == 0).all()
    expected = naive_masked_softmax(x, lens_to_keep(lens, x.shape))
    torch.testing.assert_close(got.double(), expected, atol=1e-2, rtol=0)


def test_masked_softmax_grad_finite_with_empty_rows() -> None:
    x = torch.randn(2, 3, 4, requires_grad=True)
    w = masked_softmax(x, torch.tensor([0, 2]))
    (w * torch.randn_like(w)).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad[0] == 0).all() and (x.grad[1, :, 2:] == 0).all()


# -- attention(): SDPA path == math path == naive ------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 2),
    heads=st.sampled_from([0, 1, 3]),
    q_len=st.integers(1, 5),
    k_len=st.integers(1, 6),
    dk=st.integers(1, 8),
    dv=st.integers(1, 5),
    lens_kind=st.sampled_from([None, "B", "BL"]),
    use_mask=st.booleans(),
    bias_kind=st.sampled_from([None, "LS", "full"]),
    is_causal=st.booleans(),
    use_scale=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_attention_paths_agree_with_naive(
    batch,
    heads,
    q_len,
    k_len,
    dk,
    dv,
    lens_kind,
    use_mask,
    bias_kind,
    is_causal,
    use_scale,
    dtype,
    seed,
):
    g = torch.Generator().manual_seed(seed)
    lead = (batch, *([heads] if heads else []))
    q = torch.randn(*lead, q_len, dk, generator=g, dtype=dtype)
    k = torch.randn(*lead, k_len, dk, generator=g, dtype=dtype)
    v = torch.randn(*lead, k_len, dv, generator=g, dtype=dtype)
    scores_shape = torch.Size((*lead, q_len, k_len))
    keep = torch.ones(scores_shape, dtype=torch.bool)
    valid_lens = mask = bias = None
    if lens_kind is not None:
        valid_lens = torch.randint(
            0, k_len + 1, (batch,) if lens_kind == "B" else (batch, q_len), generator=g
        )
        keep &= lens_to_keep(valid_lens, scores_shape)
    if use_mask:
        mask = torch.rand(scores_shape, generator=g) > 0.25
        keep &= mask
    if is_causal:
        keep &= causal_keep(q_len, k_len)
    if bias_kind == "LS":
        bias = torch.randn(q_len, k_len, generator=g, dtype=dtype)
    elif bias_kind == "full":
        bias = torch.randn(scores_shape, generator=g, dtype=dtype)
    scale = 0.3 if use_scale else None

    def run(need_weights: bool, kernel: str = "auto"):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        b = None if bias is None else bias.clone().requires_grad_()
        out, w = attention(
            *leaves,
            mask=mask,
            valid_lens=valid_lens,
            attn_bias=b,
            is_causal=is_causal,
            scale=scale,
            need_weights=need_weights,
            kernel=kernel,
        )
        out.backward(torch.ones_like(out))
        grads = [t.grad for t in leaves] + ([] if b is None else [b.grad])
        return out, w, grads

    fused, none_w, fused_grads = run(need_weights=False, kernel="sdpa")
    math_out, weights, math_grads = run(need_weights=True)
    auto_out, auto_w, auto_grads = run(need_weights=False)  # math if k_len <= dk, else SDPA
    expected, expected_w = naive_attention(q, k, v, keep, bias, scale)

    assert none_w is None and auto_w is None and weights.shape == scores_shape
    for t in (fused, math_out, weights, *fused_grads, *math_grads):
        assert torch.isfinite(t).all(), "no NaN/inf in outputs, weights or gradients"
    tol = TOL[dtype] * 10
    for out in (fused, math_out, auto_out):
        torch.testing.assert_close(out.double(), expected, atol=tol, rtol=0)
    torch.testing.assert_close(weights.double(), expected_w, atol=tol, rtol=0)
    for a, b, c in zip(fused_grads, math_grads, auto_grads, strict=True):
        torch.testing.assert_close(a, b, atol=tol * 10, rtol=1e-4)
        torch.testing.assert_close(c, b, atol=tol * 10, rtol=1e-4)
    assert (weights[~keep] == 0).all()
    empty = ~keep.any(-1)  # fully masked query rows
    assert (fused[empty] == 0).all() and (math_out[empty] == 0).all()
    assert (auto_out[empty] == 0).all()


def test_kernel_choice_short_keys_on_cpu_take_the_math_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []
    sdpa = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    q = torch.randn(2, 3, 5, 8)
    short, long = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 9, 8)  # S = Dk and S = Dk + 1
    attention(q, short, short)
    assert calls == []  # S <= Dk on the CPU: math path
    attention(q, long, long)
    assert len(calls) == 1  # S > Dk: SDPA
    attention(q, short, short, kernel="sdpa")
    attention(q, long, long, kernel="math")
    assert len(calls) == 2
    assert uses_math_path(q, short) and not uses_math_path(q, long)
    assert uses_math_path(q, long, need_weights=True) and uses_math_path(q, long, kernel="math")
    assert not uses_math_path(q.to("meta"), short.to("meta"))  # other devices: SDPA
    assert not uses_math_path(q[..., :1, :], short)  # one query (cached decoding): SDPA
    with pytest.raises(ValueError, match="kernel must be one of"):
        attention(q, short, short, kernel="flash")
    with pytest.raises(ValueError, match="need_weights=True needs the math path"):
        attention(q, short, short, need_weights=True, kernel="sdpa")


def test_math_path_keeps_no_more_than_sdpa_plus_the_weights() -> None:
    from attnkit.bench.attention import saved_bytes

    b, h, length, dk = 4, 2, 16, 16
    q, k, v = (torch.randn(b, h, length, dk, requires_grad=True) for _ in range(3))
    lens = torch.tensor([16, 9, 4, 1])
    nbytes = {
        kernel: saved_bytes(
            nn.Identity(),
            lambda kernel=kernel: attention(q, k, v, valid_lens=lens, kernel=kernel)[0],
        )
        for kernel in ("sdpa", "math")
    }
    weights_bytes = b * h * length * length * 4
    assert nbytes["math"] <= nbytes["sdpa"] + weights_bytes


def test_attention_causal_bottom_right_when_fewer_queries() -> None:
    torch.manual_seed(1)
    q, k, v = torch.randn(2, 3, 8), torch.randn(2, 7, 8), torch.randn(2, 7, 4)
    out, w = attention(q, k, v, is_causal=True, need_weights=True)
    fused, _ = attention(q, k, v, is_causal=True)
    # Query i of 3 sees keys 0 .. 4 + i; the last query sees all 7 keys.
    assert (w[:, 0, 5:] == 0).all() and (w[:, 0, :5] > 0).all()
    assert (w[:, 2] > 0).all()
    torch.testing.assert_close(fused, out)
    expected, _ = naive_attention(q, k, v, causal_keep(3, 7))
    torch.testing.assert_close(fused.double(), expected, atol=1e-5, rtol=0)


def test_attention_causal_more_queries_than_keys_gives_zero_rows() -> None:
    q, k, v = torch.randn(1, 5, 4), torch.randn(1, 3, 4), torch.randn(1, 3, 4)
    fused, _ = attention(q, k, v, is_causal=True)
    out, w = attention(q, k, v, is_causal=True, need_weights=True)
    assert (fused[:, :2] == 0).all() and (out[:, :2] == 0).all() and (w[:, :2] == 0).all()
    torch.testing.assert_close(fused, out)


def test_attention_fully_masked_no_nan_in_grads() -> None:
    q = torch.randn(2, 2, 3, 4, requires_grad=True)
    k = torch.randn(2, 2, 5, 4, requires_grad=True)
    v = torch.randn(2, 2, 5, 4, requires_grad=True)
    mask = torch.zeros(2, 1, 3, 5, dtype=torch.bool)
    mask[1, :, 1:, :2] = True
    for need_weights in (False, True):
        for t in (q, k, v):
            t.grad = None
        out, _ = attention(q, k, v, mask=mask, need_weights=need_weights)
        assert (out[0] == 0).all() and (out[1, :, 0] == 0).all()
        out.square().sum().backward()
        for t in (q, k, v):
            assert torch.isfinite(t.grad).all()
        assert (q.grad[0] == 0).all() and (v.grad[0] == 0).all()


def test_attention_dropout_weights_returned_before_dropout() -> None:
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 8), torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    plain_out, plain_w = attention(q, k, v, need_weights=True)
    drop_out, drop_w = attention(q, k, v, need_weights=True, dropout_p=0.5)
    torch.testing.assert_close(drop_w, plain_w)
    assert not torch.allclose(drop_out, plain_out)
    fused_drop, _ = attention(q, k, v, dropout_p=0.5)
    assert not torch.allclose(fused_drop, plain_out)


# -- bad input ------------------------------------------------------------------------------------
def test_attention_rejects_bad_shapes() -> None:
    q, k, v = torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 6)
    with pytest.raises(ValueError, match=r"same feature size.*\(2, 3, 4\).*\(2, 5, 3\)"):
        attention(q, torch.randn(2, 5, 3), v)
    with pytest.raises(ValueError, match=r"keys and values need the same length.*\(2, 4, 6\)"):
        attention(q, k, torch.randn(2, 4, 6))
    with pytest.raises(ValueError, match=r"valid_lens has batch size 3.*\(2, 3, 5\)"):
        attention(q, k, v, valid_lens=torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"valid_lens of shape \(2, 4\).*Q=3"):
        attention(q, k, v, valid_lens=torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"valid_lens must lie in \[0, 5\].*\[1, 6\]"):
        attention(q, k, v, valid_lens=torch.tensor([1, 6]))
    with pytest.raises(ValueError, match="mask must be a bool tensor.*float32.*attn_bias"):
        attention(q, k, v, mask=torch.ones(3, 5))


def test_masked_softmax_rejects_bad_input() -> None:
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="mask must be a bool tensor.*int64"):
        masked_softmax(x, mask=torch.ones(2, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"valid_lens must lie in \[0, 4\].*\[0, 5\]"):
        masked_softmax(x, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="valid_lens has batch size 1"):
        masked_softmax(x, torch.tensor([1]))


def test_masked_softmax_compiles_as_one_graph() -> None:
    scores = torch.randn(2, 3, 4)
    mask = torch.tensor([[True, True, False, False], [False] * 4, [True] * 4])  # one empty row
    compiled = torch.compile(masked_softmax, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(scores, mask=mask), masked_softmax(scores, mask=mask))
    assert (compiled(scores, mask=mask)[:, 1] == 0).all()


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("masked", [False, True])
def test_cpu_autocast_fused_path_runs_float32_when_training(
    monkeypatch: pytest.MonkeyPatch, grad: bool, masked: bool
) -> None:
    """Under CPU bf16 autocast the fused kernel gets float32 inputs when gradients will flow
    (its bf16 backward is slow) and bf16 ones in inference; the output is bf16 either way and
    agrees with a float64 reference to bf16 precision, gradients included."""
    seen = []
    sdpa = F.scaled_dot_product_attention

    def spying(*args, **kwargs):
        seen.append((args[0].dtype, torch.is_autocast_enabled("cpu")))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spying)
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 40, 8, dtype=torch.bfloat16) for _ in range(3))
    for t in (q, k, v):
        t.requires_grad_(grad)
    lens = torch.tensor([40, 17]) if masked else None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = attention(q, k, v, valid_lens=lens, is_causal=True, kernel="sdpa")
    assert out.dtype == torch.bfloat16
    assert seen == [(torch.float32, False)] if grad else seen == [(torch.bfloat16, True)]
    keep = torch.ones(40, 40, dtype=torch.bool).tril()
    if masked:
        keep = keep & (torch.arange(40) < lens[:, None, None, None])
    qd, kd, vd = (t.detach().double().requires_grad_() for t in (q, k, v))
    scores = (qd @ kd.transpose(-2, -1) / math.sqrt(8)).masked_fill(~keep, -math.inf)
    ref = scores.softmax(-1) @ vd  # float64, every query row has its first key
    assert (out.double() - ref).abs().max() < 3e-2
    if grad:
        g = torch.randn_like(ref)
        ref.backward(g)
        out.backward(g.to(out.dtype))
        for ours, theirs in ((q, qd), (k, kd), (v, vd)):
            assert ours.grad.dtype == torch.bfloat16
            assert (ours.grad.double() - theirs.grad).abs().max() < 5e-2

"""Tests for DotProductAttention and AdditiveAttention against float64 formulas written here."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnkit.attention.scoring import AdditiveAttention, DotProductAttention

SETTINGS = settings(max_examples=20, deadline=None)


def keep_from_lens(valid_lens: torch.Tensor, num_q: int, num_k: int) -> torch.Tensor:
    """(B,) or (B, Q) lengths -> (B, Q, K) bool, by loops."""
    keep = torch.zeros(valid_lens.shape[0], num_q, num_k, dtype=torch.bool)
    for b in range(valid_lens.shape[0]):
        for i in range(num_q):
            n = int(valid_lens[b]) if valid_lens.dim() == 1 else int(valid_lens[b, i])
            keep[b, i, :n] = True
    return keep


def softmax_rows(scores: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """float64 exp / sum over kept keys; rows with none kept are zero."""
    s = scores.double().masked_fill(~keep, -math.inf)
    top = s.max(-1, keepdim=True).values.nan_to_num(0.0, neginf=0.0)
    e = torch.exp(s - top) * keep
    total = e.sum(-1, keepdim=True)
    return torch.where(total > 0, e / total.clamp_min(1e-300), torch.zeros_like(e))


def naive_dot(q, k, v, keep):
    scores = torch.einsum("bqd,bkd->bqk", q.double(), k.double()) / math.sqrt(q.shape[-1])
    w = softmax_rows(scores, keep)
    return torch.einsum("bqk,bkv->bqv", w, v.double()), w


def naive_additive(module: AdditiveAttention, q, k, v, keep):
    """score(q, k) = w_v^T tanh(W_q q + W_k k), one (query, key) pair at a time."""
    W_q = module.W_q.weight.double()  # (h, query_size)
    W_k = module.W_k.weight.double()  # (h, key_size)
    w_v = module.w_v.weight.double()[0]  # (h,)
    batch, num_q, num_k = q.shape[0], q.shape[1], k.shape[1]
    scores = torch.zeros(batch, num_q, num_k, dtype=torch.float64)
    for b in range(batch):
        for i in range(num_q):
            for j in range(num_k):
                hidden = torch.tanh(W_q @ q[b, i].double() + W_k @ k[b, j].double())
                scores[b, i, j] = w_v @ hidden
    w = softmax_rows(scores, keep)
    return torch.einsum("bqk,bkv->bqv", w, v.double()), w


@SETTINGS
@given(
    batch=st.integers(1, 3),
    num_q=st.integers(1, 4),
    num_k=st.integers(1, 6),
    d=st.integers(1, 6),
    dv=st.integers(1, 4),
    per_query=st.booleans(),
    use_mask=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_dot_product_matches_formula(batch, num_q, num_k, d, dv, per_query, use_mask, seed):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(batch, num_q, d, generator=g), torch.randn(batch, num_k, d, generator=g)
    v = torch.randn(batch, num_k, dv, generator=g)
    lens = torch.randint(0, num_k + 1, (batch, num_q) if per_query else (batch,), generator=g)
    keep = keep_from_lens(lens, num_q, num_k)
    mask = None
    if use_mask:
        mask = torch.rand(batch, num_q, num_k, generator=g) > 0.3
        keep &= mask
    module = DotProductAttention(dropout=0.5).eval()
    out, w = module(q, k, v, valid_lens=lens, mask=mask, need_weights=True)
    fused, none_w = module(q, k, v, valid_lens=lens, mask=mask)
    expected, expected_w = naive_dot(q, k, v, keep)
    assert none_w is None and out.shape == (batch, num_q, dv) and w.shape == (batch, num_q, num_k)
    torch.testing.assert_close(out.double(), expected, atol=2e-5, rtol=0)
    torch.testing.assert_close(fused.double(), expected, atol=2e-5, rtol=0)
    torch.testing.assert_close(w.double(), expected_w, atol=2e-5, rtol=0)
    assert (w[~keep] == 0).all()


@SETTINGS
@given(
    batch=st.integers(1, 2),
    num_q=st.integers(1, 3),
    num_k=st.integers(1, 5),
    q_size=st.integers(1, 5),
    k_size=st.integers(1, 5),
    hidden=st.integers(1, 6),
    per_query=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_additive_matches_formula(batch, num_q, num_k, q_size, k_size, hidden, per_query, seed):
    torch.manual_seed(seed)
    module = AdditiveAttention(
        key_size=k_size, query_size=q_size, num_hiddens=hidden, dropout=0.5
    ).eval()
    q, k = torch.randn(batch, num_q, q_size), torch.randn(batch, num_k, k_size)
    v = torch.randn(batch, num_k, 3)
    lens = torch.randint(0, num_k + 1, (batch, num_q) if per_query else (batch,))
    keep = keep_from_lens(lens, num_q, num_k)
    out, w = module(q, k, v, valid_lens=lens)
    expected, expected_w = naive_additive(module, q, k, v, keep)
    torch.testing.assert_close(out.double(), expected, atol=2e-5, rtol=0)
    torch.testing.assert_close(w.double(), expected_w, atol=2e-5, rtol=0)
    assert (w[~keep] == 0).all()


def test_course_toy_example_additive() -> None:
    torch.manual_seed(0)
    queries, keys = torch.normal(0, 1, (2, 1, 20)), torch.normal(0, 1, (2, 10, 2))
    values = torch.arange(40, dtype=torch.float32).reshape(1, 10, 4).repeat(2, 1, 1)
    valid_lens = torch.tensor([2, 6])
    module = AdditiveAttention(key_size=2, query_size=20, num_hiddens=8, dropout=0.1).eval()
    out, w = module(queries, keys, values, valid_lens)
    assert out.shape == (2, 1, 4) and w.shape == (2, 1, 10)
    assert (w[0, 0, :2] > 0).all() and (w[0, 0, 2:] == 0).all()
    assert (w[1, 0, :6] > 0).all() and (w[1, 0, 6:] == 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 1))
    # Each output is a convex combination of the visible values' rows.
    assert (out[0, 0] <= values[0, 1]).all() and (out[0, 0] >= values[0, 0]).all()


def test_course_toy_example_dot_product() -> None:
    torch.manual_seed(0)
    queries, keys = torch.normal(0, 1, (2, 1, 2)), torch.normal(0, 1, (2, 10, 2))
    values = torch.arange(40, dtype=torch.float32).reshape(1, 10, 4).repeat(2, 1, 1)
    module = DotProductAttention(dropout=0.5).eval()
    out, w = module(queries, keys, values, torch.tensor([2, 6]), need_weights=True)
    assert out.shape == (2, 1, 4)
    assert (w[0, 0, :2] > 0).all() and (w[0, 0, 2:] == 0).all()
    assert (w[1, 0, :6] > 0).all() and (w[1, 0, 6:] == 0).all()


def test_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 8), torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    dot = DotProductAttention(dropout=0.5)
    eval_out = dot.eval()(q, k, v)[0]
    torch.testing.assert_close(dot.eval()(q, k, v)[0], eval_out)  # deterministic in eval
    assert not torch.allclose(dot.train()(q, k, v)[0], eval_out)
    add = AdditiveAttention(8, 8, 5, dropout=0.5)
    eval_out, eval_w = add.eval()(q, k, v)
    train_out, train_w = add.train()(q, k, v)
    torch.testing.assert_close(train_w, eval_w)  # returned weights are pre-dropout
    assert not torch.allclose(train_out, eval_out)


def test_additive_need_weights_false() -> None:
    module = AdditiveAttention(3, 4, 5)
    out, w = module(
        torch.randn(1, 2, 4), torch.randn(1, 3, 3), torch.randn(1, 3, 2), need_weights=False
    )
    assert w is None and out.shape == (1, 2, 2)


def test_bad_input() -> None:
    dot = DotProductAttention()
    with pytest.raises(ValueError, match=r"3-D.*\(2, 4\)"):
        dot(torch.randn(2, 4), torch.randn(2, 3, 4), torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match=r"batch sizes differ.*\(2, 1, 4\).*\(3, 3, 4\)"):
        dot(torch.randn(2, 1, 4), torch.randn(3, 3, 4), torch.randn(3, 3, 4))
    with pytest.raises(ValueError, match=r"same length S.*\(2, 3, 4\).*\(2, 5, 4\)"):
        dot(torch.randn(2, 1, 4), torch.randn(2, 3, 4), torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match=r"same size.*\(2, 1, 5\).*AdditiveAttention"):
        dot(torch.randn(2, 1, 5), torch.randn(2, 3, 4), torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match=r"valid_lens must lie in \[0, 3\]"):
        dot(torch.randn(2, 1, 4), torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.tensor([1, 4]))
    with pytest.raises(ValueError, match="dropout must be in"):
        DotProductAttention(dropout=1.0)
    add = AdditiveAttention(key_size=2, query_size=3, num_hiddens=4)
    with pytest.raises(ValueError, match=r"query size 3 and key size 2.*\(1, 1, 5\)"):
        add(torch.randn(1, 1, 5), torch.randn(1, 2, 2), torch.randn(1, 2, 2))
    with pytest.raises(ValueError, match="num_hiddens must be positive"):
        AdditiveAttention(2, 3, 0)
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        add(
            torch.randn(1, 1, 3),
            torch.randn(1, 2, 2),
            torch.randn(1, 2, 2),
            mask=torch.ones(1, 1, 2),
        )


def test_additive_with_precomputed_keys_is_identical() -> None:
    """Keys projected once (as the Bahdanau decoder does for all its steps) give exactly the
    output and weights of projecting them in every call; a wrongly shaped projection is an
    error."""
    torch.manual_seed(0)
    attn = AdditiveAttention(key_size=6, query_size=5, num_hiddens=8).eval()
    q, k, v = torch.randn(2, 3, 5), torch.randn(2, 4, 6), torch.randn(2, 4, 7)
    lens = torch.tensor([2, 4])
    out, w = attn(q, k, v, valid_lens=lens)
    out2, w2 = attn(q, k, v, valid_lens=lens, projected_keys=attn.project_keys(k))
    assert torch.equal(out, out2) and torch.equal(w, w2)
    with pytest.raises(ValueError, match="projected_keys"):
        attn(q, k, v, projected_keys=torch.randn(2, 4, 5))


def test_bahdanau_step_by_step_equals_teacher_forcing() -> None:
    """Incremental decoding with the cache (projected keys stored once, reordered with the
    beam) gives the teacher-forced logits."""
    from attnkit.config import BahdanauConfig
    from attnkit.models.bahdanau import BahdanauSeq2Seq

    torch.manual_seed(0)
    model = BahdanauSeq2Seq(
        BahdanauConfig(src_vocab_size=50, tgt_vocab_size=50, embed_size=16, num_hiddens=24)
    ).eval()
    src = torch.randint(4, 50, (3, 7))
    mask = torch.ones_like(src, dtype=torch.bool)
    mask[1, 5:] = False
    tgt = torch.randint(4, 50, (3, 6))
    with torch.no_grad():
        full = model(src, tgt, mask)
        memory, _ = model.encode(src, mask)
        cache = model.init_cache(memory, mask)
        steps = [model.decode(tgt[:, i : i + 1], memory, mask, cache=cache)[0] for i in range(3)]
        order = torch.tensor([2, 0, 1])
        cache.reorder(order)
        steps = [s[order] for s in steps]
        steps += [
            model.decode(tgt[order, i : i + 1], memory[order], mask[order], cache=cache)[0]
            for i in range(3, 6)
        ]
    torch.testing.assert_close(torch.cat(steps, dim=1), full[order], rtol=1e-5, atol=1e-6)

"""Tests for MultiHeadAttention and KVCache, against torch.nn.MultiheadAttention and invariances."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnkit.attention.masks import causal_mask, padding_mask, to_key_padding_mask
from attnkit.attention.multihead import KVCache, MultiHeadAttention

ATOL = 1e-5
D, H = 16, 4


def torch_mha(**kwargs) -> nn.MultiheadAttention:
    torch.manual_seed(0)
    module = nn.MultiheadAttention(D, H, batch_first=True, **kwargs).eval()
    with torch.no_grad():  # non-zero biases so that bias handling is exercised
        for name, p in module.named_parameters():
            if "bias" in name:
                p.normal_()
    return module


def close(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL) -> None:
    torch.testing.assert_close(a, b, atol=atol, rtol=0)


# -- agreement with nn.MultiheadAttention --------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_self_attention_matches_torch(bias: bool) -> None:
    ref = torch_mha(bias=bias)
    ours = MultiHeadAttention.from_torch(ref).eval()
    x = torch.randn(3, 7, D)
    expected, _ = ref(x, x, x, need_weights=False)
    close(ours(x, x, x)[0], expected)
    # Same tensor values but not the same object: the unfused projection path.
    close(ours(x, x.clone(), x.clone())[0], expected)


def test_padding_mask_matches_torch() -> None:
    ref = torch_mha()
    ours = MultiHeadAttention.from_torch(ref).eval()
    x = torch.randn(3, 6, D)
    lens = torch.tensor([6, 2, 4])
    key_mask = padding_mask(lens, 6)  # (B, S) True = real key
    expected, _ = ref(x, x, x, key_padding_mask=to_key_padding_mask(key_mask), need_weights=False)
    close(ours(x, x, x, valid_lens=lens)[0], expected)
    close(ours(x, x, x, mask=key_mask[:, None, :])[0], expected)  # (B, 1, S) -> (B, 1, 1, S)
    close(ours(x, x, x, mask=key_mask[:, None, None, :])[0], expected)


def test_causal_mask_matches_torch() -> None:
    ref = torch_mha()
    ours = MultiHeadAttention.from_torch(ref).eval()
    x = torch.randn(2, 5, D)
    not_allowed = ~causal_mask(5)  # PyTorch's bool attn_mask: True = may NOT attend
    expected, _ = ref(x, x, x, attn_mask=not_allowed, need_weights=False)
    close(ours(x, x, x, is_causal=True)[0], expected)
    close(ours(x, x, x, mask=causal_mask(5))[0], expected)
    # Causal plus padding.
    lens = torch.tensor([5, 3])
    expected, _ = ref(
        x,
        x,
        x,
        attn_mask=not_allowed,
        key_padding_mask=to_key_padding_mask(padding_mask(lens, 5)),
        need_weights=False,
    )
    close(ours(x, x, x, is_causal=True, valid_lens=lens)[0], expected)


@pytest.mark.parametrize("bias", [True, False])
def test_cross_attention_kdim_vdim_matches_torch(bias: bool) -> None:
    ref = torch_mha(kdim=6, vdim=10, bias=bias)
    ours = MultiHeadAttention.from_torch(ref).eval()
    assert not ours.packed
    q, k, v = torch.randn(2, 3, D), torch.randn(2, 8, 6), torch.randn(2, 8, 10)
    lens = torch.tensor([8, 5])
    expected, ref_w = ref(
        q,
        k,
        v,
        key_padding_mask=to_key_padding_mask(padding_mask(lens, 8)),
        need_weights=True,
        average_attn_weights=False,
    )
    out, w = ours(q, k, v, valid_lens=lens, need_weights=True)
    close(out, expected)
    close(w, ref_w)
    close(ours(q, k, v, valid_lens=lens)[0], expected)


def test_cross_attention_packed_matches_torch() -> None:
    ref = torch_mha()
    ours = MultiHeadAttention.from_torch(ref).eval()
    q, memory = torch.randn(2, 3, D), torch.randn(2, 9, D)
    expected, _ = ref(q, memory, memory, need_weights=False)
    close(ours(q, memory, memory)[0], expected)  # keys is values: one fused K/V matmul
    v = torch.randn(2, 9, D)
    expected, _ = ref(q, memory, v, need_weights=False)
    close(ours(q, memory, v)[0], expected)


def test_need_weights_matches_torch_per_head_weights() -> None:
    ref = torch_mha()
    ours = MultiHeadAttention.from_torch(ref).eval()
    x = torch.randn(2, 5, D)
    lens = torch.tensor([5, 3])
    kpm = to_key_padding_mask(padding_mask(lens, 5))
    expected, ref_w = ref(
        x, x, x, key_padding_mask=kpm, need_weights=True, average_attn_weights=False
    )
    out, w = ours(x, x, x, valid_lens=lens, need_weights=True)
    assert w.shape == (2, H, 5, 5)
    close(out, expected)
    close(w, ref_w)
    assert (w[1, :, :, 3:] == 0).all()


def test_to_torch_round_trip() -> None:
    torch.manual_seed(3)
    for kwargs in ({}, {"bias": False}, {"kdim": 5, "vdim": 7}):
        ours = MultiHeadAttention(D, H, **kwargs).eval()
        with torch.no_grad():
            for p in ours.parameters():
                p.normal_(0, 0.3)
        ref = ours.to_torch().eval()
        assert ref.batch_first
        q = torch.randn(2, 4, D)
        k = torch.randn(2, 6, kwargs.get("kdim", D))
        v = torch.randn(2, 6, kwargs.get("vdim", D))
        expected, ref_w = ref(q, k, v, need_weights=True, average_attn_weights=False)
        out, w = ours(q, k, v, need_weights=True)
        close(out, expected)
        close(w, ref_w)
        back = MultiHeadAttention.from_torch(ref)
        theirs = back.state_dict()
        assert theirs.keys() == ours.state_dict().keys()
        for name, a in ours.state_dict().items():
            b = theirs[name]
            assert torch.equal(a, b), name


def test_parameter_count_matches_torch() -> None:
    for kwargs in ({}, {"bias": False}, {"kdim": 6, "vdim": 10}):
        ref = nn.MultiheadAttention(D, H, batch_first=True, **kwargs)
        ours = MultiHeadAttention(D, H, **kwargs)
        assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())


def test_sdpa_path_equals_math_path() -> None:
    torch.manual_seed(1)
    mha = MultiHeadAttention(D, H).eval()
    x = torch.randn(2, 6, D)
    lens = torch.tensor([[6, 6, 2, 3, 4, 6], [1, 2, 3, 4, 5, 6]])  # per-query lengths (B, L)
    for kwargs in (
        {},
        {"is_causal": True},
        {"valid_lens": lens},
        {"attn_bias": torch.randn(H, 6, 6)},
        {"mask": torch.rand(2, 6, 6) > 0.3},
    ):
        fused, none = mha(x, x, x, **kwargs)
        slow, w = mha(x, x, x, need_weights=True, **kwargs)
        assert none is None
        close(fused, slow)


def test_dropout_off_in_eval_on_in_train() -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(D, H, dropout=0.5)
    x = torch.randn(2, 6, D)
    a, b = mha.eval()(x, x, x)[0], mha.eval()(x, x, x)[0]
    torch.testing.assert_close(a, b)
    assert not torch.allclose(mha.train()(x, x, x)[0], a)


# -- invariances ----------------------------------------------------------------------------------
def test_padding_invariance() -> None:
    torch.manual_seed(2)
    mha = MultiHeadAttention(D, H).eval()
    lens = torch.tensor([4, 2])
    q, kv = torch.randn(2, 3, D), torch.randn(2, 4, D)
    out = mha(q, kv, kv, valid_lens=lens)[0]
    longer = torch.cat([kv, 100 * torch.randn(2, 5, D)], dim=1)  # 5 more padded keys
    close(mha(q, longer, longer, valid_lens=lens)[0], out)
    # Self-attention: real positions are unchanged by more trailing padding.
    x = torch.randn(2, 4, D)
    x_long = torch.cat([x, torch.randn(2, 3, D)], dim=1)
    out = mha(x, x, x, valid_lens=lens)[0]
    out_long = mha(x_long, x_long, x_long, valid_lens=lens)[0]
    for b, n in enumerate(lens.tolist()):
        close(out_long[b, :n], out[b, :n])


def test_causal_invariance() -> None:
    torch.manual_seed(3)
    mha = MultiHeadAttention(D, H).eval()
    x = torch.randn(2, 8, D)
    out = mha(x, x, x, is_causal=True)[0]
    for t in range(7):
        y = x.clone()
        y[:, t + 1 :] = torch.randn(2, 7 - t, D)
        changed = mha(y, y, y, is_causal=True)[0]
        close(changed[:, : t + 1], out[:, : t + 1])
        assert not torch.allclose(changed[:, t + 1 :], out[:, t + 1 :])


# -- KV cache -------------------------------------------------------------------------------------
class StubRotary(nn.Module):
    """Rotary embedding written here (pairs (2i, 2i+1) rotated by pos * base^(-2i/Dh))."""

    def __init__(self, head_dim: int, base: float = 100.0) -> None:
        super().__init__()
        self.inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)

    def rotate(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        pos = torch.arange(offset, offset + x.shape[-2], dtype=torch.float32)
        angle = pos[:, None] * self.inv_freq[None, :]  # (L, Dh/2)
        cos, sin = angle.cos(), angle.sin()
        even, odd = x[..., 0::2], x[..., 1::2]
        return torch.stack([even * cos - odd * sin, even * sin + odd * cos], -1).flatten(-2)


def decode_incrementally(mha, x, chunks, cache=None, **kwargs):
    cache = KVCache() if cache is None else cache
    outs, start = [], 0
    for size in chunks:
        step = x[:, start : start + size]
        outs.append(mha(step, step, step, is_causal=True, cache=cache, **kwargs)[0])
        start += size
    return torch.cat(outs, dim=1), cache


@pytest.mark.parametrize("rotary", [False, True])
@pytest.mark.parametrize("chunks", [[1] * 10, [4, 1, 1, 3, 1], [10]])
def test_kv_cache_equals_full_causal(rotary: bool, chunks: list) -> None:
    torch.manual_seed(4)
    mha = MultiHeadAttention(D, H, rotary=StubRotary(D // H) if rotary else None).eval()
    x = torch.randn(2, 10, D)
    full = mha(x, x, x, is_causal=True)[0]
    with torch.inference_mode():
        step_out, cache = decode_incrementally(mha, x, chunks)
    close(step_out, full)
    assert cache.length == 10 and cache.keys.shape == (2, H, 10, D // H)


def test_kv_cache_need_weights() -> None:
    torch.manual_seed(5)
    mha = MultiHeadAttention(D, H).eval()
    x = torch.randn(1, 4, D)
    full_w = mha(x, x, x, is_causal=True, need_weights=True)[1]
    cache = KVCache()
    for t in range(4):
        _, w = mha(
            x[:, t : t + 1],
            x[:, t : t + 1],
            x[:, t : t + 1],
            is_causal=True,
            cache=cache,
            need_weights=True,
        )
        assert w.shape == (1, H, 1, t + 1)
        close(w[:, :, 0], full_w[:, :, t, : t + 1])


def test_kv_cache_grows_past_capacity() -> None:
    torch.manual_seed(6)
    mha = MultiHeadAttention(D, H).eval()
    x = torch.randn(2, 40, D)
    full = mha(x, x, x, is_causal=True)[0]
    out, cache = decode_incrementally(mha, x, [1] * 40)  # initial capacity 16: grows twice
    close(out, full)
    out, cache = decode_incrementally(mha, x, [5, 30, 5])  # one append larger than doubling
    close(out, full)
    assert cache.length == 40


def test_static_cache_equals_uncached() -> None:
    torch.manual_seed(7)
    for kwargs in ({}, {"kdim": 6, "vdim": 6}):
        mha = MultiHeadAttention(D, H, **kwargs).eval()
        kd = kwargs.get("kdim", D)
        memory, tgt = torch.randn(2, 7, kd), torch.randn(2, 5, D)
        lens = torch.tensor([7, 4])
        full = mha(tgt, memory, memory, valid_lens=lens)[0]
        cache = KVCache(static=True)
        steps = [
            mha(tgt[:, t : t + 1], memory, memory, valid_lens=lens, cache=cache)[0]
            for t in range(5)
        ]
        close(torch.cat(steps, dim=1), full)
        assert cache.length == 7
        # Later calls use the cache, not the keys passed in.
        again = mha(
            tgt, torch.zeros_like(memory), torch.zeros_like(memory), valid_lens=lens, cache=cache
        )[0]
        close(again, full)


def test_kv_cache_reorder_selects_rows() -> None:
    torch.manual_seed(8)
    mha = MultiHeadAttention(D, H).eval()
    x = torch.randn(3, 6, D)
    _, cache = decode_incrementally(mha, x[:, :4], [1] * 4)
    before_k, before_v = cache.keys.clone(), cache.values.clone()
    index = torch.tensor([2, 0, 0])
    cache.reorder(index)
    assert torch.equal(cache.keys, before_k[index]) and torch.equal(cache.values, before_v[index])
    # Continuing after reorder == decoding the reordered batch from scratch.
    y = x[index]
    rest, _ = decode_incrementally(mha, y[:, 4:], [1, 1], cache=cache)
    close(rest, mha(y, y, y, is_causal=True)[0][:, 4:])
    static = KVCache(static=True)
    memory = torch.randn(3, 5, D)
    mha(x[:, :1], memory, memory, cache=static)
    static.reorder(index)
    assert torch.equal(static.keys, mha.project_kv(memory, memory)[0][index])


def test_kv_cache_reorders_in_inference_reusing_two_buffers() -> None:
    """Beam search's pattern: reorder after every step (rows expand, permute, shrink). Each
    reorder equals indexing the (B, H, S, Dh) keys/values, and the storage alternates between
    two buffers instead of being allocated anew."""
    torch.manual_seed(9)
    mha = MultiHeadAttention(D, H).eval()
    cache, ref_x = KVCache(), torch.randn(2, 1, D)
    indices = [
        torch.tensor([0, 0, 0, 1, 1, 1]),  # 2 -> 6 rows (step 0 branches into 3 beams)
        torch.tensor([2, 0, 1, 5, 5, 3]),
        torch.tensor([1, 1, 0, 4, 3, 3]),
        torch.tensor([0, 2, 2, 1, 0, 0]),
        torch.tensor([4, 3, 5]),  # a sentence left
        torch.tensor([2, 0, 0]),
    ]
    storages = []
    with torch.inference_mode():
        x = ref_x
        for index in indices:
            mha(x, x, x, is_causal=True, cache=cache)
            before_k, before_v = cache.keys.clone(), cache.values.clone()
            cache.reorder(index)
            assert torch.equal(cache.keys, before_k[index])
            assert torch.equal(cache.values, before_v[index])
            storages.append(cache.keys.untyped_storage().data_ptr())
            x = torch.randn(len(index), 1, D)
        # the cache continues correctly: its next output equals attention over the stored rows
        stored_k, stored_v = cache.keys.clone(), cache.values.clone()
        out = mha(x, x, x, cache=cache)[0]
        q, k, v = mha._project_all(x, x, x)
        expect, _ = attention_reference(q, torch.cat([stored_k, k], 2), torch.cat([stored_v, v], 2))
        expect = mha.out_proj(expect.transpose(1, 2).reshape(3, 1, D))
    assert storages[2] == storages[4] and storages[3] == storages[5]  # two buffers, swapped
    assert storages[2] != storages[3]
    close(out, expect)


def test_growing_cache_set_then_append_and_static_append_refused() -> None:
    torch.manual_seed(11)
    k, v = torch.randn(2, H, 3, D // H), torch.randn(2, H, 3, D // H)
    cache = KVCache()
    cache.set(k, v)
    assert torch.equal(cache.keys, k) and torch.equal(cache.values, v)
    k2, v2 = torch.randn(2, H, 20, D // H), torch.randn(2, H, 20, D // H)  # past the capacity
    keys, values = cache.append(k2, v2)
    assert torch.equal(keys, torch.cat([k, k2], 2)) and torch.equal(values, torch.cat([v, v2], 2))
    static = KVCache(static=True)
    static.set(k, v)
    with pytest.raises(RuntimeError, match="static KVCache"):
        static.append(k2, v2)


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """Plain float64 softmax attention, (B, H, L, Dh) each -> output (B, H, L, Dh) as float32."""
    w = (q.double() @ k.double().transpose(-2, -1) / (q.shape[-1] ** 0.5)).softmax(-1)
    return (w @ v.double()).float(), w


@pytest.mark.parametrize("need_weights", [False, True])
def test_static_cache_shared_by_groups_of_query_rows(need_weights: bool) -> None:
    """A static cache of A rows serves A * G query rows (G beams per sentence): the outputs and
    weights of nn.MultiheadAttention on the memory repeated G times, keys/values projected
    once."""
    torch.manual_seed(10)
    reference = torch_mha()
    mha = MultiHeadAttention.from_torch(reference).eval()
    memory = torch.randn(3, 7, D)
    lens = torch.tensor([7, 4, 2])
    mask = (torch.arange(7) < lens[:, None])[:, None, None, :]  # (A, 1, 1, S)
    queries = torch.randn(3 * 4, 1, D)  # G = 4 rows per memory row
    with torch.inference_mode():
        shared = KVCache(static=True)
        out, w = mha(queries, memory, memory, mask=mask, cache=shared, need_weights=need_weights)
        again, _ = mha(queries, memory, memory, mask=mask, cache=shared)
        rep = memory.repeat_interleave(4, 0)
        ref, ref_w = reference(
            queries,
            rep,
            rep,
            key_padding_mask=~mask[:, 0, 0].repeat_interleave(4, 0),  # True = padding
            need_weights=True,
            average_attn_weights=False,
        )  # (A * G, 1, D), (A * G, H, 1, S)
    assert shared.keys.shape == (3, H, 7, D // H)  # projected once per memory row
    close(out, ref)
    close(again, ref)
    if need_weights:
        close(w, ref_w)
        assert w.shape == (12, H, 1, 7)
    with pytest.raises(ValueError, match="consecutive query rows share one"):
        mha(torch.randn(5, 1, D), memory, memory, cache=shared)
    with pytest.raises(ValueError, match="cannot share a static cache of 3 rows"):
        mha(torch.randn(4, 1, D), memory[:2], memory[:2], cache=shared)


def test_empty_cache_reorder_is_noop() -> None:
    cache = KVCache()
    cache.reorder(torch.tensor([0]))
    assert cache.empty and cache.length == 0


# -- bad input ------------------------------------------------------------------------------------
def test_bad_input() -> None:
    with pytest.raises(ValueError, match="d_model=10 is not divisible by num_heads=3"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="d_model and num_heads must be positive"):
        MultiHeadAttention(16, 0)
    with pytest.raises(ValueError, match="dropout must be in"):
        MultiHeadAttention(16, 4, dropout=-0.1)
    mha = MultiHeadAttention(D, H)
    x = torch.randn(2, 5, D)
    with pytest.raises(ValueError, match=r"3-D.*\(5, 16\)"):
        mha(x[0], x, x)
    with pytest.raises(ValueError, match="feature size 8, expected d_model=16"):
        mha(torch.randn(2, 5, 8), x, x)
    with pytest.raises(ValueError, match="sizes 8/16, expected kdim=16/vdim=16"):
        mha(x, torch.randn(2, 5, 8), x)
    with pytest.raises(ValueError, match=r"batch/length mismatch.*\(2, 4, 16\)"):
        mha(x, x, torch.randn(2, 4, D))
    with pytest.raises(ValueError, match=r"batch/length mismatch.*\(3, 5, 16\)"):
        mha(x, torch.randn(3, 5, D), torch.randn(3, 5, D))
    with pytest.raises(ValueError, match=r"valid_lens must lie in \[0, 5\].*\[0, 7\]"):
        mha(x, x, x, valid_lens=torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="mask must be a bool tensor.*float32"):
        mha(x, x, x, mask=torch.ones(5, 5))
    with pytest.raises(ValueError, match="add_bias_kv and add_zero_attn"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(D, H, add_bias_kv=True))

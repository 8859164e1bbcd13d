"""DecoderLM (GPT-style decoder-only LM) against a naive float64 reference written here."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnkit.config import ConfigError, DecoderLMConfig, from_dict, to_dict
from attnkit.decoding.sampling import generate_tokens
from attnkit.models import DecoderLM
from attnkit.training.losses import linear_cross_entropy

V, D, H, FF, LAYERS, MAX_LEN = 23, 16, 4, 40, 2, 12
POSITIONALS = ("learned", "rotary", "alibi")


def make_model(
    positional: str = "learned", bias: bool = True, dtype: torch.dtype = torch.float64, **kw
) -> DecoderLM:
    """A small model in eval mode with every parameter randomised (biases and LayerNorm
    parameters included, so a missing or misplaced one shows up in the comparisons)."""
    torch.manual_seed(0)
    config = DecoderLMConfig(
        vocab_size=V,
        d_model=D,
        num_heads=H,
        ffn_hidden=FF,
        num_layers=LAYERS,
        max_len=MAX_LEN,
        positional=positional,
        bias=bias,
        **kw,
    )
    model = DecoderLM(config).to(dtype).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    return model


def ids_batch(batch: int = 3, length: int = 9, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (batch, length), generator=g)


# -- the independent reference -------------------------------------------------------------------
def ref_layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    out = (x - mean) / torch.sqrt(var + eps) * weight
    return out if bias is None else out + bias


def ref_rotate(x, positions, base=10000.0):
    """Rotary embedding, channel i paired with channel i + Dh/2; x (B, H, L, Dh)."""
    half = x.shape[-1] // 2
    freq = torch.tensor([base ** (-i / half) for i in range(half)], dtype=torch.float64)
    angle = positions.double()[:, None] * freq[None, :]  # (L, half)
    cos, sin = torch.cos(angle), torch.sin(angle)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def reference(model: DecoderLM, ids: torch.Tensor):
    """Logits (B, L, V) and per-layer attention (B, H, L, L), naively, in float64."""
    c = model.config
    sd = {k: v.double() for k, v in model.state_dict().items()}

    def get(name):
        return sd.get(name)

    b, length = ids.shape
    dh = c.d_model // c.num_heads
    pos = torch.arange(length)
    x = sd["embed.embedding.weight"][ids]  # (B, L, D)
    if c.positional == "learned":
        x = x + sd["positions.weight"][:length]
    future = pos[None, :] > pos[:, None]  # (L, L) True where key j > query i
    all_att = []
    for i in range(c.num_layers):
        p = f"blocks.{i}."
        h = ref_layer_norm(
            x, get(p + "attn_res.norm.weight"), get(p + "attn_res.norm.bias"), c.layer_norm_eps
        )
        qkv = h @ sd[p + "self_attn.in_proj.weight"].T
        if c.bias:
            qkv = qkv + sd[p + "self_attn.in_proj.bias"]
        q, k, v = (
            qkv[..., j * c.d_model : (j + 1) * c.d_model]
            .reshape(b, length, c.num_heads, dh)
            .permute(0, 2, 1, 3)
            for j in range(3)
        )
        if c.positional == "rotary":
            q, k = ref_rotate(q, pos), ref_rotate(k, pos)
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh)  # (B, H, L, L)
        if c.positional == "alibi":
            slopes = torch.tensor([2.0 ** (-8.0 * (hh + 1) / c.num_heads) for hh in range(H)])
            dist = (pos[:, None] - pos[None, :]).double()  # (L, L) i - j
            scores = scores - slopes.double()[:, None, None] * dist
        scores = scores.masked_fill(future, float("-inf"))
        e = torch.exp(scores - scores.max(-1, keepdim=True).values)
        att = e / e.sum(-1, keepdim=True)
        all_att.append(att)
        out = (att @ v).permute(0, 2, 1, 3).reshape(b, length, c.d_model)
        out = out @ sd[p + "self_attn.out_proj.weight"].T
        if c.bias:
            out = out + sd[p + "self_attn.out_proj.bias"]
        x = x + out
        h = ref_layer_norm(
            x, get(p + "ffn_res.norm.weight"), get(p + "ffn_res.norm.bias"), c.layer_norm_eps
        )
        h = h @ sd[p + "ffn.dense1.weight"].T
        if c.bias:
            h = h + sd[p + "ffn.dense1.bias"]
        h = 0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))  # exact GELU
        h = h @ sd[p + "ffn.dense2.weight"].T
        if c.bias:
            h = h + sd[p + "ffn.dense2.bias"]
        x = x + h
    x = ref_layer_norm(x, sd["final_norm.weight"], get("final_norm.bias"), c.layer_norm_eps)
    return x @ sd["embed.embedding.weight"].T, all_att


# The rotary cos/sin tables are computed in float64 but stored as float32 buffers, so a float64
# model with rotary positions matches the float64 reference to about 1e-7, not 1e-12.
TOL = {"learned": 1e-10, "alibi": 1e-10, "rotary": 1e-6}


@pytest.mark.parametrize("positional", POSITIONALS)
@pytest.mark.parametrize("bias", [True, False])
def test_matches_float64_reference(positional, bias):
    model = make_model(positional, bias=bias)
    ids = ids_batch()
    want, want_att = reference(model, ids)
    for need_weights in (False, True):  # SDPA path and math path
        logits, weights = model(ids, need_weights=need_weights)
        assert logits.shape == (3, 9, V)
        torch.testing.assert_close(logits, want, atol=TOL[positional], rtol=0)
    for w, ref_w in zip(weights, want_att, strict=True):
        torch.testing.assert_close(w, ref_w, atol=TOL[positional], rtol=0)


def test_matches_reference_in_float32():
    model = make_model("learned", dtype=torch.float32)
    ids = ids_batch()
    want, _ = reference(model, ids)
    torch.testing.assert_close(model(ids)[0].double(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("positional", POSITIONALS)
def test_cached_forward_equals_full_forward(positional):
    model = make_model(positional)
    ids = ids_batch(length=MAX_LEN)
    full, _ = model(ids)
    cache = model.new_cache()
    pieces = []
    for start, stop in ((0, 4), (4, 6), (6, 7), (7, 8), (8, 12)):  # prefill, then mixed steps
        step, weights = model(ids[:, start:stop], cache=cache, need_weights=True)
        pieces.append(step)
        assert weights[0].shape == (3, H, stop - start, stop)  # keys: every earlier position
    assert cache.offset == MAX_LEN
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-10, rtol=0)


@pytest.mark.parametrize("positional", POSITIONALS)
def test_cached_greedy_generation_equals_recomputation(positional):
    model = make_model(positional)
    prompt = [3, 7, 1]
    got = generate_tokens(model, prompt, max_new_tokens=MAX_LEN - 3, temperature=0)
    # Independent loop: recompute the whole sequence for every token, take the argmax.
    seq = list(prompt)
    for _ in range(MAX_LEN - 3):
        logits, _ = model(torch.tensor([seq]))
        seq.append(int(logits[0, -1].argmax()))
    assert got == seq[3:]
    assert (
        generate_tokens(model, prompt, max_new_tokens=MAX_LEN - 3, temperature=0, use_cache=False)
        == seq[3:]
    )


@pytest.mark.parametrize("positional", POSITIONALS)
def test_sliding_window_beyond_max_len(positional):
    model = make_model(positional)
    prompt, new = [5, 2, 9, 4], 3 * MAX_LEN
    got = generate_tokens(model, prompt, max_new_tokens=new, temperature=0)
    seq = list(prompt)
    for _ in range(new):
        logits, _ = model(torch.tensor([seq[-MAX_LEN:]]))  # the last max_len tokens
        seq.append(int(logits[0, -1].argmax()))
    assert len(got) == new and got == seq[len(prompt) :]
    # A prompt longer than the context is cropped too.
    long_prompt = seq[: MAX_LEN + 5]
    assert (
        generate_tokens(model, long_prompt, max_new_tokens=3, temperature=0)
        == seq[MAX_LEN + 5 : MAX_LEN + 8]
    )


@pytest.mark.parametrize("positional", POSITIONALS)
def test_causal_invariance(positional):
    model = make_model(positional)
    ids = ids_batch(length=10)
    changed = ids.clone()
    changed[:, 6:] = (changed[:, 6:] + 5) % V
    for need_weights in (False, True):
        a, _ = model(ids, need_weights=need_weights)
        b, _ = model(changed, need_weights=need_weights)
        torch.testing.assert_close(a[:, :6], b[:, :6], atol=1e-12, rtol=0)
        assert not torch.allclose(a[:, 6:], b[:, 6:])


@pytest.mark.parametrize("positional", POSITIONALS)
def test_weights_rows_sum_to_one_and_future_is_zero(positional):
    model = make_model(positional, dtype=torch.float32)
    ids = ids_batch(length=8)
    _, weights = model(ids, need_weights=True)
    assert len(weights) == LAYERS
    future = torch.ones(8, 8, dtype=torch.bool).triu(1)
    for w in weights:
        assert w.shape == (3, H, 8, 8)
        torch.testing.assert_close(w.sum(-1), torch.ones(3, H, 8))
        assert (w[..., future] == 0).all()
        assert (w[..., ~future] > 0).all()
    assert model(ids)[1] is None


def test_gpt2_initialisation_and_tied_output():
    config = DecoderLMConfig(
        vocab_size=500, d_model=64, num_heads=4, ffn_hidden=256, num_layers=6, max_len=128
    )
    torch.manual_seed(0)
    model = DecoderLM(config)
    assert model.output_weight is model.embed.weight
    assert (model.embed.weight[config.pad_id] == 0).all()
    resid = 0.02 / math.sqrt(2 * 6)
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert (p == 0).all(), name
        elif "norm" in name:
            assert (p == 1).all(), name
        else:
            expected = resid if ("out_proj" in name or "dense2" in name) else 0.02
            assert abs(p.std().item() / expected - 1) < 0.1, name
    # Parameter count by hand: embeddings, per block (qkv, out, two LayerNorms, FFN), final LN.
    d, f = 64, 256
    per_block = (3 * d * d + 3 * d) + (d * d + d) + 2 * 2 * d + (d * f + f) + (f * d + d)
    assert model.num_parameters() == 500 * d + 128 * d + 6 * per_block + 2 * d


def test_hidden_with_fused_loss_equals_plain_cross_entropy():
    model = make_model("rotary", dtype=torch.float32)
    ids = ids_batch(length=10)
    hidden, _ = model.hidden(ids[:, :-1])
    loss, n = linear_cross_entropy(hidden, model.output_weight, ids[:, 1:], pad_id=None)
    logits, _ = model(ids[:, :-1])
    plain = F.cross_entropy(logits.reshape(-1, V), ids[:, 1:].reshape(-1), reduction="sum")
    assert n == ids[:, 1:].numel()
    torch.testing.assert_close(loss, plain, atol=1e-4, rtol=1e-5)


def test_learns_a_repeating_sequence():
    torch.manual_seed(0)
    config = DecoderLMConfig(
        vocab_size=10, d_model=32, num_heads=2, ffn_hidden=64, num_layers=2, max_len=24, pad_id=None
    )
    model = DecoderLM(config)
    pattern = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    stream = torch.tensor(pattern * 8)  # (72,)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(40):
        starts = torch.randint(0, len(stream) - 25, (16,))
        batch = torch.stack([stream[s : s + 25] for s in starts])  # (16, 25)
        hidden, _ = model.hidden(batch[:, :-1])
        loss, n = linear_cross_entropy(hidden, model.output_weight, batch[:, 1:], pad_id=None)
        opt.zero_grad()
        (loss / n).backward()
        opt.step()
    assert (loss / n).item() < 0.05
    model.eval()
    got = generate_tokens(model, [4, 5, 6], max_new_tokens=30, temperature=0)
    assert got == [(6 + i) % 9 + 1 for i in range(30)]  # 7, 8, 9, 1, 2, ... past max_len too


def test_input_errors():
    model = make_model()
    with pytest.raises(ValueError, match="max_len"):
        model(torch.zeros(1, MAX_LEN + 1, dtype=torch.long))
    cache = model.new_cache()
    model(torch.zeros(1, MAX_LEN, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="crop the context"):
        model(torch.zeros(1, 1, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="ids must be"):
        model(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="ids must be"):
        model(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 23\)"):
        model(torch.tensor([[V]]))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"positional": "sinusoidal"}, "positional"),
        ({"d_model": 30, "num_heads": 4}, "d_model"),
        ({"d_model": 12, "num_heads": 4, "positional": "rotary"}, "rotary"),
        ({"pad_id": 23}, "pad_id"),
        ({"dropout": 1.0}, "dropout"),
        ({"num_layers": 0}, "num_layers"),
        ({"activation": "swish"}, "activation"),
    ],
)
def test_config_validation(changes, field):
    with pytest.raises(ConfigError, match=field):
        DecoderLMConfig(vocab_size=V, **changes)


def test_config_round_trip():
    config = DecoderLMConfig(vocab_size=V, positional="alibi", bias=False, pad_id=None)
    assert from_dict(DecoderLMConfig, to_dict(config)) == config
    with pytest.raises(ConfigError, match="bias"):
        from_dict(DecoderLMConfig, {"vocab_size": V, "bias": "no"})

"""Greedy decoding and beam search, checked against plain per-sentence references that score
sequences with teacher-forced ``model(src, tgt_in)`` log-probabilities."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest
import torch
from torch.nn import functional as F

from attnkit.config import DecodeConfig
from attnkit.decoding import beam_search, greedy_decode, length_penalty
from attnkit.models import build_seq2seq

PAD, BOS, EOS = 0, 2, 3
V = 9  # ids 4..8 are words
NONE = dict(length_penalty=0.0, length_penalty_kind="none")
MODELS = {
    "transformer": dict(
        d_model=32,
        num_heads=4,
        ffn_hidden=64,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dropout=0.0,
    ),
    "bahdanau": dict(embed_size=16, num_hiddens=32, num_layers=2, dropout=0.0),
}


def reverse_batch(gen: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random right-padded sources (lengths 2..5) and their reversals as targets."""
    lens = torch.randint(2, 6, (n,), generator=gen)
    width = int(lens.max())
    mask = torch.arange(width) < lens[:, None]  # (n, S)
    src = torch.randint(4, V, (n, width), generator=gen).masked_fill(~mask, PAD)
    tgt = torch.zeros(n, width + 2, dtype=torch.long)
    for i, length in enumerate(lens.tolist()):
        tgt[i, 0], tgt[i, length + 1] = BOS, EOS
        tgt[i, 1 : length + 1] = src[i, :length].flip(0)
    return src, mask, tgt


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: threads only add overhead (and contention on shared machines)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    """A tiny model trained for a few steps on reversal: non-trivial, varied outputs."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    m = build_seq2seq(
        request.param, dict(src_vocab_size=V, tgt_vocab_size=V, **MODELS[request.param])
    )
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(40):
        src, mask, tgt = reverse_batch(gen, 32)
        logits = m(src, tgt[:, :-1], mask)  # (B, L, V)
        loss = F.cross_entropy(logits.reshape(-1, V), tgt[:, 1:].reshape(-1), ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


@pytest.fixture(scope="module")
def data():
    src, mask, _ = reverse_batch(torch.Generator().manual_seed(5), 8)
    return src, mask


def one(src, mask, i):
    """Sentence i alone, without padding."""
    n = int(mask[i].sum())
    return src[i : i + 1, :n], mask[i : i + 1, :n]


@torch.no_grad()
def seq_logprob(model, src, mask, i, seqs):
    """Teacher-forced log-probability of each full sequence (EOS included if present)."""
    s, m = one(src, mask, i)
    width = max(len(y) for y in seqs)
    tgt_in = torch.full((len(seqs), width), PAD)
    for r, y in enumerate(seqs):
        tgt_in[r, : len(y)] = torch.tensor([BOS] + list(y[:-1]))
    logp = torch.log_softmax(
        model(s.expand(len(seqs), -1), tgt_in, m.expand(len(seqs), -1)).double(), dim=-1
    )  # (N, T, V)
    return [sum(logp[r, t, tok].item() for t, tok in enumerate(y)) for r, y in enumerate(seqs)]


@torch.no_grad()
def reference_greedy(model, src, mask, i, max_len):
    """Recompute-everything greedy decoding of one sentence through model.forward."""
    s, m = one(src, mask, i)
    prefix, total = [BOS], 0.0
    while len(prefix) <= max_len:
        logp = torch.log_softmax(model(s, torch.tensor([prefix]), m)[0, -1].double(), -1)
        logp[[PAD, BOS]] = -math.inf
        tok = int(logp.argmax())
        total += logp[tok].item()
        if tok == EOS:
            return prefix[1:], total
        prefix.append(tok)
    return prefix[1:], total


def max_len_of(cfg, mask, i):
    return int(cfg.max_len_a * int(mask[i].sum()) + cfg.max_len_b)


def test_length_penalty_hand_values():
    assert length_penalty(7, 0.6, "gnmt") == pytest.approx(2**0.6)  # ((5 + 7) / 6) ** 0.6
    assert length_penalty(1, 1.0, "gnmt") == pytest.approx(1.0)
    assert length_penalty(4, 0.5, "average") == pytest.approx(2.0)
    assert length_penalty(9, 0.7, "none") == 1.0
    lens = torch.tensor([1, 7, 13])
    assert torch.allclose(length_penalty(lens, 0.6, "gnmt"), torch.tensor([1.0, 2**0.6, 3**0.6]))
    assert torch.allclose(length_penalty(lens, 1.0, "average"), lens.float())
    with pytest.raises(ValueError, match="kind"):
        length_penalty(3, 1.0, "linear")


def test_greedy_matches_reference_and_cache(model, data, monkeypatch):
    src, mask = data
    cfg = DecodeConfig()
    kept: list[int] = []  # rows kept each time finished sentences left the batch
    init_cache = model.init_cache

    def spied_cache(*args, **kwargs):
        cache = init_cache(*args, **kwargs)
        reorder = cache.reorder
        cache.reorder = lambda index: (kept.append(len(index)), reorder(index))[1]
        return cache

    monkeypatch.setattr(model, "init_cache", spied_cache)
    cached = greedy_decode(model, src, mask, config=cfg)
    monkeypatch.undo()
    assert kept and kept[0] < src.shape[0]  # the batch shrank: the pruned path is the one tested
    full = greedy_decode(model, src, mask, config=cfg, use_cache=False)
    assert cached.tokens == full.tokens
    assert torch.allclose(cached.scores, full.scores, atol=1e-5)
    assert any(cached.eos) and len({len(t) for t in cached.tokens}) > 1  # varied lengths
    for i in range(src.shape[0]):
        toks, score = reference_greedy(model, src, mask, i, max_len_of(cfg, mask, i))
        assert cached.tokens[i] == toks
        assert cached.scores[i].item() == pytest.approx(score, abs=1e-4)
        alone = greedy_decode(model, *one(src, mask, i), config=cfg)
        assert alone.tokens[0] == toks and alone.eos[0] == cached.eos[i]
        assert alone.scores[0].item() == pytest.approx(cached.scores[i].item(), abs=1e-5)


def test_greedy_max_len_and_model_cap(model, data):
    src, mask = data
    out = greedy_decode(model, src, mask, max_len=2)
    assert all(len(t) + e <= 2 for t, e in zip(out.tokens, out.eos, strict=True))
    assert not all(out.eos)  # some sentences were cut
    if hasattr(model.config, "max_len"):  # transformer: a huge max_len_b must not overflow
        small = build_seq2seq(
            "transformer",
            dict(src_vocab_size=V, tgt_vocab_size=V, max_len=6, **MODELS["transformer"]),
        ).eval()
        res = greedy_decode(small, src, mask, config=DecodeConfig(max_len_b=100))
        assert all(len(t) + e <= 6 for t, e in zip(res.tokens, res.eos, strict=True))


def test_beam_one_equals_greedy(model, data):
    src, mask = data
    for extra in ({}, dict(no_repeat_ngram=2, min_len_a=1.0)):
        cfg = DecodeConfig(beam_size=1, **NONE, **extra)
        greedy = greedy_decode(model, src, mask, config=cfg)
        beams = beam_search(model, src, mask, cfg)
        assert [b[0].tokens for b in beams] == greedy.tokens
        assert [b[0].logprob for b in beams] == pytest.approx(greedy.scores.tolist(), abs=1e-5)


@pytest.mark.parametrize(
    "penalty",
    [
        dict(length_penalty=1.0, length_penalty_kind="gnmt"),
        dict(length_penalty=1.0, length_penalty_kind="average"),
        NONE,
    ],
)
def test_wide_beam_is_exhaustive(model, data, penalty):
    """Beam wide enough to hold every prefix finds the n best of all sequences up to max_len."""
    src, mask = data
    max_len, words = 3, [1] + list(range(4, V))  # UNK and words; PAD/BOS are never generated
    cfg = DecodeConfig(beam_size=256, n_best=6, **penalty)
    beams = beam_search(model, src[:3], mask[:3], cfg, max_len=max_len)
    for i in range(3):
        seqs = [list(p) + [EOS] for n in range(max_len) for p in itertools.product(words, repeat=n)]
        seqs += [list(p) for p in itertools.product(words, repeat=max_len)]  # cut, no EOS
        logps = seq_logprob(model, src, mask, i, seqs)
        scored = sorted(
            (
                (lp / length_penalty(len(y), **_lp(penalty)), y)
                for lp, y in zip(logps, seqs, strict=True)
            ),
            key=lambda x: -x[0],
        )
        got = beams[i]
        assert [h.score for h in got] == pytest.approx([s for s, _ in scored[:6]], abs=1e-4)
        assert [h.tokens + [EOS] * h.eos for h in got] == [y for _, y in scored[:6]]


def _lp(penalty):
    return dict(alpha=penalty["length_penalty"], kind=penalty["length_penalty_kind"])


@torch.no_grad()
def reference_beam(model, src, mask, i, cfg, max_len):
    """Per-sentence beam search on teacher-forced scores, run to max_len (no early stopping),
    with the candidate rules documented in beam_search."""
    k, lp = (
        cfg.beam_size,
        _lp(dict(length_penalty=cfg.length_penalty, length_penalty_kind=cfg.length_penalty_kind)),
    )
    s, m = one(src, mask, i)
    live, finished = [([], 0.0)], []
    for t in range(max_len):
        tgt_in = torch.tensor([[BOS] + y for y, _ in live])
        logp = torch.log_softmax(
            model(s.expand(len(live), -1), tgt_in, m.expand(len(live), -1))[:, -1].double(), -1
        )
        logp[:, [PAD, BOS]] = -math.inf
        cands = sorted(
            ((c + logp[b, w].item(), b, w) for b, (_, c) in enumerate(live) for w in range(V)),
            key=lambda x: -x[0],
        )[: 2 * k]
        for rank, (c, b, w) in enumerate(cands):
            if w == EOS and rank < k:
                finished.append((c / length_penalty(t + 1, **lp), live[b][0], c))
        live = [(live[b][0] + [w], c) for c, b, w in cands if w != EOS][:k]
        if t + 1 == max_len:
            finished += [(c / length_penalty(t + 1, **lp), y, c) for y, c in live]
        elif cfg.early_stopping and len(finished) >= k:  # fairseq / CTranslate2's rule
            break
    return sorted(finished, key=lambda x: -x[0])[: cfg.n_best]


@pytest.mark.parametrize(
    ("alpha", "kind", "beam", "extra"),
    [
        (
            5.0,
            "gnmt",
            2,
            10,
        ),  # strong penalty: stopping at the first K finished ones would be wrong
        (3.0, "gnmt", 2, 10),
        (0.6, "gnmt", 3, 3),
        (0.0, "none", 3, 3),
    ],
)
def test_beam_matches_reference_without_early_stop(model, data, alpha, kind, beam, extra):
    """Early stopping (the bound) and pruning finished sentences change nothing."""
    src, mask = data
    cfg = DecodeConfig(
        beam_size=beam,
        n_best=beam,
        max_len_a=1.0,
        max_len_b=extra,
        length_penalty=alpha,
        length_penalty_kind=kind,
    )
    beams = beam_search(model, src, mask, cfg)
    for i in range(src.shape[0]):
        ref = reference_beam(model, src, mask, i, cfg, max_len_of(cfg, mask, i))
        assert [h.tokens for h in beams[i]] == [y for _, y, _ in ref]
        assert [h.score for h in beams[i]] == pytest.approx([s for s, _, _ in ref], abs=1e-4)
        alone = beam_search(model, *one(src, mask, i), cfg)[0]
        assert [h.tokens for h in alone] == [h.tokens for h in beams[i]]


@pytest.mark.parametrize(("alpha", "kind", "beam"), [(5.0, "gnmt", 2), (1.0, "average", 3)])
def test_beam_early_stopping_matches_reference(model, data, alpha, kind, beam):
    """``early_stopping``: a sentence ends once it has K finished hypotheses (the reference
    stops there too); with a strong length penalty that differs from the exact search."""
    src, mask = data
    base = dict(beam_size=beam, n_best=beam, max_len_a=1.0, max_len_b=10)
    cfg = DecodeConfig(**base, length_penalty=alpha, length_penalty_kind=kind, early_stopping=True)
    beams = beam_search(model, src, mask, cfg)
    exact = beam_search(model, src, mask, replace(cfg, early_stopping=False))
    for i in range(src.shape[0]):
        ref = reference_beam(model, src, mask, i, cfg, max_len_of(cfg, mask, i))
        assert [h.tokens for h in beams[i]] == [y for _, y, _ in ref]
        assert [h.score for h in beams[i]] == pytest.approx([s for s, _, _ in ref], abs=1e-4)
    if alpha == 5.0:  # a long, unlikely hypothesis wins the exact search somewhere
        pairs = zip(beams, exact, strict=True)
        assert any([h.tokens for h in a] != [h.tokens for h in b] for a, b in pairs)


def test_nbest_sorted_distinct_and_scored(model, data):
    src, mask = data
    cfg = DecodeConfig(beam_size=5, n_best=5, length_penalty=0.6)
    beams = beam_search(model, src, mask, cfg)
    for i, hyps in enumerate(beams):
        assert len(hyps) == 5
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == 5
        seqs = [h.tokens + [EOS] * h.eos for h in hyps]
        for h, lp in zip(hyps, seq_logprob(model, src, mask, i, seqs), strict=True):
            assert h.logprob == pytest.approx(lp, abs=1e-4)
            assert h.score == pytest.approx(lp / length_penalty(h.length, 0.6), abs=1e-4)


def _has_repeat(tokens, n):
    grams = [tuple(tokens[j : j + n]) for j in range(len(tokens) - n + 1)]
    return len(grams) != len(set(grams))


def test_no_repeat_ngram_and_min_len(model, data):
    src, mask = data
    base = DecodeConfig(beam_size=3, n_best=3, max_len_b=6)

    def outputs(cfg):
        return [
            h.tokens + [EOS] * h.eos for hs in beam_search(model, src, mask, cfg) for h in hs
        ] + [t + [EOS] * e for t, e in zip(*_greedy(model, src, mask, cfg), strict=True)]

    assert any(_has_repeat(y, 2) for y in outputs(base))  # the constraint has work to do
    assert not any(
        _has_repeat(y, 2) for y in outputs(DecodeConfig(**{**base.__dict__, "no_repeat_ngram": 2}))
    )
    lens = mask.sum(1).tolist()
    cfg = DecodeConfig(**{**base.__dict__, "min_len_a": 1.5})
    short = [
        len(h.tokens) < 1.5 * n
        for hs, n in zip(beam_search(model, src, mask, base), lens, strict=True)
        for h in hs
    ]
    assert any(short)
    for hs, n in zip(beam_search(model, src, mask, cfg), lens, strict=True):
        assert all(len(h.tokens) >= int(1.5 * n) for h in hs)
    toks, _ = _greedy(model, src, mask, cfg)
    assert all(len(t) >= int(1.5 * n) for t, n in zip(toks, lens, strict=True))


def _greedy(model, src, mask, cfg):
    out = greedy_decode(model, src, mask, config=cfg)
    return out.tokens, out.eos


def _check_weights(w, s_len, t_len, model):
    transformer = hasattr(model.config, "num_heads")
    heads = model.config.num_heads if transformer else 1
    assert len(w["cross"]) == (model.config.num_decoder_layers if transformer else 1)
    assert len(w["encoder"]) == (model.config.num_encoder_layers if transformer else 0)
    for x in w["encoder"]:
        assert x.shape == (heads, s_len, s_len)
        assert torch.allclose(x.sum(-1), torch.ones(heads, s_len), atol=1e-5)
    for x in w["self"]:
        assert x.shape == (heads, t_len, t_len)
        assert torch.allclose(x.sum(-1), torch.ones(heads, t_len), atol=1e-5)
        assert torch.all(x.triu(1) == 0)  # causal
    for x in w["cross"]:
        assert x.shape == (heads, t_len, s_len)
        assert torch.allclose(x.sum(-1), torch.ones(heads, t_len), atol=1e-5)


def test_need_weights(model, data):
    src, mask = data
    cfg = DecodeConfig(beam_size=1, **NONE)
    greedy = greedy_decode(model, src, mask, config=cfg, need_weights=True)
    plain = greedy_decode(model, src, mask, config=cfg)
    assert greedy.tokens == plain.tokens
    beams = beam_search(model, src, mask, cfg, need_weights=True)
    wide = beam_search(model, src, mask, DecodeConfig(beam_size=3, n_best=2), need_weights=True)
    for i, hyp in enumerate(greedy.per_sentence()):
        s_len = int(mask[i].sum())
        _check_weights(hyp.weights, s_len, hyp.length, model)
        for h in wide[i]:
            _check_weights(h.weights, s_len, h.length, model)
        # per-step weights of greedy == teacher-forced weights attached by beam search
        for key, layers in hyp.weights.items():
            for a, b in zip(layers, beams[i][0].weights[key], strict=True):
                assert torch.allclose(a, b, atol=1e-5)


def test_input_validation(model, data):
    src, mask = data
    with pytest.raises(ValueError, match="src_mask"):
        greedy_decode(model, src, mask.long())
    with pytest.raises(ValueError, match="src"):
        beam_search(model, src[0], mask[0], DecodeConfig())
    with pytest.raises(ValueError, match="max_len"):
        greedy_decode(model, src, mask, max_len=0)


def test_last_log_probs_in_place_matches_float64_log_softmax():
    from attnkit.decoding.common import last_log_probs

    torch.manual_seed(3)
    logits = torch.randn(6, 3, 50) * 4  # (R, L, V)
    expect = torch.log_softmax(logits[:, -1].double(), dim=-1)
    logp = last_log_probs(logits)
    assert logp.shape == (6, 50) and logp.dtype == torch.float32
    torch.testing.assert_close(logp.double(), expect, atol=1e-5, rtol=0)
    assert logp.data_ptr() == logits[:, -1].data_ptr()  # written into the logits
    low = torch.randn(2, 1, 50).bfloat16()
    before = low.clone()
    out = last_log_probs(low)  # another dtype: a float32 copy, the input untouched
    assert out.dtype == torch.float32 and torch.equal(low, before)

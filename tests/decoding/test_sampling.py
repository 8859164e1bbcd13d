"""Sampling-based generation: filters against hand-computed distributions, reproducibility,
greedy limits, argument checks and streaming."""

from __future__ import annotations

import math

import pytest
import torch

from attnkit.config import DecoderLMConfig
from attnkit.decoding import generate, generate_tokens, sample_next, top_k_filter, top_p_filter
from attnkit.models import DecoderLM

V, MAX_LEN = 31, 10
INF = math.inf


def tiny_model(positional: str = "learned") -> DecoderLM:
    torch.manual_seed(0)
    config = DecoderLMConfig(
        vocab_size=V,
        d_model=16,
        num_heads=2,
        ffn_hidden=32,
        num_layers=2,
        max_len=MAX_LEN,
        positional=positional,
    )
    model = DecoderLM(config).eval()
    with torch.no_grad():  # larger weights than GPT-2's init: peaked, varied distributions
        for p in model.parameters():
            p.mul_(8.0)
    return model


def manual_greedy(model: DecoderLM, prompt: list[int], new: int) -> list[int]:
    seq = list(prompt)
    for _ in range(new):
        logits, _ = model(torch.tensor([seq[-MAX_LEN:]]))
        seq.append(int(logits[0, -1].argmax()))
    return seq[len(prompt) :]


# -- filters against hand-computed distributions -------------------------------------------------
PROBS = torch.tensor([0.15, 0.5, 0.1, 0.25], dtype=torch.float64)  # sorted: 0.5, 0.25, 0.15, 0.1


@pytest.mark.parametrize(
    ("p", "kept"),
    [
        (0.3, [1]),  # 0.5 alone reaches 0.3
        (0.6, [1, 3]),  # 0.5 + 0.25 = 0.75 >= 0.6, 0.5 alone does not
        (0.8, [0, 1, 3]),  # 0.75 < 0.8 <= 0.9
        (0.95, [0, 1, 2, 3]),  # needs all four
        (1.0, [0, 1, 2, 3]),
    ],
)
def test_top_p_keeps_smallest_set_reaching_p(p, kept):
    logits = PROBS.log()[None].repeat(2, 1) + torch.tensor([[0.0], [3.0]])  # shift: same probs
    out = top_p_filter(logits, p)
    for row in range(2):
        finite = torch.isfinite(out[row]).nonzero().flatten().tolist()
        assert finite == kept
        assert (out[row, kept] == logits[row, kept]).all()  # kept logits are untouched


def test_top_k_keeps_k_largest():
    logits = torch.tensor([[0.1, 2.0, -1.0, 1.5, 0.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    out = top_k_filter(logits, 2)
    assert out.tolist() == [[-INF, 2.0, -INF, 1.5, -INF], [5.0, 4.0, -INF, -INF, -INF]]
    assert torch.equal(top_k_filter(logits, 5), logits)


def test_sample_next_draws_from_the_filtered_renormalised_distribution():
    logits = PROBS.log()[None].repeat(4000, 1)  # (N, 4)
    g = torch.Generator().manual_seed(0)
    draws = sample_next(logits, top_p=0.6, generator=g)  # keeps {1: 0.5, 3: 0.25}
    counts = torch.bincount(draws, minlength=4).double() / len(draws)
    assert counts[0] == 0 and counts[2] == 0
    assert abs(counts[1].item() - 2 / 3) < 0.03  # 0.5 / 0.75, binomial sd ~ 0.0075
    # Temperature: the same draw as multinomial on softmax(logits / T) with the same seed.
    raw = torch.randn(5, V, dtype=torch.float64)
    got = sample_next(raw, temperature=0.7, generator=torch.Generator().manual_seed(3))
    probs = torch.softmax(raw / 0.7, dim=-1)
    want = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(3)).squeeze(-1)
    assert torch.equal(got, want)


# -- generation ----------------------------------------------------------------------------------
def test_fixed_seed_is_reproducible():
    model = tiny_model()
    kw = dict(max_new_tokens=25, temperature=1.3, top_k=10, top_p=0.95)
    a = generate_tokens(model, [1, 2], seed=7, **kw)
    assert a == generate_tokens(model, [1, 2], seed=7, **kw)
    assert a == generate_tokens(model, [1, 2], generator=torch.Generator().manual_seed(7), **kw)
    assert a == generate_tokens(model, [1, 2], seed=7, use_cache=False, **kw)
    assert a != generate_tokens(model, [1, 2], seed=8, **kw)
    assert len(a) == 25 and all(0 <= t < V for t in a)


@pytest.mark.parametrize("positional", ["learned", "rotary", "alibi"])
def test_temperature_zero_and_top_k_one_are_greedy(positional):
    model = tiny_model(positional)
    want = manual_greedy(model, [4, 9, 2], 2 * MAX_LEN)  # well past the context: sliding window
    assert generate_tokens(model, [4, 9, 2], max_new_tokens=2 * MAX_LEN, temperature=0) == want
    assert generate_tokens(model, [4, 9, 2], max_new_tokens=2 * MAX_LEN, top_k=1, seed=0) == want
    assert (
        generate_tokens(
            model, [4, 9, 2], max_new_tokens=2 * MAX_LEN, temperature=0, use_cache=False
        )
        == want
    )


def test_batch_rows_equal_single_runs():
    model = tiny_model("rotary")
    prompts = torch.tensor([[3, 1, 4], [1, 5, 9]])
    rows = generate_tokens(model, prompts, max_new_tokens=15, temperature=0)
    assert rows == [manual_greedy(model, p, 15) for p in prompts.tolist()]
    steps = list(generate(model, prompts, max_new_tokens=4, temperature=0))
    assert len(steps) == 4 and all(s.shape == (2,) and s.dtype == torch.long for s in steps)


def test_eos_stops_generation():
    model = tiny_model()
    greedy = manual_greedy(model, [2, 3], 12)
    eos = greedy[4]
    first = greedy.index(eos)
    assert (
        generate_tokens(model, [2, 3], max_new_tokens=12, temperature=0, eos_id=eos)
        == greedy[: first + 1]
    )
    # Batch: a row that ends keeps yielding EOS (cut off in the lists); the other row goes on.
    other = [7, 7]
    other_greedy = manual_greedy(model, other, 12)
    rows = generate_tokens(
        model, torch.tensor([[2, 3], other]), max_new_tokens=12, temperature=0, eos_id=eos
    )
    assert rows[0] == greedy[: first + 1]
    assert rows[1] == (
        other_greedy[: other_greedy.index(eos) + 1] if eos in other_greedy else other_greedy
    )


def test_streaming_yields_ints_outside_inference_mode():
    model = tiny_model()
    stream = generate(model, [1, 2, 3], max_new_tokens=3, seed=0)
    first = next(stream)
    assert isinstance(first, int)
    assert not torch.is_inference_mode_enabled()  # the generator's mode does not leak out
    assert len([first, *stream]) == 3
    assert generate_tokens(model, [1], max_new_tokens=0) == []
    assert generate_tokens(model, torch.tensor([[1], [2]]), max_new_tokens=0) == [[], []]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"temperature": -0.5}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_new_tokens": -1}, "max_new_tokens"),
        ({"seed": 1, "generator": torch.Generator()}, "seed"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs, name):
    model = tiny_model()
    kwargs = {"max_new_tokens": 3, **kwargs}
    with pytest.raises(ValueError, match=name) as info:
        generate(model, [1, 2], **kwargs)  # raised at the call, before any iteration
    assert "\n" not in str(info.value)


def test_bad_prompts():
    model = tiny_model()
    with pytest.raises(ValueError, match="prompt_ids"):
        generate(model, [], max_new_tokens=2)
    with pytest.raises(ValueError, match="prompt_ids"):
        generate(model, torch.zeros(1, 2, 3, dtype=torch.long), max_new_tokens=2)
    with pytest.raises(ValueError, match="prompt_ids"):
        generate(model, torch.zeros(1, 2), max_new_tokens=2)

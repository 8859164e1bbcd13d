"""Tests for attnkit.attention.masks against masks built by hand with Python loops."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnkit.attention.masks import (
    attention_mask,
    causal_mask,
    check_valid_lens,
    from_key_padding_mask,
    padding_mask,
    to_key_padding_mask,
)

SETTINGS = settings(max_examples=25, deadline=None)


def loop_padding_mask(valid_lens: list, max_len: int) -> torch.Tensor:
    """Reference: True at position j of a row iff j < that row's length."""
    if valid_lens and isinstance(valid_lens[0], list):
        return torch.tensor(
            [[[j < n for j in range(max_len)] for n in row] for row in valid_lens],
            dtype=torch.bool,
        )
    return torch.tensor([[j < n for j in range(max_len)] for n in valid_lens], dtype=torch.bool)


def loop_causal_mask(query_len: int, key_len: int) -> torch.Tensor:
    """Reference: the last query sees every key; each earlier query sees one key fewer."""
    out = torch.zeros(query_len, key_len, dtype=torch.bool)
    for i in range(query_len):
        visible = key_len - (query_len - 1 - i)  # keys 0 .. visible-1
        for j in range(max(visible, 0)):
            out[i, j] = True
    return out


@SETTINGS
@given(
    lens=st.lists(st.integers(0, 7), min_size=1, max_size=4),
    extra=st.integers(0, 3),
)
def test_padding_mask_1d_matches_loops(lens: list, extra: int) -> None:
    max_len = max(lens) + extra
    got = padding_mask(torch.tensor(lens), max_len)
    assert got.dtype == torch.bool and got.shape == (len(lens), max_len)
    assert torch.equal(got, loop_padding_mask(lens, max_len))


@SETTINGS
@given(lens=st.lists(st.lists(st.integers(0, 6), min_size=3, max_size=3), min_size=1, max_size=3))
def test_padding_mask_2d_matches_loops(lens: list) -> None:
    got = padding_mask(torch.tensor(lens), 6)
    assert got.shape == (len(lens), 3, 6)
    assert torch.equal(got, loop_padding_mask(lens, 6))


@pytest.mark.parametrize("query_len,key_len", [(1, 1), (4, 4), (1, 5), (3, 7), (5, 6), (0, 3)])
def test_causal_mask_bottom_right(query_len: int, key_len: int) -> None:
    got = causal_mask(query_len, key_len)
    assert got.dtype == torch.bool and got.shape == (query_len, key_len)
    assert torch.equal(got, loop_causal_mask(query_len, key_len))
    if query_len:
        assert got[-1].all(), "the last query must see every key"


def test_causal_mask_square_is_lower_triangle() -> None:
    expected = torch.tensor(
        [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool
    )
    assert torch.equal(causal_mask(4), expected)


def test_causal_mask_single_query_sees_all_past() -> None:
    # One new token decoded against 5 cached keys: it sees all of them.
    assert causal_mask(1, 5).all()


def test_attention_mask_combines_padding_and_causal() -> None:
    lens = torch.tensor([2, 4])
    got = attention_mask(key_valid_lens=lens, query_len=3, key_len=4, causal=True)
    assert got.shape == (2, 1, 3, 4)
    causal = loop_causal_mask(3, 4)
    for b, n in enumerate([2, 4]):
        for i in range(3):
            for j in range(4):
                assert bool(got[b, 0, i, j]) == (bool(causal[i, j]) and j < n)


def test_attention_mask_variants() -> None:
    key_mask = torch.tensor([[True, True, False], [True, False, False]])
    got = attention_mask(key_mask=key_mask)
    assert got.shape == (2, 1, 1, 3)
    assert torch.equal(got[:, 0, 0], key_mask)
    assert torch.equal(attention_mask(query_len=3, causal=True), loop_causal_mask(3, 3))
    assert attention_mask() is None
    same = attention_mask(key_valid_lens=torch.tensor([2, 1]), key_len=3)
    assert torch.equal(same, got)


def test_attention_mask_requires_lengths() -> None:
    with pytest.raises(ValueError, match="key_len is required"):
        attention_mask(key_valid_lens=torch.tensor([1]))
    with pytest.raises(ValueError, match="query_len is required"):
        attention_mask(key_mask=torch.ones(1, 3, dtype=torch.bool), causal=True)


def test_key_padding_conversions_round_trip() -> None:
    ours = padding_mask(torch.tensor([3, 1]), 4)  # True = real key
    theirs = to_key_padding_mask(ours)  # True = padding
    expected = torch.tensor([[False, False, False, True], [False, True, True, True]])
    assert torch.equal(theirs, expected)
    assert torch.equal(from_key_padding_mask(theirs), ours)


def test_conversions_reject_non_bool() -> None:
    with pytest.raises(ValueError, match="key_padding_mask must be bool"):
        from_key_padding_mask(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="mask must be bool"):
        to_key_padding_mask(torch.zeros(2, 3, dtype=torch.uint8))


def test_check_valid_lens_errors() -> None:
    with pytest.raises(ValueError, match=r"valid_lens must lie in \[0, 4\].*\[0, 5\]"):
        check_valid_lens(torch.tensor([0, 5]), 4)
    with pytest.raises(ValueError, match=r"valid_lens must lie in \[0, 4\].*\[-1, 2\]"):
        check_valid_lens(torch.tensor([-1, 2]), 4)
    with pytest.raises(ValueError, match="integer lengths.*float32"):
        check_valid_lens(torch.tensor([1.5, 2.0]), 4)
    with pytest.raises(ValueError, match=r"shape \(B,\) or \(B, L\).*\(1, 2, 3\)"):
        check_valid_lens(torch.ones(1, 2, 3, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="my_lens"):
        check_valid_lens(torch.tensor([9]), 4, name="my_lens")
    # Whole-number floats and Python lists are accepted and become long.
    assert check_valid_lens(torch.tensor([1.0, 3.0]), 4).dtype == torch.long
    assert torch.equal(check_valid_lens([1, 2], 4), torch.tensor([1, 2]))


def test_causal_mask_rejects_more_queries_than_keys() -> None:
    with pytest.raises(ValueError, match="query_len=5, key_len=3"):
        causal_mask(5, 3)

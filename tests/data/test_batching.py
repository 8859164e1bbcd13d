"""Encoding, collation and token-budget batching (attnkit.data.batching)."""

import logging
import random

import pytest
import torch

from attnkit.data import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    Batch,
    DataError,
    TokenBucketSampler,
    WordTokenizer,
    collate,
    encode_pairs,
    example_lengths,
    make_batches,
    pad_sequences,
    padding_fraction,
)


def test_collate_layout_and_masks():
    examples = [([5, 6, 7], [8, 9]), ([5], [8, 9, 10, 11])]
    batch = collate(examples)
    assert batch.src.tolist() == [[5, 6, 7], [5, PAD_ID, PAD_ID]]
    assert batch.tgt_in.tolist() == [[BOS_ID, 8, 9, 0, 0], [BOS_ID, 8, 9, 10, 11]]
    assert batch.tgt_out.tolist() == [[8, 9, EOS_ID, 0, 0], [8, 9, 10, 11, EOS_ID]]
    assert batch.src_lens.tolist() == [3, 1] and batch.tgt_lens.tolist() == [3, 5]
    assert batch.src_mask.tolist() == [[True] * 3, [True, False, False]]
    assert batch.tgt_mask.tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert batch.tgt_mask.tolist() == (batch.tgt_out != PAD_ID).tolist()
    assert batch.num_tgt_tokens == 8 and len(batch) == 2
    assert all(t.dtype == torch.long for t in (batch.src, batch.tgt_in, batch.src_lens))
    with pytest.raises(ValueError, match="at least one example"):
        collate([])


def test_batch_to_device_keeps_fields():
    batch = collate([([4, 5], [6])])
    batch.indices = [3]
    moved = batch.to("meta")
    assert moved.src.device.type == "meta" and moved.tgt_lens.device.type == "meta"
    assert moved.indices == [3] and batch.src.device.type == "cpu"


def test_pad_sequences():
    ids, lens = pad_sequences([[1, 2], [], [3]], pad_id=9)
    assert ids.tolist() == [[1, 2], [9, 9], [3, 9]] and lens.tolist() == [2, 0, 1]


@pytest.fixture
def toks():
    src = WordTokenizer.build(["a b c d e f"], min_freq=1)
    return src, src


def test_encode_pairs_max_len_policies(toks, caplog):
    pairs = [("a b", "c"), ("a b c d e", "f"), ("a", "b c d e f")]
    with caplog.at_level(logging.WARNING, logger="attnkit.data.batching"):
        kept = encode_pairs(pairs, *toks, max_len=4)
    assert kept == [([4, 5], [6])]
    assert "dropped 2 of 3" in caplog.text
    cut = encode_pairs(pairs, *toks, max_len=4, on_too_long="truncate")
    assert [(len(s), len(t)) for s, t in cut] == [(2, 1), (4, 1), (1, 3)]
    with pytest.raises(DataError, match="pair 1 is too long for max_len=4"):
        encode_pairs(pairs, *toks, max_len=4, on_too_long="error")
    with_eos = encode_pairs(pairs, *toks, max_len=4, on_too_long="truncate", src_eos=True)
    assert with_eos[0][0] == [4, 5, EOS_ID] and with_eos[1][0] == [4, 5, 6, EOS_ID]
    assert [len(s) for s, _ in encode_pairs(pairs, *toks)] == [2, 5, 1]  # no limit: all kept


def random_lengths(n=2000, seed=0):
    rng = random.Random(seed)
    return [rng.randint(2, 40) for _ in range(n)]


def check_epoch(sampler, lengths, max_tokens):
    batches = list(sampler)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(lengths)))  # every index exactly once
    assert all(len(b) * max(lengths[i] for i in b) <= max_tokens for b in batches)
    return batches


def test_sampler_covers_each_index_once_within_budget():
    lengths = random_lengths()
    sampler = TokenBucketSampler(lengths, max_tokens=500, seed=3)
    epochs = [check_epoch(sampler, lengths, 500) for _ in range(3)]
    assert sampler.epoch == 3
    assert epochs[0] != epochs[1]
    chunked = TokenBucketSampler(lengths, max_tokens=500, seed=3, chunk_size=300)
    check_epoch(chunked, lengths, 500)
    assert len(epochs[0]) == len(sampler)


def test_sampler_padding_much_lower_than_random_batches():
    lengths = random_lengths()
    batches = list(TokenBucketSampler(lengths, max_tokens=800, seed=0))
    order = list(range(len(lengths)))
    random.Random(0).shuffle(order)
    size = len(lengths) // len(batches)
    random_batches = [order[i : i + size] for i in range(0, len(order), size)]
    bucketed = padding_fraction(lengths, batches)
    assert bucketed < 0.05 < 0.3 < padding_fraction(lengths, random_batches)


def test_padding_fraction_by_hand():
    assert padding_fraction([2, 4, 4], [[0, 1], [2]]) == pytest.approx(1 - 10 / 12)


def test_sampler_deterministic_by_seed_and_epoch():
    lengths = random_lengths()
    a = TokenBucketSampler(lengths, 400, seed=7)
    b = TokenBucketSampler(lengths, 400, seed=7)
    b.set_epoch(4)
    a.set_epoch(4)
    assert list(a) == list(b)
    c = TokenBucketSampler(lengths, 400, seed=8)
    c.set_epoch(4)
    d = TokenBucketSampler(lengths, 400, seed=7)
    assert list(c) != list(b) and list(d) != list(b)
    plain = TokenBucketSampler(lengths, 400, shuffle=False)
    batch_max = [max(lengths[i] for i in batch) for batch in plain]
    assert batch_max == sorted(batch_max)


def test_sampler_resume_mid_epoch():
    lengths = random_lengths()
    full_run = TokenBucketSampler(lengths, 300, seed=1)
    full_run.set_epoch(2)
    expected = list(full_run) + list(full_run)  # epoch 2, then epoch 3

    first = TokenBucketSampler(lengths, 300, seed=1)
    first.set_epoch(2)
    it = iter(first)
    seen = [next(it) for _ in range(17)]
    state = first.state_dict()
    assert state["epoch"] == 2 and state["position"] == 17

    resumed = TokenBucketSampler(lengths, 300, seed=1)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # a training loop's set_epoch for the current epoch keeps the position
    assert seen + list(resumed) + list(resumed) == expected
    with pytest.raises(ValueError, match="max_tokens=300"):
        TokenBucketSampler(lengths, 301, seed=1).load_state_dict(state)


@pytest.mark.parametrize("replicas", [2, 3])
def test_distributed_parts_union_is_single_process_batches(replicas):
    lengths = random_lengths(1000, seed=4)
    single = TokenBucketSampler(lengths, 600, seed=5)
    single.set_epoch(1)
    global_batches = list(single)
    ranks = []
    for rank in range(replicas):
        sampler = TokenBucketSampler(lengths, 600, seed=5, num_replicas=replicas, rank=rank)
        sampler.set_epoch(1)
        ranks.append(list(sampler))
    kept = global_batches if len(global_batches[-1]) >= replicas else global_batches[:-1]
    assert all(len(parts) == len(kept) for parts in ranks)
    for k, batch in enumerate(kept):
        parts = [parts[k] for parts in ranks]
        assert all(parts)  # no empty part
        assert sorted(i for part in parts for i in part) == sorted(batch)  # disjoint, complete
        assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1


def test_distributed_skips_a_last_batch_too_small_to_split(caplog):
    lengths = [10] * 5  # packs into [2, 2, 1] examples under 20 tokens
    with caplog.at_level(logging.INFO, logger="attnkit.data.batching"):
        parts = [
            list(TokenBucketSampler(lengths, 20, shuffle=False, num_replicas=2, rank=r))
            for r in range(2)
        ]
    assert parts == [[[0], [2]], [[1], [3]]]
    assert "skipping the last batch (1 examples < num_replicas=2)" in caplog.text
    assert list(TokenBucketSampler(lengths, 20, shuffle=False)) == [[0, 1], [2, 3], [4]]
    assert list(TokenBucketSampler(lengths, 20, shuffle=False, drop_last=True)) == [[0, 1], [2, 3]]


def test_sampler_validation():
    with pytest.raises(ValueError, match="max_tokens=10 is smaller"):
        TokenBucketSampler([3, 12], max_tokens=10)
    with pytest.raises(ValueError, match="num_replicas \\* longest"):
        TokenBucketSampler([3, 6], max_tokens=10, num_replicas=2)
    with pytest.raises(ValueError, match="rank"):
        TokenBucketSampler([3], max_tokens=10, num_replicas=2, rank=2)


def test_make_batches_restores_order_with_indices():
    rng = random.Random(0)
    examples = [([4] * rng.randint(1, 9), [5] * rng.randint(1, 9)) for _ in range(200)]
    seen = {}
    for batch in make_batches(examples, max_tokens=60, shuffle=False):
        assert isinstance(batch, Batch)
        assert batch.tgt_in.shape[1] == max(len(examples[i][1]) for i in batch.indices) + 1
        for row, i in enumerate(batch.indices):
            seen[i] = batch.src[row, : batch.src_lens[row]].tolist()
    assert [seen[i] for i in range(200)] == [src for src, _ in examples]
    assert example_lengths([([1, 2, 3], [4])]) == [4]

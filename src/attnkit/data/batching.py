"""From token ids to padded batches: encoding pairs, collation into :class:`Batch`, and
:class:`TokenBucketSampler`, which groups sentences of similar length under a token budget.

Teacher forcing layout (B batch, S source length, L target length)::

    src      x1 x2 x3 <pad>          src_lens = 3
    tgt_in   <bos> y1 y2 y3          tgt_lens = 4  (= len(y) + 1)
    tgt_out  y1 y2 y3 <eos>

Masks are boolean with True = real token, built from the lengths.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Sampler

from .errors import DataError
from .text import BOS_ID, EOS_ID, PAD_ID

__all__ = [
    "check_replicas",
    "Batch",
    "Example",
    "pad_sequences",
    "encode_pairs",
    "example_lengths",
    "collate",
    "TokenBucketSampler",
    "padding_fraction",
    "make_batches",
]

logger = logging.getLogger(__name__)

#: One encoded pair: (source ids, target ids), without BOS/EOS on the target.
Example = tuple[list[int], list[int]]


def _lengths_to_mask(lens: Tensor, max_len: int) -> Tensor:
    """(B,) lengths -> (B, max_len) bool mask, True = real token."""
    try:
        from ..attention.masks import padding_mask
    except ImportError:  # attention package absent: same computation
        return torch.arange(max_len, device=lens.device) < lens[:, None]  # (B, T)
    return padding_mask(lens, max_len)


@dataclasses.dataclass
class Batch:
    """A padded batch for teacher-forced training.

    Attributes:
        src: (B, S) long source ids, padded with PAD.
        src_lens: (B,) long source lengths.
        tgt_in: (B, L) long decoder input ``[BOS] + y``, padded.
        tgt_out: (B, L) long decoder target ``y + [EOS]``, padded.
        tgt_lens: (B,) long target lengths (``len(y) + 1``).
        indices: positions of the examples in the list they were batched from (to restore the
            input order after length-sorted evaluation), or None.
    """

    src: Tensor
    src_lens: Tensor
    tgt_in: Tensor
    tgt_out: Tensor
    tgt_lens: Tensor
    indices: list[int] | None = None

    @property
    def src_mask(self) -> Tensor:
        """(B, S) bool, True at real source tokens."""
        return _lengths_to_mask(self.src_lens, self.src.shape[1])

    @property
    def tgt_mask(self) -> Tensor:
        """(B, L) bool, True at real target tokens (of ``tgt_in`` and ``tgt_out`` alike)."""
        return _lengths_to_mask(self.tgt_lens, self.tgt_out.shape[1])

    @property
    def num_tgt_tokens(self) -> int:
        """Number of non-pad tokens in ``tgt_out`` (the loss normaliser)."""
        return int(self.tgt_lens.sum())

    def __len__(self) -> int:
        return self.src.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy with every tensor on ``device``."""
        moved = {
            f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return dataclasses.replace(self, **moved)

    def pin_memory(self) -> Batch:
        """A copy in pinned memory (called by ``DataLoader(pin_memory=True)``)."""
        pinned = {
            f.name: getattr(self, f.name).pin_memory()
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return dataclasses.replace(self, **pinned)


def pad_sequences(seqs: Sequence[Sequence[int]], pad_id: int = PAD_ID) -> tuple[Tensor, Tensor]:
    """Pad id lists to the longest one.

    Args:
        seqs: B sequences of ids.
        pad_id: fill value.

    Returns:
        ``(ids, lens)``: ids (B, T) long with T the longest length, lens (B,) long.
    """
    lens = [len(s) for s in seqs]
    width = max(lens, default=0)
    ids = torch.tensor([list(s) + [pad_id] * (width - len(s)) for s in seqs], dtype=torch.long)
    return ids.view(len(seqs), width), torch.tensor(lens, dtype=torch.long)  # (B, T), (B,)


def encode_pairs(
    pairs: Sequence[tuple[str, str]],
    src_tok: Any,
    tgt_tok: Any,
    max_len: int | None = None,
    on_too_long: str = "drop",
    src_eos: bool = False,
) -> list[Example]:
    """Encode text pairs into id lists.

    ``max_len`` bounds the tensor lengths the model sees: the source length S (with the EOS if
    ``src_eos``) and the decoder length L = ``len(target) + 1``.

    Args:
        pairs: ``(source, target)`` sentences.
        src_tok: source tokenizer (anything with ``encode(text) -> list[int]``).
        tgt_tok: target tokenizer; may be ``src_tok``.
        max_len: length limit, or None for no limit.
        on_too_long: ``"drop"`` the pair (the count is logged as a warning), ``"truncate"`` it, or
            raise an ``"error"``. Dropping changes the pair positions: evaluate with
            ``"truncate"`` or no limit.
        src_eos: append EOS to the source, as the d2l course does.

    Returns:
        List of ``(src_ids, tgt_ids)``; targets carry no BOS/EOS (:func:`collate` adds them).
    """
    if on_too_long not in ("drop", "truncate", "error"):
        raise ValueError(f"on_too_long must be 'drop', 'truncate' or 'error', got {on_too_long!r}")
    if max_len is not None and max_len < 2:
        raise ValueError(f"max_len must be >= 2 (room for one token and EOS), got {max_len}")
    examples: list[Example] = []
    dropped = 0
    for i, (src_text, tgt_text) in enumerate(pairs):
        src = list(src_tok.encode(src_text)) + ([EOS_ID] if src_eos else [])
        tgt = list(tgt_tok.encode(tgt_text))
        if max_len is not None and (len(src) > max_len or len(tgt) + 1 > max_len):
            if on_too_long == "error":
                raise DataError(
                    f"pair {i} is too long for max_len={max_len} (source {len(src)} tokens, "
                    f"target {len(tgt) + 1} with EOS): {src_text[:50]!r}; raise max_len or use "
                    "on_too_long='drop'|'truncate'"
                )
            if on_too_long == "drop":
                dropped += 1
                continue
            src = src[: max_len - 1] + [EOS_ID] if src_eos and len(src) > max_len else src[:max_len]
            tgt = tgt[: max_len - 1]
        examples.append((src, tgt))
    if dropped:
        logger.warning(
            "dropped %d of %d pairs longer than max_len=%d tokens", dropped, len(pairs), max_len
        )
    return examples


def example_lengths(examples: Sequence[Example]) -> list[int]:
    """Batching cost of each example: ``max(len(src), len(tgt)) + 1`` (BOS/EOS included)."""
    return [max(len(src), len(tgt)) + 1 for src, tgt in examples]


def collate(examples: Sequence[Example], pad_id: int = PAD_ID) -> Batch:
    """Pad a list of examples into a :class:`Batch` (to the batch's own longest sequences).

    Args:
        examples: ``(src_ids, tgt_ids)`` pairs, targets without BOS/EOS.
        pad_id: padding id.

    Returns:
        The batch; shapes src (B, S), tgt_in/tgt_out (B, L) with L = longest target + 1.
    """
    if not examples:
        raise ValueError("collate needs at least one example, got an empty list")
    src, src_lens = pad_sequences([s for s, _ in examples], pad_id)  # (B, S), (B,)
    tgt_in, tgt_lens = pad_sequences([[BOS_ID, *t] for _, t in examples], pad_id)  # (B, L)
    tgt_out, _ = pad_sequences([[*t, EOS_ID] for _, t in examples], pad_id)  # (B, L)
    return Batch(src=src, src_lens=src_lens, tgt_in=tgt_in, tgt_out=tgt_out, tgt_lens=tgt_lens)


def check_replicas(num_replicas: int, rank: int) -> None:
    """Validate a data-parallel split (every sampler's): ``0 <= rank < num_replicas``."""
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(
            f"need 0 <= rank < num_replicas, got rank={rank}, num_replicas={num_replicas}"
        )


class TokenBucketSampler(Sampler[list[int]]):
    """Yields lists of example indices whose padded size ``count * longest`` fits ``max_tokens``.

    Each epoch, with ``random.Random(f"{seed}:{epoch}")``: the indices are shuffled, then sorted
    by length (stably, so equal lengths stay in random order) over the whole set or within chunks
    of ``chunk_size`` examples; consecutive indices are packed greedily into batches; the batch
    order is shuffled. Every index appears exactly once per epoch. With ``shuffle=False``
    batches come in increasing length and nothing is random (for evaluation).

    Distributed (``num_replicas > 1``): the list of *global* batches is the one a single process
    would see; rank ``r`` takes elements ``r::num_replicas`` of each global batch, sorted by length,
    so ranks get balanced parts, the same number of steps, and together the same global batch (in
    tokens) as one process. Every global batch needs ``num_replicas`` examples, hence the check
    ``max_tokens >= num_replicas * max(lengths)``; only the last-packed batch can have fewer, and
    it is then skipped (logged).

    Resuming: ``state_dict()`` holds the epoch and the number of batches already handed out;
    after ``load_state_dict`` the next iteration continues with the following batch. A finished
    pass advances the epoch by itself; ``set_epoch(e)`` with a different epoch restarts at its
    first batch. (With ``DataLoader`` workers prefetching, store the number of batches the loop
    has consumed instead: ``state["position"] = steps_done_this_epoch``.)

    Args:
        lengths: cost of each example, e.g. from :func:`example_lengths`.
        max_tokens: budget of one global batch in padded tokens.
        shuffle: randomise composition (among equal lengths) and order of batches.
        seed: base seed.
        num_replicas: number of data-parallel processes.
        rank: this process's rank in ``[0, num_replicas)``.
        drop_last: skip the last-packed batch (it may be small).
        chunk_size: sort within shuffled chunks of this many examples instead of globally
            (more varied batches, more padding).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        max_tokens: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
        chunk_size: int | None = None,
    ):
        self.lengths = [int(n) for n in lengths]
        if not self.lengths:
            raise ValueError("lengths is empty: there is nothing to batch")
        if min(self.lengths) < 1:
            raise ValueError(f"lengths must be >= 1, got a minimum of {min(self.lengths)}")
        check_replicas(num_replicas, rank)
        longest = max(self.lengths)
        if max_tokens < num_replicas * longest:
            raise ValueError(
                f"max_tokens={max_tokens} is smaller than num_replicas * longest example = "
                f"{num_replicas} * {longest}; raise max_tokens or drop long pairs (max_len)"
            )
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
        self.max_tokens, self.shuffle, self.seed = max_tokens, shuffle, seed
        self.num_replicas, self.rank, self.drop_last = num_replicas, rank, drop_last
        self.chunk_size = chunk_size
        self.epoch, self.position = 0, 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def global_batches(self, epoch: int | None = None) -> list[list[int]]:
        """All batches of an epoch (default: the current one) as one process would see them."""
        epoch = self.epoch if epoch is None else epoch
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = random.Random(f"{self.seed}:{epoch}")
        order = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(order)
        chunk = self.chunk_size or len(order)
        order = [
            i
            for start in range(0, len(order), chunk)
            for i in sorted(order[start : start + chunk], key=self.lengths.__getitem__)
        ]
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for i in order:
            new_longest = max(longest, self.lengths[i])
            if current and (len(current) + 1) * new_longest > self.max_tokens:
                batches.append(current)
                current, new_longest = [], self.lengths[i]
            current.append(i)
            longest = new_longest
        if current and not self.drop_last:
            if len(current) >= self.num_replicas:
                batches.append(current)
            else:
                logger.info(
                    "skipping the last batch (%d examples < num_replicas=%d)",
                    len(current),
                    self.num_replicas,
                )
        if self.shuffle:
            rng.shuffle(batches)
        self._cache = (epoch, batches)
        return batches

    def _local_batches(self) -> list[list[int]]:
        if self.num_replicas == 1:
            return self.global_batches()
        return [
            sorted(batch, key=self.lengths.__getitem__)[self.rank :: self.num_replicas]
            for batch in self.global_batches()
        ]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._local_batches()
        for k in range(self.position, len(batches)):
            self.position = k + 1  # counted before yielding: a saved state skips this batch
            yield batches[k]
        self.epoch, self.position = self.epoch + 1, 0

    def __len__(self) -> int:
        """Number of batches per epoch for this rank."""
        return len(self.global_batches())

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (restarting at its first batch if it differs from the current one)."""
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0

    def state_dict(self) -> dict[str, int]:
        """Epoch and position (batches handed out this epoch), plus fields checked on load."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "max_tokens": self.max_tokens,
            "num_examples": len(self.lengths),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a :meth:`state_dict` of a sampler over the same data and settings."""
        for key, mine in (
            ("seed", self.seed),
            ("max_tokens", self.max_tokens),
            ("num_examples", len(self.lengths)),
        ):
            if state.get(key, mine) != mine:
                raise ValueError(
                    f"sampler state has {key}={state[key]} but this sampler has {mine}; resume "
                    "with the same data and batching settings"
                )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Fraction of padded slots: ``1 - sum(lengths) / sum(count * longest)`` over the batches."""
    real = sum(lengths[i] for batch in batches for i in batch)
    padded = sum(len(batch) * max(lengths[i] for i in batch) for batch in batches if batch)
    return 1.0 - real / padded if padded else 0.0


def make_batches(
    examples: Sequence[Example],
    max_tokens: int,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
    pad_id: int = PAD_ID,
    device: torch.device | str | None = None,
    num_replicas: int = 1,
    rank: int = 0,
) -> Iterator[Batch]:
    """Batches of one epoch, each with ``indices`` set (see :class:`TokenBucketSampler`).

    Args:
        examples: encoded pairs from :func:`encode_pairs`.
        max_tokens: token budget per (global) batch.
        shuffle: random batches (training) or length-sorted ones (evaluation; restore the input
            order with ``batch.indices``).
        seed: with ``epoch``, the randomness of this epoch.
        epoch: the epoch being batched.
        pad_id: padding id.
        device: move each batch there (None: stay on CPU).
        num_replicas: number of data-parallel processes.
        rank: this process's index among them.

    Returns:
        An iterator of :class:`Batch`.
    """
    sampler = TokenBucketSampler(
        example_lengths(examples),
        max_tokens,
        shuffle=shuffle,
        seed=seed,
        num_replicas=num_replicas,
        rank=rank,
    )
    sampler.set_epoch(epoch)
    for indices in sampler:
        batch = collate([examples[i] for i in indices], pad_id)
        batch.indices = list(indices)
        yield batch if device is None else batch.to(device, non_blocking=True)

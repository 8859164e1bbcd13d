"""Greedy decoding: at every step take the most probable next token, for a whole batch at once.

Uses only the seq2seq interface (``encode`` / ``init_cache`` / ``decode``). With ``use_cache=True``
each step feeds only the newest token and the model keeps its keys/values (or GRU state); with
``use_cache=False`` each step re-decodes the whole prefix (the reference path, O(T^2) work).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnkit.config import DecodeConfig
from attnkit.decoding.common import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    Hypothesis,
    SentenceWeights,
    apply_constraints,
    check_inputs,
    last_log_probs,
    length_limits,
    sentence_weights,
)

__all__ = ["DecodeResult", "greedy_decode"]


@dataclass
class DecodeResult:
    """Greedy output for a batch.

    Attributes:
        tokens: per sentence, the generated ids without BOS and EOS.
        scores: (B,) sum of the log-probabilities of the generated tokens (EOS included).
        eos: per sentence, whether it ended with EOS (False: cut at the maximum length).
        weights: per sentence ``{"encoder": [(H, S, S)], "self": [(H, T, T)],
            "cross": [(H, T, S)]}`` (S real source length, T output length with EOS), or None.
    """

    tokens: list[list[int]]
    scores: Tensor
    eos: list[bool]
    weights: list[SentenceWeights] | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    def per_sentence(self) -> list[Hypothesis]:
        """One :class:`Hypothesis` per sentence (score = logprob)."""
        return [
            Hypothesis(
                tokens,
                float(score),
                float(score),
                eos,
                None if self.weights is None else self.weights[i],
            )
            for i, (tokens, score, eos) in enumerate(
                zip(self.tokens, self.scores.tolist(), self.eos, strict=True)
            )
        ]


def _stack_rows(rows: list[Tensor], width: int) -> Tensor:
    """Stack per-step query rows [(B, H, k_t)] into (B, H, T, width), zero-padded on the right."""
    padded = [torch.nn.functional.pad(r, (0, width - r.shape[-1])) for r in rows]
    return torch.stack(padded, dim=2)  # (B, H, T, width)


def greedy_decode(
    model: nn.Module,
    src: Tensor,
    src_mask: Tensor | None = None,
    max_len: int | None = None,
    use_cache: bool = True,
    need_weights: bool = False,
    config: DecodeConfig | None = None,
    bos_id: int = BOS_ID,
    eos_id: int = EOS_ID,
) -> DecodeResult:
    """Greedy decoding of a batch.

    Every row runs until it emits EOS or reaches its maximum length; finished rows are fed PAD
    and their outputs ignored until a quarter of the batch is done, then they leave it (with a
    cache), so a sentence's result does not depend on the rest of the batch.
    PAD and BOS are never generated; ``config.min_len_a`` and ``config.no_repeat_ngram`` apply as
    in :func:`~attnkit.decoding.beam.beam_search` (so beam search with one beam and no length
    penalty gives the same tokens).

    Args:
        model: seq2seq model with ``encode`` / ``init_cache`` / ``decode`` (put it in eval mode).
        src: (B, S) source ids.
        src_mask: (B, S) bool, True = real token (None: no padding).
        max_len: maximum output length (EOS included) for every sentence; default
            ``max_len_a * src_len + max_len_b`` from ``config``. Capped by the model's max_len.
        use_cache: incremental decoding with the model's cache; False re-decodes the prefix.
        need_weights: also return each sentence's attention weights.
        config: :class:`DecodeConfig` (length limits, min length, no-repeat-n-gram); default
            ``DecodeConfig()``.
        bos_id: id of the start token.
        eos_id: id of the end token.

    Returns:
        :class:`DecodeResult`.

    Shapes:
        src, src_mask (B, S) -> B token lists, scores (B,).
    """
    config = config or DecodeConfig()
    src_mask = check_inputs(model, src, src_mask)
    batch, device = src.shape[0], src.device
    src_lens = src_mask.sum(1)  # (B,)
    max_lens, min_lens = length_limits(model, src_lens, config, max_len)
    steps_cap = int(max_lens.max())
    # Finished rows leave the batch (as in beam search) once a quarter of the rows still in it
    # are done: later steps then cost less. Not with weights (kept per row of the full batch)
    # nor without a cache (the prefix is re-decoded).
    prune = use_cache and not need_weights
    with torch.inference_mode():
        memory, enc_w = model.encode(src, src_mask, need_weights=need_weights)
        cache = model.init_cache(memory, src_mask) if use_cache else None
        # Per sentence (B rows): the outputs.
        out = torch.full((batch, steps_cap), PAD_ID, dtype=torch.long, device=device)
        scores = torch.zeros(batch, device=device)
        lengths = torch.zeros(batch, dtype=torch.long, device=device)
        eos = torch.zeros(batch, dtype=torch.bool, device=device)
        # Per row still in the batch (A rows): which sentence, and its decoding state.
        rows = torch.arange(batch, device=device)  # (A,)
        tokens = torch.full((batch, 1), bos_id, dtype=torch.long, device=device)  # (A, t + 1)
        done = torch.zeros(batch, dtype=torch.bool, device=device)  # (A,)
        mem, mask, row_min, row_max = memory, src_mask, min_lens, max_lens
        self_rows: list[list[Tensor]] = []  # per step: [(B, H, t + 1) per layer]
        cross_rows: list[list[Tensor]] = []  # per step: [(B, H, S) per layer]
        for step in range(steps_cap):
            inputs = tokens[:, -1:] if use_cache else tokens  # (A, 1) or (A, step + 1)
            logits, w = model.decode(inputs, mem, mask, cache=cache, need_weights=need_weights)
            logp = last_log_probs(logits)  # (A, V), in place
            apply_constraints(
                logp, tokens[:, 1:], row_min, config.no_repeat_ngram, eos_id, (PAD_ID, bos_id)
            )
            best, nxt = logp.max(dim=-1)  # (A,), (A,)
            # A row whose every token is forbidden stops without emitting anything.
            done |= best == -math.inf
            live = ~done
            nxt = nxt.masked_fill(~live, PAD_ID)
            scores.index_add_(0, rows, best.masked_fill(~live, 0.0).to(scores.dtype))
            lengths.index_add_(0, rows, live.long())
            ended = live & (nxt == eos_id)
            eos[rows[ended]] = True
            done |= live & ((nxt == eos_id) | (step + 1 >= row_max))
            out[rows, step] = nxt
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)  # (A, step + 2)
            if w is not None:
                self_rows.append([x[:, :, -1] for x in w["self"]])  # (B, H, step + 1)
                cross_rows.append([x[:, :, -1] for x in w["cross"]])  # (B, H, S)
            finished = int(done.sum())
            if finished == len(rows):
                break
            if prune and 4 * finished >= len(rows):
                keep = (~done).nonzero().squeeze(1)  # (A',)
                rows, tokens, done = rows[keep], tokens[keep], done[keep]
                mem, mask = mem.index_select(0, keep), mask.index_select(0, keep)
                row_min, row_max = row_min[keep], row_max[keep]
                assert cache is not None
                cache.reorder(keep)
        taken = out.tolist()
        lens, ends = lengths.tolist(), eos.tolist()
        seqs = [row[: n - int(e)] for row, n, e in zip(taken, lens, ends, strict=True)]
        weights = None
        if need_weights:
            steps = len(self_rows)
            self_w = [
                _stack_rows([r[i] for r in self_rows], steps) for i in range(len(self_rows[0]))
            ]  # [(B, H, T, T)]
            cross_w = [
                torch.stack([r[i] for r in cross_rows], dim=2) for i in range(len(cross_rows[0]))
            ]  # [(B, H, T, S)]
            weights = [
                sentence_weights(enc_w, self_w, cross_w, b, b, int(src_lens[b]), lens[b])
                for b in range(batch)
            ]
    return DecodeResult(seqs, scores, ends, weights)

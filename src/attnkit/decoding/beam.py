"""Beam search with length penalty, min/max length, no-repeat-n-gram blocking and n-best output.

Batched over sentences *and* beams: the A active sentences with K beams each are A*K rows of one
decoder call per step (step 0, with one hypothesis per sentence, runs on A rows). Only the
seq2seq interface is used (``encode`` / ``init_cache`` / ``decode``, ``cache.reorder``). Finished
sentences leave the batch, so later steps cost less. A cache with ``reorder_beams`` (the
Transformer's) keeps the encoder keys/values once per sentence for all its beams (projected once,
copied only when sentences leave); other models get the memory repeated per row.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from attnkit.config import DecodeConfig
from attnkit.data.batching import pad_sequences
from attnkit.decoding.common import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    Hypothesis,
    apply_constraints,
    check_inputs,
    last_log_probs,
    length_limits,
    length_penalty,
    sentence_weights,
)

__all__ = ["beam_search"]


def beam_search(
    model: nn.Module,
    src: Tensor,
    src_mask: Tensor | None,
    config: DecodeConfig,
    need_weights: bool = False,
    max_len: int | None = None,
    bos_id: int = BOS_ID,
    eos_id: int = EOS_ID,
) -> list[list[Hypothesis]]:
    """Beam search over a batch of sentences.

    Each step extends the K live hypotheses of every sentence by every token and ranks the K*V
    candidates by log-probability. Among the top 2K, EOS candidates ranked in the first K become
    finished hypotheses scored ``logprob / lp(|y|)`` (:func:`length_penalty`, ``|y|`` counting
    EOS) and the first K non-EOS candidates are the next live beam, so with K = 1 and no length
    penalty this is exactly greedy decoding. A sentence keeps its K best finished hypotheses.

    Stopping rule. A sentence is done when (a) its live hypotheses reach the maximum length
    (they are then scored as they are, without EOS, and join the finished ones), or (b) no live
    hypothesis is left with a finite score, or (c) it has K finished hypotheses and no live one
    can still beat the worst of them. For (c) we bound the best final score of a live hypothesis
    with log-probability ``c <= 0`` and length ``t``: every completion has log-probability
    ``c' <= c`` (log-probabilities are <= 0) and length ``T'`` in ``[t + 1, max_len]``, so with
    ``lp > 0``

        ``c' / lp(T') <= c / lp(T') <= c / max(lp(t + 1), lp(max_len))``

    (dividing a non-positive number by a larger divisor gives a larger result, and a monotone
    ``lp`` is largest at an end of the interval). For gnmt/average with alpha > 0, ``lp``
    increases and the bound is ``c / lp(max_len)`` — a long, unlikely hypothesis can still win,
    so stopping at the first K finished ones would be wrong; with alpha = 0 or kind ``none`` it is
    ``c`` itself. The live hypothesis with the highest ``c`` gives the bound for the sentence.
    With ``config.early_stopping`` (c) is just "it has K finished hypotheses", the rule of
    fairseq and CTranslate2: faster, not exact under a length penalty.

    Also: EOS is forbidden before ``min_len = floor(min_len_a * src_len)`` tokens, tokens that
    would repeat an n-gram (``no_repeat_ngram``) are forbidden, PAD and BOS are never generated.

    Args:
        model: seq2seq model (eval mode).
        src: (B, S) source ids.
        src_mask: (B, S) bool, True = real token (None: no padding).
        config: :class:`DecodeConfig` (beam_size, n_best, length penalty, length limits,
            no_repeat_ngram).
        need_weights: attach each returned hypothesis' attention weights,
            ``{"encoder": [(H, S, S)], "self": [(H, T, T)], "cross": [(H, T, S)]}`` (S real
            source length, T = |y|). They are computed after the search by one teacher-forced
            :meth:`decode` of the kept hypotheses, which gives the weights seen at every step of
            the search (cached and uncached decoding agree) without carrying them through it.
        max_len: maximum |y| for every sentence instead of ``max_len_a * src_len + max_len_b``.
        bos_id: id of the start token.
        eos_id: id of the end token.

    Returns:
        For each sentence, up to ``n_best`` :class:`Hypothesis` sorted by score (best first),
        distinct as token sequences. (Empty only if the constraints allow no sequence at all.)
    """
    src_mask = check_inputs(model, src, src_mask)
    k, batch, device = config.beam_size, src.shape[0], src.device
    alpha, kind = config.length_penalty, config.length_penalty_kind
    early = config.early_stopping
    src_lens = src_mask.sum(1)  # (B,)
    max_lens, min_lens = length_limits(model, src_lens, config, max_len)
    t_cap = int(max_lens.max())
    with torch.inference_mode():
        memory, enc_w = model.encode(src, src_mask, need_weights=need_weights)
        # Step 0 extends one hypothesis per sentence (BOS) and runs on B rows; the K beams
        # branch out of it. A cache with ``reorder_beams`` (the Transformer's) keeps the encoder
        # side once per sentence for all its beams, so memory and mask stay per sentence;
        # other models get them repeated per row.
        cache = model.init_cache(memory, src_mask)
        shared = hasattr(cache, "reorder_beams")
        sent_mem, sent_mask = memory, src_mask  # (A, S, D), (A, S): the active sentences'
        mem, mask = memory, src_mask  # what the decoder gets (per sentence, or per row)
        sent = torch.arange(batch, device=device)  # (A,) active sentence ids
        tokens = torch.full((batch, 1), bos_id, dtype=torch.long, device=device)  # (A * W, t)
        live = torch.zeros(batch, 1, device=device)  # (A, W) log-probs of the W live beams
        width = 1
        pool = _Pool(batch, k, t_cap, device)
        results: list[_Pool | None] = [None] * batch
        step = 0
        while True:
            a = sent.numel()
            logits, _ = model.decode(tokens[:, -1:], mem, mask, cache=cache)
            logp = last_log_probs(logits)  # (A*W, V), in place
            vocab = logp.shape[-1]
            apply_constraints(
                logp,
                tokens[:, 1:],
                min_lens[sent].repeat_interleave(width),
                config.no_repeat_ngram,
                eos_id,
                (PAD_ID, bos_id),
            )
            cand = logp.add_(live.view(-1, 1)).view(a, width * vocab)  # (A, W*V), in place
            top_s, top_i = cand.topk(min(2 * k, width * vocab), dim=1)  # (A, n) sorted
            if top_s.shape[1] < k:  # fewer candidates than beams (tiny vocabulary, step 0)
                top_s = F.pad(top_s, (0, k - top_s.shape[1]), value=-math.inf)
                top_i = F.pad(top_i, (0, k - top_i.shape[1]), value=PAD_ID)
            n = top_s.shape[1]
            beam, tok = top_i // vocab, top_i % vocab  # (A, n)
            rank = torch.arange(n, device=device)
            is_eos = tok == eos_id
            # The first K non-EOS candidates (EOS ones pushed back, order otherwise kept).
            order = (rank + is_eos.long() * n).argsort(dim=1)[:, :k]  # (A, K)
            live = top_s.gather(1, order)  # (A, K) sorted, best first
            live_b, live_t = beam.gather(1, order), tok.gather(1, order)
            length = step + 1
            lp_now = length_penalty(length, alpha, kind)
            at_max = length >= max_lens[sent]  # (A,)
            prefix = tokens[:, 1:].view(a, width, step)  # (A, W, t) generated tokens
            eos_ok = is_eos & (rank < k) & torch.isfinite(top_s)
            cut_ok = at_max[:, None] & torch.isfinite(live)
            pool.merge(
                torch.cat([top_s, live], 1),
                torch.cat([eos_ok, cut_ok], 1),
                lp_now,
                _extend(prefix, torch.cat([beam, live_b], 1), torch.cat([tok, live_t], 1), t_cap),
                torch.cat([torch.ones_like(eos_ok), torch.zeros_like(cut_ok)], 1),
                length,
            )
            # Largest divisor a completion can get: lp is monotone in |y| in [t + 1, max_len].
            lp_max = length_penalty(max_lens[sent], alpha, kind).clamp(
                min=length_penalty(length + 1, alpha, kind)
            )  # (A,)
            bound = live[:, 0] / lp_max  # best possible final score of a live hypothesis, (A,)
            n_fin = torch.isfinite(pool.score).sum(1)
            can_stop = (n_fin >= k) & (early or (bound <= pool.score[:, -1]))
            done = at_max | ~torch.isfinite(live[:, 0]) | can_stop
            done_idx = done.nonzero().squeeze(1)  # (D,)
            if len(done_idx):
                finished = pool.select(done_idx)
                for j, b in enumerate(sent[done_idx].tolist()):
                    results[b] = finished.row(j)
            if len(done_idx) == a:
                break
            parents = torch.arange(a, device=device)[:, None] * width + live_b  # (A, K) rows
            kept = None  # (A',) the sentences that go on, when some finished
            if len(done_idx):
                kept = (~done).nonzero().squeeze(1)
                parents, live, live_t = parents[kept], live[kept], live_t[kept]
                sent, pool = sent[kept], pool.select(kept)
                sent_mem, sent_mask = sent_mem[kept], sent_mask[kept]
            rows = parents.flatten()  # (A'*K,)
            if shared:  # the encoder side is copied only when sentences leave
                cache.reorder_beams(rows, kept)
                mem, mask = sent_mem, sent_mask
            else:
                cache.reorder(rows)
                if kept is not None or width == 1:
                    mem = sent_mem.repeat_interleave(k, dim=0)  # (A'*K, S, D)
                    mask = sent_mask.repeat_interleave(k, dim=0)  # (A'*K, S)
            tokens = torch.cat([tokens.index_select(0, rows), live_t.reshape(-1, 1)], dim=1)
            width = k
            step += 1
        hyps = [_hypotheses(r, config.n_best) for r in results]
        if need_weights:
            _attach_weights(model, memory, src_mask, enc_w, hyps, bos_id)
    return hyps


def _extend(prefix: Tensor, beam: Tensor, tok: Tensor, width: int) -> Tensor:
    """Candidate sequences: parent prefix + new token, PAD-padded to ``width``.

    Shapes: prefix (A, K, t), beam/tok (A, m) -> (A, m, width).
    """
    a, m = beam.shape
    parent = prefix.gather(1, beam[:, :, None].expand(a, m, prefix.shape[2]))  # (A, m, t)
    seq = torch.cat([parent, tok[:, :, None]], dim=2)  # (A, m, t + 1)
    return F.pad(seq, (0, width - seq.shape[2]), value=PAD_ID)  # (A, m, width)


class _Pool:
    """The K best finished hypotheses of each active sentence, sorted by score (best first).

    Shapes: score, logprob, length, eos (A, K); tokens (A, K, T_cap). Empty slots score -inf.
    """

    def __init__(self, batch: int, k: int, width: int, device: torch.device) -> None:
        self.score = torch.full((batch, k), -math.inf, device=device)
        self.logprob = torch.full((batch, k), -math.inf, device=device)
        self.length = torch.zeros(batch, k, dtype=torch.long, device=device)
        self.eos = torch.zeros(batch, k, dtype=torch.bool, device=device)
        self.tokens = torch.full((batch, k, width), PAD_ID, dtype=torch.long, device=device)

    def merge(
        self, logprob: Tensor, ok: Tensor, lp: float, tokens: Tensor, eos: Tensor, length: int
    ) -> None:
        """Add candidates (A, m) where ``ok``, scored ``logprob / lp``; keep the best K."""
        k = self.score.shape[1]
        score = torch.cat([self.score, (logprob / lp).masked_fill(~ok, -math.inf)], 1)
        best, idx = score.topk(k, dim=1)  # (A, K)
        self.score = best
        self.logprob = torch.cat([self.logprob, logprob], 1).gather(1, idx)
        self.length = torch.cat(
            [self.length, torch.full_like(logprob, length, dtype=torch.long)], 1
        ).gather(1, idx)
        self.eos = torch.cat([self.eos, eos], 1).gather(1, idx)
        all_tokens = torch.cat([self.tokens, tokens], 1)  # (A, K + m, T_cap)
        self.tokens = all_tokens.gather(1, idx[:, :, None].expand(-1, -1, all_tokens.shape[2]))

    def select(self, index: Tensor) -> _Pool:
        """The pools of sentences ``index`` (A',)."""
        out = _Pool.__new__(_Pool)
        for name in ("score", "logprob", "length", "eos", "tokens"):
            setattr(out, name, getattr(self, name).index_select(0, index))
        return out

    def row(self, i: int) -> _Pool:
        """The pool of sentence ``i`` alone (views, no copy)."""
        out = _Pool.__new__(_Pool)
        for name in ("score", "logprob", "length", "eos", "tokens"):
            setattr(out, name, getattr(self, name)[i : i + 1])
        return out


def _hypotheses(pool: _Pool | None, n_best: int) -> list[Hypothesis]:
    """Up to ``n_best`` finite hypotheses of a one-sentence pool, best first."""
    assert pool is not None
    out = []
    rows = zip(
        pool.score[0].tolist(),
        pool.logprob[0].tolist(),
        pool.length[0].tolist(),
        pool.eos[0].tolist(),
        pool.tokens[0].tolist(),
        strict=True,
    )
    for score, logprob, length, eos, toks in list(rows)[:n_best]:
        if math.isfinite(score):
            out.append(Hypothesis(toks[: length - int(eos)], score, logprob, bool(eos)))
    return out


def _attach_weights(
    model: nn.Module,
    memory: Tensor,
    src_mask: Tensor,
    enc_w: list[Tensor] | None,
    hyps: list[list[Hypothesis]],
    bos_id: int,
) -> None:
    """Teacher-forced decode of every kept hypothesis to attach its attention weights."""
    pairs = [(b, h) for b, sent in enumerate(hyps) for h in sent]
    if not pairs:
        return
    inputs, _ = pad_sequences([[bos_id, *h.tokens[: h.length - 1]] for _, h in pairs], PAD_ID)
    inputs = inputs.to(memory.device)  # (N, T_max)
    which = torch.tensor([b for b, _ in pairs], device=memory.device)  # (N,)
    _, w = model.decode(inputs, memory[which], src_mask[which], need_weights=True)
    assert w is not None
    src_lens = src_mask.sum(1).tolist()
    for row, (b, h) in enumerate(pairs):
        h.weights = sentence_weights(enc_w, w["self"], w["cross"], b, row, src_lens[b], h.length)

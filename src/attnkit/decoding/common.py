"""Pieces shared by greedy and beam search: the result type, length penalties, length limits,
search constraints (banned tokens, minimum length, no-repeat-n-gram) and per-sentence attention
weights.

Conventions of both decoders:

* a hypothesis' *length* ``|y|`` counts every scored token, EOS included (a hypothesis cut at the
  maximum length has no EOS and ``|y|`` = the maximum length);
* PAD and BOS are never generated (their log-probability is set to ``-inf`` after the softmax,
  without renormalising, so scores stay the model's log-probabilities);
* ``max_len`` of a sentence = ``floor(max_len_a * src_len + max_len_b)``, at least 1, capped by the
  model's ``config.max_len`` when it has one (the decoder input is BOS plus ``|y| - 1`` tokens);
* ``min_len`` = ``floor(min_len_a * src_len)`` tokens before EOS, capped at ``max_len - 1`` so that
  EOS stays reachable.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from attnkit.config import DecodeConfig

try:
    from attnkit.data.text import BOS_ID, EOS_ID, PAD_ID, UNK_ID
except ImportError:  # pragma: no cover - data package absent
    PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3

__all__ = [
    "PAD_ID",
    "UNK_ID",
    "BOS_ID",
    "EOS_ID",
    "Hypothesis",
    "SentenceWeights",
    "length_penalty",
    "length_limits",
    "apply_constraints",
    "check_inputs",
    "last_log_probs",
    "sentence_weights",
]

logger = logging.getLogger(__name__)

#: Per-sentence attention weights: ``{"encoder": [(H, S, S)], "self": [(H, T, T)],
#: "cross": [(H, T, S)]}`` (one entry per layer; S the real source length, T the output length
#: with EOS). The Bahdanau model has no encoder/self entries and one cross layer with H = 1.
SentenceWeights = dict[str, list[Tensor]]


@dataclass
class Hypothesis:
    """One decoded sentence.

    Attributes:
        tokens: generated ids without BOS and EOS.
        score: the search score: ``logprob / length_penalty(|y|)`` for beam search, ``logprob``
            for greedy decoding.
        logprob: sum of the log-probabilities of the generated tokens (EOS included).
        eos: whether the hypothesis ended with EOS (False: cut at the maximum length).
        weights: per-sentence attention weights (see :data:`SentenceWeights`) or None.
    """

    tokens: list[int]
    score: float
    logprob: float
    eos: bool = True
    weights: SentenceWeights | None = None

    @property
    def length(self) -> int:
        """``|y|``: scored tokens, EOS included (the T of the weight matrices)."""
        return len(self.tokens) + int(self.eos)


def length_penalty(length: int | float | Tensor, alpha: float, kind: str = "gnmt") -> Any:
    """Length-penalty divisor ``lp(|y|)``; a hypothesis scores ``logprob / lp(|y|)``.

    * ``gnmt``: ``((5 + |y|) / 6) ** alpha`` (Wu et al. 2016, eq. 14);
    * ``average``: ``|y| ** alpha`` (alpha = 1 gives the per-token average log-probability);
    * ``none``: 1.

    Args:
        length: ``|y|`` as a number or a tensor of any shape (lengths >= 1).
        alpha: exponent; 0 turns the penalty off.
        kind: ``"gnmt"``, ``"average"`` or ``"none"``.

    Returns:
        A float for a number, else a float tensor of the same shape as ``length``.
    """
    if kind not in ("gnmt", "average", "none"):
        raise ValueError(f"length penalty kind must be 'gnmt', 'average' or 'none', got {kind!r}")
    if isinstance(length, Tensor):
        length = length.to(torch.float32)
        if kind == "none":
            return torch.ones_like(length)
        base = (5.0 + length) / 6.0 if kind == "gnmt" else length
        return base.pow(alpha)
    if kind == "none":
        return 1.0
    base = (5.0 + length) / 6.0 if kind == "gnmt" else float(length)
    return base**alpha


def check_inputs(model: nn.Module, src: Tensor, src_mask: Tensor | None) -> Tensor:
    """Validate decoder inputs and return a (B, S) bool mask (all True when ``src_mask`` is None).

    Also warns when the model is in training mode (dropout would make decoding random).
    """
    if src.dim() != 2 or src.dtype != torch.long:
        raise ValueError(f"src must be (B, S) int64 token ids, got {tuple(src.shape)} {src.dtype}")
    if src.shape[0] == 0 or src.shape[1] == 0:
        raise ValueError(f"src must hold at least one token per sentence, got {tuple(src.shape)}")
    if src_mask is None:
        src_mask = torch.ones_like(src, dtype=torch.bool)
    if src_mask.shape != src.shape or src_mask.dtype != torch.bool:
        raise ValueError(
            f"src_mask must be a bool tensor shaped like src {tuple(src.shape)} "
            f"(True = real token), got {tuple(src_mask.shape)} {src_mask.dtype}"
        )
    if model.training:
        logger.warning("decoding a model in training mode (dropout is active); call model.eval()")
    return src_mask


def length_limits(
    model: nn.Module, src_lens: Tensor, config: DecodeConfig, max_len: int | None = None
) -> tuple[Tensor, Tensor]:
    """Per-sentence output length limits.

    Args:
        model: the seq2seq model (``model.config.max_len``, when present, caps the length).
        src_lens: (B,) real source lengths.
        config: ``max_len_a``, ``max_len_b`` and ``min_len_a``.
        max_len: if given, the maximum for every sentence instead of ``a * src_len + b``.

    Returns:
        ``(max_lens (B,), min_lens (B,))`` int64: at most ``max_lens`` scored tokens (EOS
        included); EOS forbidden while fewer than ``min_lens`` tokens were generated.
    """
    if max_len is not None and max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    lens = src_lens.to(torch.float64)
    if max_len is None:
        max_lens = torch.floor(config.max_len_a * lens + config.max_len_b).long()
    else:
        max_lens = torch.full_like(src_lens, max_len, dtype=torch.long)
    cap = getattr(getattr(model, "config", None), "max_len", None)
    if cap is not None:
        max_lens = max_lens.clamp(max=int(cap))
    max_lens = max_lens.clamp(min=1)
    min_lens = torch.floor(config.min_len_a * lens).long()
    min_lens = torch.minimum(min_lens, max_lens - 1).clamp(min=0)
    return max_lens, min_lens


def last_log_probs(logits: Tensor) -> Tensor:
    """Log-probabilities of the next token from a decoder's logits, computed in place.

    The logits are not needed again, and at a few thousand rows of a vocabulary of thousands a
    fresh (rows, V) tensor is tens of MB that the allocator maps from the OS every step (page
    faults): writing into the logits halved this part of a beam-search step
    (benchmarks/PROFILE.md). Shapes: logits (R, L, V) -> (R, V) float, the last position's.
    """
    last = logits[:, -1].float()  # a view of the logits when they are float32
    return torch.log_softmax(last, dim=-1, out=last)


def apply_constraints(
    logp: Tensor,
    generated: Tensor,
    min_lens: Tensor,
    no_repeat_ngram: int,
    eos_id: int = EOS_ID,
    banned: tuple[int, ...] = (PAD_ID, BOS_ID),
) -> Tensor:
    """Set forbidden next tokens to ``-inf`` (in place) and return ``logp``.

    Forbidden: the ``banned`` ids; EOS while a row has fewer than ``min_lens`` tokens; any token
    that would repeat an n-gram (n = ``no_repeat_ngram``, 0 = off) already in the row.

    Shapes: logp (R, V) log-probabilities; generated (R, t) tokens so far (BOS excluded);
    min_lens (R,).
    """
    ids = [i for i in banned if 0 <= i < logp.shape[1]]
    if ids:
        logp[:, ids] = -math.inf
    step = generated.shape[1]
    logp[:, eos_id].masked_fill_(min_lens > step, -math.inf)
    n = no_repeat_ngram
    if n > 0 and step >= n:
        grams = generated.unfold(1, n, 1)  # (R, t - n + 1, n)
        tail = generated[:, step - n + 1 :]  # (R, n - 1)
        match = (grams[:, :, : n - 1] == tail[:, None, :]).all(dim=-1)  # (R, t - n + 1)
        hits = torch.zeros_like(logp).scatter_add_(1, grams[:, :, -1], match.to(logp.dtype))
        logp.masked_fill_(hits > 0, -math.inf)  # (R, V)
    return logp


def sentence_weights(
    encoder: list[Tensor] | None,
    self_w: list[Tensor],
    cross_w: list[Tensor],
    enc_row: int,
    row: int,
    src_len: int,
    length: int,
) -> SentenceWeights:
    """Cut one sentence's attention weights out of batched ones.

    Args:
        encoder: [(B, H, S, S) per encoder layer] or None (row ``enc_row``).
        self_w: [(R, H, T_max, T_max) per decoder layer] (row ``row``).
        cross_w: [(R, H, T_max, S) per layer] (row ``row``).
        src_len: real source length S'. length: output length T (EOS included).

    Returns:
        ``{"encoder": [(H, S', S')], "self": [(H, T, T)], "cross": [(H, T, S')]}``.
    """
    return {
        "encoder": [w[enc_row, :, :src_len, :src_len] for w in (encoder or [])],
        "self": [w[row, :, :length, :length] for w in self_w],
        "cross": [w[row, :, :length, :src_len] for w in cross_w],
    }

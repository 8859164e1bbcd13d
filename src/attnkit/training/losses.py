"""Token-level cross-entropy for sequence models: padding ignored, label smoothing as in the paper.

The loss is returned as a **sum** together with the number of tokens it sums over. The trainer adds
both up over all micro-batches of an optimizer step (and over all ranks) and divides once, so the
objective is the mean over every real target token of the step, whatever the padding, the batch
split or the number of accumulation steps. The course's masked loss averaged over the valid
tokens is ``mean_token_loss(*masked_cross_entropy(...))``. (Its older ``MaskedSoftmaxCELoss``
instead averages each sequence over its padded length, so padding changes the weighting.)

Label smoothing (Szegedy et al. 2016, used with eps = 0.1 in "Attention Is All You Need") replaces
the one-hot target by ``(1 - eps) * one_hot + eps / V`` over **all** V classes. That is exactly what
``torch.nn.functional.cross_entropy(..., label_smoothing=eps)`` computes, so we call it (one fused
kernel, no (B, L, V) target tensor). Two consequences, both deliberate:

* the target class gets ``1 - eps + eps / V`` and every other class ``eps / V``; fairseq instead
  gives the others ``eps / (V - 1)`` and the target ``1 - eps`` -- the difference is O(eps / V);
* the pad class also receives ``eps / V`` of the mass at real positions. Taking it out would need
  a renormalised custom target; the model learns to give pad a small probability, which never
  matters because decoding never emits pad after BOS. Pad *positions* contribute exactly 0.

With smoothing the value is not the negative log-likelihood, so ``exp(mean)`` overstates the
perplexity; compute validation perplexity with ``label_smoothing=0``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["masked_cross_entropy", "mean_token_loss", "perplexity"]

_REDUCTIONS = ("sum", "mean", "none")


def masked_cross_entropy(
    logits: Tensor,
    targets: Tensor,
    pad_id: int | None = 0,
    label_smoothing: float = 0.0,
    reduction: str = "sum",
) -> tuple[Tensor, int]:
    """Cross-entropy over the non-pad target tokens, and how many there are.

    Args:
        logits: unnormalised scores over the vocabulary. Half-precision inputs are upcast to
            float32 before the softmax.
        targets: gold token ids; positions equal to ``pad_id`` are ignored (loss and gradient 0).
        pad_id: the padding id, or None when every position is a real token.
        label_smoothing: eps in [0, 1); the target distribution is
            ``(1 - eps) * one_hot + eps / V`` (see the module docstring).
        reduction: ``"sum"`` (what the trainer wants), ``"mean"`` (sum / number of tokens, 0 when
            there are none) or ``"none"`` (per-position losses, 0 at pads).

    Returns:
        ``(loss, num_tokens)``: the reduced loss (a scalar tensor, or (B, L) for ``"none"``) and
        the number of non-pad target tokens as a Python int.

    Shapes:
        logits (B, L, V); targets (B, L) integer; loss () or (B, L).
    """
    if logits.dim() != 3:
        raise ValueError(
            f"masked_cross_entropy: logits must be (B, L, V), got shape {tuple(logits.shape)}; "
            "for one label per example add a length-1 axis"
        )
    if targets.shape != logits.shape[:2]:
        raise ValueError(
            f"masked_cross_entropy: targets shape {tuple(targets.shape)} must equal the first two "
            f"dims of logits {tuple(logits.shape)}"
        )
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise ValueError(
            f"masked_cross_entropy: targets must hold integer token ids, got dtype {targets.dtype}"
        )
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(
            f"masked_cross_entropy: label_smoothing must be in [0, 1), got {label_smoothing}"
        )
    if reduction not in _REDUCTIONS:
        raise ValueError(
            f"masked_cross_entropy: reduction must be one of {_REDUCTIONS}, got {reduction!r}"
        )
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    batch, length, vocab = logits.shape
    ignore = -100 if pad_id is None else pad_id
    loss = F.cross_entropy(
        logits.reshape(batch * length, vocab),  # (B*L, V)
        targets.reshape(batch * length).long(),  # (B*L,)
        ignore_index=ignore,
        label_smoothing=label_smoothing,
        reduction="none" if reduction == "none" else "sum",
    )  # () summed, or (B*L,) with exact zeros at ignored positions
    num_tokens = int((targets != ignore).sum())
    if reduction == "none":
        return loss.reshape(batch, length), num_tokens  # (B, L)
    if reduction == "mean":
        return loss / max(num_tokens, 1), num_tokens
    return loss, num_tokens


def mean_token_loss(loss_sum: Tensor | float, num_tokens: int) -> float:
    """The per-token mean ``loss_sum / num_tokens`` as a float for logging (0.0 for no tokens).

    Args:
        loss_sum: a summed loss (a scalar tensor or a number), e.g. added over micro-batches.
        num_tokens: the number of tokens it sums over.

    Returns:
        The mean loss per token.

    Shapes:
        loss_sum () -> float.
    """
    value = float(loss_sum.detach()) if isinstance(loss_sum, Tensor) else float(loss_sum)
    return value / num_tokens if num_tokens > 0 else 0.0


def perplexity(mean_loss: float) -> float:
    """``exp(mean_loss)``, capped to avoid overflow (inf above exp(700)).

    Only meaningful for a loss computed with ``label_smoothing=0``.
    """
    return math.exp(mean_loss) if mean_loss < 700.0 else math.inf

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

:func:`linear_cross_entropy` is the same loss fused with the output projection, for training:
it never materialises the (N, V) logits. The logits of about a thousand tokens at a time are
computed, turned into their loss *and* their gradient at once, and dropped; backward only scales
the stored gradients. On a CPU the (N, V) tensors of the plain path (logits, log-softmax, its
gradient, the smoothing terms) are far larger than the caches and cost about a sixth of a
training step at an 8k vocabulary (benchmarks/PROFILE.md); the matmul FLOPs are the same.
:class:`Seq2SeqObjective` packs a model and this loss into one module, so that DDP and
``torch.compile`` wrap the loss too.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Seq2SeqObjective",
    "linear_cross_entropy",
    "masked_cross_entropy",
    "mean_token_loss",
    "perplexity",
]

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


# -- the output projection fused with the loss ---------------------------------------------------
_CHUNK_ELEMENTS = 2**23  # logits per chunk (32 MiB in float32; 1,024 rows at an 8k vocabulary)


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed label-smoothed cross-entropy of ``hidden @ weight.T``; gradients made in forward.

    Every target is a real token (the caller drops padding). Per chunk of rows, with
    ``p = softmax(logits)`` and ``q = (1 - eps) one_hot + eps / V``: loss ``sum(lse - q . logits)``
    and d loss / d logits ``= p - q``.
    """

    @staticmethod
    def forward(
        ctx: Any,
        hidden: Tensor,
        weight: Tensor,
        targets: Tensor,
        eps: float,
        chunk: int,
        want_grad: bool,
    ) -> Tensor:
        n, vocab = hidden.shape[0], weight.shape[0]
        acc = torch.promote_types(hidden.dtype, torch.float32)  # softmax and sums: >= float32
        need_h, need_w = (want_grad and ctx.needs_input_grad[i] for i in (0, 1))
        grad_hidden = torch.empty_like(hidden) if need_h else None
        grad_weight = torch.zeros_like(weight, dtype=acc) if need_w else None
        total = torch.zeros((), dtype=acc, device=hidden.device)
        weight_h = weight.to(hidden.dtype)  # (V, D), cast once for every chunk's grad @ W
        for start in range(0, n, chunk):
            h = hidden[start : start + chunk]  # (c, D)
            t = targets[start : start + chunk]  # (c,)
            logits = (h @ weight.t()).to(acc)  # (c, V)
            gold = logits.gather(1, t[:, None]).squeeze(1)  # (c,)
            loss = -(1.0 - eps) * gold
            if eps > 0:
                loss = loss - eps * logits.mean(dim=-1)
            top = logits.amax(dim=-1, keepdim=True)  # (c, 1)
            grad = logits.sub_(top).exp_()  # (c, V) exp(logits - max), in place: one exp pass
            norm = grad.sum(dim=-1, keepdim=True)  # (c, 1)
            total += (loss + (top + norm.log()).squeeze(1)).sum()  # + logsumexp
            if grad_hidden is None and grad_weight is None:
                continue
            grad.div_(norm)  # (c, V) softmax
            if eps > 0:
                grad.sub_(eps / vocab)
            grad[torch.arange(t.shape[0], device=t.device), t] -= 1.0 - eps
            grad = grad.to(hidden.dtype)
            if grad_hidden is not None:
                torch.mm(grad, weight_h, out=grad_hidden[start : start + chunk])
            if grad_weight is not None:
                grad_weight.addmm_(grad.t().to(acc), h.to(acc))  # (V, D)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        grad_hidden, grad_weight = ctx.saved_tensors
        dh = grad_hidden * grad_out.to(grad_hidden.dtype) if grad_hidden is not None else None
        dw = (grad_weight * grad_out).to(ctx.weight_dtype) if grad_weight is not None else None
        return dh, dw, None, None, None, None


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    pad_id: int | None = 0,
    label_smoothing: float = 0.0,
    chunk_size: int | None = None,
) -> tuple[Tensor, int]:
    """``masked_cross_entropy(hidden @ weight.T, targets, ...)`` summed, without the logits.

    Equal to the plain path (up to float rounding) in value and gradients, for training with a
    large vocabulary: the (N, V) logits are computed ``chunk_size`` rows at a time and their
    gradient is formed in the forward pass, so the step never holds an (N, V) tensor. Use
    :func:`masked_cross_entropy` when the logits themselves are needed.

    Args:
        hidden: final decoder states (the input of the output projection).
        weight: the output projection (no bias), e.g. ``Transformer.output_weight``.
        targets: gold ids; positions equal to ``pad_id`` contribute nothing.
        pad_id: the padding id, or None when every position is a real token.
        label_smoothing: eps in [0, 1), as in :func:`masked_cross_entropy`.
        chunk_size: rows per chunk (default: about 8M logits per chunk, see PROFILE.md).

    Returns:
        ``(loss_sum, num_tokens)``: a scalar tensor and the number of non-pad targets.

    Shapes:
        hidden (B, L, D) or (N, D); weight (V, D); targets (B, L) or (N,) integer.
    """
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(
            f"linear_cross_entropy: targets shape {tuple(targets.shape)} must equal hidden's "
            f"leading dims {tuple(hidden.shape[:-1])}"
        )
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"linear_cross_entropy: weight must be (V, {hidden.shape[-1]}), got "
            f"{tuple(weight.shape)}"
        )
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise ValueError(
            f"linear_cross_entropy: targets must hold integer token ids, got {targets.dtype}"
        )
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(
            f"linear_cross_entropy: label_smoothing must be in [0, 1), got {label_smoothing}"
        )
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"linear_cross_entropy: chunk_size must be >= 1, got {chunk_size}")
    hidden = hidden.reshape(-1, hidden.shape[-1])  # (N, D)
    targets = targets.reshape(-1).long()  # (N,)
    if pad_id is not None:
        real = targets != pad_id
        hidden, targets = hidden[real], targets[real]  # (N', D), (N',)
    chunk = chunk_size or max(64, _CHUNK_ELEMENTS // weight.shape[0])
    if torch.is_autocast_enabled(hidden.device.type):
        dtype = torch.get_autocast_dtype(hidden.device.type)
        hidden, weight = hidden.to(dtype), weight.to(dtype)
    want_grad = torch.is_grad_enabled()  # no gradient work under no_grad / inference_mode
    with torch.autocast(hidden.device.type, enabled=False):
        loss = _LinearCrossEntropy.apply(
            hidden, weight, targets, float(label_smoothing), chunk, want_grad
        )
    return loss, int(targets.shape[0])


class Seq2SeqObjective(nn.Module):
    """A sequence-to-sequence model and its training loss as one module.

    ``forward`` returns the summed token loss, so DistributedDataParallel and ``torch.compile``
    (which wrap what the trainer differentiates) see the whole objective. Models that expose
    ``features()`` and ``output_weight`` (the Transformer) get :func:`linear_cross_entropy`;
    others go through their logits and :func:`masked_cross_entropy`.

    Args:
        model: the seq2seq model (kept as ``self.model``; its state dict is unchanged).
        pad_id: padding id of the targets.
        label_smoothing: eps for the loss.
    """

    def __init__(self, model: nn.Module, pad_id: int = 0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.model, self.pad_id, self.label_smoothing = model, pad_id, label_smoothing
        self.fused = hasattr(model, "features") and hasattr(model, "output_weight")

    def forward(
        self, src: Tensor, tgt_in: Tensor, src_mask: Tensor | None, tgt_out: Tensor
    ) -> tuple[Tensor, int]:
        """Shapes: src (B, S), tgt_in (B, L), src_mask (B, S), tgt_out (B, L) -> ((), int)."""
        if self.fused:
            hidden = self.model.features(src, tgt_in, src_mask)  # (B, L, D)
            return linear_cross_entropy(
                hidden, self.model.output_weight, tgt_out, self.pad_id, self.label_smoothing
            )
        return masked_cross_entropy(
            self.model(src, tgt_in, src_mask), tgt_out, self.pad_id, self.label_smoothing
        )

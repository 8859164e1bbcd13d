"""Masked softmax and scaled dot-product attention (fused SDPA path and plain-math path).

Both paths compute ``softmax(Q K^T * scale + bias, masked) V`` and must agree (tested). The fused
path calls :func:`torch.nn.functional.scaled_dot_product_attention` and never materialises the
(L, S) weight matrix; the math path does. The math path runs when the weights are requested, and
(``kernel="auto"``, the default) on the CPU when there are no more keys than features per head
(S <= Dk) and more than one query: there PyTorch's CPU flash kernel spends most of its time on
per-(batch, head) overhead, and the math path is 1.2-5x faster forward + backward (measured,
benchmarks/PROFILE.md) while the one (L, S) tensor it keeps is no larger than the queries.
Longer keys, single-query decoding steps and every CUDA call take SDPA's fused kernels.

Where attnkit deliberately differs from the course's code: a query row whose keys are *all* masked
gets zero weights (and a zero output), not the uniform weights the course's ``-1e6`` fill gives,
and not the NaN that PyTorch's SDPA returns.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.attention.masks import padding_mask

__all__ = ["KERNELS", "masked_softmax", "attention", "broadcast_valid_lens", "uses_math_path"]

KERNELS = ("auto", "sdpa", "math")


def broadcast_valid_lens(valid_lens: Tensor, scores_shape: torch.Size) -> Tensor:
    """Turn the course's ``valid_lens`` into a bool mask broadcastable to ``scores_shape``.

    Args:
        valid_lens: (B,) one length per batch row, or (B, Q) one per query row.
        scores_shape: shape of the scores, (B, ..., Q, K); any middle axes (e.g. heads) broadcast.

    Returns:
        bool mask of shape (B, 1.., 1, K) or (B, 1.., Q, K), True = real key.
    """
    batch, num_keys = scores_shape[0], scores_shape[-1]
    if valid_lens.shape[0] != batch:
        raise ValueError(
            f"valid_lens has batch size {valid_lens.shape[0]} but scores {tuple(scores_shape)} "
            f"have batch size {batch}"
        )
    if valid_lens.dim() == 2 and valid_lens.shape[1] != scores_shape[-2]:
        raise ValueError(
            f"valid_lens of shape {tuple(valid_lens.shape)} must be (B,) or (B, Q) with "
            f"Q={scores_shape[-2]} for scores {tuple(scores_shape)}"
        )
    mask = padding_mask(valid_lens, num_keys)  # (B, K) or (B, Q, K)
    if valid_lens.dim() == 1:
        mask = mask.unsqueeze(-2)  # (B, 1, K)
    middle = len(scores_shape) - 3
    return mask.reshape(batch, *([1] * middle), *mask.shape[1:])  # (B, 1.., Q|1, K)


def _combine(
    mask: Tensor | None, valid_lens: Tensor | None, shape: torch.Size, device: torch.device
) -> Tensor | None:
    """AND together an explicit bool mask and a valid_lens mask (built on ``device``, the data's
    device); either may be None."""
    if mask is not None and mask.dtype != torch.bool:
        raise ValueError(
            f"mask must be a bool tensor (True = may attend), got dtype {mask.dtype}; "
            "to add a float bias use attn_bias"
        )
    if valid_lens is not None:
        lens_mask = broadcast_valid_lens(valid_lens.to(device=device), shape)
        mask = lens_mask if mask is None else mask & lens_mask
    return mask


def masked_softmax(
    scores: Tensor, valid_lens: Tensor | None = None, mask: Tensor | None = None
) -> Tensor:
    """Softmax over the last axis, giving exactly zero weight to masked positions.

    Args:
        scores: (B, ..., Q, K) attention scores.
        valid_lens: (B,) or (B, Q) number of real keys; keys at positions >= the length are masked
            (the course's convention).
        mask: bool tensor broadcastable to ``scores``, True = may attend.

    Returns:
        (B, ..., Q, K) weights; each row sums to 1 over unmasked keys, masked keys get exactly 0,
        and a row with no unmasked key is all zeros (not NaN, not uniform).
    """
    mask = _combine(mask, valid_lens, scores.shape, scores.device)
    if mask is None:
        return _softmax(scores)
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = _softmax(filled)  # masked keys: exp(min - max) == 0 exactly
    # Rows without any key would come out uniform: multiply by the mask to zero them. On the CPU,
    # skip that (an op, and one more saved (Q, K) tensor) when every row has a key; on a GPU the
    # check would synchronise, and under torch.compile it would break the graph.
    if _can_check_cheaply(mask) and bool(mask.any(dim=-1).all()):
        return weights
    return weights * mask  # zero for masked keys and empty rows


def _softmax(scores: Tensor) -> Tensor:
    """Softmax over the last axis.

    PyTorch's CPU softmax is 5-15x slower when that axis is shorter than 16 (73K rows of 11
    keys: 7.1 ms against 1.2 ms composed of amax, exp and sum; benchmarks/PROFILE.md), the
    encoder self-attention of short sentences. There, in float32/float64 inference (no
    gradient to record, not compiling), the composed form runs, in place on one fresh tensor.
    """
    if (
        scores.is_cpu
        and scores.shape[-1] < 16
        and scores.dtype in (torch.float32, torch.float64)
        and not (torch.is_grad_enabled() and scores.requires_grad)
        and not torch.compiler.is_compiling()
    ):
        weights = torch.sub(scores, scores.amax(dim=-1, keepdim=True)).exp_()  # (..., K)
        return weights.div_(weights.sum(dim=-1, keepdim=True))
    return torch.softmax(scores, dim=-1)


def _can_check_cheaply(mask: Tensor) -> bool:
    """Whether a data-dependent check of ``mask`` is cheap: eagerly on the CPU. On a GPU it
    would synchronise, and under torch.compile it would break the graph."""
    return mask.device.type == "cpu" and not torch.compiler.is_compiling()


def _slow_low_precision_backward(queries: Tensor, keys: Tensor, values: Tensor) -> bool:
    """True when the fused kernel would run a bfloat16/float16 backward on the CPU.

    PyTorch's CPU flash-attention backward is several times slower in bfloat16 than in float32
    (4.25 ms against 0.57 ms for the LM benchmark's (12, 4, 64, 32) heads, benchmarks/PROFILE.md),
    so under CPU autocast the fused path computes in float32 when gradients will flow; the
    forward-only (inference) call stays in the low precision, where its kernel is as fast.
    """
    return (
        queries.device.type == "cpu"
        and queries.dtype in (torch.bfloat16, torch.float16)
        and torch.is_grad_enabled()
        and (queries.requires_grad or keys.requires_grad or values.requires_grad)
    )


def uses_math_path(
    queries: Tensor, keys: Tensor, need_weights: bool = False, kernel: str = "auto"
) -> bool:
    """Whether :func:`attention` takes the math path for these inputs (else SDPA).

    Args:
        queries: (B, ..., L, Dk). keys: (B, ..., S, Dk).
        need_weights: the weights are wanted (only the math path has them).
        kernel: ``auto`` (math on the CPU when S <= Dk and L > 1, else SDPA), ``sdpa`` or
            ``math``.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if need_weights:
        if kernel == "sdpa":
            raise ValueError("need_weights=True needs the math path; use kernel='auto' or 'math'")
        return True
    if kernel != "auto":
        return kernel == "math"
    # One query per problem (cached decoding) leaves the flash kernel little overhead to lose:
    # measured a wash (0.9-1.15x), so those steps stay on SDPA.
    return queries.is_cpu and queries.shape[-2] > 1 and keys.shape[-2] <= queries.shape[-1]


def attention(
    queries: Tensor,
    keys: Tensor,
    values: Tensor,
    mask: Tensor | None = None,
    valid_lens: Tensor | None = None,
    attn_bias: Tensor | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
    need_weights: bool = False,
    kernel: str = "auto",
) -> tuple[Tensor, Tensor | None]:
    """Scaled dot-product attention with one mask convention and safe empty rows.

    Args:
        queries: (B, ..., L, Dk).
        keys: (B, ..., S, Dk).
        values: (B, ..., S, Dv).
        mask: bool, broadcastable to (B, ..., L, S); True = may attend.
        valid_lens: (B,) or (B, L) key lengths (combined with ``mask``).
        attn_bias: float additive bias broadcastable to (B, ..., L, S) (e.g. ALiBi).
        is_causal: add a bottom-right-aligned future mask.
        dropout_p: dropout on the weights (pass 0.0 in eval mode).
        scale: score scale, default ``1 / sqrt(Dk)``.
        need_weights: compute and return the (B, ..., L, S) weights (math path).
        kernel: which path computes the output when the weights are not needed: ``auto``
            (default: the math path on the CPU for S <= Dk and L > 1, the fused SDPA kernel
            otherwise), ``sdpa`` or ``math`` (see :func:`uses_math_path`).

    Returns:
        ``(output (B, ..., L, Dv), weights (B, ..., L, S) or None)``. Returned weights are taken
        before dropout.
    """
    if queries.shape[-1] != keys.shape[-1]:
        raise ValueError(
            f"queries and keys need the same feature size, got {tuple(queries.shape)} and "
            f"{tuple(keys.shape)}"
        )
    if keys.shape[-2] != values.shape[-2]:
        raise ValueError(
            f"keys and values need the same length, got {tuple(keys.shape)} and "
            f"{tuple(values.shape)}"
        )
    math_path = uses_math_path(queries, keys, need_weights, kernel)
    query_len, key_len = queries.shape[-2], keys.shape[-2]
    scale = 1.0 / math.sqrt(queries.shape[-1]) if scale is None else scale
    if mask is not None or valid_lens is not None:
        scores_shape = torch.Size((*queries.shape[:-1], key_len))
        mask = _combine(mask, valid_lens, scores_shape, queries.device)
    if is_causal and (
        mask is not None or math_path or query_len != key_len or attn_bias is not None
    ):
        future = torch.ones(query_len, key_len, dtype=torch.bool, device=queries.device)
        future = future.tril(diagonal=key_len - query_len)  # (L, S)
        mask = future if mask is None else mask & future
        is_causal = False

    if math_path:
        scores = torch.matmul(queries, keys.transpose(-2, -1)) * scale  # (B, .., L, S)
        if attn_bias is not None:
            scores = scores + attn_bias
        weights = masked_softmax(scores, mask=mask)
        dropped = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
        out = torch.matmul(dropped, values)  # (B, .., L, Dv)
        return out, (weights if need_weights else None)

    row_has_key = None
    sdpa_mask: Tensor | None = mask
    if mask is not None:
        # SDPA returns NaN for a fully masked row; open such rows, then zero their output.
        row_has_key = mask.any(dim=-1, keepdim=True)  # (B, .., L|1, 1)
        if _can_check_cheaply(mask) and bool(row_has_key.all()):
            row_has_key = None  # nothing to open or zero (~0.1 ms a call at decoding shapes)
        else:
            sdpa_mask = mask | ~row_has_key
    if attn_bias is not None:
        bias = attn_bias.to(queries.dtype)
        if sdpa_mask is not None:
            bias = bias.masked_fill(~sdpa_mask, float("-inf"))
        sdpa_mask = bias
    dtype, upcast = queries.dtype, _slow_low_precision_backward(queries, keys, values)
    if upcast:  # (autocast off around the call, or it would cast the inputs back)
        queries, keys, values = queries.float(), keys.float(), values.float()
        if sdpa_mask is not None and sdpa_mask.is_floating_point():
            sdpa_mask = sdpa_mask.float()
    with torch.autocast("cpu", enabled=False) if upcast else contextlib.nullcontext():
        out = F.scaled_dot_product_attention(
            queries,
            keys,
            values,
            attn_mask=sdpa_mask,
            dropout_p=dropout_p,
            is_causal=is_causal,
            scale=scale,
        ).to(dtype)  # (B, .., L, Dv)
    if row_has_key is not None:
        out = out * row_has_key.to(out.dtype)
    return out, None

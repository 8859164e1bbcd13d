"""Attention masks: one boolean convention for the whole package.

Convention: a mask is a ``torch.bool`` tensor where **True means "may attend" / "real token"** and
False means "masked out". This is what :func:`torch.nn.functional.scaled_dot_product_attention`
expects. PyTorch's ``nn.MultiheadAttention`` uses the opposite convention for its
``key_padding_mask`` (True = padding); :func:`from_key_padding_mask` and
:func:`to_key_padding_mask` convert at that boundary and nowhere else.

Shapes: B batch, L query length, S key length. A mask passed to attention must broadcast to
``(B, H, L, S)``; the helpers here return the smallest shape that does:

* :func:`padding_mask` -> ``(B, S)`` (valid_lens (B,)) or ``(B, L, S)`` (valid_lens (B, L)),
* :func:`causal_mask` -> ``(L, S)``,
* :func:`attention_mask` combines them into ``(B, 1, L, S)`` (or ``(B, 1, 1, S)``).

Causal masks are aligned bottom-right: query ``i`` of ``L`` sees keys ``0 .. S - L + i``. With
``L == S`` this is the usual lower triangle; with a KV cache (``S`` keys already seen, ``L`` new
queries) it lets the new queries see the whole past.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "padding_mask",
    "causal_mask",
    "attention_mask",
    "from_key_padding_mask",
    "to_key_padding_mask",
    "check_valid_lens",
]


def check_valid_lens(valid_lens: Tensor, max_len: int, name: str = "valid_lens") -> Tensor:
    """Validate valid lengths and return them as a long tensor.

    Args:
        valid_lens: number of real positions per row, shape (B,) or (B, L).
        max_len: the length of the axis being masked (S).
        name: argument name used in error messages.

    Raises:
        ValueError: if a length is negative or above ``max_len``, or the dtype is not integral.
    """
    if not isinstance(valid_lens, Tensor):
        valid_lens = torch.as_tensor(valid_lens)
    if valid_lens.is_floating_point() or valid_lens.dtype == torch.bool:
        if valid_lens.is_floating_point() and torch.equal(valid_lens, valid_lens.round()):
            valid_lens = valid_lens.long()
        else:
            raise ValueError(f"{name} must hold integer lengths, got dtype {valid_lens.dtype}")
    if valid_lens.dim() not in (1, 2):
        raise ValueError(f"{name} must have shape (B,) or (B, L), got {tuple(valid_lens.shape)}")
    if valid_lens.numel() and (int(valid_lens.min()) < 0 or int(valid_lens.max()) > max_len):
        raise ValueError(
            f"{name} must lie in [0, {max_len}] (the key length), got values in "
            f"[{int(valid_lens.min())}, {int(valid_lens.max())}]"
        )
    return valid_lens.long()


def padding_mask(valid_lens: Tensor, max_len: int) -> Tensor:
    """Boolean mask of real (non-padded) positions.

    Args:
        valid_lens: lengths, shape (B,) or (B, L) (per query row, as in the course's
            ``masked_softmax``).
        max_len: length S of the padded axis.

    Returns:
        ``(B, S)`` or ``(B, L, S)`` bool tensor, True where ``position < valid_len``.
    """
    valid_lens = check_valid_lens(valid_lens, max_len)
    positions = torch.arange(max_len, device=valid_lens.device)  # (S,)
    return positions < valid_lens.unsqueeze(-1)  # (B, S) or (B, L, S)


def causal_mask(
    query_len: int, key_len: int | None = None, device: torch.device | str | None = None
) -> Tensor:
    """Future mask aligned bottom-right.

    Args:
        query_len: L, number of queries.
        key_len: S, number of keys (defaults to L). Must be >= L.
        device: device of the returned tensor.

    Returns:
        ``(L, S)`` bool tensor, True where query ``i`` may see key ``j``, i.e. ``j <= S - L + i``.
    """
    key_len = query_len if key_len is None else key_len
    if query_len < 0 or key_len < query_len:
        raise ValueError(
            f"causal_mask needs 0 <= query_len <= key_len, got query_len={query_len}, "
            f"key_len={key_len}"
        )
    return torch.ones(query_len, key_len, dtype=torch.bool, device=device).tril(
        diagonal=key_len - query_len
    )


def attention_mask(
    key_valid_lens: Tensor | None = None,
    key_mask: Tensor | None = None,
    query_len: int | None = None,
    key_len: int | None = None,
    causal: bool = False,
    device: torch.device | str | None = None,
) -> Tensor | None:
    """Combine padding and causal masks into one mask that broadcasts to (B, H, L, S).

    Args:
        key_valid_lens: (B,) lengths of the keys (padding), or None.
        key_mask: (B, S) bool, True = real key, or None (alternative to ``key_valid_lens``).
        query_len: L (needed when ``causal``).
        key_len: S (needed with ``key_valid_lens``; defaults to ``key_mask.shape[-1]``).
        causal: add the bottom-right-aligned future mask.
        device: device for the causal part when no padding input gives one.

    Returns:
        ``(B, 1, L or 1, S)`` or ``(L, S)`` bool tensor, or None when nothing is masked.
    """
    mask = None
    if key_valid_lens is not None:
        if key_len is None:
            raise ValueError("attention_mask: key_len is required with key_valid_lens")
        key_mask = padding_mask(key_valid_lens, key_len)
    if key_mask is not None:
        mask = key_mask[:, None, None, :]  # (B, 1, 1, S)
        key_len = key_mask.shape[-1]
        device = key_mask.device
    if causal:
        if query_len is None:
            raise ValueError("attention_mask: query_len is required when causal=True")
        future = causal_mask(query_len, key_len or query_len, device=device)  # (L, S)
        mask = future if mask is None else mask & future  # (B, 1, L, S)
    return mask


def from_key_padding_mask(key_padding_mask: Tensor) -> Tensor:
    """Convert PyTorch's ``key_padding_mask`` (True = padding) to attnkit's (True = real key).

    Shapes: (B, S) -> (B, S).
    """
    if key_padding_mask.dtype != torch.bool:
        raise ValueError(
            f"key_padding_mask must be bool (True = padding), got {key_padding_mask.dtype}"
        )
    return ~key_padding_mask


def to_key_padding_mask(mask: Tensor) -> Tensor:
    """Convert attnkit's key mask (True = real key) to PyTorch's ``key_padding_mask`` (True = pad).

    Shapes: (B, S) -> (B, S).
    """
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool (True = real key), got {mask.dtype}")
    return ~mask

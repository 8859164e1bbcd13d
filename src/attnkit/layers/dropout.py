"""Dropout (Srivastava et al. 2014) with a faster mask on the CPU; ``nn.Dropout`` elsewhere.

On the CPU, PyTorch draws dropout masks with ``bernoulli_``, one random number per element,
which takes about 8x the time of the multiplication it feeds (benchmarks/PROFILE.md: 7% of a
Transformer training step). Here one 64-bit draw gives four 16-bit uniforms: an element is
kept when its 16-bit number is at least ``round(p * 2**16)``, so the drop probability is ``p``
rounded to a multiple of 2^-16 (0.1 becomes 0.100006), and kept elements are scaled by the
inverse of the exact keep probability, so ``E[dropout(x)] = x`` holds exactly. On CUDA (fused
Philox kernels) and for non-float tensors, :func:`torch.nn.functional.dropout` is used as is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Dropout", "dropout"]

_LEVELS = 2**16  # a 16-bit uniform per element


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by 1 / (1 - p).

    Args:
        x: any float tensor.
        p: drop probability in [0, 1] (on the CPU rounded to a multiple of 2^-16).
        training: identity when False.

    Returns:
        A tensor shaped like ``x``.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not x.is_floating_point() or p == 1.0:
        return F.dropout(x, p, training=True)
    cut = round(p * _LEVELS)  # drop where the uniform draw in [0, 2^16) is below cut
    if cut == 0:
        return x
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)  # 64 bits each
    draws = words.view(torch.int16)[:n].view(x.shape)  # uniform in [-2^15, 2^15)
    keep = draws >= cut - _LEVELS // 2
    return x * keep * (_LEVELS / (_LEVELS - cut))


class Dropout(nn.Module):
    """Drop-in for ``nn.Dropout`` using :func:`dropout`. Shapes: any -> same."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"

"""Positional information: sinusoidal and learned tables (1-D and 2-D), rotary, ALiBi.

Every table here is indexed by absolute position; a module's ``forward(x, offset=0)`` treats
``x[:, t]`` as position ``offset + t`` (``offset`` > 0 when decoding with a cache). Tables are built
in float64 and cast, so large positions keep their precision.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.layers.dropout import Dropout

__all__ = [
    "sinusoidal_table",
    "SinusoidalPositionalEncoding",
    "LearnedPositionalEmbedding",
    "sincos_2d_table",
    "LearnedPositionalEmbedding2D",
    "resize_grid",
    "resize_1d",
    "rotate_half",
    "RotaryEmbedding",
    "alibi_slopes",
    "alibi_bias",
]

logger = logging.getLogger(__name__)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def sinusoidal_table(
    max_len: int, d_model: int, base: float = 10000.0, dtype: torch.dtype = torch.float32
) -> Tensor:
    """The Transformer paper's sinusoidal table.

    ``P[p, 2i] = sin(p / base**(2i / D))`` and ``P[p, 2i + 1] = cos(p / base**(2i / D))``. An odd
    ``d_model`` works: the last column is a sine with no cosine partner.

    Args:
        max_len: number of positions (rows).
        d_model: encoding size D (columns).
        base: wavelength base (10000 in the paper).
        dtype: dtype of the result; the table is computed in float64 first.

    Returns:
        the table. Shapes: (max_len, D).
    """
    _check_positive(max_len=max_len, d_model=d_model)
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]  # (max_len, 1)
    inv_freq = base ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (ceil(D/2),)
    angles = pos * inv_freq  # (max_len, ceil(D/2))
    table = torch.empty(max_len, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles[:, : d_model // 2])
    return table.to(dtype)


def _check_positions(x: Tensor, offset: int, max_len: int, d_model: int, who: str) -> None:
    if x.dim() != 3 or x.shape[-1] != d_model:
        raise ValueError(f"{who}: x must be (B, L, {d_model}), got {tuple(x.shape)}")
    if not isinstance(offset, int) or offset < 0:
        raise ValueError(f"{who}: offset must be an int >= 0, got {offset!r}")
    if offset + x.shape[1] > max_len:
        raise ValueError(
            f"{who}: positions up to offset + L = {offset} + {x.shape[1]} = {offset + x.shape[1]} "
            f"requested but max_len = {max_len}; build the model with a larger max_len"
        )


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal table to its input, then applies dropout (as the course does).

    The table is a non-persistent buffer: it moves with ``.to()`` but is not saved in checkpoints.
    No ``sqrt(d_model)`` scaling happens here; that belongs to the token embedding.
    """

    def __init__(self, d_model: int, dropout: float = 0.0, max_len: int = 1000) -> None:
        super().__init__()
        _check_positive(d_model=d_model, max_len=max_len)
        self.d_model, self.max_len = d_model, max_len
        self.dropout = Dropout(dropout)
        self.register_buffer("pe", sinusoidal_table(max_len, d_model), persistent=False)

    @property
    def table(self) -> Tensor:
        """The (max_len, D) table, detached, for plotting."""
        return self.pe.detach()

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """Args:
            x: embeddings; ``x[:, t]`` is at position ``offset + t``.
            offset: position of the first element (cached decoding).

        Returns:
            ``dropout(x + P[offset:offset + L])``, same dtype as ``x``.
            Shapes: x (B, L, D) -> (B, L, D).
        """
        _check_positions(x, offset, self.max_len, self.d_model, type(self).__name__)
        pe = self.pe[offset : offset + x.shape[1]].to(x.dtype)  # (L, D)
        return self.dropout(x + pe)


class LearnedPositionalEmbedding(nn.Module):
    """A learned (max_len, D) table added to the input, then dropout (BERT / GPT-2 style).

    ``weight`` is initialised from N(0, 0.02^2) as in GPT-2 and BERT.
    """

    def __init__(self, max_len: int, d_model: int, dropout: float = 0.0) -> None:
        super().__init__()
        _check_positive(max_len=max_len, d_model=d_model)
        self.max_len, self.d_model = max_len, d_model
        self.weight = nn.Parameter(torch.randn(max_len, d_model) * 0.02)
        self.dropout = Dropout(dropout)

    @property
    def table(self) -> Tensor:
        """The (max_len, D) table, detached, for plotting."""
        return self.weight.detach()

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """Args:
            x: embeddings; ``x[:, t]`` is at position ``offset + t``.
            offset: position of the first element (cached decoding).

        Returns:
            ``dropout(x + weight[offset:offset + L])``. Shapes: x (B, L, D) -> (B, L, D).
        """
        _check_positions(x, offset, self.max_len, self.d_model, type(self).__name__)
        return self.dropout(x + self.weight[offset : offset + x.shape[1]].to(x.dtype))


def sincos_2d_table(
    grid_h: int, grid_w: int, dim: int, base: float = 10000.0, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Fixed 2-D sine-cosine table for a grid of image patches (MAE's layout).

    Patch ``n = row * grid_w + col`` (row-major, the order ``flatten(2)`` gives patches). With
    ``Q = dim // 4`` and ``w_k = base**(-k / Q)`` for k = 0..Q-1, the channels are::

        [0,   Q)   sin(col * w_k)      [2Q, 3Q)  sin(row * w_k)
        [Q,  2Q)   cos(col * w_k)      [3Q, 4Q)  cos(row * w_k)

    i.e. the first half depends only on the column (x), the second half only on the row (y), as
    in MAE's ``get_2d_sincos_pos_embed`` (its class-token row of zeros is the caller's business).

    Args:
        grid_h: patches per column (rows of the grid).
        grid_w: patches per row (columns of the grid).
        dim: channels; must be divisible by 4.
        base: wavelength base.
        dtype: dtype of the result; computed in float64 first.

    Returns:
        the table. Shapes: (grid_h * grid_w, dim).
    """
    _check_positive(grid_h=grid_h, grid_w=grid_w, dim=dim)
    if dim % 4:
        raise ValueError(f"sincos_2d_table: dim must be divisible by 4, got {dim}")
    quarter = dim // 4
    omega = base ** (-torch.arange(quarter, dtype=torch.float64) / quarter)  # (Q,)
    rows, cols = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float64),
        torch.arange(grid_w, dtype=torch.float64),
        indexing="ij",
    )  # (h, w) each
    col_angles = cols.reshape(-1, 1) * omega  # (N, Q)
    row_angles = rows.reshape(-1, 1) * omega  # (N, Q)
    parts = [col_angles.sin(), col_angles.cos(), row_angles.sin(), row_angles.cos()]
    return torch.cat(parts, dim=1).to(dtype)  # (N, dim)


class LearnedPositionalEmbedding2D(nn.Module):
    """A learned (grid_h, grid_w, dim) table for patches, read out flat in row-major order.

    ``weight`` is initialised from N(0, 0.02^2) (as ViT implementations do).
    """

    def __init__(self, grid_h: int, grid_w: int, dim: int) -> None:
        super().__init__()
        _check_positive(grid_h=grid_h, grid_w=grid_w, dim=dim)
        self.grid_h, self.grid_w, self.dim = grid_h, grid_w, dim
        self.weight = nn.Parameter(torch.randn(grid_h, grid_w, dim) * 0.02)

    def flat(self) -> Tensor:
        """Returns the table with patch ``row * grid_w + col`` in row ``n``. Shapes: (N, dim)."""
        return self.weight.reshape(self.grid_h * self.grid_w, self.dim)  # (N, dim)

    def forward(self) -> Tensor:
        """Same as :meth:`flat`. Shapes: () -> (grid_h * grid_w, dim)."""
        return self.flat()


def _resize_last(x: Tensor, size: int, antialias: bool) -> Tensor:
    """Bicubic resize along the last axis of (M, n) -> (M, size).

    Done as a (1, M, 1, n) image resized in width only: PyTorch's antialiased bicubic returns
    wrong values when the output *width* is 1, so the resized axis is always the width.
    """
    image = x[None, :, None, :]  # (1, M, 1, n)
    out = F.interpolate(
        image, size=(1, size), mode="bicubic", align_corners=False, antialias=antialias
    )  # (1, M, 1, size)
    return out[0, :, 0, :]  # (M, size)


def resize_grid(
    table: Tensor, old: tuple[int, int], new: tuple[int, int], antialias: bool = True
) -> Tensor:
    """Resample a 2-D positional table to another patch grid (fine-tuning at a new resolution).

    Bicubic, ``align_corners=False``, antialiased when shrinking (timm's ``resample_abs_pos_embed``
    defaults), applied separably: columns first, then rows. Equal sizes return a copy unchanged.
    A class-token row must be split off by the caller first.

    Args:
        table: the table, flat in row-major order or as a grid.
        old: (h, w) of ``table``.
        new: (h2, w2) wanted.
        antialias: low-pass filter when shrinking.

    Returns:
        the resampled table, flat row-major, same dtype.
        Shapes: (h*w, D) or (h, w, D) -> (h2*w2, D).
    """
    (h, w), (h2, w2) = old, new
    _check_positive(old_h=h, old_w=w, new_h=h2, new_w=w2)
    if table.dim() not in (2, 3) or table.shape[:-1] not in ((h * w,), (h, w)):
        raise ValueError(
            f"resize_grid: table must be ({h * w}, D) or ({h}, {w}, D) for old={old}, "
            f"got {tuple(table.shape)}"
        )
    dim = table.shape[-1]
    if (h, w) == (h2, w2):
        return table.reshape(h * w, dim).clone()  # (N, D)
    work = table.to(torch.promote_types(table.dtype, torch.float32))
    grid = work.reshape(h, w, dim).permute(2, 0, 1)  # (D, h, w)
    grid = _resize_last(grid.reshape(dim * h, w), w2, antialias).reshape(dim, h, w2)  # (D, h, w2)
    grid = grid.transpose(1, 2).reshape(dim * w2, h)  # (D * w2, h)
    grid = _resize_last(grid, h2, antialias).reshape(dim, w2, h2)  # (D, w2, h2)
    return grid.permute(2, 1, 0).reshape(h2 * w2, dim).to(table.dtype)  # (N2, D)


def resize_1d(table: Tensor, new_n: int, antialias: bool = True) -> Tensor:
    """Resample a learned 1-D positional table to ``new_n`` positions (bicubic, as resize_grid).

    Args:
        table: the table.
        new_n: number of positions wanted.
        antialias: low-pass filter when shrinking.

    Returns:
        the resampled table, same dtype. Shapes: (N, D) -> (new_n, D).
    """
    _check_positive(new_n=new_n)
    if table.dim() != 2:
        raise ValueError(f"resize_1d: table must be (N, D), got {tuple(table.shape)}")
    if table.shape[0] == new_n:
        return table.clone()
    work = table.to(torch.promote_types(table.dtype, torch.float32)).t()  # (D, N)
    return _resize_last(work, new_n, antialias).t().to(table.dtype)  # (new_n, D)


def rotate_half(x: Tensor) -> Tensor:
    """``[x1, x2] -> [-x2, x1]`` on the two halves of the last axis. Shapes: (..., Dh) -> same."""
    x1, x2 = x.chunk(2, dim=-1)  # (..., Dh/2) each
    return torch.cat((-x2, x1), dim=-1)  # (..., Dh)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoFormer), "rotate-half" pairing (GPT-NeoX, Hugging Face LLaMA).

    Channel ``i`` and channel ``i + Dh/2`` form a pair, rotated by the angle
    ``pos * base**(-2i / Dh)`` for i = 0..Dh/2-1. (The paper pairs neighbours ``2i, 2i+1``
    instead; the two differ only by a fixed permutation of the channels of q and k, so weights
    trained with one convention need that permutation to be used with the other.)
    Then ``<rotate(q, m), rotate(k, n)>`` depends on m and n only through m - n.

    cos/sin caches of shape (n, Dh) are float32 non-persistent buffers, built for ``max_len``
    positions and rebuilt (doubling) on demand when a longer position is requested.
    """

    def __init__(self, head_dim: int, base: float = 10000.0, max_len: int = 4096) -> None:
        super().__init__()
        _check_positive(head_dim=head_dim, max_len=max_len)
        if head_dim % 2:
            raise ValueError(f"RotaryEmbedding: head_dim must be even, got {head_dim}")
        self.head_dim, self.base = head_dim, base
        self._build(max_len, None)

    def _build(self, length: int, device: torch.device | None) -> None:
        half = self.head_dim // 2
        inv_freq = self.base ** (-torch.arange(half, dtype=torch.float64, device=device) / half)
        pos = torch.arange(length, dtype=torch.float64, device=device)
        angles = torch.outer(pos, inv_freq).repeat(1, 2)  # (length, Dh)
        self.register_buffer("cos_cached", angles.cos().float(), persistent=False)
        self.register_buffer("sin_cached", angles.sin().float(), persistent=False)

    def cos_sin(self, length: int, offset: int = 0) -> tuple[Tensor, Tensor]:
        """The cos and sin for positions ``offset .. offset + length - 1`` (extending the caches).

        Returns:
            (cos, sin), float32. Shapes: (length, Dh) each.
        """
        if not isinstance(offset, int) or offset < 0:
            raise ValueError(f"RotaryEmbedding: offset must be an int >= 0, got {offset!r}")
        needed = offset + length
        if needed > self.cos_cached.shape[0]:
            new_len = max(needed, 2 * self.cos_cached.shape[0])
            logger.debug("RotaryEmbedding: extending caches to %d positions", new_len)
            self._build(new_len, self.cos_cached.device)
        return self.cos_cached[offset:needed], self.sin_cached[offset:needed]

    def rotate(self, x: Tensor, offset: int = 0) -> Tensor:
        """Rotate queries or keys by their positions.

        Args:
            x: queries or keys; ``x[..., t, :]`` is at position ``offset + t``.
            offset: position of the first element (cached decoding).

        Returns:
            the rotated tensor, same dtype (computed in at least float32).
            Shapes: (B, H, L, Dh) -> (B, H, L, Dh); any leading axes work.
        """
        if x.dim() < 2 or x.shape[-1] != self.head_dim:
            raise ValueError(
                f"RotaryEmbedding: x must be (..., L, {self.head_dim}), got {tuple(x.shape)}"
            )
        cos, sin = self.cos_sin(x.shape[-2], offset)  # (L, Dh) each
        work_dtype = torch.promote_types(x.dtype, torch.float32)
        xw = x.to(work_dtype)
        cos, sin = cos.to(device=x.device, dtype=work_dtype), sin.to(x.device, work_dtype)
        return (xw * cos + rotate_half(xw) * sin).to(x.dtype)  # (..., L, Dh)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """Same as :meth:`rotate`."""
        return self.rotate(x, offset)


def alibi_slopes(num_heads: int) -> Tensor:
    """Per-head ALiBi slopes (Press et al., 2022).

    For H a power of two: ``2**(-8 (i + 1) / H)``, i = 0..H-1 (H = 8 gives 1/2, 1/4, ..., 1/256).
    Otherwise, with P the largest power of two below H: the P slopes for P heads, followed by
    every other slope for 2P heads (the odd-numbered ones), taking the first H - P of them.

    Returns:
        float32 slopes. Shapes: (H,).
    """
    _check_positive(num_heads=num_heads)

    def power_of_2(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]

    p = 2 ** int(math.floor(math.log2(num_heads)))
    slopes = power_of_2(p) + power_of_2(2 * p)[0::2][: num_heads - p]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(
    num_heads: int,
    L: int,
    S: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Additive ALiBi attention bias ``-slope_h * |q_pos - k_pos|``.

    Queries are aligned bottom-right with the keys (as for cached decoding): query i is at
    position ``S - L + i``, key j at position j. Past keys get ``-slope * distance``; future keys
    get the same by absolute distance (for causal use they are masked anyway).

    Args:
        num_heads: H.
        L: query length (``L <= S``).
        S: key length.
        device: device of the result (default: CPU).
        dtype: dtype of the result (default: float32).

    Returns:
        the bias, to add to the attention scores. Shapes: (H, L, S).
    """
    _check_positive(num_heads=num_heads, L=L, S=S)
    if L > S:
        raise ValueError(
            f"alibi_bias: L={L} queries cannot be aligned bottom-right with S={S} keys"
        )
    dtype = dtype or torch.float32
    q_pos = torch.arange(S - L, S, device=device)  # (L,)
    k_pos = torch.arange(S, device=device)  # (S,)
    distance = (q_pos[:, None] - k_pos[None, :]).abs().to(dtype)  # (L, S)
    slopes = alibi_slopes(num_heads).to(device=device, dtype=dtype)  # (H,)
    return -slopes[:, None, None] * distance  # (H, L, S)

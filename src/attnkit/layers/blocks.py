"""Transformer encoder and decoder blocks, post-LN (the paper) or pre-LN (``norm_first=True``).

Post-LN (paper, section 3.1): ``x = LayerNorm(x + Dropout(sublayer(x)))``.
Pre-LN (``norm_first``; more stable for deep stacks, used by ViT and GPT-2):
``x = x + Dropout(sublayer(LayerNorm(x)))``; a pre-LN stack needs a final LayerNorm, which the
models add.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from attnkit.attention.multihead import KVCache, MultiHeadAttention
from attnkit.layers.dropout import Dropout
from attnkit.layers.feedforward import PositionWiseFFN

__all__ = ["AddNorm", "EncoderBlock", "DecoderBlock", "LayerCache"]


class AddNorm(nn.Module):
    """The course's residual connection followed by layer normalisation (post-LN).

    Args:
        d_model: feature size D.
        dropout: dropout applied to the sublayer output before the addition.
        eps: LayerNorm epsilon.
    """

    def __init__(self, d_model: int, dropout: float = 0.0, eps: float = 1e-5) -> None:
        super().__init__()
        self.dropout = Dropout(dropout)
        self.norm = nn.LayerNorm(d_model, eps=eps)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """``LayerNorm(x + Dropout(y))``. Shapes: (B, L, D), (B, L, D) -> (B, L, D)."""
        return self.norm(x + self.dropout(y))


class _Residual(nn.Module):
    """One sublayer's residual wrapper, post-LN or pre-LN."""

    def __init__(
        self, d_model: int, dropout: float, eps: float, norm_first: bool, bias: bool = True
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model, eps=eps, bias=bias)
        self.dropout = Dropout(dropout)
        self.norm_first = norm_first

    def pre(self, x: Tensor) -> Tensor:
        """Input of the sublayer: (B, L, D) -> (B, L, D)."""
        return self.norm(x) if self.norm_first else x

    def post(self, x: Tensor, y: Tensor) -> Tensor:
        """Combine the block input x with the sublayer output y: (B, L, D)."""
        if self.norm_first:
            return x + self.dropout(y)
        return self.norm(x + self.dropout(y))


class EncoderBlock(nn.Module):
    """Self-attention and feed-forward sublayers.

    Args:
        d_model: D. num_heads: H. ffn_hidden: F.
        dropout: residual dropout. attention_dropout: dropout on attention weights.
        ffn_dropout: dropout inside the FFN (after the activation).
        norm_first: pre-LN instead of the paper's post-LN.
        activation: ``relu`` or ``gelu``. layer_norm_eps: LayerNorm epsilon.
        rotary: optional rotary embedding for the self-attention.
        bias: biases in the attention and FFN projections and the LayerNorms (False: GPT-style
            bias-free blocks).

    With ``is_causal=True`` (and optionally a ``cache``) in :meth:`forward` this is the block of
    a decoder-only language model: causal self-attention and FFN, no cross-attention.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        ffn_hidden: int,
        *,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        ffn_dropout: float = 0.0,
        norm_first: bool = False,
        activation: str = "relu",
        layer_norm_eps: float = 1e-5,
        rotary: nn.Module | None = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(
            d_model, num_heads, dropout=attention_dropout, bias=bias, rotary=rotary
        )
        self.attn_res = _Residual(d_model, dropout, layer_norm_eps, norm_first, bias)
        self.ffn = PositionWiseFFN(
            d_model, ffn_hidden, activation=activation, dropout=ffn_dropout, bias=bias
        )
        self.ffn_res = _Residual(d_model, dropout, layer_norm_eps, norm_first, bias)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        need_weights: bool = False,
        attn_bias: Tensor | None = None,
        is_causal: bool = False,
        cache: KVCache | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Encode (or, with ``is_causal``, run one causal decoder-only block).

        Args:
            x: (B, S, D); with a ``cache``: only the new positions, (B, L, D).
            mask: bool broadcastable to (B, H, S, S), True = may attend; typically (B, 1, 1, S).
            need_weights: return self-attention weights.
            attn_bias: float bias broadcastable to (B, H, S, S); with a cache (B, H, L, S_total).
            is_causal: mask future keys (aligned bottom-right, so cached steps see the past).
            cache: a growing :class:`KVCache` of earlier positions' keys/values (decoding).

        Returns:
            ``(x (B, S, D), weights (B, H, S, S) or None)``; with a cache the weights are
            (B, H, L, S_total).
        """
        h = self.attn_res.pre(x)
        y, weights = self.self_attn(
            h,
            h,
            h,
            mask=mask,
            need_weights=need_weights,
            attn_bias=attn_bias,
            is_causal=is_causal,
            cache=cache,
        )
        x = self.attn_res.post(x, y)
        x = self.ffn_res.post(x, self.ffn(self.ffn_res.pre(x)))  # (B, S, D)
        return x, weights


@dataclass
class LayerCache:
    """Decoding cache of one decoder block: growing self-attention K/V, static cross K/V."""

    self_attn: KVCache = field(default_factory=lambda: KVCache(static=False))
    cross_attn: KVCache = field(default_factory=lambda: KVCache(static=True))

    def reorder(self, index: Tensor) -> None:
        self.self_attn.reorder(index)
        self.cross_attn.reorder(index)


class DecoderBlock(nn.Module):
    """Causal self-attention, encoder–decoder attention and feed-forward sublayers.

    Arguments as :class:`EncoderBlock`.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        ffn_hidden: int,
        *,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        ffn_dropout: float = 0.0,
        norm_first: bool = False,
        activation: str = "relu",
        layer_norm_eps: float = 1e-5,
        rotary: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(
            d_model, num_heads, dropout=attention_dropout, rotary=rotary
        )
        self.self_res = _Residual(d_model, dropout, layer_norm_eps, norm_first)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, dropout=attention_dropout)
        self.cross_res = _Residual(d_model, dropout, layer_norm_eps, norm_first)
        self.ffn = PositionWiseFFN(d_model, ffn_hidden, activation=activation, dropout=ffn_dropout)
        self.ffn_res = _Residual(d_model, dropout, layer_norm_eps, norm_first)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        memory_mask: Tensor | None = None,
        cache: LayerCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, tuple[Tensor | None, Tensor | None]]:
        """Decode.

        Args:
            x: (B, L, D) target representations (with a cache: only the new positions).
            memory: (B, S, D) encoder output.
            memory_mask: bool broadcastable to (B, H, L, S), True = real source token.
            cache: per-layer decoding cache (keys/values of earlier steps).
            need_weights: return attention weights.

        Returns:
            ``(x (B, L, D), (self weights (B, H, L, L_total) | None, cross (B, H, L, S) | None))``.
        """
        h = self.self_res.pre(x)
        # Target padding sits after the real tokens, so the causal mask alone keeps real
        # positions from seeing it; padded positions are ignored by the loss.
        y, self_w = self.self_attn(
            h,
            h,
            h,
            is_causal=True,
            need_weights=need_weights,
            cache=None if cache is None else cache.self_attn,
        )
        x = self.self_res.post(x, y)
        h = self.cross_res.pre(x)
        y, cross_w = self.cross_attn(
            h,
            memory,
            memory,
            mask=memory_mask,
            need_weights=need_weights,
            cache=None if cache is None else cache.cross_attn,
        )
        x = self.cross_res.post(x, y)
        x = self.ffn_res.post(x, self.ffn(self.ffn_res.pre(x)))  # (B, L, D)
        return x, (self_w, cross_w)

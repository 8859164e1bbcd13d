"""Decoder-only (GPT-style) language model.

Order of computation (GPT-2, Radford et al. 2019):

1. token embedding (no sqrt(D) scaling) + positions, then dropout. Positions are a learned
   table (GPT-2), or enter the attention itself: rotary queries/keys (RoFormer) or an ALiBi
   bias on the scores (Press et al. 2022);
2. ``num_layers`` pre-LN :class:`~attnkit.layers.blocks.EncoderBlock` s run causally (masked
   self-attention and FFN, no cross-attention);
3. a final LayerNorm; the output projection is the token embedding matrix (tied, no bias).

Initialisation as GPT-2: every weight N(0, 0.02^2), biases 0, and the two projections that
write into the residual stream (attention ``out_proj`` and FFN ``dense2``) N(0, (0.02 / sqrt(2 *
num_layers))^2), so the residual stream's variance does not grow with depth.

Incremental decoding keeps one :class:`~attnkit.attention.multihead.KVCache` per block in an
:class:`LMCache`; its ``offset`` is the position of the next token (learned table index,
rotary angle and ALiBi distance all start from it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.attention.multihead import KVCache
from attnkit.config import DecoderLMConfig
from attnkit.layers.blocks import EncoderBlock
from attnkit.layers.dropout import Dropout
from attnkit.layers.embedding import TokenEmbedding
from attnkit.layers.positional import LearnedPositionalEmbedding, RotaryEmbedding, alibi_bias

__all__ = ["DecoderLM", "LMCache"]


@dataclass
class LMCache:
    """Incremental-decoding state of a :class:`DecoderLM`: one growing :class:`KVCache` per
    block and ``offset``, the number of positions already consumed."""

    layers: list[KVCache] = field(default_factory=list)
    offset: int = 0

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (B',) in every layer."""
        for layer in self.layers:
            layer.reorder(index)


class DecoderLM(nn.Module):
    """GPT-style decoder-only language model.

    Args:
        config: :class:`~attnkit.config.DecoderLMConfig`.

    Example::

        model = DecoderLM(DecoderLMConfig(vocab_size=100))
        logits, _ = model(ids)  # ids (B, L) -> (B, L, 100)
    """

    def __init__(self, config: DecoderLMConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = TokenEmbedding(c.vocab_size, c.d_model, pad_id=c.pad_id, scale=False)
        rotary = None
        if c.positional == "learned":
            self.positions: nn.Module | None = LearnedPositionalEmbedding(c.max_len, c.d_model)
        else:  # rotary and ALiBi act inside the attention
            self.positions = None
        if c.positional == "rotary":
            rotary = RotaryEmbedding(c.d_model // c.num_heads, max_len=c.max_len)
        self.dropout = Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            EncoderBlock(
                c.d_model,
                c.num_heads,
                c.ffn_hidden,
                dropout=c.dropout,
                attention_dropout=c.attention_dropout,
                ffn_dropout=0.0,
                norm_first=True,
                activation=c.activation,
                layer_norm_eps=c.layer_norm_eps,
                rotary=rotary,
                bias=c.bias,
            )
            for _ in range(c.num_layers)
        )
        self.final_norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps, bias=c.bias)
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT-2 initialisation (see the module docstring)."""
        residual_std = 0.02 / math.sqrt(2 * self.config.num_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = residual_std if name.endswith(("out_proj", "dense2")) else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.embed.weight, mean=0.0, std=0.02)
        if self.positions is not None:
            nn.init.normal_(self.positions.weight, mean=0.0, std=0.02)
        with torch.no_grad():
            if self.config.pad_id is not None:
                self.embed.weight[self.config.pad_id].zero_()

    @property
    def max_len(self) -> int:
        """The context size: the most positions one forward pass (or one cache) can hold."""
        return self.config.max_len

    @property
    def output_weight(self) -> Tensor:
        """The (V, D) output projection: the token embedding matrix (tied, no bias)."""
        return self.embed.weight

    def new_cache(self) -> LMCache:
        """An empty decoding cache (one growing K/V cache per block), offset 0."""
        return LMCache(layers=[KVCache(static=False) for _ in self.blocks])

    def hidden(
        self, ids: Tensor, *, cache: LMCache | None = None, need_weights: bool = False
    ) -> tuple[Tensor, list[Tensor] | None]:
        """Final normalised hidden states, before the output projection.

        ``logits = hidden @ output_weight.T``; training uses the states directly with
        :func:`attnkit.training.losses.linear_cross_entropy` (no (B, L, V) logits are built).

        Args:
            ids: (B, L) token ids; with a cache, only the new tokens (positions ``cache.offset``
                onwards).
            cache: :class:`LMCache` from :meth:`new_cache`, updated in place.
            need_weights: also return each block's attention weights (math path).

        Returns:
            ``(hidden (B, L, D), [weights (B, H, L, S) per block] or None)`` where S =
            ``cache.offset + L`` (earlier positions included) and future keys get exactly 0.
        """
        if ids.dim() != 2:
            raise ValueError(f"ids must be (B, L) token ids, got shape {tuple(ids.shape)}")
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(f"ids must be integer token ids, got dtype {ids.dtype}")
        length = ids.shape[1]
        offset = cache.offset if cache is not None else 0
        if length < 1:
            raise ValueError("ids must hold at least one token per row, got L = 0")
        if offset + length > self.max_len:
            raise ValueError(
                f"ids reach position {offset + length} but the model's context is max_len="
                f"{self.max_len}; crop the context to its last {self.max_len} tokens (as "
                f"attnkit.decoding.sampling.generate does) or train with a larger max_len"
            )
        x = self.embed(ids)  # (B, L, D)
        if self.positions is not None:
            x = self.positions(x, offset=offset)  # (B, L, D)
        x = self.dropout(x)
        bias = None
        if self.config.positional == "alibi":
            bias = alibi_bias(
                self.config.num_heads, length, offset + length, device=x.device, dtype=x.dtype
            )  # (H, L, S)
        weights: list[Tensor] | None = [] if need_weights else None
        for i, block in enumerate(self.blocks):
            layer_cache = cache.layers[i] if cache is not None else None
            x, w = block(
                x, need_weights=need_weights, attn_bias=bias, is_causal=True, cache=layer_cache
            )  # (B, L, D)
            if weights is not None:
                weights.append(w)
        if cache is not None:
            cache.offset += length
        return self.final_norm(x), weights  # (B, L, D)

    def forward(
        self, ids: Tensor, *, cache: LMCache | None = None, need_weights: bool = False
    ) -> tuple[Tensor, list[Tensor] | None]:
        """Next-token logits at every position.

        Args:
            ids: (B, L) token ids; with a cache, only the new tokens.
            cache: :class:`LMCache` for incremental decoding, updated in place.
            need_weights: also return each block's attention weights.

        Returns:
            ``(logits (B, L, V), [weights (B, H, L, S) per block] or None)``; ``logits[:, t]``
            scores the token at position ``t + 1``.
        """
        x, weights = self.hidden(ids, cache=cache, need_weights=need_weights)
        return F.linear(x, self.output_weight), weights  # (B, L, V)

    def num_parameters(self) -> int:
        """Number of distinct parameters (the tied output matrix counted once)."""
        return sum(p.numel() for p in self.parameters())

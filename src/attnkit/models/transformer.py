"""The encoder–decoder Transformer of "Attention Is All You Need", in the paper's order.

Interface shared by every seq2seq model in attnkit (the decoders and the trainer use only this):

* ``encode(src, src_mask, need_weights=False) -> (memory, weights)``
* ``init_cache(memory, src_mask) -> cache`` (has ``reorder(index)``)
* ``decode(tgt, memory, src_mask, cache=None, need_weights=False) -> (logits, weights)``
* ``forward(src, tgt_in, src_mask) -> logits``
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.config import TransformerConfig
from attnkit.layers.blocks import DecoderBlock, EncoderBlock, LayerCache
from attnkit.layers.dropout import Dropout
from attnkit.layers.embedding import TokenEmbedding
from attnkit.layers.positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
)

__all__ = ["Transformer", "DecoderCache", "check_src_mask"]


@dataclass
class DecoderCache:
    """Incremental-decoding state: one :class:`LayerCache` per decoder block and the number of
    target positions already consumed (``offset``, used by the positional encoding)."""

    layers: list[LayerCache] = field(default_factory=list)
    offset: int = 0

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (B',) in every layer (beam search)."""
        for layer in self.layers:
            layer.reorder(index)

    def reorder_beams(self, index: Tensor, static_index: Tensor | None) -> None:
        """Beam search's reorder: the growing self-attention caches take rows ``index`` (B',);
        the encoder–decoder caches hold one row per sentence (its beams share it, see
        :class:`~attnkit.attention.multihead.KVCache`) and take the kept sentences
        ``static_index`` (A',) only when sentences left the batch (None: no copy)."""
        for layer in self.layers:
            layer.self_attn.reorder(index)
            if static_index is not None:
                layer.cross_attn.reorder(static_index)


def check_src_mask(src: Tensor, src_mask: Tensor | None) -> Tensor | None:
    """Validate a (B, S) source mask and return it as (B, 1, 1, S) for attention."""
    if src.dim() != 2:
        raise ValueError(f"src must be (B, S) token ids, got shape {tuple(src.shape)}")
    if src_mask is None:
        return None
    if src_mask.shape != src.shape or src_mask.dtype != torch.bool:
        raise ValueError(
            f"src_mask must be a bool tensor shaped like src {tuple(src.shape)} (True = real "
            f"token), got {tuple(src_mask.shape)} {src_mask.dtype}"
        )
    return src_mask[:, None, None, :]  # (B, 1, 1, S)


class Transformer(nn.Module):
    """Encoder–decoder Transformer.

    Args:
        config: :class:`~attnkit.config.TransformerConfig` (sizes, ``norm_first``, positional
            encoding kind, embedding tying).
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = c = config
        self.src_embed = TokenEmbedding(c.src_vocab_size, c.d_model, pad_id=c.pad_id)
        self.tgt_embed = (
            self.src_embed
            if c.tie_embeddings == "all"
            else TokenEmbedding(c.tgt_vocab_size, c.d_model, pad_id=c.pad_id)
        )
        rotary = None
        if c.positional == "sinusoidal":
            self.positions: nn.Module = SinusoidalPositionalEncoding(
                c.d_model, c.dropout, c.max_len
            )
        elif c.positional == "learned":
            self.positions = LearnedPositionalEmbedding(c.max_len, c.d_model, c.dropout)
        else:  # rotary: positions enter through the self-attention queries and keys
            self.positions = Dropout(c.dropout)
            rotary = RotaryEmbedding(c.d_model // c.num_heads, max_len=c.max_len)
        block_args = dict(
            d_model=c.d_model,
            num_heads=c.num_heads,
            ffn_hidden=c.ffn_hidden,
            dropout=c.dropout,
            attention_dropout=c.attention_dropout,
            norm_first=c.norm_first,
            activation=c.activation,
            layer_norm_eps=c.layer_norm_eps,
            rotary=rotary,
        )
        self.encoder = nn.ModuleList(
            EncoderBlock(**block_args) for _ in range(c.num_encoder_layers)
        )
        self.decoder = nn.ModuleList(
            DecoderBlock(**block_args) for _ in range(c.num_decoder_layers)
        )
        # Pre-LN stacks end with a LayerNorm; post-LN blocks already end normalised.
        self.encoder_norm = nn.LayerNorm(c.d_model, c.layer_norm_eps) if c.norm_first else None
        self.decoder_norm = nn.LayerNorm(c.d_model, c.layer_norm_eps) if c.norm_first else None
        self.output = (
            None
            if c.tie_embeddings != "none"
            else nn.Linear(c.d_model, c.tgt_vocab_size, bias=False)
        )

    def _add_positions(self, x: Tensor, offset: int = 0) -> Tensor:
        if isinstance(self.positions, Dropout):
            return self.positions(x)
        return self.positions(x, offset=offset)  # (B, L, D)

    def _check_length(self, length: int, what: str) -> None:
        if length > self.config.max_len:
            raise ValueError(
                f"{what} has {length} tokens but the model's max_len is {self.config.max_len}; "
                f"shorten the input or train with a larger model.max_len"
            )

    def encode(
        self, src: Tensor, src_mask: Tensor | None = None, need_weights: bool = False
    ) -> tuple[Tensor, list[Tensor] | None]:
        """Encode source tokens.

        Args:
            src: (B, S) token ids.
            src_mask: (B, S) bool, True = real token (None: no padding).
            need_weights: also return each layer's self-attention weights.

        Returns:
            ``(memory (B, S, D), [weights (B, H, S, S) per layer] or None)``.
        """
        mask = check_src_mask(src, src_mask)  # (B, 1, 1, S)
        self._check_length(src.shape[1], "the source")
        x = self._add_positions(self.src_embed(src))  # (B, S, D)
        weights = [] if need_weights else None
        for block in self.encoder:
            x, w = block(x, mask=mask, need_weights=need_weights)
            if weights is not None:
                weights.append(w)
        if self.encoder_norm is not None:
            x = self.encoder_norm(x)
        return x, weights

    def init_cache(self, memory: Tensor, src_mask: Tensor | None = None) -> DecoderCache:
        """A fresh decoding cache; cross-attention K/V are filled on the first :meth:`decode`."""
        return DecoderCache(layers=[LayerCache() for _ in self.decoder])

    def decode(
        self,
        tgt: Tensor,
        memory: Tensor,
        src_mask: Tensor | None = None,
        cache: DecoderCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, dict[str, list[Tensor]] | None]:
        """Decode target tokens given the encoder memory.

        Args:
            tgt: (B, L) target ids starting with BOS; with a cache, only the new tokens (L=1).
            memory: (B, S, D) from :meth:`encode`.
            src_mask: (B, S) bool, True = real source token.
            cache: :class:`DecoderCache` from :meth:`init_cache`, updated in place.
            need_weights: also return attention weights.

        Returns:
            ``(logits (B, L, V), {"self": [(B, H, L, L_total)], "cross": [(B, H, L, S)]} or None)``.
        """
        x, weights = self.decoder_states(tgt, memory, src_mask, cache, need_weights)
        return self.project(x), weights  # (B, L, V)

    def decoder_states(
        self,
        tgt: Tensor,
        memory: Tensor,
        src_mask: Tensor | None = None,
        cache: DecoderCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, dict[str, list[Tensor]] | None]:
        """:meth:`decode` without the output projection: the final decoder states (B, L, D).

        ``logits = states @ output_weight.T``; the training loss uses the states directly
        (:func:`attnkit.training.losses.linear_cross_entropy` never builds the (B, L, V) logits).
        Arguments and weights as in :meth:`decode`.
        """
        if tgt.dim() != 2:
            raise ValueError(f"tgt must be (B, L) token ids, got shape {tuple(tgt.shape)}")
        offset = cache.offset if cache is not None else 0
        self._check_length(offset + tgt.shape[1], "the target")
        mask = None if src_mask is None else src_mask[:, None, None, :]  # (B, 1, 1, S)
        x = self._add_positions(self.tgt_embed(tgt), offset=offset)  # (B, L, D)
        weights: dict[str, list[Tensor]] | None = (
            {"self": [], "cross": []} if need_weights else None
        )
        for i, block in enumerate(self.decoder):
            layer_cache = cache.layers[i] if cache is not None else None
            x, (self_w, cross_w) = block(
                x, memory, memory_mask=mask, cache=layer_cache, need_weights=need_weights
            )
            if weights is not None:
                weights["self"].append(self_w)
                weights["cross"].append(cross_w)
        if cache is not None:
            cache.offset += tgt.shape[1]
        if self.decoder_norm is not None:
            x = self.decoder_norm(x)
        return x, weights  # (B, L, D)

    def project(self, x: Tensor) -> Tensor:
        """The output projection: decoder states (B, L, D) -> logits (B, L, V).

        An int8 model (:func:`attnkit.models.quantize.quantize_int8`) projects with its
        quantized copy ``output_projection``; :attr:`output_weight` stays the float matrix, so
        the fused training loss keeps working on it.
        """
        quantized = getattr(self, "output_projection", None)
        if quantized is not None:
            return quantized(x)
        return F.linear(x, self.output_weight)  # (B, L, V)

    @property
    def output_weight(self) -> Tensor:
        """The (V, D) output projection (the tied embedding matrix unless ``tie_embeddings`` is
        ``"none"``); the projection has no bias."""
        return self.output.weight if self.output is not None else self.tgt_embed.weight

    def features(self, src: Tensor, tgt_in: Tensor, src_mask: Tensor | None = None) -> Tensor:
        """Teacher-forced final decoder states, before the output projection.

        Shapes: src (B, S), tgt_in (B, L), src_mask (B, S) bool -> (B, L, D).
        """
        memory, _ = self.encode(src, src_mask)
        return self.decoder_states(tgt_in, memory, src_mask)[0]

    def forward(self, src: Tensor, tgt_in: Tensor, src_mask: Tensor | None = None) -> Tensor:
        """Teacher-forced logits.

        Shapes: src (B, S), tgt_in (B, L), src_mask (B, S) bool -> logits (B, L, V).
        """
        return self.project(self.features(src, tgt_in, src_mask))  # (B, L, V)

    def num_parameters(self) -> int:
        """Number of distinct parameters (tied matrices counted once)."""
        return sum(p.numel() for p in self.parameters())

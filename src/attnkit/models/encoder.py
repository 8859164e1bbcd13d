"""Encoder-only Transformer (BERT family), built from attnkit's own encoder blocks.

Order of computation (BERT, Devlin et al. 2019, section 3):

1. ``word(ids) + position(0..S-1) + token_type(type_ids)``; no sqrt(D) scaling;
2. LayerNorm, then dropout;
3. ``num_layers`` :class:`~attnkit.layers.blocks.EncoderBlock` s with exact (erf) GELU. Padding is
   masked on the *keys* only: padded query rows are still computed (and ignored by the caller),
   which is what BERT does;
4. pre-LN models (``norm_first``) end with a final LayerNorm; post-LN (BERT) models do not.

Pretrained checkpoints are loaded by :mod:`attnkit.pretrained.bert`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnkit.config import EncoderConfig
from attnkit.layers.blocks import EncoderBlock
from attnkit.layers.dropout import Dropout
from attnkit.layers.embedding import TokenEmbedding
from attnkit.layers.positional import LearnedPositionalEmbedding

__all__ = ["EncoderEmbeddings", "EncoderModel"]


class EncoderEmbeddings(nn.Module):
    """Word + learned absolute position + token-type embeddings, LayerNorm, dropout.

    Args:
        config: :class:`~attnkit.config.EncoderConfig` (vocab_size, d_model, max_len,
            type_vocab_size, pad_id, layer_norm_eps, dropout).
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        c = config
        self.word = TokenEmbedding(c.vocab_size, c.d_model, pad_id=c.pad_id, scale=False)
        self.positions = LearnedPositionalEmbedding(c.max_len, c.d_model, dropout=0.0)
        self.token_type = nn.Embedding(c.type_vocab_size, c.d_model)
        nn.init.normal_(self.token_type.weight, std=0.02)
        self.norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.dropout = Dropout(c.dropout)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor) -> Tensor:
        """Embed token ids.

        Args:
            input_ids: (B, S) long token ids.
            token_type_ids: (B, S) long segment ids in [0, type_vocab_size).

        Returns:
            (B, S, D) embeddings after LayerNorm and dropout.
        """
        x = self.word(input_ids) + self.token_type(token_type_ids)  # (B, S, D)
        x = self.positions(x)  # (B, S, D), positions 0..S-1 added
        return self.dropout(self.norm(x))


class EncoderModel(nn.Module):
    """Encoder-only Transformer returning contextual token representations.

    Args:
        config: :class:`~attnkit.config.EncoderConfig`.

    Example::

        model = EncoderModel(EncoderConfig(vocab_size=1000, d_model=64, num_heads=4,
                                           ffn_hidden=128, num_layers=2))
        hidden, _ = model(ids, attention_mask)  # (B, S, 64)
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embeddings = EncoderEmbeddings(c)
        self.layers = nn.ModuleList(
            EncoderBlock(
                c.d_model,
                c.num_heads,
                c.ffn_hidden,
                dropout=c.dropout,
                attention_dropout=c.attention_dropout,
                ffn_dropout=0.0,
                norm_first=c.norm_first,
                activation=c.activation,
                layer_norm_eps=c.layer_norm_eps,
            )
            for _ in range(c.num_layers)
        )
        self.final_norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps) if c.norm_first else None

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, list[Tensor] | None]:
        """Encode a padded batch of token ids.

        Args:
            input_ids: (B, S) long token ids.
            attention_mask: (B, S) bool, True = real token (padding: False); None = no padding.
            token_type_ids: (B, S) long segment ids; None = all zeros.
            need_weights: also return every layer's attention weights (slower math path).

        Returns:
            ``(hidden (B, S, D), weights)`` where ``weights`` is a list of ``num_layers`` tensors
            (B, H, S, S) (padded keys get exactly 0) or None. Rows of padded positions in
            ``hidden`` are not meaningful.
        """
        key_mask = self._check_inputs(input_ids, attention_mask, token_type_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)  # (B, S, D)
        all_weights: list[Tensor] = []
        for layer in self.layers:
            x, weights = layer(x, mask=key_mask, need_weights=need_weights)  # (B, S, D)
            if weights is not None:
                all_weights.append(weights)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x, (all_weights if need_weights else None)

    def _check_inputs(
        self, input_ids: Tensor, attention_mask: Tensor | None, token_type_ids: Tensor | None
    ) -> Tensor | None:
        """Validate the inputs; return the key mask (B, 1, 1, S) or None."""
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.long, torch.int):
            raise ValueError(
                f"input_ids must be (B, S) integer token ids, got shape {tuple(input_ids.shape)} "
                f"dtype {input_ids.dtype}"
            )
        if input_ids.shape[1] > self.config.max_len:
            raise ValueError(
                f"input_ids has length {input_ids.shape[1]} but the model has only "
                f"max_len={self.config.max_len} positions; truncate the input (the pretrained "
                f"tokenizer does this for you)"
            )
        if token_type_ids is not None and token_type_ids.shape != input_ids.shape:
            raise ValueError(
                f"token_type_ids must be shaped like input_ids {tuple(input_ids.shape)}, got "
                f"{tuple(token_type_ids.shape)}"
            )
        if attention_mask is None:
            return None
        if attention_mask.shape != input_ids.shape or attention_mask.dtype != torch.bool:
            raise ValueError(
                f"attention_mask must be a bool tensor shaped like input_ids "
                f"{tuple(input_ids.shape)} (True = real token), got "
                f"{tuple(attention_mask.shape)} {attention_mask.dtype}; convert a 0/1 mask with "
                f".bool()"
            )
        return attention_mask[:, None, None, :]  # (B, 1, 1, S)

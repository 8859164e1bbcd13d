"""The reference implementations attnkit is timed against, each defined once.

* :class:`PlainSDPA`: the smallest fast self-attention module (one qkv Linear, SDPA, one out
  Linear), the bar attnkit's MultiHeadAttention must meet.
* :class:`NaiveAttention`: the course's formulation, (B*H, T, T) scores by bmm and softmax.
* :class:`TorchTransformerSeq2Seq`: ``nn.Transformer`` with attnkit's sizes, embeddings and tied
  output layer.
* :class:`TorchViT`: the Vision Transformer built from ``nn.TransformerEncoder``.

Every reference has the same parameter count as the attnkit module it is compared with.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.config import TransformerConfig, ViTConfig
from attnkit.data.text import PAD_ID
from attnkit.layers.positional import sinusoidal_table

__all__ = ["NaiveAttention", "PlainSDPA", "TorchTransformerSeq2Seq", "TorchViT"]


class PlainSDPA(nn.Module):
    """The smallest fast self-attention: one qkv Linear, SDPA, one output Linear.

    Args:
        d_model: D. num_heads: H (divides D).
    """

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def heads(self, x: Tensor) -> Tensor:
        """Split the heads. Shapes: (B, T, D) -> (B, H, T, Dh)."""
        b, t, d = x.shape
        return x.view(b, t, self.num_heads, d // self.num_heads).transpose(1, 2)  # (B, H, T, Dh)

    def forward(self, x: Tensor) -> Tensor:
        """Self-attention, no mask. Shapes: x (B, T, D) -> (B, T, D)."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # (B, T, D) each
        y = F.scaled_dot_product_attention(self.heads(q), self.heads(k), self.heads(v))
        return self.out(y.transpose(1, 2).reshape(b, t, d))  # (B, T, D)


class NaiveAttention(PlainSDPA):
    """Materialises the (B*H, T, T) weights with bmm and softmax, as the course's code does."""

    def forward(self, x: Tensor) -> Tensor:
        """Self-attention, no mask. Shapes: x (B, T, D) -> (B, T, D)."""
        b, t, d = x.shape
        h, dh = self.num_heads, d // self.num_heads
        q, k, v = (z.reshape(b * h, t, dh) for z in map(self.heads, self.qkv(x).chunk(3, -1)))
        scores = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(dh)  # (B*H, T, T)
        y = torch.bmm(torch.softmax(scores, dim=-1), v)  # (B*H, T, Dh)
        return self.out(y.view(b, h, t, dh).transpose(1, 2).reshape(b, t, d))  # (B, T, D)


class TorchTransformerSeq2Seq(nn.Module):
    """The reference: ``nn.Transformer`` with the same sizes, embeddings and tied output layer."""

    def __init__(self, c: TransformerConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(c.src_vocab_size, c.d_model, padding_idx=PAD_ID)
        self.scale = math.sqrt(c.d_model)
        self.register_buffer("pe", sinusoidal_table(c.max_len, c.d_model), persistent=False)
        self.drop = nn.Dropout(c.dropout)
        with warnings.catch_warnings():  # nested tensors are off with norm_first: expected
            warnings.filterwarnings("ignore", message="enable_nested_tensor is True")
            self.core = nn.Transformer(
                c.d_model,
                c.num_heads,
                c.num_encoder_layers,
                c.num_decoder_layers,
                c.ffn_hidden,
                c.dropout,
                batch_first=True,
                norm_first=c.norm_first,
            )
        # nn.Transformer applies its one dropout rate to the attention weights too; use the
        # config's attention_dropout there, as attnkit does (on the CPU, SDPA with dropout
        # leaves the flash kernel, which would slow the reference down for no reason).
        for module in self.core.modules():
            if isinstance(module, nn.MultiheadAttention):
                module.dropout = c.attention_dropout

    def _embed(self, ids: Tensor) -> Tensor:
        return self.drop(self.embed(ids) * self.scale + self.pe[: ids.shape[1]])  # (B, L, D)

    def forward(self, src: Tensor, tgt_in: Tensor, src_mask: Tensor) -> Tensor:
        """Teacher-forced logits.

        Shapes: src (B, S), tgt_in (B, L), src_mask (B, S) bool (True = real token)
        -> logits (B, L, V).
        """
        length = tgt_in.shape[1]
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=src.device)
        out = self.core(
            self._embed(src),
            self._embed(tgt_in),
            tgt_mask=causal,
            src_key_padding_mask=~src_mask,
            memory_key_padding_mask=~src_mask,
            tgt_is_causal=True,
        )  # (B, L, D)
        return F.linear(out, self.embed.weight)  # (B, L, V)


class TorchViT(nn.Module):
    """The reference ViT: the same network with ``nn.TransformerEncoder`` (pre-LN, GELU).

    Conv2d patches, a class token, learned positions, the encoder with its final LayerNorm and a
    linear head on the class token: the parameters of
    :class:`~attnkit.models.vit.VisionTransformer` one for one.
    """

    def __init__(self, c: ViTConfig) -> None:
        super().__init__()
        n = (c.image_size // c.patch_size) ** 2
        self.patch = nn.Conv2d(c.in_channels, c.d_model, c.patch_size, c.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.d_model))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + n, c.d_model) * 0.02)
        self.drop = nn.Dropout(c.dropout)
        layer = nn.TransformerEncoderLayer(
            c.d_model,
            c.num_heads,
            c.ffn_hidden,
            c.dropout,
            "gelu",
            c.layer_norm_eps,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            layer,
            c.num_layers,
            nn.LayerNorm(c.d_model, eps=c.layer_norm_eps),
            enable_nested_tensor=False,
        )
        self.head = nn.Linear(c.d_model, c.num_classes)

    def forward(self, images: Tensor) -> Tensor:
        """Class logits. Shapes: images (B, C, H, W) -> logits (B, num_classes)."""
        x = self.patch(images).flatten(2).transpose(1, 2)  # (B, N, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + N, D)
        return self.head(self.encoder(self.drop(x + self.pos_embed))[:, 0])  # (B, classes)

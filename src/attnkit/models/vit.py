"""Vision Transformer (Dosovitskiy et al., "An Image is Worth 16x16 Words", 2021).

In the paper's order: cut the image into patches and embed them linearly (a strided convolution),
prepend a learned class token, add position embeddings, run a stack of pre-LN encoder blocks
(attnkit's :class:`~attnkit.layers.blocks.EncoderBlock`), apply a final LayerNorm, pool (class
token or mean of the patch tokens) and classify with a linear head.

Position embeddings come in three kinds (``ViTConfig.pos_embedding``):

* ``learned1d`` — the paper's default: one learned row per token, class token first,
  shape (1 + N, D);
* ``learned2d`` — a learned (grid_h, grid_w, D) table for the patches, read out row-major so that
  token ``1 + row * grid_w + col`` gets the entry at (row, col); the class token has its own
  learned vector;
* ``sincos2d`` — the same layout with a fixed 2-D sine-cosine table (MAE); class token learned.

With ``layer_norm_eps=1e-6`` and the ViT-B/16 sizes the parameter count equals timm's
``vit_base_patch16_224`` (86,567,656 with 1000 classes).
"""

from __future__ import annotations

import dataclasses
import logging

import torch
from torch import Tensor, nn

from attnkit.config import ViTConfig
from attnkit.layers.blocks import EncoderBlock
from attnkit.layers.dropout import Dropout
from attnkit.layers.patches import PatchEmbedding
from attnkit.layers.positional import (
    LearnedPositionalEmbedding2D,
    resize_grid,
    sincos_2d_table,
)

__all__ = ["VisionTransformer", "ViT", "attention_rollout"]

log = logging.getLogger(__name__)


class VisionTransformer(nn.Module):
    """Image classifier built from a patch embedding and pre-LN encoder blocks.

    Args:
        config: a :class:`~attnkit.config.ViTConfig` (validated). After
            :meth:`resize_positions` the model's ``config`` carries the new ``image_size``.
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        if not isinstance(config, ViTConfig):
            raise ValueError(
                f"VisionTransformer needs a ViTConfig, got {type(config).__name__}; "
                "build one with attnkit.config.ViTConfig(...)"
            )
        self.config = config
        dim = config.d_model
        self.patch_embed = PatchEmbedding(config.patch_size, config.in_channels, dim)
        side = config.image_size // config.patch_size
        self.grid_size: tuple[int, int] = (side, side)
        self.cls_token = nn.Parameter(torch.empty(1, 1, dim))  # (1, 1, D)
        self._build_positions(self.grid_size)
        self.pos_drop = Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            EncoderBlock(
                d_model=dim,
                num_heads=config.num_heads,
                ffn_hidden=config.ffn_hidden,
                dropout=config.dropout,
                attention_dropout=config.attention_dropout,
                ffn_dropout=config.dropout,
                norm_first=True,
                activation="gelu",
                layer_norm_eps=config.layer_norm_eps,
            )
            for _ in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.head = nn.Linear(dim, config.num_classes)
        self._init_weights()

    # -- parameters ----------------------------------------------------------------------------
    def _build_positions(self, grid: tuple[int, int]) -> None:
        """Create the position parameters/buffers for a patch grid (uninitialised if learned)."""
        gh, gw = grid
        dim, kind = self.config.d_model, self.config.pos_embedding
        if kind == "learned1d":
            self.pos_embed = nn.Parameter(torch.empty(1 + gh * gw, dim))  # (1 + N, D)
            return
        self.cls_pos = nn.Parameter(torch.empty(dim))  # (D,)
        if kind == "learned2d":
            self.pos_grid = LearnedPositionalEmbedding2D(gh, gw, dim)  # weight (gh, gw, D)
        else:  # sincos2d: a formula of the grid, so not saved in checkpoints
            self.register_buffer("pos_table", sincos_2d_table(gh, gw, dim), persistent=False)

    def _init_weights(self) -> None:
        # Learned embeddings and the head: truncated N(0, 0.02^2) as in timm/BERT; zero head bias.
        # The blocks keep their own initialisation (Xavier attention, PyTorch's Linear default).
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for name in ("pos_embed", "cls_pos"):
            if hasattr(self, name):
                nn.init.trunc_normal_(getattr(self, name), std=0.02)
        if hasattr(self, "pos_grid"):
            nn.init.trunc_normal_(self.pos_grid.weight, std=0.02)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    @property
    def num_patches(self) -> int:
        """N, the number of patch tokens (the sequence has 1 + N tokens)."""
        return self.grid_size[0] * self.grid_size[1]

    def position_embeddings(self) -> Tensor:
        """The table added to the token sequence, class token first, patches row-major.

        Returns:
            row 0 for the class token, row ``1 + r * grid_w + c`` for the patch at (r, c).
            Shapes: (1 + N, D).
        """
        kind = self.config.pos_embedding
        if kind == "learned1d":
            return self.pos_embed
        patches = self.pos_grid.flat() if kind == "learned2d" else self.pos_table  # (N, D)
        return torch.cat([self.cls_pos[None, :], patches.to(self.cls_pos.dtype)], dim=0)

    # -- forward -------------------------------------------------------------------------------
    def _check_images(self, images: Tensor) -> None:
        c, size = self.config.in_channels, self.config.image_size
        if images.dim() != 4 or images.shape[1] != c:
            raise ValueError(
                f"VisionTransformer: images must be (B, {c}, {size}, {size}), got "
                f"{tuple(images.shape)}; convert the images to {c} channel(s) (e.g. grayscale "
                "to RGB) or build the model with a matching in_channels"
            )
        if tuple(images.shape[2:]) != (size, size):
            raise ValueError(
                f"VisionTransformer: images must be {size}x{size} pixels, got "
                f"{images.shape[2]}x{images.shape[3]}; resize the images, or call "
                "model.resize_positions(new_size) to fine-tune at another resolution"
            )
        if not images.is_floating_point():
            raise ValueError(
                f"VisionTransformer: images must be a float tensor, got {images.dtype}; scale "
                "uint8 images to [0, 1] first (attnkit.data.images.to_float)"
            )

    def encode(
        self, images: Tensor, need_weights: bool = False
    ) -> tuple[Tensor, list[Tensor] | None]:
        """Run the encoder and the final LayerNorm.

        Args:
            images: float images.
            need_weights: also return each layer's self-attention weights (math path).

        Returns:
            ``(tokens, weights)``: the normalised token sequence (class token first) and, when
            asked, one weight tensor per layer.
            Shapes: images (B, C, H, W) -> tokens (B, 1 + N, D),
            weights depth x (B, H, 1 + N, 1 + N).
        """
        self._check_images(images)
        x = self.patch_embed(images)  # (B, N, D)
        cls = self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)  # (B, 1, D)
        x = torch.cat([cls, x], dim=1)  # (B, 1 + N, D)
        x = self.pos_drop(x + self.position_embeddings().to(x.dtype))  # (B, 1 + N, D)
        weights: list[Tensor] = []
        for block in self.blocks:
            x, w = block(x, need_weights=need_weights)  # (B, 1 + N, D)
            if w is not None:
                weights.append(w)
        return self.norm(x), (weights if need_weights else None)

    def pool(self, tokens: Tensor) -> Tensor:
        """Class token or mean of the patch tokens. Shapes: (B, 1 + N, D) -> (B, D)."""
        if self.config.pool == "cls":
            return tokens[:, 0]  # (B, D)
        return tokens[:, 1:].mean(dim=1)  # (B, D)

    def forward(
        self, images: Tensor, need_weights: bool = False
    ) -> tuple[Tensor, list[Tensor] | None]:
        """Classify images.

        Args:
            images: float images (scaled like the training data, e.g. to [0, 1]).
            need_weights: also return the self-attention weights of every layer.

        Returns:
            ``(logits, weights)``; ``weights`` is None unless asked for.
            Shapes: images (B, C, H, W) -> logits (B, num_classes),
            weights depth x (B, heads, 1 + N, 1 + N).
        """
        tokens, weights = self.encode(images, need_weights=need_weights)  # (B, 1 + N, D)
        return self.head(self.pool(tokens)), weights  # (B, num_classes)

    # -- resolution change ---------------------------------------------------------------------
    @torch.no_grad()
    def resize_positions(self, new_image_size: int, antialias: bool = True) -> None:
        """Adapt the position embeddings to another image size (fine-tuning at a new resolution).

        ``learned1d``: the class-token row is kept and the patch rows are treated as a
        (grid_h, grid_w) grid and resampled bicubically
        (:func:`~attnkit.layers.positional.resize_grid`);
        ``learned2d``: the grid is resampled the same way; ``sincos2d``: the fixed table is
        rebuilt for the new grid. The same size leaves everything unchanged. Call this before
        building the optimizer: learned tables become new ``nn.Parameter`` objects.

        Args:
            new_image_size: new image side in pixels; a multiple of ``patch_size``.
            antialias: low-pass filter when shrinking.
        """
        p = self.config.patch_size
        if not isinstance(new_image_size, int) or new_image_size <= 0 or new_image_size % p:
            raise ValueError(
                f"resize_positions: new_image_size must be a positive multiple of patch_size={p}, "
                f"got {new_image_size!r}"
            )
        old, new = self.grid_size, (new_image_size // p, new_image_size // p)
        kind = self.config.pos_embedding
        if kind == "learned1d":
            table = self.pos_embed  # (1 + N, D)
            patches = resize_grid(table[1:], old, new, antialias=antialias)  # (N2, D)
            self.pos_embed = nn.Parameter(torch.cat([table[:1], patches], dim=0))  # (1 + N2, D)
        elif kind == "learned2d":
            patches = resize_grid(self.pos_grid.weight, old, new, antialias=antialias)  # (N2, D)
            grid = LearnedPositionalEmbedding2D(*new, self.config.d_model).to(patches.device)
            grid.weight = nn.Parameter(patches.reshape(*new, self.config.d_model))  # (h2, w2, D)
            self.pos_grid = grid
        else:
            table = sincos_2d_table(*new, self.config.d_model)  # (N2, D)
            self.pos_table = table.to(device=self.pos_table.device, dtype=self.pos_table.dtype)
        if old != new:
            log.info("resized %s position embeddings from grid %s to %s", kind, old, new)
        self.grid_size = new
        self.config = dataclasses.replace(self.config, image_size=new_image_size)


ViT = VisionTransformer


def attention_rollout(weights: list[Tensor], residual: bool = True) -> Tensor:
    """Attention rollout (Abnar & Zuidema, 2020): how much each token draws on each input token.

    Each layer's weights are averaged over heads; with ``residual`` the identity is added (the
    skip connection) and rows are renormalised; the layers' matrices are multiplied from the first
    to the last. Row 0 of the result, without its first entry, is the class token's map over the
    patches (reshape it to the patch grid to overlay it on the image).

    Args:
        weights: per-layer attention weights, first layer first
            (``forward(images, need_weights=True)``).
        residual: account for the residual connections.

    Returns:
        the rolled-out attention; each row sums to 1 (in float32 or wider).
        Shapes: depth x (B, H, T, T) -> (B, T, T), T = 1 + N.
    """
    if not weights:
        raise ValueError(
            "attention_rollout: weights is empty; call the model with need_weights=True"
        )
    first = weights[0]
    if first.dim() != 4 or first.shape[-1] != first.shape[-2]:
        raise ValueError(
            f"attention_rollout: weights must be (B, H, T, T), got {tuple(first.shape)}"
        )
    work = torch.promote_types(first.dtype, torch.float32)
    eye = torch.eye(first.shape[-1], dtype=work, device=first.device)  # (T, T)
    result = eye.expand(first.shape[0], -1, -1)  # (B, T, T)
    for w in weights:
        a = w.to(work).mean(dim=1)  # (B, T, T)
        if residual:
            a = a + eye
            a = a / a.sum(dim=-1, keepdim=True)
        result = a @ result  # (B, T, T)
    return result

"""Patch embedding: cut an image into non-overlapping P x P patches and project each to D.

A ``Conv2d`` with ``kernel_size = stride = P`` is exactly a linear map applied to every flattened
patch (the paper's ``x_p E``), computed in one call. The output grid is read out row-major, so
token ``n = row * grid_w + col`` holds the patch whose top-left pixel is ``(row * P, col * P)``;
the 2-D position tables in :mod:`attnkit.layers.positional` use the same order.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

__all__ = ["PatchEmbedding"]


class PatchEmbedding(nn.Module):
    """Project non-overlapping patches to ``dim`` features (with a bias, as in ViT).

    Args:
        patch_size: P, the side of a square patch in pixels.
        in_channels: C, image channels.
        dim: D, output features per patch.
    """

    def __init__(self, patch_size: int, in_channels: int, dim: int) -> None:
        super().__init__()
        for name, value in (("patch_size", patch_size), ("in_channels", in_channels), ("dim", dim)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"PatchEmbedding: {name} must be a positive int, got {value!r}")
        self.patch_size, self.in_channels, self.dim = patch_size, in_channels, dim
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform on the (D, C*P*P) matrix the convolution stands for; zero bias."""
        fan_in = self.in_channels * self.patch_size**2
        bound = math.sqrt(6.0 / (fan_in + self.dim))
        nn.init.uniform_(self.proj.weight, -bound, bound)
        nn.init.zeros_(self.proj.bias)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """The patch grid (rows, cols) of an image of ``height`` x ``width`` pixels.

        Raises:
            ValueError: a side is not a multiple of the patch size.
        """
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(
                f"PatchEmbedding: image size {height}x{width} is not a multiple of patch_size={p}; "
                f"resize or crop the images to multiples of {p}"
            )
        return height // p, width // p

    def forward(self, images: Tensor) -> Tensor:
        """Embed every patch.

        Args:
            images: float images.

        Returns:
            patch tokens in row-major patch order.
            Shapes: (B, C, H, W) -> (B, N, D) with N = (H / P) * (W / P).
        """
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"PatchEmbedding: images must be (B, {self.in_channels}, H, W), got "
                f"{tuple(images.shape)}; convert the images to {self.in_channels} channel(s) "
                "or build the model with a matching in_channels"
            )
        self.grid(images.shape[2], images.shape[3])
        x = self.proj(images)  # (B, D, H/P, W/P)
        return x.flatten(2).transpose(1, 2)  # (B, N, D)

"""A trained image classifier: load a run, classify images, and compute where the ViT looks
(drawn by :func:`attnkit.viz.image_attention.image_attention_figure`).

Attention maps come in two kinds: the attention of the class token to every patch in each head of
the last layer, and attention rollout over all layers
(:func:`attnkit.models.vit.attention_rollout`); both are upsampled to the image size and scaled to
a maximum of 1 for overlaying. For a model pooled by the mean of the patch tokens
(``pool='mean'``) the average patch query replaces the class token, since that is what the head
reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.data.images import ImageSet, read_digit_image, read_image, to_float
from attnkit.models.vit import VisionTransformer, attention_rollout
from attnkit.training.checkpoint import load_checkpoint
from attnkit.training.runfolder import find_checkpoint
from attnkit.training.trainer import resolve_device
from attnkit.vision.config import VisionRunConfig, load_vision_config
from attnkit.vision.task import evaluate_images

__all__ = ["Prediction", "AttentionMaps", "Classifier"]

ImageInput = Tensor | Sequence[str | Path]


@dataclass
class Prediction:
    """The top-k classes of one image, most probable first."""

    source: str
    labels: list[str]
    probs: list[float]
    indices: list[int]


@dataclass
class AttentionMaps:
    """Where the model looked in one image.

    Shapes: image (C, H, W) float in [0, 1] as the model saw it; heads (heads, H, W) and rollout
    (H, W) upsampled and scaled to max 1; heads_grid (heads, gh, gw) and rollout_grid (gh, gw) the
    raw weights on the patch grid.
    """

    image: Tensor
    heads: Tensor
    rollout: Tensor
    heads_grid: Tensor
    rollout_grid: Tensor
    prediction: Prediction


class Classifier:
    """A trained ViT with its run configuration and class names; build one with :meth:`load`."""

    def __init__(
        self, model: VisionTransformer, config: VisionRunConfig, classes: Sequence[str]
    ) -> None:
        self.model, self.config, self.classes = model.eval(), config, list(classes)

    @classmethod
    def load(
        cls, run_dir: str | Path, checkpoint: str = "best", device: str = "auto"
    ) -> Classifier:
        """Load ``best`` (lowest validation loss), ``last``, or a checkpoint folder path."""
        cfg, classes = load_vision_config(run_dir)
        model = VisionTransformer(cfg.model)
        load_checkpoint(
            find_checkpoint(run_dir, checkpoint, cfg.train.keep_best), model, with_state=False
        )
        return cls(model.to(resolve_device(device)), cfg, classes)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def digits_format(self) -> bool:
        """True for runs on scikit-learn's digits: files are read with ``read_digit_image``."""
        return self.config.data.source == "digits"

    def read_images(self, paths: Sequence[str | Path], convert: bool = False) -> Tensor:
        """Read image files into the model's input format.

        Digits runs turn any picture of a digit into the 8x8 grey format (see
        :func:`attnkit.data.images.read_digit_image`); other runs resize to the model's size and
        need the model's channel count unless ``convert``.

        Returns:
            float images in [0, 1]. Shapes: (B, C, H, W).

        Raises:
            DataError: an unreadable file or a wrong channel count; the message names the file.
        """
        if not paths:
            raise ValueError("no images given; pass one or more image files")
        m = self.model.config
        if self.digits_format:
            return torch.stack([read_digit_image(p) for p in paths])  # (B, 1, 8, 8)
        return to_float(
            torch.stack([read_image(p, m.image_size, m.in_channels, convert) for p in paths])
        )  # (B, C, H, W)

    def _batch(self, images: ImageInput, convert: bool) -> tuple[Tensor, list[str]]:
        if isinstance(images, Tensor):
            batch = images[None] if images.dim() == 3 else images  # (B, C, H, W)
            return to_float(batch), [f"image {i}" for i in range(len(batch))]
        return self.read_images(images, convert), [str(p) for p in images]

    @torch.inference_mode()
    def probabilities(self, images: ImageInput, convert: bool = False) -> Tensor:
        """Class probabilities. Shapes: (B, C, H, W) or B files -> (B, classes)."""
        batch, _ = self._batch(images, convert)
        logits, _ = self.model(batch.to(self.device))  # (B, classes)
        return logits.float().softmax(-1).cpu()

    def classify(
        self, images: ImageInput, top_k: int = 1, convert: bool = False
    ) -> list[Prediction]:
        """The ``top_k`` most probable classes of every image (files or a float tensor)."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        batch, names = self._batch(images, convert)
        probs = self.probabilities(batch)  # (B, classes)
        best = probs.topk(min(top_k, probs.shape[1]), dim=-1)
        return [
            Prediction(name, [self.classes[i] for i in idx.tolist()], p.tolist(), idx.tolist())
            for name, p, idx in zip(names, best.values, best.indices, strict=True)
        ]

    def evaluate(self, data: ImageSet, batch_size: int = 256) -> dict[str, float]:
        """Loss and accuracy on labelled images (e.g. the run's test split)."""
        return evaluate_images(self.model, data, batch_size, self.device)

    @torch.no_grad()  # not inference_mode: the maps stay usable in autograd (e.g. as targets)
    def attention_maps(self, images: ImageInput, convert: bool = False) -> list[AttentionMaps]:
        """Per-head attention of the last layer and attention rollout, one entry per image."""
        batch, names = self._batch(images, convert)
        logits, weights = self.model(batch.to(self.device), need_weights=True)
        assert weights is not None
        gh, gw = self.model.grid_size
        size = tuple(batch.shape[-2:])
        mean_pool = self.model.config.pool == "mean"
        last = weights[-1].float()  # (B, heads, T, T), T = 1 + N
        heads = last[:, :, 1:, 1:].mean(2) if mean_pool else last[:, :, 0, 1:]  # (B, heads, N)
        rolled = attention_rollout(weights).float()  # (B, T, T)
        rollout = rolled[:, 1:, 1:].mean(1) if mean_pool else rolled[:, 0, 1:]  # (B, N)
        heads = heads.reshape(len(batch), -1, gh, gw).cpu()  # (B, heads, gh, gw)
        rollout = rollout.reshape(len(batch), 1, gh, gw).cpu()  # (B, 1, gh, gw)
        probs = logits.float().softmax(-1).cpu()  # (B, classes)
        out = []
        for i, name in enumerate(names):
            k = int(probs[i].argmax())
            pred = Prediction(name, [self.classes[k]], [float(probs[i, k])], [k])
            out.append(
                AttentionMaps(
                    batch[i].cpu(),
                    _upsample(heads[i], size),
                    _upsample(rollout[i], size)[0],
                    heads[i],
                    rollout[i, 0],
                    pred,
                )
            )
        return out


def _upsample(grid: Tensor, size: tuple[int, ...]) -> Tensor:
    """Bilinear upsampling, each map scaled to max 1. Shapes: (K, gh, gw) -> (K, H, W)."""
    up = F.interpolate(grid[None], size=size, mode="bilinear", align_corners=False)[0]
    peak = up.flatten(1).amax(1).clamp_min(1e-12)  # (K,)
    return up / peak[:, None, None]

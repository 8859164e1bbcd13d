"""Training entry point of image-classification runs (the Vision Transformer).

A run folder holds ``config.json``, ``metrics.jsonl``, ``curves.png`` and ``checkpoints/`` (see
:mod:`attnkit.training.runfolder`); use a trained run with
:class:`attnkit.vision.classifier.Classifier`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnkit.config import TrainConfig, ViTConfig
from attnkit.models.size import check_model_size
from attnkit.models.vit import VisionTransformer
from attnkit.training.runs import train_run
from attnkit.training.trainer import TrainResult
from attnkit.vision.classifier import Classifier
from attnkit.vision.config import VisionRunConfig, load_vision_config, vision_config_dict
from attnkit.vision.data import ImageData, load_image_data
from attnkit.vision.task import ClassificationTask

__all__ = ["VisionRecipe", "train_classifier"]


def _model_config(model: ViTConfig, data: ImageData) -> ViTConfig:
    """``model`` with image size, channels and classes taken from the data."""
    return dataclasses.replace(
        model,
        image_size=data.train.image_size[0],
        in_channels=data.train.channels,
        num_classes=len(data.classes),
    )


class VisionRecipe:
    """How :func:`attnkit.training.runs.train_run` trains an image-classification run."""

    train_command = "attnkit train-vit"
    curve_scores = ("valid_accuracy",)

    def load_config(self, run_dir: Path) -> VisionRunConfig:
        return load_vision_config(run_dir)[0]

    def train_config(self, cfg: VisionRunConfig) -> TrainConfig:
        return cfg.train

    def with_train_config(self, cfg: VisionRunConfig, train: TrainConfig) -> VisionRunConfig:
        return dataclasses.replace(cfg, train=train)

    def prepare(self, cfg: VisionRunConfig, run_dir: Path, first: bool) -> ImageData:
        return load_image_data(cfg.data, download=first)  # rank 0 downloads, the others read

    def build(self, cfg: VisionRunConfig, data: ImageData) -> tuple[VisionRunConfig, nn.Module]:
        cfg = dataclasses.replace(cfg, model=_model_config(cfg.model, data))
        check_model_size(cfg.model, "the model section", fix="choose smaller model sizes")
        return cfg, VisionTransformer(cfg.model)

    def config_dict(self, cfg: VisionRunConfig, data: ImageData) -> dict[str, Any]:
        return vision_config_dict(cfg, data.classes)

    def task(
        self, cfg: VisionRunConfig, data: ImageData, device: torch.device
    ) -> ClassificationTask:
        return ClassificationTask(
            data.train,
            data.valid,
            batch_size=cfg.data.batch_size,
            seed=cfg.data.seed,
            label_smoothing=cfg.train.label_smoothing,
            crop_padding=cfg.data.crop_padding,
            hflip=cfg.data.hflip,
            device=device,
        )


def train_classifier(
    cfg: VisionRunConfig | None,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = False,
    train_overrides: dict[str, Any] | None = None,
) -> tuple[TrainResult, Classifier]:
    """Train (or resume) a ViT image classifier in ``run_dir``; return the result and classifier.

    With ``resume`` the stored configuration is used and ``train_overrides`` may change the
    fields in :data:`~attnkit.training.runfolder.RESUMABLE_TRAIN_FIELDS` (saved in
    config.json), as for :func:`attnkit.translation.run.train_translator`. The returned
    classifier holds the final weights; ``Classifier.load(run_dir)`` loads the best checkpoint
    (lowest validation loss).

    Args:
        cfg: the run's configuration (None when resuming).
        run_dir: the run folder (must not hold a run unless ``resume``).
        resume: continue the run in ``run_dir`` from its last checkpoint, exactly.
        progress: show a progress bar.
        train_overrides: train settings changed on resume (e.g. ``{"epochs": 80}``).

    Returns:
        ``(result, classifier)``: the trainer's :class:`~attnkit.training.trainer.TrainResult`
        (its ``tokens_per_second`` counts images) and the trained model with its class names.
    """
    run = train_run(
        VisionRecipe(),
        cfg,
        run_dir,
        resume=resume,
        progress=progress,
        train_overrides=train_overrides,
    )
    return run.result, Classifier(run.model, run.config, run.data.classes)

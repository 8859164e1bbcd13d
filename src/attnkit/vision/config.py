"""Configuration of image-classification runs: the data section, the run config, presets per data
set, and reading a run folder's ``config.json``.

``config.json`` of such a run (see :mod:`attnkit.training.runfolder`) holds the sections ``task``
(``"classification"``), ``model`` (:class:`~attnkit.config.ViTConfig`, with image size, channels
and classes filled in from the data), ``data`` (:class:`ImageDataConfig`), ``train``
(:class:`~attnkit.config.TrainConfig`) and ``classes`` (the class names).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from attnkit.config import ConfigError, TrainConfig, ViTConfig, from_dict, section, to_dict
from attnkit.models.size import check_model_size
from attnkit.training.runfolder import read_run_config, stored_config, wrong_kind

__all__ = [
    "BUILTIN_DATA",
    "ImageDataConfig",
    "VisionRunConfig",
    "VISION_PRESETS",
    "vision_preset",
    "vision_config_from_dict",
    "load_vision_config",
    "vision_config_dict",
]

#: Built-in data set names; anything else is a folder of images, one sub-folder per class.
BUILTIN_DATA = ("digits", "mnist", "cifar10")
#: ViTConfig fields that come from the data, never from the user.
DERIVED_MODEL_FIELDS = ("image_size", "in_channels", "num_classes")


@dataclass(frozen=True)
class ImageDataConfig:
    """Where the images come from, how they are split, batched and augmented.

    ``source``: ``digits`` (scikit-learn's 8x8 digits, offline), ``mnist``, ``cifar10``
    (downloaded once into ``root``, default ``~/.cache/attnkit``) or a folder with one sub-folder of
    images per class. ``image_size``, ``channels`` and ``convert`` apply to folders only (every
    image is resized to a square of ``image_size`` and must have ``channels`` channels unless
    ``convert``). Augmentation of training batches: ``crop_padding`` (random crop of the
    zero-padded image) and ``hflip`` (random mirror; not for digits or text).
    """

    source: str = "digits"
    root: str | None = None
    image_size: int = 32
    channels: int = 3
    convert: bool = False
    test_fraction: float = 0.2
    valid_fraction: float = 0.1
    batch_size: int = 64
    crop_padding: int = 0
    hflip: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        checks = (
            (
                bool(self.source),
                "ImageDataConfig.source is empty; use digits, mnist, cifar10 or a folder path",
            ),
            (self.image_size > 0, f"ImageDataConfig.image_size must be > 0, got {self.image_size}"),
            (
                self.channels in (1, 2, 3, 4),
                f"ImageDataConfig.channels must be 1, 2, 3 or 4, got {self.channels}",
            ),
            (
                0.0 < self.test_fraction < 1.0,
                f"ImageDataConfig.test_fraction must be in (0, 1), got {self.test_fraction}",
            ),
            (
                0.0 <= self.valid_fraction < 1.0,
                f"ImageDataConfig.valid_fraction must be in [0, 1), got {self.valid_fraction}",
            ),
            (self.batch_size > 0, f"ImageDataConfig.batch_size must be > 0, got {self.batch_size}"),
            (
                self.crop_padding >= 0,
                f"ImageDataConfig.crop_padding must be >= 0, got {self.crop_padding}",
            ),
        )
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


@dataclass(frozen=True)
class VisionRunConfig:
    """Everything needed to rebuild an image-classification run from its folder."""

    model: ViTConfig = field(default_factory=ViTConfig)
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


_TRAIN = {
    "schedule": "cosine",
    "betas": [0.9, 0.999],
    "weight_decay": 0.05,
    "label_smoothing": 0.1,
    "clip_norm": 1.0,
    "log_every": 20,
    "keep_best": 1,
}

#: Defaults per data set, merged under the user's config file and ``--set`` overrides.
#: ``digits`` reaches 98-99 % test accuracy in about 40 s of training on one busy CPU core (see
#: benchmarks/RESULTS.md; random crops hurt these 8x8 digits, which fill their frame); the others
#: are untuned starting points sized for a GPU.
VISION_PRESETS: dict[str, dict[str, Any]] = {
    "digits": {
        "model": {
            "patch_size": 2,
            "d_model": 64,
            "num_layers": 2,
            "num_heads": 4,
            "ffn_hidden": 128,
            "dropout": 0.1,
        },
        "data": {"batch_size": 64},
        "train": {**_TRAIN, "epochs": 60, "lr": 2e-3, "warmup_steps": 50},
    },
    "mnist": {
        "model": {
            "patch_size": 4,
            "d_model": 128,
            "num_layers": 6,
            "num_heads": 4,
            "ffn_hidden": 256,
            "dropout": 0.1,
        },
        "data": {"batch_size": 128, "crop_padding": 2, "valid_fraction": 0.05},
        "train": {**_TRAIN, "epochs": 15, "lr": 1e-3, "warmup_steps": 500},
    },
    "cifar10": {
        "model": {
            "patch_size": 4,
            "d_model": 192,
            "num_layers": 6,
            "num_heads": 6,
            "ffn_hidden": 384,
            "dropout": 0.1,
        },
        "data": {"batch_size": 128, "crop_padding": 4, "hflip": True, "valid_fraction": 0.05},
        "train": {**_TRAIN, "epochs": 100, "lr": 1e-3, "warmup_steps": 2000},
    },
    "folder": {
        "model": {
            "patch_size": 4,
            "d_model": 128,
            "num_layers": 6,
            "num_heads": 4,
            "ffn_hidden": 256,
            "dropout": 0.1,
        },
        "data": {"batch_size": 64, "crop_padding": 2},
        "train": {**_TRAIN, "epochs": 50, "lr": 1e-3, "warmup_steps": 200},
    },
}


def vision_preset(source: str) -> dict[str, Any]:
    """A copy of the preset for ``source`` (``folder`` for any path), with ``data.source`` set."""
    preset = copy.deepcopy(VISION_PRESETS[source if source in BUILTIN_DATA else "folder"])
    preset["data"]["source"] = source
    return preset


def vision_config_from_dict(data: dict[str, Any]) -> VisionRunConfig:
    """Validate a nested ``{"model", "data", "train"}`` dict (unknown keys are errors).

    ``model.image_size``, ``model.in_channels`` and ``model.num_classes`` come from the data and
    may not be given (set ``data.image_size`` / ``data.channels`` for an image folder).
    """
    unknown = sorted(set(data) - {"model", "data", "train"})
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}; known: model, data, train")
    given = sorted(set(section(data, "model")) & set(DERIVED_MODEL_FIELDS))
    if given:
        raise ConfigError(
            f"model.{given[0]} is set by the data; remove it (for an image folder "
            "set data.image_size or data.channels instead)"
        )
    cfg = from_dict(VisionRunConfig, data, "")
    folder_only = ("image_size", "channels", "convert")  # (recorded, unused: misleading)
    defaults = {f.name: f.default for f in fields(ImageDataConfig)}
    changed = [k for k in folder_only if getattr(cfg.data, k) != defaults[k]]
    if cfg.data.source in BUILTIN_DATA and changed:
        raise ConfigError(
            f"data.{changed[0]} applies to image folders; {cfg.data.source} images keep their "
            "own size and channels: remove it"
        )
    return cfg


def load_vision_config(run_dir: str | Path) -> tuple[VisionRunConfig, list[str]]:
    """Read an image-classification run's config and class names from ``run_dir/config.json``."""
    raw = read_run_config(run_dir, train_command="attnkit train-vit")
    if raw.get("task") != "classification":
        raise wrong_kind(run_dir, raw.get("task", "translation"), "classification")
    classes = raw.get("classes")
    if not isinstance(classes, list) or not classes:
        raise ConfigError(f"{run_dir}/config.json has no class names; retrain the run")
    sections = {k: raw[k] for k in ("model", "data", "train") if k in raw}
    with stored_config(run_dir):
        cfg = from_dict(VisionRunConfig, sections, "")
        check_model_size(cfg.model, "model")
    return cfg, [str(c) for c in classes]


def vision_config_dict(cfg: VisionRunConfig, classes: list[str]) -> dict[str, Any]:
    return {
        "task": "classification",
        "model": to_dict(cfg.model),
        "data": to_dict(cfg.data),
        "train": to_dict(cfg.train),
        "classes": list(classes),
    }

"""The images of an image-classification run, split into train / valid / test.

Splits: digits and image folders hold out ``test_fraction`` of the images (stratified) as the test
set; MNIST and CIFAR-10 use their official test sets. ``valid_fraction`` of the remaining training
images is held out for validation, which picks the best checkpoints, so the test set stays unseen
until the end (``valid_fraction=0`` validates on the test set instead, with a warning).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from attnkit.data.errors import DataError
from attnkit.data.images import ImageSet, load_digits_dataset, load_image_folder, stratified_split
from attnkit.vision.config import ImageDataConfig

__all__ = ["ImageData", "load_image_data"]

log = logging.getLogger(__name__)


@dataclass
class ImageData:
    """The three splits of a run's data (same class list)."""

    train: ImageSet
    valid: ImageSet
    test: ImageSet

    @property
    def classes(self) -> list[str]:
        return self.train.classes


def load_image_data(cfg: ImageDataConfig, download: bool = True) -> ImageData:
    """Load ``cfg.source`` and split it into train / valid / test (deterministic in ``cfg.seed``).

    Raises:
        DataError: missing files or folders, images that cannot be read (naming the file).
    """
    if cfg.source == "digits":
        train, test = load_digits_dataset(cfg.seed, cfg.test_fraction)
    elif cfg.source in ("mnist", "cifar10"):
        from attnkit.data.image_datasets import load_cifar10, load_mnist

        loader = load_mnist if cfg.source == "mnist" else load_cifar10
        train = loader("train", root=cfg.root, download=download)
        test = loader("test", root=cfg.root, download=download)
    else:
        path = Path(cfg.source).expanduser()
        if not path.is_dir():
            raise DataError(
                f"--data {cfg.source!r}: not digits, mnist, cifar10 or a folder of "
                "images (one sub-folder per class)"
            )
        every = load_image_folder(path, cfg.image_size, cfg.channels, cfg.convert)
        if len(every.classes) < 2:
            raise DataError(
                f"{path}: one class folder ({every.classes[0]!r}); a classifier needs at least "
                "two (one sub-folder per class)"
            )
        train_idx, test_idx = stratified_split(every.labels, cfg.test_fraction, cfg.seed)
        train, test = every.subset(train_idx), every.subset(test_idx)
    if train.image_size[0] != train.image_size[1]:
        raise DataError(
            f"{cfg.source}: images are {train.image_size[0]}x{train.image_size[1]}; "
            "the ViT needs square images"
        )
    if cfg.valid_fraction == 0.0:
        log.warning(
            "data.valid_fraction=0: validating on the test set, so the best checkpoint "
            "is chosen on the test set, whose accuracy is then no longer held out"
        )
        data = ImageData(train, test, test)
        _check_splits(data, cfg.source)
        return data
    train_idx, valid_idx = stratified_split(train.labels, cfg.valid_fraction, cfg.seed + 1)
    data = ImageData(train.subset(train_idx), train.subset(valid_idx), test)
    _check_splits(data, cfg.source)
    return data


def _check_splits(data: ImageData, source: str) -> None:
    """A DataError when a split has no images: its scores would be measured on nothing."""
    sizes = {"training": len(data.train.labels), "validation": len(data.valid.labels)}
    sizes["test"] = len(data.test.labels)
    empty = [name for name, size in sizes.items() if size == 0]
    if empty:
        shared = data.valid is data.test  # (valid_fraction=0: validation on the test set)
        total = sum(sizes.values()) - (sizes["test"] if shared else 0)
        splits = "training and test" if shared else "training, validation and test"
        least = 2 if shared else 3
        raise DataError(
            f"{source}: too few images ({total}) for a {' and a '.join(empty)} split; give "
            f"each class at least {least} images (one each for {splits})"
        )

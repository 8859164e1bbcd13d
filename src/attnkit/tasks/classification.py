"""Image classification with the Vision Transformer: data splits, the trainer task, and training
into a run folder.

The run's configuration and presets are in :mod:`attnkit.tasks.vision_config`; a run folder holds
``config.json``, ``metrics.jsonl``, ``curves.png`` and ``checkpoints/`` (see
:mod:`attnkit.tasks.rundir`). Use a trained run with :class:`attnkit.tasks.classifier.Classifier`.

Splits: digits and image folders hold out ``test_fraction`` of the images (stratified) as the test
set; MNIST and CIFAR-10 use their official test sets. ``valid_fraction`` of the remaining training
images is held out for validation, which picks the best checkpoints, so the test set stays unseen
until the end (``valid_fraction=0`` validates on the test set instead, with a warning).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.config import ConfigError, ViTConfig
from attnkit.data.errors import DataError
from attnkit.data.images import (
    ImageSet,
    augment_batch,
    image_batches,
    load_digits_dataset,
    load_image_folder,
    num_batches,
    stratified_split,
)
from attnkit.models.vit import VisionTransformer
from attnkit.tasks.rundir import (
    resumed_train_config,
    start_or_resume,
    write_curves,
    write_run_config,
)
from attnkit.tasks.vision_config import (
    ImageDataConfig,
    VisionRunConfig,
    load_vision_config,
    vision_config_dict,
)
from attnkit.training import distributed as dist
from attnkit.training.trainer import Trainer, TrainResult, resolve_device

if TYPE_CHECKING:
    from attnkit.tasks.classifier import Classifier

__all__ = [
    "ImageData",
    "load_image_data",
    "ClassificationTask",
    "evaluate_images",
    "train_classifier",
]

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------ data


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
        return ImageData(train, test, test)
    train_idx, valid_idx = stratified_split(train.labels, cfg.valid_fraction, cfg.seed + 1)
    return ImageData(train.subset(train_idx), train.subset(valid_idx), test)


def _model_config(model: ViTConfig, data: ImageData) -> ViTConfig:
    """``model`` with image size, channels and classes taken from the data."""
    return dataclasses.replace(
        model,
        image_size=data.train.image_size[0],
        in_channels=data.train.channels,
        num_classes=len(data.classes),
    )


# ------------------------------------------------------------------------------------ task


def evaluate_images(
    model: nn.Module, data: ImageSet, batch_size: int = 256, device: torch.device | None = None
) -> dict[str, float]:
    """Mean cross-entropy (no smoothing) and top-1 accuracy of ``model`` on ``data``.

    The model is used as it is (call ``model.eval()`` first for dropout-free numbers).
    """
    device = device or next(model.parameters()).device
    total, correct = 0.0, 0
    with torch.inference_mode():
        for images, labels in image_batches(data, batch_size, shuffle=False):
            labels = labels.to(device)
            logits, _ = model(images.to(device))  # (b, classes)
            total += float(F.cross_entropy(logits.float(), labels, reduction="sum"))
            correct += int((logits.argmax(-1) == labels).sum())
    n = max(len(data), 1)
    return {"loss": total / n, "accuracy": correct / n}


class ClassificationTask:
    """Image classification for the shared :class:`~attnkit.training.trainer.Trainer`.

    Training batches are shuffled per epoch (seeded), augmented with a generator seeded by
    (seed, epoch, batch, rank) so that a resumed run sees the same images, and sharded over DDP
    ranks. Validation reports loss and accuracy. The validation loss picks the best checkpoints by
    default: accuracy on a small validation set moves in coarse steps (one image of the digits'
    143 is 0.7 %) and its ties keep the earliest checkpoint, which made it a noisy choice.

    Args:
        train: training images.
        valid: validation images.
        batch_size: images per optimizer step over all processes.
        seed: data-order and augmentation seed.
        label_smoothing: epsilon of the training loss.
        crop_padding: random-crop padding in pixels (0: none).
        hflip: random horizontal flips.
        device: where batches go (default CPU).
        metric: ``"loss"`` (lower is better) or ``"accuracy"`` to select checkpoints by.
    """

    def __init__(
        self,
        train: ImageSet,
        valid: ImageSet,
        batch_size: int,
        seed: int = 0,
        label_smoothing: float = 0.0,
        crop_padding: int = 0,
        hflip: bool = False,
        device: torch.device | str | None = None,
        metric: str = "loss",
    ) -> None:
        if metric not in ("loss", "accuracy"):
            raise ValueError(
                f"ClassificationTask: metric must be 'loss' or 'accuracy', got {metric!r}"
            )
        self.metric, self.mode = metric, ("min" if metric == "loss" else "max")
        self.train, self.valid, self.batch_size, self.seed = train, valid, batch_size, seed
        self.label_smoothing, self.crop_padding, self.hflip = label_smoothing, crop_padding, hflip
        self.device = torch.device(device or "cpu")
        self.rank, self.world = dist.rank(), dist.world_size()
        self.epoch, self.position = 0, 0  # batches already yielded in this epoch (resume)

    def batches_per_epoch(self) -> int:
        """Optimizer-step batches per epoch (the same on every rank)."""
        return num_batches(len(self.train), self.batch_size, self.world)

    def train_batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """This rank's augmented training batches of ``epoch``, from where a resume left off.

        Shapes: images (b, C, H, W) float in [0, 1], labels (b,), on the task's device.
        """
        start = self.position if epoch == self.epoch else 0
        self.epoch, self.position = epoch, start
        batches = image_batches(
            self.train,
            self.batch_size,
            seed=self.seed,
            epoch=epoch,
            start=start,
            rank=self.rank,
            world_size=self.world,
        )
        for images, labels in batches:
            if self.crop_padding or self.hflip:
                key = ((self.seed * 1_000_003 + epoch) * 1_000_003 + self.position) * 64
                generator = torch.Generator().manual_seed(key + self.rank)
                images = augment_batch(images, self.crop_padding, self.hflip, generator)
            self.position += 1
            yield images.to(self.device), labels.to(self.device)

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, int]:
        """Summed (label-smoothed) cross-entropy over the batch and the number of images.

        Shapes: images (B, C, H, W), labels (B,) -> a scalar and an int.
        """
        images, labels = batch
        logits, _ = model(images)  # (B, classes)
        loss = F.cross_entropy(
            logits.float(), labels, reduction="sum", label_smoothing=self.label_smoothing
        )
        return loss, len(labels)

    def tokens(self, batch: tuple[Tensor, Tensor]) -> int:
        """Images: the throughput unit."""
        return len(batch[1])

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation ``loss`` and ``accuracy``."""
        return evaluate_images(model, self.valid, device=self.device)

    def state_dict(self) -> dict[str, Any]:
        """The data position (epoch, batches done) saved in checkpoints for an exact resume."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = state["epoch"], state["position"]


# ------------------------------------------------------------------------------------ runs


def train_classifier(
    cfg: VisionRunConfig | None,
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = False,
    train_overrides: dict[str, Any] | None = None,
) -> tuple[TrainResult, Classifier]:
    """Train (or resume) a ViT image classifier in ``run_dir``; return the result and classifier.

    With ``resume`` the stored configuration is used and ``train_overrides`` may change the
    fields in :data:`~attnkit.tasks.rundir.RESUMABLE_TRAIN_FIELDS` (saved in config.json), as for
    :func:`attnkit.tasks.runs.train_translator`. The returned classifier holds the final weights;
    ``Classifier.load(run_dir)`` loads the best checkpoint (lowest validation loss).

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
    from attnkit.tasks.classifier import Classifier

    run_dir = Path(run_dir)
    ckpt = start_or_resume(run_dir, resume)
    if resume:
        cfg, _ = load_vision_config(run_dir)
        cfg = dataclasses.replace(cfg, train=resumed_train_config(cfg.train, train_overrides))
    elif cfg is None:
        raise ConfigError("train_classifier needs a VisionRunConfig unless resume=True")
    device = resolve_device(cfg.train.device)
    dist.init_from_env(device.type)
    if dist.is_main():  # rank 0 downloads; the others wait and read the cached files
        data = load_image_data(cfg.data)
    dist.barrier()
    if not dist.is_main():
        data = load_image_data(cfg.data, download=False)
    cfg = dataclasses.replace(cfg, model=_model_config(cfg.model, data))
    torch.manual_seed(cfg.train.seed)
    model = VisionTransformer(cfg.model)
    config_dict = vision_config_dict(cfg, data.classes)
    if dist.is_main() and (not resume or train_overrides):
        write_run_config(run_dir, config_dict)
    task = ClassificationTask(
        data.train,
        data.valid,
        cfg.data.batch_size,
        cfg.data.seed,
        cfg.train.label_smoothing,
        cfg.data.crop_padding,
        cfg.data.hflip,
        device,
    )
    trainer = Trainer(model, task, cfg.train, run_dir, run_config=config_dict, progress=progress)
    if ckpt is not None:
        trainer.resume(ckpt)
    result = trainer.fit()
    if dist.is_main():
        write_curves(run_dir, scores=["valid_accuracy"])
    return result, Classifier(model, cfg, data.classes)

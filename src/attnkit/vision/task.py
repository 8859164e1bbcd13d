"""Image classification as a trainer task: shuffled, augmented, sharded batches; loss and
accuracy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.data.images import ImageSet, augment_batch, image_batches, num_batches
from attnkit.training import distributed as dist

__all__ = ["ClassificationTask", "evaluate_images"]


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
        *,
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

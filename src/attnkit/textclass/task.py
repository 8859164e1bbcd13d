"""Fine-tuning as a trainer task: length-bucketed batches, the loss, validation metrics, and
the optimizer's parameter groups (layer-wise learning rates, frozen layers)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.data.batching import TokenBucketSampler
from attnkit.data.fingerprint import DataIdentity
from attnkit.evaluation.classification import confusion_matrix, macro_f1, pearson, spearman
from attnkit.textclass.data import LengthBuckets, pad_batch
from attnkit.training import distributed as dist

__all__ = [
    "TextBatch",
    "TextClassTask",
    "depth_param_groups",
    "freeze_lower_layers",
    "length_batches",
    "predict_outputs",
    "score_outputs",
]


@dataclass
class TextBatch:
    """Shapes: ids (B, S) long, mask (B, S) bool (True = real token), targets (B,) long class
    indices or float values."""

    ids: Tensor
    mask: Tensor
    targets: Tensor

    def __len__(self) -> int:
        return self.ids.shape[0]


def freeze_lower_layers(model: nn.Module, n: int) -> None:
    """Freeze the embeddings and the lowest ``n`` layers of ``model`` (``n`` = 0: nothing).

    ``model.depths()`` lists its modules by depth: embeddings, layers bottom to top, head.
    """
    depths = model.depths()  # type: ignore[operator]
    layers = len(depths) - 2
    if not 0 <= n <= layers:
        raise ValueError(f"freeze_layers must be in [0, {layers}] (the backbone's layers), got {n}")
    if n == 0:
        return
    for modules in depths[: n + 1]:
        for module in modules:
            module.requires_grad_(False)


def depth_param_groups(
    model: nn.Module, lr: float, weight_decay: float, layer_lr_decay: float = 1.0
) -> list[dict[str, Any]]:
    """AdamW parameter groups with layer-wise learning rates, the head's first.

    With ``model.depths()`` = [embeddings, layer 1..L, head] (depth d = 0..L+1), depth d gets
    ``lr * layer_lr_decay ** (L + 1 - d)``. Within a depth, Linear weight matrices take
    ``weight_decay``, everything else (biases, norms, embeddings) none. Frozen parameters
    (``requires_grad`` False) and empty groups are left out.

    Returns:
        ``[{"params", "weight_decay", "lr"}, ...]`` from the top depth down.
    """
    depths = model.depths()  # type: ignore[operator]
    top = len(depths) - 1
    groups: list[dict[str, Any]] = []
    seen: set[int] = set()
    for depth in range(top, -1, -1):
        decay, no_decay = [], []
        for root in depths[depth]:
            for module in root.modules():
                for name, param in module.named_parameters(recurse=False):
                    if not param.requires_grad or id(param) in seen:
                        continue
                    seen.add(id(param))
                    matrix = isinstance(module, nn.Linear) and name == "weight"
                    (decay if matrix else no_decay).append(param)
        rate = lr * layer_lr_decay ** (top - depth)
        groups += [
            {"params": params, "weight_decay": wd, "lr": rate}
            for params, wd in ((decay, weight_decay), (no_decay, 0.0))
            if params
        ]
    missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in seen]
    if missing:
        raise ValueError(f"parameters outside model.depths(): {missing[:5]}")
    return groups


def length_batches(lengths: Sequence[int], size: int) -> list[list[int]]:
    """Evaluation batches: indices sorted by length (longest first), ``size`` each."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[k : k + size] for k in range(0, len(order), size)]


@torch.inference_mode()
def predict_outputs(
    model: nn.Module,
    ids: Sequence[Sequence[int]],
    *,
    pad_id: int,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    shard: tuple[int, int] = (0, 1),
) -> dict[int, Tensor]:
    """The model's outputs for encoded texts, batched by length.

    Args:
        model: a :class:`~attnkit.textclass.model.TextClassificationModel` (or DDP of one).
        ids: N id lists.
        pad_id: padding id.
        batch_size: texts per forward pass.
        device: where to run.
        shard: ``(rank, world)``: only batches ``k`` with ``k % world == rank``.

    Returns:
        ``{index: outputs (num_outputs,) float32 on the CPU}`` for the texts of this shard.
    """
    out: dict[int, Tensor] = {}
    for k, index in enumerate(length_batches([len(x) for x in ids], batch_size)):
        if k % shard[1] != shard[0]:
            continue
        batch_ids, mask = pad_batch([ids[i] for i in index], pad_id)
        logits = model(batch_ids.to(device), mask.to(device)).float().cpu()  # (b, C)
        out.update(zip(index, logits, strict=True))
    return out


def score_outputs(outputs: Tensor, targets: Tensor, problem: str) -> dict[str, Any]:
    """Loss and scores of outputs against targets.

    Args:
        outputs: (N, C) logits, or (N, 1) regression values.
        targets: (N,) class indices or values.
        problem: ``classification`` or ``regression``.

    Returns:
        classification: ``loss`` (mean cross-entropy), ``accuracy``, ``macro_f1`` and
        ``confusion`` (C x C nested list; rows true, columns predicted); regression: ``loss``
        (mean squared error), ``pearson``, ``spearman``.
    """
    if problem == "regression":
        values = outputs[:, 0].double()
        y = targets.double()
        return {
            "loss": float(F.mse_loss(values, y)),
            "pearson": pearson(values.numpy(), y.numpy()),
            "spearman": spearman(values.numpy(), y.numpy()),
        }
    predicted = outputs.argmax(-1).numpy()
    y_true = targets.numpy()
    classes = outputs.shape[1]
    return {
        "loss": float(F.cross_entropy(outputs.double(), targets)),
        "accuracy": float(np.mean(predicted == y_true)) if len(y_true) else 0.0,
        "macro_f1": macro_f1(y_true, predicted, classes),
        "confusion": confusion_matrix(y_true, predicted, classes).tolist(),
    }


class TextClassTask:
    """Sentence classification (or regression) for the shared
    :class:`~attnkit.training.trainer.Trainer`.

    Args:
        train_ids: encoded training texts.
        train_targets: their targets (N,).
        valid_ids: encoded validation texts.
        valid_targets: their targets (N,).
        problem: ``classification`` or ``regression``.
        pad_id: padding id.
        batch_size: sentences per optimizer step over all processes.
        max_tokens: instead of ``batch_size``: padded tokens per step
            (:class:`~attnkit.data.batching.TokenBucketSampler`).
        bucket: length-bucketed batches (False: random ones).
        bucket_batches: batches per length-sorted chunk.
        eval_batch_size: sentences per validation forward pass.
        seed: data-order seed.
        label_smoothing: epsilon of the training loss (classification).
        metric: the validation metric that picks the best checkpoint.
        mode: its direction (``max`` or ``min``).
        lr: learning rate, for :meth:`param_groups`.
        layer_lr_decay: lr factor per layer down the stack, for :meth:`param_groups`.
        device: where batches go.
    """

    def __init__(
        self,
        train_ids: Sequence[Sequence[int]],
        train_targets: Tensor,
        valid_ids: Sequence[Sequence[int]],
        valid_targets: Tensor,
        *,
        problem: str,
        pad_id: int,
        batch_size: int,
        max_tokens: int | None = None,
        bucket: bool = True,
        bucket_batches: int = 100,
        eval_batch_size: int = 128,
        seed: int = 0,
        label_smoothing: float = 0.0,
        metric: str = "accuracy",
        mode: str = "max",
        lr: float = 1e-4,
        layer_lr_decay: float = 1.0,
        device: torch.device | str = "cpu",
    ) -> None:
        self.train_ids, self.train_targets = list(train_ids), train_targets
        self.valid_ids, self.valid_targets = list(valid_ids), valid_targets
        self.problem, self.pad_id = problem, pad_id
        self.eval_batch_size, self.label_smoothing = eval_batch_size, label_smoothing
        self.metric, self.mode = metric, mode
        self.lr, self.layer_lr_decay = lr, layer_lr_decay
        self.device = torch.device(device)
        texts = f"{len(self.train_ids):,} training and {len(self.valid_ids):,} validation texts"
        self.data_identity = DataIdentity.of(
            texts, self.train_ids, train_targets, self.valid_ids, valid_targets
        )
        lengths = [len(x) for x in self.train_ids]
        self.sampler: LengthBuckets | TokenBucketSampler
        if max_tokens is not None:
            self.sampler = TokenBucketSampler(
                lengths,
                max_tokens,
                shuffle=True,
                seed=seed,
                num_replicas=dist.world_size(),
                rank=dist.rank(),
                chunk_size=None if bucket else 1,
            )
        else:
            self.sampler = LengthBuckets(
                lengths,
                batch_size,
                bucket=bucket,
                seed=seed,
                chunk_batches=bucket_batches,
                num_replicas=dist.world_size(),
                rank=dist.rank(),
            )

    def batches_per_epoch(self) -> int:
        return len(self.sampler)

    def train_batches(self, epoch: int) -> Iterator[TextBatch]:
        """This rank's batches of ``epoch`` from where a resume left off."""
        self.sampler.set_epoch(epoch)
        for index in self.sampler:
            ids, mask = pad_batch([self.train_ids[i] for i in index], self.pad_id)
            yield TextBatch(
                ids.to(self.device), mask.to(self.device), self.train_targets[index].to(self.device)
            )

    def loss(self, model: nn.Module, batch: TextBatch) -> tuple[Tensor, int]:
        """Summed cross-entropy (label-smoothed) or squared error, and the number of texts."""
        outputs = model(batch.ids, batch.mask).float()  # (B, C)
        if self.problem == "regression":
            loss = F.mse_loss(outputs[:, 0], batch.targets.float(), reduction="sum")
        else:
            loss = F.cross_entropy(
                outputs, batch.targets, reduction="sum", label_smoothing=self.label_smoothing
            )
        return loss, len(batch)

    def tokens(self, batch: TextBatch) -> int:
        """Sentences: the throughput unit."""
        return len(batch)

    def param_groups(self, model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
        """Layer-wise learning rates (see :func:`depth_param_groups`)."""
        return depth_param_groups(model, self.lr, weight_decay, self.layer_lr_decay)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation loss and accuracy + macro-F1 (classification) or Pearson + Spearman.

        Distributed: rank r scores every world-size-th batch and the outputs are gathered, so
        every rank returns the single-process numbers.
        """
        shard = (dist.rank(), dist.world_size())
        mine = predict_outputs(
            model,
            self.valid_ids,
            pad_id=self.pad_id,
            batch_size=self.eval_batch_size,
            device=self.device,
            shard=shard,
        )
        outputs: dict[int, Tensor] = {}
        for part in dist.all_gather_objects(mine):
            outputs.update(part)
        stacked = torch.stack([outputs[i] for i in range(len(self.valid_ids))])  # (M, C)
        scores = score_outputs(stacked, self.valid_targets.cpu(), self.problem)
        scores.pop("confusion", None)
        return scores

    def state_dict(self) -> dict[str, Any]:
        """The batch order's state, and what the data was (its fingerprint and size)."""
        return {"sampler": self.sampler.state_dict(), **self.data_identity.state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.data_identity.check(
            state,
            "resume with the files the run started with (data.source and data.valid in its "
            "config.json), or fine-tune a new run",
        )
        self.sampler.load_state_dict(state["sampler"])

"""Language modelling as a trainer task: random windows, the fused output projection + loss, and
validation loss, perplexity and bits per character."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from attnkit.data.fingerprint import DataIdentity
from attnkit.lm.data import TextData, bits_per_character, eval_windows, train_windows
from attnkit.training import distributed as dist
from attnkit.training.losses import linear_cross_entropy, perplexity

__all__ = ["LMObjective", "LMTask", "evaluate_stream"]


class LMObjective(nn.Module):
    """A :class:`~attnkit.models.DecoderLM` and its next-token loss as one module (what DDP and
    ``torch.compile`` wrap): :func:`~attnkit.training.losses.linear_cross_entropy` over
    ``model.hidden()`` and ``model.output_weight``, so no (B, T, V) logits are kept.

    Args:
        model: the language model (kept as ``self.model``).
        label_smoothing: eps of the training loss.
    """

    def __init__(self, model: nn.Module, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.model, self.label_smoothing = model, label_smoothing

    def forward(self, windows: Tensor) -> tuple[Tensor, int]:
        """Summed loss of predicting tokens 1..T of each window from the ones before.

        Shapes: windows (B, T + 1) -> ((), int).
        """
        hidden, _ = self.model.hidden(windows[:, :-1])  # (B, T, D)
        return linear_cross_entropy(
            hidden,
            self.model.output_weight,
            windows[:, 1:],
            pad_id=None,
            label_smoothing=self.label_smoothing,
        )


@torch.inference_mode()
def evaluate_stream(
    model: nn.Module,
    ids: Tensor,
    *,
    block_size: int,
    batch_size: int,
    chars: int | None = None,
    device: torch.device | None = None,
) -> dict[str, float]:
    """Loss, perplexity and bits per character of ``model`` on a token stream.

    Non-overlapping windows of ``block_size`` predict every token after the first once (the
    first is context only: e.g. the token before the validation text, or a line break; a
    window's first tokens see little context, as in training). Under DDP rank r takes every
    world-size-th batch and the sums are added in batch order, so every rank returns the
    single-process numbers.

    Args:
        model: a :class:`~attnkit.models.DecoderLM` (eval mode is the caller's business).
        ids: the token stream. Shapes: (N,) with N >= 2.
        block_size: window length (at most the model's ``max_len``).
        batch_size: windows per forward pass.
        chars: the characters of text that ``ids[1:]`` encode (default: N - 1).
        device: where to compute (default: the model's).

    Returns:
        ``{"loss": nats per token, "ppl": exp(loss), "bpc": bits per character}``.
    """
    device = device or next(model.parameters()).device
    rank, world = dist.rank(), dist.world_size()
    sums: dict[int, tuple[float, int]] = {}
    offsets = torch.arange(block_size + 1)
    for k, starts in enumerate(eval_windows(len(ids), block_size, batch_size)):
        if k % world != rank:
            continue
        width = min(block_size + 1, len(ids) - starts[0])
        windows = ids[torch.tensor(starts)[:, None] + offsets[:width]].to(device)  # (b, w)
        hidden, _ = model.hidden(windows[:, :-1])  # (b, w - 1, D)
        nats, count = linear_cross_entropy(hidden, model.output_weight, windows[:, 1:], pad_id=None)
        sums[k] = (float(nats), count)
    for part in dist.all_gather_objects(sums):
        sums.update(part)
    nats, count = 0.0, 0
    for k in sorted(sums):  # batch order: the single-process sum, bit for bit
        nats, count = nats + sums[k][0], count + sums[k][1]
    loss = nats / max(count, 1)
    return {
        "loss": loss,
        "ppl": perplexity(loss),
        "bpc": bits_per_character(nats, len(ids) - 1 if chars is None else chars),
    }


class LMTask:
    """Next-token prediction for the shared :class:`~attnkit.training.trainer.Trainer`.

    Each batch holds ``batch_size`` random windows of ``block_size + 1`` tokens (over all
    processes), drawn from (seed, epoch, position in the epoch) so that a resumed run sees the
    same windows (:func:`~attnkit.lm.data.train_windows`). An "epoch" is
    ``train tokens // (batch_size * block_size)`` batches. Validation: loss, perplexity and
    bits per character of the validated text (:class:`~attnkit.lm.data.TextData`), in fixed
    non-overlapping windows (:func:`evaluate_stream`), the last training token giving the
    first one its context; the lowest loss is the best.

    Args:
        data: the run's :class:`~attnkit.lm.data.TextData`.
        block_size: tokens the model reads per window.
        batch_size: windows per (global) batch.
        seed: data seed.
        label_smoothing: eps of the training loss (validation uses none).
        device: where batches go.
    """

    metric = "loss"
    mode = "min"

    def __init__(
        self,
        data: TextData,
        *,
        block_size: int,
        batch_size: int,
        seed: int = 0,
        label_smoothing: float = 0.0,
        device: torch.device | str | None = None,
    ) -> None:
        self.data, self.block_size, self.batch_size, self.seed = data, block_size, batch_size, seed
        self.label_smoothing = label_smoothing
        self.device = torch.device(device or "cpu")
        self.valid = torch.cat([data.train[-1:], data.valid])  # (1 + M,) context, then text
        self.epoch, self.position = 0, 0  # batches already yielded in this epoch (resume)
        tokens = f"{len(data.train) + len(data.valid):,} tokens"
        self.data_identity = DataIdentity.of(tokens, data.train, data.valid)

    def batches_per_epoch(self) -> int:
        return max(1, len(self.data.train) // (self.batch_size * self.block_size))

    def train_batches(self, epoch: int) -> Iterator[Tensor]:
        """This rank's windows of each remaining batch of ``epoch``. Shapes: (b, T + 1)."""
        start = self.position if epoch == self.epoch else 0
        self.epoch, self.position = epoch, start
        while self.position < self.batches_per_epoch():
            windows = train_windows(
                self.data.train,
                self.block_size,
                self.batch_size,
                seed=self.seed,
                epoch=epoch,
                position=self.position,
                rank=dist.rank(),
                world_size=dist.world_size(),
            )
            self.position += 1
            yield windows.to(self.device)

    def objective(self, model: nn.Module) -> LMObjective:
        """The model with its training loss (fused output projection + cross-entropy)."""
        return LMObjective(model, self.label_smoothing)

    def loss(self, objective: nn.Module, batch: Tensor) -> tuple[Tensor, int]:
        """Summed loss of ``objective`` (from :meth:`objective`, maybe DDP-wrapped)."""
        return objective(batch)

    def tokens(self, batch: Tensor) -> int:
        """Predicted tokens: the throughput unit."""
        return batch.shape[0] * (batch.shape[1] - 1)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation ``loss`` (nats per token), ``ppl`` and ``bpc``."""
        return evaluate_stream(
            model,
            self.valid,
            block_size=self.block_size,
            batch_size=self.batch_size,
            chars=self.data.valid_chars,
            device=self.device,
        )

    def state_dict(self) -> dict[str, Any]:
        """The data position (epoch, batches done) saved in checkpoints for an exact resume,
        and what the data was (its fingerprint and size)."""
        return {"epoch": self.epoch, "position": self.position, **self.data_identity.state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.data_identity.check(
            state,
            "resume with the text the run started with (data.source in its config.json), or "
            "continue from it in a new run: attnkit train-lm --init-from RUN --run NEW",
        )
        self.epoch, self.position = state["epoch"], state["position"]

"""The shared training loop's stop paths: a non-finite loss, validation every N steps, early
stopping counted in validations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from attnkit.config import TrainConfig
from attnkit.training.checkpoint import load_checkpoint, read_meta
from attnkit.training.trainer import Trainer, TrainingError


class Regression:
    """A least-squares task with ``n`` fixed batches per epoch; ``nan_at`` makes the loss of
    that call (1-based) NaN; ``evaluate`` returns ``scores`` in turn (then the last one)."""

    metric, mode = "loss", "min"

    def __init__(
        self, n: int = 4, nan_at: int | None = None, scores: list[float] | None = None
    ) -> None:
        g = torch.Generator().manual_seed(0)
        self.batches = [
            (torch.randn(8, 3, generator=g), torch.randn(8, 1, generator=g)) for _ in range(n)
        ]
        self.calls, self.nan_at, self.scores, self.evals = 0, nan_at, scores, 0

    def train_batches(self, epoch: int) -> Any:
        return iter(self.batches)

    def batches_per_epoch(self) -> int:
        return len(self.batches)

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, int]:
        self.calls += 1
        x, y = batch
        loss = ((model(x) - y) ** 2).sum()
        if self.calls == self.nan_at:
            loss = loss * float("nan")
        return loss, x.shape[0]

    def tokens(self, batch: Any) -> int:
        return batch[0].shape[0]

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        self.evals += 1
        if self.scores is not None:
            return {"loss": self.scores[min(self.evals, len(self.scores)) - 1]}
        x = torch.cat([b[0] for b in self.batches])
        y = torch.cat([b[1] for b in self.batches])
        return {"loss": float(((model(x) - y) ** 2).mean())}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _config(**kw: Any) -> TrainConfig:
    base = dict(
        epochs=3, lr=1e-2, warmup_steps=0, schedule="constant", log_every=1, device="cpu", amp=False
    )
    return TrainConfig(**{**base, **kw})


def _rows(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    trainer = Trainer(model, Regression(n=4, nan_at=6), _config(), run_dir=tmp_path)
    with pytest.raises(TrainingError, match=r"loss became nan at step 5.*last good checkpoint"):
        trainer.fit()
    # the epoch-1 checkpoint (step 4) is intact and is exactly the weights after step 4
    last = tmp_path / "checkpoints" / "last"
    assert read_meta(last)["step"] == 4
    restored = nn.Linear(3, 1)
    state, _ = load_checkpoint(last, restored)
    assert state["step"] == 4
    torch.manual_seed(0)
    reference = nn.Linear(3, 1)
    Trainer(reference, Regression(n=4), _config(epochs=1)).fit()
    for a, b in zip(restored.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # a resumed run (the bad batch gone) continues from step 4
    resumed = Trainer(nn.Linear(3, 1), Regression(n=4), _config(epochs=2), run_dir=tmp_path)
    resumed.resume(last)
    assert resumed.fit().steps == 8


def test_eval_every_validates_mid_epoch_once_per_step(tmp_path: Path) -> None:
    torch.manual_seed(0)
    task = Regression(n=4)
    result = Trainer(nn.Linear(3, 1), task, _config(epochs=2, eval_every=3), run_dir=tmp_path).fit()
    valid_steps = [r["step"] for r in _rows(tmp_path) if r["split"] == "valid"]
    assert valid_steps == [3, 4, 6, 8]  # every 3 steps and each epoch end, never twice
    assert task.evals == 4 and result.steps == 8
    state, _ = load_checkpoint(tmp_path / "checkpoints" / "last")
    assert state["epoch"] == 2 and state["step"] == 8
    # an eval_every step that is also an epoch end is evaluated once, and the epoch is saved
    task = Regression(n=4)
    Trainer(nn.Linear(3, 1), task, _config(epochs=2, eval_every=2), run_dir=tmp_path / "b").fit()
    assert [r["step"] for r in _rows(tmp_path / "b") if r["split"] == "valid"] == [2, 4, 6, 8]
    assert task.evals == 4
    state, _ = load_checkpoint(tmp_path / "b" / "checkpoints" / "last")
    assert state["epoch"] == 2


def test_early_stopping_counts_validations_mid_epoch(tmp_path: Path) -> None:
    task = Regression(n=4, scores=[1.0, 0.5, 0.6, 0.7, 0.8])
    result = Trainer(
        nn.Linear(3, 1), task, _config(epochs=5, eval_every=1, patience=2), run_dir=tmp_path
    ).fit()
    assert result.stopped_because == "early stopping"
    assert result.steps == 4 and result.best_metric == 0.5


@pytest.mark.parametrize(("field", "value"), [("eval_every", 0), ("patience", 0)])
def test_bad_eval_settings(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=field):
        _config(**{field: value})


def test_keep_last_keeps_the_newest_validations_for_averaging(tmp_path: Path) -> None:
    """train.keep_last=K keeps weights-only recent-<step> folders of the K newest validations;
    paths('last') lists last, then every other step once, newest first."""
    from attnkit.training.manager import CheckpointManager

    torch.manual_seed(0)
    Trainer(
        nn.Linear(3, 1),
        Regression(n=4),
        _config(epochs=2, eval_every=1, keep_last=3, keep_best=1),
        run_dir=tmp_path,
    ).fit()
    ckpts = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("recent-*")) == ["recent-6", "recent-7", "recent-8"]
    state, meta = load_checkpoint(ckpts / "recent-7", nn.Linear(3, 1))
    assert state == {} and meta["step"] == 7
    manager = CheckpointManager(tmp_path, keep_best=1, metric="loss", mode="min", keep_recent=3)
    listed = manager.paths("last")
    steps = [read_meta(p)["step"] for p in listed]
    assert listed[0].name == "last" and steps[:3] == [8, 7, 6]
    assert len(steps) == len(set(steps))  # recent-8 and best at step 8 are not listed twice
    with pytest.raises(ValueError, match="keep_last"):
        _config(keep_last=-1)


class AutocastProbe(Regression):
    """Records the autocast state the loss is computed under."""

    def __init__(self) -> None:
        super().__init__(n=2)
        self.seen: list[tuple[bool, torch.dtype]] = []

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, int]:
        self.seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return super().loss(model, batch)


@pytest.mark.parametrize(
    ("amp", "cpu_amp", "amx", "expected"),
    [
        (True, True, True, True),  # opted in on an AMX CPU: bfloat16 autocast
        (True, True, False, False),  # no AMX: float32 (bfloat16 would be slow)
        (True, False, True, False),  # not opted in
        (False, True, True, False),  # amp off switches both off
    ],
)
def test_cpu_amp_autocasts_to_bfloat16_only_on_amx_when_asked(
    monkeypatch, amp: bool, cpu_amp: bool, amx: bool, expected: bool
) -> None:
    from attnkit.training import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "has_amx_bf16", lambda: amx)
    task = AutocastProbe()
    Trainer(nn.Linear(3, 1), task, _config(epochs=1, amp=amp, cpu_amp=cpu_amp)).fit()
    assert {enabled for enabled, _ in task.seen} == {expected}
    if expected:
        assert {dtype for _, dtype in task.seen} == {torch.bfloat16}

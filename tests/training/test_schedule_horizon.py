"""``TrainConfig.schedule_horizon = "time"``: the cosine decay follows the fraction of the time
budget spent (a fake clock makes it deterministic), and a resumed run continues it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from attnkit.config import ConfigError, TrainConfig
from attnkit.training.schedules import make_scheduler
from attnkit.training.trainer import Trainer


class FakeClock:
    """Seconds that pass only when the task computes a loss: one second per batch."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Batches:
    """Least squares on 4 fixed batches per epoch; each loss moves the clock by 1 s."""

    metric, mode = "loss", "min"

    def __init__(self, clock: FakeClock) -> None:
        g = torch.Generator().manual_seed(0)
        self.batches = [
            (torch.randn(8, 3, generator=g), torch.randn(8, 1, generator=g)) for _ in range(4)
        ]
        self.clock = clock

    def train_batches(self, epoch: int) -> Any:
        return iter(self.batches)

    def batches_per_epoch(self) -> int:
        return len(self.batches)

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, int]:
        self.clock.now += 1.0
        x, y = batch
        return ((model(x) - y) ** 2).sum(), x.shape[0]

    def tokens(self, batch: Any) -> int:
        return batch[0].shape[0]

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return {"loss": 1.0}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _config(**kw: Any) -> TrainConfig:
    base = dict(
        epochs=3,
        lr=0.5,
        warmup_steps=2,
        schedule="cosine",
        schedule_horizon="time",
        time_budget=10.0,
        log_every=1,
        device="cpu",
        amp=False,
        keep_best=1,
    )
    return TrainConfig(**{**base, **kw})


def _train(run: Path, config: TrainConfig, clock: FakeClock, resume: bool = False) -> Trainer:
    torch.manual_seed(0)
    trainer = Trainer(nn.Linear(3, 1), Batches(clock), config, run_dir=run, clock=clock)
    if resume:
        trainer.resume(run / "checkpoints" / "last")
    trainer.fit()
    return trainer


def _lrs(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["lr"] for r in rows if r["split"] == "train"]


def test_the_decay_follows_the_time_budget(tmp_path: Path) -> None:
    trainer = _train(tmp_path, _config(), FakeClock())
    assert trainer.step == 10  # 10 batches of 1 s: the budget ends the run mid-epoch 3
    # the lr logged after update k is the next update's: warm-up in updates, then the half
    # cosine at the fraction of the budget spent when update k began (k - 1 seconds)
    expected = [
        (k + 1) / 2 * 0.5 if k + 1 <= 2 else 0.5 * 0.5 * (1 + math.cos(math.pi * (k - 1) / 10))
        for k in range(1, 11)
    ]
    assert _lrs(tmp_path) == pytest.approx(expected, rel=1e-12)


def test_resume_continues_the_time_plan(tmp_path: Path) -> None:
    whole = _train(tmp_path / "whole", _config(), FakeClock())
    _train(tmp_path / "split", _config(epochs=1), FakeClock())  # 4 s, then stopped
    resumed = _train(tmp_path / "split", _config(), FakeClock(now=5e6), resume=True)
    assert resumed.step == whole.step == 10
    assert _lrs(tmp_path / "split") == _lrs(tmp_path / "whole")
    for a, b in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_make_scheduler_reads_the_progress_clock() -> None:
    progress = [0.0]
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = make_scheduler(opt, "cosine", warmup_steps=1, progress=lambda: progress[0])
    for fraction in (0.0, 0.5, 1.0, 3.0):
        progress[0] = fraction
        opt.step()
        sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(
            1.0 + math.cos(math.pi * min(fraction, 1.0)), abs=1e-12
        )
    with pytest.raises(ValueError, match="progress"):
        make_scheduler(opt, "constant", progress=lambda: 0.0)


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"time_budget": None}, "needs a time_budget"),
        ({"schedule": "constant"}, "schedule='cosine'"),
        ({"schedule_horizon": "epochs"}, "schedule_horizon"),
    ],
)
def test_bad_settings(kw: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        _config(**kw)


def test_a_budget_spent_on_another_rank_is_saved_as_spent(tmp_path: Path, monkeypatch) -> None:
    """Under DDP every rank stops when any one is out of time; a rank whose own clock reads a
    little less saves the budget as spent all the same, so a resume with the same budget is
    refused instead of training one more step (here: another rank runs out at update 6)."""
    from attnkit.training import distributed as dist

    calls = {"n": 0}

    def any_rank(flags: list[bool], device: Any) -> list[bool]:
        calls["n"] += 1
        out_of_time, hit = flags
        return [out_of_time or calls["n"] == 6, hit]

    monkeypatch.setattr(dist, "any_rank", any_rank)
    trainer = _train(tmp_path, _config(), FakeClock())
    assert trainer.step == 6 and trainer.elapsed >= 10.0
    state = torch.load(tmp_path / "checkpoints" / "last" / "state.pt", weights_only=False)
    assert state["elapsed"] >= 10.0
    with pytest.raises(ConfigError, match="nothing is left to train"):
        _train(tmp_path, _config(), FakeClock(now=5e6), resume=True)

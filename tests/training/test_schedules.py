"""Tests for attnkit.training.schedules against the formulas written out here."""

from __future__ import annotations

import io
import math

import pytest
import torch

from attnkit.training.schedules import make_scheduler, paper_peak_lr


def make_optimizer(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def run(scheduler: torch.optim.lr_scheduler.LambdaLR, steps: int) -> list[float]:
    """The lr used by each of the next ``steps`` updates."""
    lrs = []
    for _ in range(steps):
        lrs.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return lrs


def paper_lrate(step_num: int, d_model: int, warmup: int) -> float:
    """Eq. 3 of "Attention Is All You Need"; step_num counts updates from 1."""
    return d_model**-0.5 * min(step_num**-0.5, step_num * warmup**-1.5)


def test_inverse_sqrt_with_d_model_is_the_papers_formula() -> None:
    d_model, warmup = 512, 40
    scheduler = make_scheduler(make_optimizer(123.0), "inverse_sqrt", warmup, d_model=d_model)
    lrs = run(scheduler, 200)
    expected = [paper_lrate(k, d_model, warmup) for k in range(1, 201)]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert max(lrs) == pytest.approx(paper_peak_lr(d_model, warmup), rel=1e-12)
    assert lrs.index(max(lrs)) == warmup - 1  # the warmup-th update is the peak


def test_paper_peak_lr_base_model() -> None:
    assert paper_peak_lr(512, 4000) == pytest.approx(512**-0.5 * 4000**-0.5)
    assert paper_peak_lr(512, 4000) == pytest.approx(6.99e-4, rel=1e-3)
    with pytest.raises(ValueError, match="d_model"):
        paper_peak_lr(0, 4000)


def test_inverse_sqrt_shape_scales_the_configured_peak() -> None:
    peak, warmup = 5e-4, 10
    lrs = run(make_scheduler(make_optimizer(peak), "inverse_sqrt", warmup), 50)
    for step, lr in enumerate(lrs):
        k = step + 1
        expected = peak * (k / warmup if k <= warmup else math.sqrt(warmup / k))
        assert lr == pytest.approx(expected, rel=1e-12)
    lrs0 = run(make_scheduler(make_optimizer(1.0), "inverse_sqrt", 0), 4)
    assert lrs0 == pytest.approx([1.0, 2**-0.5, 3**-0.5, 0.5])


@pytest.mark.parametrize("min_ratio", [0.0, 0.1])
def test_cosine(min_ratio: float) -> None:
    peak, warmup, total = 2.0, 5, 25
    sched = make_scheduler(make_optimizer(peak), "cosine", warmup, total, min_lr_ratio=min_ratio)
    lrs = run(sched, total + 5)
    floor = peak * min_ratio
    for step, lr in enumerate(lrs):
        k = step + 1
        if k <= warmup:
            expected = peak * k / warmup
        else:
            t = min(k - warmup, total - warmup) / (total - warmup)
            expected = floor + (peak - floor) * (1 + math.cos(math.pi * t)) / 2
        assert lr == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert lrs[warmup - 1] == pytest.approx(peak)
    assert lrs[total - 1] == pytest.approx(floor, abs=1e-15)
    assert all(a >= b for a, b in zip(lrs[warmup - 1 :], lrs[warmup:], strict=False))


def test_linear() -> None:
    """Warm-up, then a straight line to 0 at update ``total`` (BERT's fine-tuning schedule)."""
    peak, warmup, total = 2.0, 4, 20
    lrs = run(make_scheduler(make_optimizer(peak), "linear", warmup, total), total + 3)
    for step, lr in enumerate(lrs):
        k = step + 1
        expected = peak * k / warmup if k <= warmup else peak * max(0, total - k) / (total - warmup)
        assert lr == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert lrs[total - 1 :] == [0.0] * 4


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_decay_follows_a_progress_clock(kind: str) -> None:
    """With ``progress`` the decay reads the clock (e.g. the time budget spent), not the step."""
    clock = {"now": 0.0}
    peak, warmup = 1.0, 2
    sched = make_scheduler(make_optimizer(peak), kind, warmup, progress=lambda: clock["now"])
    lrs = []
    for now in (0.0, 0.0, 0.25, 0.5, 1.0, 1.5):
        clock["now"] = now
        lrs.append(sched.optimizer.param_groups[0]["lr"])
        sched.optimizer.step()
        sched.step()

    # the lr of update k is set after update k - 1, when the clock read the previous value
    def decay(p: float) -> float:
        return (1 + math.cos(math.pi * p)) / 2 if kind == "cosine" else 1.0 - p

    assert lrs[:2] == pytest.approx([0.5, 1.0])
    assert lrs[2:] == pytest.approx([decay(t) for t in (0.0, 0.25, 0.5, 1.0)], abs=1e-15)


def test_constant() -> None:
    assert run(make_scheduler(make_optimizer(3.0), "constant", 0), 3) == [3.0, 3.0, 3.0]
    lrs = run(make_scheduler(make_optimizer(4.0), "constant", 4), 6)
    assert lrs == pytest.approx([1.0, 2.0, 3.0, 4.0, 4.0, 4.0])


def roundtrip(obj: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("with_optimizer", [True, False])
@pytest.mark.parametrize("kind", ["inverse_sqrt", "cosine", "linear", "constant"])
def test_resume_from_state_dict(kind: str, with_optimizer: bool) -> None:
    """Resume mid-warm-up: the lrs continue exactly, whether or not the optimizer's state (which
    also holds the current lr) is restored alongside the scheduler's."""
    args = dict(kind=kind, warmup_steps=20, total_steps=40)
    straight = run(make_scheduler(make_optimizer(0.5), **args), 30)

    first = make_scheduler(make_optimizer(0.5), **args)
    head = run(first, 12)
    saved = roundtrip({"opt": first.optimizer.state_dict(), "sched": first.state_dict()})
    second = make_scheduler(make_optimizer(0.5), **args)
    if with_optimizer:
        second.optimizer.load_state_dict(saved["opt"])
    second.load_state_dict(saved["sched"])
    assert isinstance(second, torch.optim.lr_scheduler.LambdaLR)
    assert head + run(second, 18) == straight


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "exponential"}, "kind"),
        ({"kind": "linear", "warmup_steps": 10, "total_steps": 10}, "total_steps"),
        ({"kind": "constant", "progress": lambda: 0.5}, "progress"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"kind": "cosine", "warmup_steps": 10}, "total_steps"),
        ({"kind": "cosine", "warmup_steps": 10, "total_steps": 10}, "total_steps"),
        (
            {"kind": "cosine", "total_steps": 10, "warmup_steps": 1, "min_lr_ratio": 2.0},
            "min_lr_ratio",
        ),
        ({"kind": "constant", "min_lr_ratio": 0.1}, "min_lr_ratio"),
        ({"kind": "constant", "d_model": 512}, "d_model"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_scheduler(make_optimizer(), **kwargs)


def test_check_warmup_counts_updates_like_the_trainer() -> None:
    """updates = epochs * batches // accum_steps, as the trainer plans its decay."""
    from attnkit.config import ConfigError, TrainConfig
    from attnkit.training.schedules import check_warmup

    train = TrainConfig(epochs=2, warmup_steps=6, schedule="cosine", accum_steps=4)
    with pytest.raises(ConfigError) as err:
        check_warmup(train, 13)  # 2 * 13 // 4 = 6 updates: none left after the warm-up
    assert str(err.value) == (
        "train.warmup_steps=6 is not below the 6 updates of this run (2 epochs of 13 batches, "
        "4 per update); shorten the warm-up (--set train.warmup_steps=0) or train longer "
        "(--epochs)"
    )
    with pytest.raises(ConfigError, match=r"\); a resumed run keeps its warm-up: train longer"):
        check_warmup(train, 13, resumed=True)
    check_warmup(train, 14)  # 7 updates
    check_warmup(TrainConfig(epochs=1, warmup_steps=50, schedule="constant"), 3)  # no decay
    make_scheduler(
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0),
        "cosine",
        warmup_steps=6,
        total_steps=7,
    )  # the scheduler accepts what the check accepts

"""Learning-rate schedules as multipliers of the optimizer's peak lr, wrapped in ``LambdaLR``.

Step convention: the scheduler is stepped once after every optimizer step, so the multiplier
function receives ``step`` = the number of updates done so far (0 for the first update) and the
k-th update (k = step + 1) runs with ``lr * multiplier(step)``.

inverse_sqrt (the paper's shape)::

    multiplier(step) = min(k / warmup, sqrt(warmup / k)),   k = step + 1

a linear warm-up to the configured peak at k = warmup, then decay as 1 / sqrt(k). The paper
("Attention Is All You Need", eq. 3) writes ``lrate = d_model^-0.5 * min(k^-0.5, k * warmup^-1.5)``
for update number k; that is exactly ``peak * multiplier`` with
``peak = d_model^-0.5 * warmup^-0.5`` (:func:`paper_peak_lr`; 7.0e-4 for d_model 512 and
4000 warm-up steps). Pass ``d_model`` to :func:`make_scheduler` to use that peak.

cosine: the same linear warm-up, then half a cosine from the peak down to
``min_lr_ratio * peak`` at update ``total_steps`` (held there afterwards). With a ``progress``
clock instead (``TrainConfig.schedule_horizon = "time"``: the fraction of the time budget spent),
the half cosine follows that fraction, so a run stopped by its budget ends decayed; the warm-up
still counts updates.

linear: the same linear warm-up, then a straight line from the peak down to 0 at update
``total_steps`` (held at 0 afterwards): BERT's fine-tuning schedule (Devlin et al. 2019; Hugging
Face's ``get_linear_schedule_with_warmup``). With a ``progress`` clock the line follows the
fraction of the time budget spent instead, as for cosine.

constant: the linear warm-up (if any), then the peak.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from attnkit.config import ConfigError, TrainConfig

__all__ = [
    "SCHEDULES",
    "check_warmup",
    "planned_updates",
    "make_scheduler",
    "paper_peak_lr",
    "inverse_sqrt_multiplier",
    "cosine_multiplier",
    "cosine_decay",
    "linear_multiplier",
    "linear_decay",
    "constant_multiplier",
]

SCHEDULES = ("inverse_sqrt", "cosine", "linear", "constant")
#: The schedules whose decay can follow a time budget (``progress``).
DECAYING = ("cosine", "linear")


def paper_peak_lr(d_model: int, warmup_steps: int) -> float:
    """The peak of the paper's schedule, ``d_model^-0.5 * warmup_steps^-0.5``.

    Args:
        d_model: the model width (512 for the base model).
        warmup_steps: warm-up updates (4000 in the paper).

    Returns:
        The learning rate reached at the end of warm-up.
    """
    if d_model <= 0 or warmup_steps <= 0:
        raise ValueError(
            f"paper_peak_lr: d_model and warmup_steps must be > 0, got {d_model}, {warmup_steps}"
        )
    return d_model**-0.5 * warmup_steps**-0.5


def inverse_sqrt_multiplier(step: int, warmup_steps: int) -> float:
    """``min(k / warmup, sqrt(warmup / k))`` with k = step + 1 (warm-up 0 is treated as 1)."""
    k, warmup = step + 1, max(warmup_steps, 1)
    return min(k / warmup, math.sqrt(warmup / k))


def _warmup(k: int, warmup_steps: int) -> float:
    return k / warmup_steps if k < warmup_steps else 1.0


def cosine_multiplier(
    step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> float:
    """Linear warm-up to 1, then a half cosine to ``min_lr_ratio`` at update ``total_steps``."""
    k = step + 1
    if k <= warmup_steps:
        return _warmup(k, warmup_steps)
    progress = min(1.0, (k - warmup_steps) / (total_steps - warmup_steps))
    return cosine_decay(progress, min_lr_ratio)


def cosine_decay(progress: float, min_lr_ratio: float = 0.0) -> float:
    """Half a cosine from 1 (``progress`` 0) to ``min_lr_ratio`` (``progress`` >= 1)."""
    progress = min(1.0, max(0.0, progress))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def linear_multiplier(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to 1, then a straight line to 0 at update ``total_steps`` (0 after)."""
    k = step + 1
    if k <= warmup_steps:
        return _warmup(k, warmup_steps)
    return linear_decay((k - warmup_steps) / (total_steps - warmup_steps))


def linear_decay(progress: float) -> float:
    """A straight line from 1 (``progress`` 0) to 0 (``progress`` >= 1)."""
    return 1.0 - min(1.0, max(0.0, progress))


def constant_multiplier(step: int, warmup_steps: int) -> float:
    """Linear warm-up to 1 (none when ``warmup_steps`` is 0), then 1."""
    return _warmup(step + 1, warmup_steps)


class _LambdaLR(LambdaLR):
    """LambdaLR whose ``load_state_dict`` also puts the restored lr into the optimizer, so the
    next update is right even when only the scheduler (not the optimizer) is restored."""

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        for group, lr in zip(self.optimizer.param_groups, self.get_last_lr(), strict=True):
            group["lr"] = lr


def planned_updates(train: TrainConfig, batches_per_epoch: int) -> int:
    """Optimizer updates a run of ``train.epochs`` plans (what a decay over steps spans)."""
    return max(1, train.epochs * max(1, batches_per_epoch) // train.accum_steps)


def check_warmup(
    train: TrainConfig, batches_per_epoch: int, batches: str = "", *, resumed: bool = False
) -> None:
    """A new run whose decay is planned over steps (cosine or linear, not by time) needs more
    updates than its warm-up: a one-line ConfigError naming ``train.warmup_steps`` otherwise.

    Args:
        train: the run's train settings.
        batches_per_epoch: batches in one epoch.
        batches: how the message describes an epoch's batches (default "N batches").
        resumed: the run is being resumed (its warm-up cannot change: the advice is --epochs).
    """
    if train.schedule not in DECAYING or train.decays_by_time:
        return
    updates = planned_updates(train, batches_per_epoch)
    if updates > train.warmup_steps:
        return
    per_update = f", {train.accum_steps} per update" if train.accum_steps > 1 else ""
    fix = (
        "a resumed run keeps its warm-up: train longer (--epochs)"
        if resumed
        else f"shorten the warm-up (--set train.warmup_steps={updates // 10}) or train longer "
        "(--epochs)"
    )
    raise ConfigError(
        f"train.warmup_steps={train.warmup_steps} is not below the {updates} updates of this "
        f"run ({train.epochs} epochs of {batches or f'{batches_per_epoch} batches'}"
        f"{per_update}); {fix}"
    )


def make_scheduler(
    optimizer: Optimizer,
    kind: str = "inverse_sqrt",
    warmup_steps: int = 4000,
    total_steps: int | None = None,
    d_model: int | None = None,
    min_lr_ratio: float = 0.0,
    progress: Callable[[], float] | None = None,
) -> LambdaLR:
    """A ``LambdaLR`` scaling every parameter group's peak lr by the chosen schedule.

    Call ``scheduler.step()`` after each ``optimizer.step()``. ``state_dict()`` holds the step
    count (and the peak lrs); the schedule's settings come from the arguments, so a resumed run
    must pass the same ones.

    Args:
        optimizer: its groups' ``lr`` are the peak learning rates.
        kind: ``"inverse_sqrt"``, ``"cosine"``, ``"linear"`` or ``"constant"`` (see the module
            docstring).
        warmup_steps: updates of linear warm-up (>= 0; for inverse_sqrt 0 acts as 1).
        total_steps: the length of the run in updates; required by cosine and linear (without
            ``progress``), > warmup_steps.
        d_model: inverse_sqrt only: if given, every group's peak lr is set to the paper's
            :func:`paper_peak_lr` (``d_model, warmup_steps``), replacing the optimizer's lr.
        min_lr_ratio: cosine only: the final lr as a fraction of the peak, in [0, 1].
        progress: cosine and linear only: a clock of the run's progress in [0, 1] (e.g. the
            fraction of a time budget spent), read at every step after the warm-up; the decay
            follows it instead of ``step / total_steps`` (``total_steps`` is then not needed).
            Whoever owns the clock keeps it across a resume (the trainer stores its elapsed
            time).

    Returns:
        The scheduler; the optimizer's lrs are already set for the first update.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"make_scheduler: kind must be one of {SCHEDULES}, got {kind!r}")
    if warmup_steps < 0:
        raise ValueError(f"make_scheduler: warmup_steps must be >= 0, got {warmup_steps}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"make_scheduler: min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    if min_lr_ratio and kind != "cosine":
        raise ValueError(
            f"make_scheduler: min_lr_ratio={min_lr_ratio} applies to kind='cosine' only, "
            f"not {kind!r}; leave it at 0"
        )
    if d_model is not None and kind != "inverse_sqrt":
        raise ValueError(
            f"make_scheduler: d_model sets the paper's peak lr for kind='inverse_sqrt' only, "
            f"not {kind!r}; leave it None and set the optimizer's lr"
        )
    if progress is not None and kind not in DECAYING:
        raise ValueError(
            f"make_scheduler: progress plans the cosine or linear decay; kind={kind!r} has none"
        )
    if (
        kind in DECAYING
        and progress is None
        and (total_steps is None or total_steps <= warmup_steps)
    ):
        raise ValueError(
            f"make_scheduler: kind={kind!r} needs total_steps > warmup_steps, got total_steps="
            f"{total_steps}, warmup_steps={warmup_steps}; train longer or shorten the warm-up"
        )

    if d_model is not None:
        peak = paper_peak_lr(d_model, max(warmup_steps, 1))
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] = peak

    # Plain nested functions (not callable objects): LambdaLR's state_dict then stores only the
    # step count and base lrs, never the schedule's settings.
    if kind == "inverse_sqrt":

        def multiplier(step: int) -> float:
            return inverse_sqrt_multiplier(step, warmup_steps)

    elif kind == "cosine" and progress is not None:
        clock = progress

        def multiplier(step: int) -> float:
            if step + 1 <= warmup_steps:
                return _warmup(step + 1, warmup_steps)
            return cosine_decay(clock(), min_lr_ratio)

    elif kind == "cosine":
        total = int(total_steps)  # type: ignore[arg-type]

        def multiplier(step: int) -> float:
            return cosine_multiplier(step, warmup_steps, total, min_lr_ratio)

    elif kind == "linear" and progress is not None:
        line_clock = progress

        def multiplier(step: int) -> float:
            if step + 1 <= warmup_steps:
                return _warmup(step + 1, warmup_steps)
            return linear_decay(line_clock())

    elif kind == "linear":
        line_total = int(total_steps)  # type: ignore[arg-type]

        def multiplier(step: int) -> float:
            return linear_multiplier(step, warmup_steps, line_total)

    else:

        def multiplier(step: int) -> float:
            return constant_multiplier(step, warmup_steps)

    return _LambdaLR(optimizer, multiplier)

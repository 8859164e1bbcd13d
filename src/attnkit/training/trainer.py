"""One training loop for every model: accumulation, clipping, AMP, checkpoints, resume, budgets.

The loop knows nothing about translation or images. A *task* supplies the data and the numbers:

* ``task.train_batches(epoch)`` yields batches (and ``task.state_dict()`` /
  ``task.load_state_dict()`` hold the data order, so that resume continues mid-epoch),
* ``task.loss(model, batch) -> (loss_sum, count)``: a summed loss and the number of items it sums
  over (non-pad target tokens, images); the loop normalises by the total count of the whole
  accumulated step, so accumulation and padding never change the objective,
* ``task.evaluate(model) -> dict`` with at least ``task.metric`` (selects the best checkpoints and
  drives early stopping; ``task.mode`` is "max" or "min"),
* ``task.tokens(batch) -> int`` for the throughput display,
* optionally ``task.objective(model) -> nn.Module``: the module the loop differentiates (and
  wraps in DDP / compiles), e.g. the model together with its loss
  (:class:`~attnkit.training.losses.Seq2SeqObjective`); ``task.loss`` then receives it.
  Without it the model itself is passed to ``task.loss``.
* optionally ``task.param_groups(model, weight_decay) -> list[dict]``: the optimizer's parameter
  groups, each with ``params`` and ``weight_decay`` and optionally ``lr`` (a group's own peak,
  which the schedule scales like the others), e.g. layer-wise learning rates for fine-tuning.
  Without it every trainable parameter gets ``config.lr``, with weight decay on the matrices of
  Linear layers only; the first group's lr is the one logged.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from attnkit.config import ConfigError, TrainConfig, to_dict
from attnkit.files import append_json_line
from attnkit.hardware import has_amx_bf16
from attnkit.training import distributed as dist
from attnkit.training.allocator import tune_glibc_malloc
from attnkit.training.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state
from attnkit.training.manager import CheckpointManager
from attnkit.training.optimizers import adamw
from attnkit.training.schedules import make_scheduler, planned_updates
from attnkit.version import __version__

__all__ = ["Task", "Trainer", "TrainingError", "TrainResult", "resolve_device"]

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, bad resume state); the message says what to do."""


class Task(Protocol):
    metric: str
    mode: str

    def train_batches(self, epoch: int) -> Any: ...
    def batches_per_epoch(self) -> int: ...
    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, int]: ...
    def tokens(self, batch: Any) -> int: ...
    def evaluate(self, model: nn.Module) -> dict[str, float]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainResult:
    steps: int
    epochs_done: float
    stopped_because: str
    best_metric: float | None
    last_metrics: dict[str, float]
    tokens_per_second: float
    seconds: float


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the local CUDA device if there is one, else CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist.local_rank())
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(
            "--device cuda was asked for but no CUDA device is available; use --device cpu"
        )
    return device


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases, norms and embeddings (matrices of Linear layers only)."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            is_matrix = isinstance(module, nn.Linear) and name == "weight"
            (decay if is_matrix else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _normalise_and_clip(params: Any, total: float, clip_norm: float) -> Tensor:
    """Divide the gradients by ``total`` and clip their global L2 norm to ``clip_norm`` (0: no
    clipping) in one pass: ``g * min(1, clip_norm / (|g / total| + 1e-6)) / total``, what
    ``div_`` followed by ``clip_grad_norm_`` gives, with one multiplication per gradient.

    Returns:
        the norm of the divided gradients before clipping (0 when not clipping).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    if clip_norm <= 0:
        torch._foreach_div_(grads, total)
        return torch.tensor(0.0)
    norm = torch.nn.utils.get_total_norm(grads) / total  # (), of the divided gradients
    coef = (clip_norm / (norm + 1e-6)).clamp(max=1.0) / total
    torch._foreach_mul_(grads, coef.to(grads[0].device))
    return norm


def _seconds(value: float) -> str:
    """``"1,200 s"``, ``"0.5 s"``: a duration for messages."""
    return f"{value:,.0f} s" if value >= 100 else f"{value:.3g} s"


class Trainer:
    """Train ``model`` on ``task`` with ``config``, writing into ``run_dir``.

    Args:
        model: any nn.Module the task knows how to use.
        task: see the module docstring.
        config: :class:`~attnkit.config.TrainConfig`.
        run_dir: folder for checkpoints and ``metrics.jsonl`` (None: nothing is written).
        run_config: extra JSON-ready dict stored in every checkpoint's meta (rebuild info).
        progress: show a progress bar (rank 0 only).
        clock: seconds, for the time budget and ``schedule_horizon="time"`` (tests pass a fake).
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        config: TrainConfig,
        *,
        run_dir: str | Path | None = None,
        run_config: dict[str, Any] | None = None,
        progress: bool = False,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.config, self.task = config, task
        self.clock, self.elapsed = clock, 0.0
        self.device = resolve_device(config.device)
        tune_glibc_malloc()
        self.model = model.to(self.device)
        objective = getattr(task, "objective", None)
        differentiated = objective(self.model) if objective is not None else self.model
        self.train_model: nn.Module = dist.wrap_model(differentiated, self.device)
        if config.compile:
            self.train_model = torch.compile(self.train_model)  # type: ignore[assignment]
        groups = getattr(task, "param_groups", None)
        self.optimizer = adamw(
            groups(self.model, config.weight_decay)
            if groups is not None
            else _param_groups(self.model, config.weight_decay),
            self.device,
            lr=config.lr,
            betas=config.betas,
        )
        total = planned_updates(config, task.batches_per_epoch())
        by_time = config.decays_by_time
        self.scheduler = make_scheduler(
            self.optimizer,
            config.schedule,
            warmup_steps=config.warmup_steps,
            total_steps=total,
            progress=self._time_fraction if by_time else None,
        )
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.run_config = run_config or {}
        self.progress = progress and dist.is_main()
        self.manager = (
            CheckpointManager(
                self.run_dir,
                keep_best=config.keep_best,
                metric=task.metric,
                mode=task.mode,
                keep_recent=config.keep_last,
            )
            if self.run_dir is not None
            else None
        )
        self.step = 0
        self.epoch = 0
        self.best: float | None = None
        self.bad_epochs = 0
        self.history: list[dict[str, Any]] = []
        self._validated_at: int | None = None  # the step of the latest validation

    def _time_fraction(self) -> float:
        """The fraction of the time budget spent when the previous update ended (training,
        validation and checkpoints, as the budget counts them; earlier sessions of a resumed
        run included: ``elapsed`` is stored in checkpoints). A resume with a longer budget
        plans the rest of the decay over the new one (the lr rises to where that plan is)."""
        return self.elapsed / float(self.config.time_budget or math.inf)

    def _tick(self, start: float) -> None:
        """Update ``elapsed``; with ``schedule_horizon="time"`` under DDP every rank takes
        the ranks' mean, so that all of them plan the same lr."""
        elapsed = self.clock() - start
        if self.config.decays_by_time and dist.is_distributed():
            elapsed = dist.all_reduce_sum(elapsed, self.device) / dist.world_size()
        self.elapsed = max(self.elapsed, elapsed)  # (never back under a budget marked spent)

    def _amp_dtype(self) -> torch.dtype | None:
        """float16/bfloat16 autocast on CUDA (``amp``); bfloat16 on an AMX CPU (``cpu_amp``)."""
        if not self.config.amp:
            return None
        if self.device.type == "cpu":
            return torch.bfloat16 if self.config.cpu_amp and has_amx_bf16() else None
        if self.device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": capture_rng_state(),
            "task": self.task.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "elapsed": self.elapsed,
            "validated_at": self._validated_at,  # a resume must not validate that step again
        }

    def resume(self, checkpoint: str | Path) -> None:
        """Restore everything from a checkpoint folder so training continues exactly."""
        state, meta = load_checkpoint(checkpoint, self.model, map_location=self.device)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.task.load_state_dict(state["task"])
        restore_rng_state(state["rng"])
        self.step, self.epoch = state["step"], state["epoch"]
        self.best, self.bad_epochs = state["best"], state["bad_epochs"]
        self.elapsed = state["elapsed"]
        self._validated_at = state.get("validated_at")
        saved_budget = (meta.get("train_config") or {}).get("time_budget", -1.0)
        budget = self.config.time_budget
        if budget is not None and self.elapsed >= budget and saved_budget == budget:
            # a budget changed on resume is obeyed as given (even a spent one: one more step)
            raise ConfigError(
                f"this run has trained {_seconds(self.elapsed)} of its time budget of "
                f"{_seconds(budget)}: nothing is left to train; resume with a larger "
                "--time-budget (or --set train.time_budget=null and --epochs)"
            )
        if dist.is_main():  # (once per job, not once per rank)
            log.info("resumed from %s at step %d (epoch %d)", checkpoint, self.step, self.epoch)

    def _meta(self, metrics: dict[str, float] | None = None) -> dict[str, Any]:
        return {
            "attnkit_version": __version__,
            "step": self.step,
            "epoch": self.epoch,
            "metrics": metrics or {},
            "train_config": to_dict(self.config),
            "run": self.run_config,
        }

    def save(self, metrics: dict[str, float] | None = None, rank_best: bool = True) -> None:
        """Write the last checkpoint; after a validation (``metrics``, ``rank_best``) also a
        best one when it qualifies and a ``recent-<step>`` one (``keep_last``); rank 0 only.
        ``last`` is written last: a run killed before it resumes from the previous one and
        writes the others again."""
        if self.manager is None or not dist.is_main():
            return
        state, meta = self.state_dict(), self._meta(metrics)
        if rank_best and metrics is not None:
            self.manager.save_recent(self.model, meta)
            if self.task.metric in metrics:
                self.manager.save_if_best(self.model, state, meta, metrics[self.task.metric])
        self.manager.save_last(self.model, state, meta)

    def _log(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        if self.run_dir is None or not dist.is_main():
            return
        append_json_line(self.run_dir / "metrics.jsonl", row)  # whole line, flushed to disk

    # -- the loop ----------------------------------------------------------------------------
    def _forward_loss(self, batch: Any) -> tuple[Tensor, int]:
        ctx = (
            torch.autocast(self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else contextlib.nullcontext()
        )
        with ctx:
            return self.task.loss(self.train_model, batch)

    def _optimizer_step(self, count: int, loss_sum: float) -> tuple[float, float]:
        """Normalise the accumulated gradients by the global item count, clip, step.

        Returns the gradient norm and the mean loss over the global batch (all ranks).
        """
        total, loss_total = dist.all_reduce_sums([float(count), loss_sum], self.device)
        self.scaler.unscale_(self.optimizer)
        norm = _normalise_and_clip(self.model.parameters(), max(total, 1.0), self.config.clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return float(norm), loss_total / max(total, 1.0)

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.task.mode == "max" else value < self.best

    def fit(self) -> TrainResult:
        """Train until the epochs, the time budget or early stopping end it.

        (A resume whose unchanged time budget is used up was refused by :meth:`resume`.)
        """
        cfg = self.config
        if self.run_dir is not None and dist.is_main():
            self.run_dir.mkdir(parents=True, exist_ok=True)
        start = self.clock() - self.elapsed
        window_tokens, window_start, tokens_total = 0, self.clock(), 0
        reason, last_metrics = "epochs", {}
        interrupted = _InterruptFlag()
        bar = _progress_bar(self.progress, cfg.epochs, self.task.batches_per_epoch())
        try:
            with interrupted:
                while self.epoch < cfg.epochs and reason == "epochs":
                    self.train_model.train()
                    micro, count, loss_acc = 0, 0, 0.0
                    for batch in self.task.train_batches(self.epoch):
                        sync = (micro + 1) % cfg.accum_steps == 0
                        with dist.no_sync_unless(self.train_model, sync):
                            loss_sum, n = self._forward_loss(batch)
                            if not torch.isfinite(loss_sum.detach()):
                                raise TrainingError(
                                    f"loss became {float(loss_sum.detach())} at step {self.step}; "
                                    "the last good checkpoint is kept; lower --set train.lr or "
                                    "raise train.warmup_steps and resume"
                                )
                            self.scaler.scale(loss_sum).backward()
                        micro, count = micro + 1, count + n
                        loss_acc += float(loss_sum.detach())
                        tokens = self.task.tokens(batch)
                        window_tokens += tokens
                        tokens_total += tokens
                        if not sync:
                            continue
                        grad_norm, loss_value = self._optimizer_step(count, loss_acc)
                        micro, count, loss_acc = 0, 0, 0.0
                        if bar is not None:
                            bar.update(cfg.accum_steps)
                            bar.set_postfix(loss=f"{loss_value:.3f}", epoch=self.epoch)
                        if self.step % cfg.log_every == 0:
                            now = self.clock()
                            window_tokens = dist.all_reduce_sum(window_tokens, self.device)
                            tps = window_tokens / max(now - window_start, 1e-9)
                            window_tokens, window_start = 0, now
                            self._log(
                                {
                                    "split": "train",
                                    "step": self.step,
                                    "epoch": self.epoch,
                                    "loss": loss_value,
                                    "lr": self.scheduler.get_last_lr()[0],
                                    "grad_norm": grad_norm,
                                    "tokens_per_s": tps,
                                }
                            )
                            if bar is not None:
                                bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{tps:.0f}")
                        if cfg.eval_every is not None and self.step % cfg.eval_every == 0:
                            last_metrics = self.validate()  # mid-epoch: state saved to resume
                            self.train_model.train()
                            if cfg.patience is not None and self.bad_epochs >= cfg.patience:
                                reason = "early stopping"
                                break
                        self._tick(start)
                        out_of_time = (
                            cfg.time_budget is not None and self.elapsed >= cfg.time_budget
                        )
                        # every rank must stop at the same step, or the others hang
                        out_of_time, hit = dist.any_rank(
                            [out_of_time, interrupted.hit], self.device
                        )
                        if out_of_time:
                            reason = "time budget"
                            # spent for the whole job, though this rank's clock may read a
                            # little less than another's: saved as spent, so that a resume with
                            # the same budget is refused on every rank alike
                            self.elapsed = max(self.elapsed, float(cfg.time_budget or 0.0))
                            break
                        if hit:
                            raise KeyboardInterrupt
                    else:
                        self.epoch += 1
                    if self._validated_at == self.step:  # just validated (eval_every): only
                        self.save(last_metrics, rank_best=False)  # save the new epoch count
                    else:
                        last_metrics = self.validate()
                    self._tick(start)
                    if (
                        reason == "epochs"
                        and cfg.patience is not None
                        and self.bad_epochs >= cfg.patience
                    ):
                        reason = "early stopping"
        except KeyboardInterrupt:
            reason = "interrupted"
            self.elapsed = self.clock() - start
            self.save()
            if dist.is_main():
                log.warning(
                    "interrupted: checkpoint saved at step %d; continue with --resume", self.step
                )
        finally:
            if bar is not None:
                bar.close()
        seconds = self.clock() - start
        if reason != "interrupted":  # ranks agree on the step; a second Ctrl-C may not
            tokens_total = int(dist.all_reduce_sum(tokens_total, self.device))
        return TrainResult(
            self.step,
            self.epoch,
            reason,
            self.best,
            last_metrics,
            tokens_total / max(seconds, 1e-9),
            seconds,
        )

    def validate(self) -> dict[str, float]:
        """Evaluate, log, checkpoint, and update the early-stopping counter (``patience`` counts
        validations: epoch ends, and every ``eval_every`` steps when that is set)."""
        self.train_model.eval()
        with torch.inference_mode():
            metrics = self.task.evaluate(self.model)
        self._validated_at = self.step
        value = metrics.get(self.task.metric)
        if value is not None and math.isfinite(value) and self._improved(value):
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        self._log({"split": "valid", "step": self.step, "epoch": self.epoch, **metrics})
        self.save(metrics)
        return metrics


class _InterruptFlag:
    """Turn the first Ctrl-C into a flag checked between steps (a clean save follows); a second
    Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.hit = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True

    def __enter__(self) -> _InterruptFlag:
        with contextlib.suppress(ValueError):  # not in the main thread
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _progress_bar(enabled: bool, epochs: int, per_epoch: int) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=epochs * per_epoch, unit="batch", dynamic_ncols=True, leave=False)

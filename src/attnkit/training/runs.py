"""The run skeleton every task shares: resolve a config, then train (or resume) into a run folder.

A task describes itself with a :class:`RunRecipe` (how to read its config, prepare its data, build
its model and its trainer task); :func:`train_run` does the rest, the same way for every task:

1. a new run needs an empty ``--run`` folder; ``--resume`` needs its last checkpoint, and takes
   the stored configuration with only :data:`~attnkit.training.runfolder.RESUMABLE_TRAIN_FIELDS`
   changed;
2. the device is chosen and, under torchrun, the process group joined;
3. rank 0 prepares the data first (downloads, tokenizers) while the other ranks wait, then they
   read what rank 0 wrote;
4. the model is built (seeded) from the config with its data-derived fields filled in, the
   warm-up is checked against the run's length, the
   :class:`~attnkit.training.trainer.Trainer` is set up, and then the resolved config is
   written to ``config.json``;
5. the trainer fits, resuming exactly from the checkpoint;
6. rank 0 draws ``curves.png``.

A new run's start that fails before ``config.json`` exists (bad data, a refused setting,
Ctrl-C while preparing) removes the folder it made; from ``config.json`` on, nothing is removed.

Rank 0 holds the folder's write lock (:mod:`attnkit.training.runlock`) throughout: a second
writer fails at once. A resume drops the ``metrics.jsonl`` rows logged after its checkpoint
(they are logged again), so a run killed at any instant and resumed ends as if never stopped
(checkpoints are swapped atomically, ``last`` written after the best/recent ones of its step).
A full disk stops training with one line saying that the last checkpoint is kept and how to
resume.

:func:`resolve_config` merges a task's preset, a config file, ``--set`` overrides and explicit
flags, in that order of precedence (the last wins).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import torch
from torch import nn

from attnkit.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    load_config_file,
    merge_config_file,
    section,
)
from attnkit.files import is_disk_full
from attnkit.training import distributed as dist
from attnkit.training.checkpoint import read_meta
from attnkit.training.manager import CheckpointManager
from attnkit.training.runfolder import (
    resumed_train_config,
    start_or_resume,
    trim_metrics,
    write_curves,
    write_run_config,
)
from attnkit.training.runlock import LOCK_FILE, run_lock
from attnkit.training.schedules import check_warmup
from attnkit.training.trainer import Task, Trainer, TrainResult, resolve_device

__all__ = ["RunRecipe", "TrainedRun", "DiskFullError", "train_run", "resolve_config"]


class DiskFullError(OSError):
    """The disk filled up while a run was being written; the message says what was kept and how
    to continue."""


C = TypeVar("C")
D = TypeVar("D")


class RunRecipe(Protocol[C, D]):
    """What a task tells :func:`train_run` about itself (``C``: its run config, ``D``: its data).

    Attributes:
        train_command: the command that makes such runs (quoted in error messages).
        curve_scores: metric columns drawn on the right axis of ``curves.png`` (None: BLEU/chrF).
    """

    train_command: str
    curve_scores: Sequence[str] | None

    def load_config(self, run_dir: Path) -> C:
        """The config stored in ``run_dir/config.json``."""

    def train_config(self, cfg: C) -> TrainConfig:
        """The ``train`` section of ``cfg``."""

    def with_train_config(self, cfg: C, train: TrainConfig) -> C:
        """``cfg`` with another ``train`` section."""

    def prepare(self, cfg: C, run_dir: Path, first: bool) -> D:
        """Load (rank 0: ``first=True``, may download and write tokenizers) the run's data."""

    def build(self, cfg: C, data: D) -> tuple[C, nn.Module]:
        """``cfg`` with its data-derived fields filled in, and the model built from it."""

    def config_dict(self, cfg: C, data: D) -> dict[str, Any]:
        """The JSON-ready sections written to ``config.json`` (and into checkpoints)."""

    def task(self, cfg: C, data: D, device: torch.device) -> Task:
        """What the :class:`~attnkit.training.trainer.Trainer` trains."""


@dataclass
class TrainedRun(Generic[C, D]):
    """What :func:`train_run` returns: the trainer's result, the final config, model and data."""

    result: TrainResult
    config: C
    model: nn.Module
    data: D


def train_run(
    recipe: RunRecipe[C, D],
    cfg: C | None,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = False,
    train_overrides: dict[str, Any] | None = None,
) -> TrainedRun[C, D]:
    """Train (or resume) one run of ``recipe``'s task in ``run_dir``.

    Args:
        recipe: the task's :class:`RunRecipe`.
        cfg: the run's configuration (None when resuming: the stored one is used).
        run_dir: the run folder (must not hold a run unless ``resume``).
        resume: continue the run in ``run_dir`` from its last checkpoint, exactly.
        progress: show a progress bar (rank 0).
        train_overrides: train settings changed on resume (only
            :data:`~attnkit.training.runfolder.RESUMABLE_TRAIN_FIELDS`; saved in config.json;
            the time budget counts the run's total training time, earlier sessions included).

    Returns:
        A :class:`TrainedRun` with the final weights in ``model``.

    Raises:
        RunLockedError: another live process is writing ``run_dir``.
        DiskFullError: the disk filled up (the last complete checkpoint is kept).
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--run {run_dir}: is a file; the run folder must be a folder (or new)")
    created = _new_folder(run_dir)
    failed_start = False
    try:
        with run_lock(run_dir, f"{recipe.train_command} --run {run_dir}") as lock:
            try:
                try:
                    return _train_locked(recipe, cfg, run_dir, resume, progress, train_overrides)
                except OSError as err:
                    if not is_disk_full(err) or isinstance(err, DiskFullError):
                        raise
                    raise _disk_full(recipe, run_dir, err) from err
            except BaseException:
                # A start that failed before config.json (bad data, a refused setting, Ctrl-C
                # while preparing) leaves nothing in the folder it made, whoever holds the
                # lock emptying it; once config.json exists everything is kept.
                if created and lock is not None and not (run_dir / "config.json").exists():
                    failed_start = True
                    empty_except_lock(run_dir)
                raise
    finally:
        if failed_start:  # the lock is released: the folder goes if nothing came in since
            with contextlib.suppress(OSError):
                run_dir.rmdir()


def _new_folder(run_dir: Path) -> bool:
    """Make ``run_dir`` (and its parents); True when this call made it (atomic: of two
    processes starting the same new run, one)."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        run_dir.mkdir()
    except FileExistsError:
        return False
    return True


def empty_except_lock(run_dir: Path) -> None:
    """Remove what a failed start wrote into the folder it made (not the lock it holds; call
    it holding the run's lock)."""
    for path in run_dir.iterdir():
        if path.name == LOCK_FILE:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()


def _disk_full(recipe: RunRecipe[Any, Any], run_dir: Path, err: OSError) -> DiskFullError:
    last = CheckpointManager(run_dir).last_path()
    try:
        kept = f"the last checkpoint (step {read_meta(last)['step']}) is intact" if last else ""
    except (ValueError, KeyError):
        kept = ""
    where = f" ({err.filename})" if err.filename else ""
    full = DiskFullError(
        f"no space left on the disk of {run_dir}{where}; "
        + (f"{kept}: free some space, then continue with " if kept else "free some space, then ")
        + f"`{recipe.train_command} --run {run_dir} --resume`"
    )
    full.errno = err.errno
    return full


def _train_locked(
    recipe: RunRecipe[C, D],
    cfg: C | None,
    run_dir: Path,
    resume: bool,
    progress: bool,
    train_overrides: dict[str, Any] | None,
) -> TrainedRun[C, D]:
    ckpt = start_or_resume(run_dir, resume)
    if resume:
        cfg = recipe.load_config(run_dir)
        train = resumed_train_config(recipe.train_config(cfg), train_overrides)
        cfg = recipe.with_train_config(cfg, train)
    elif cfg is None:
        raise ConfigError(
            f"a new run needs a configuration; to continue one use "
            f"`{recipe.train_command} --run {run_dir} --resume`"
        )
    train = recipe.train_config(cfg)
    device = resolve_device(train.device)
    dist.init_from_env(device.type)
    if dist.is_main():  # rank 0 downloads and builds tokenizers; the others then read them
        run_dir.mkdir(parents=True, exist_ok=True)
        data = recipe.prepare(cfg, run_dir, True)
    dist.barrier()
    if not dist.is_main():
        data = recipe.prepare(cfg, run_dir, False)
    if dist.is_main() and resume:  # rows logged after the checkpoint are logged again
        trim_metrics(run_dir, read_meta(ckpt)["step"] if ckpt is not None else 0)
    torch.manual_seed(train.seed)
    cfg, model = recipe.build(cfg, data)
    config_dict = recipe.config_dict(cfg, data)
    task = recipe.task(cfg, data, device)
    check_warmup(train, task.batches_per_epoch(), resumed=resume)
    trainer = Trainer(
        model,
        task,
        train,
        run_dir=run_dir,
        run_config=config_dict,
        progress=progress,
    )
    # Written once the trainer accepted the settings: a start refused here (e.g. a warm-up
    # longer than the run) leaves no config.json, so the same command can be run again.
    if dist.is_main() and (not resume or train_overrides):
        write_run_config(run_dir, config_dict)
    if ckpt is not None:
        trainer.resume(ckpt)
    result = trainer.fit()
    if dist.is_main():
        write_curves(run_dir, scores=recipe.curve_scores)
    return TrainedRun(result, cfg, model, data)


@contextlib.contextmanager
def naming_config_file(
    config_file: str | Path | None,
    overrides: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
) -> Iterator[None]:
    """Inside the block (validating a config :func:`resolve_config` merged), a ConfigError
    about a setting or section that came from ``config_file`` (and was not overridden by
    ``--set`` or a flag) names the file: ``run.toml: train.lr must be > 0, got -1``."""
    try:
        yield
    except ConfigError as err:
        if not config_file:
            raise
        later = {o.split("=", 1)[0].strip() for o in overrides}
        later |= {k for k, v in (flags or {}).items() if v is not None}
        names = set()
        for name, values in load_config_file(config_file).items():
            names.add(name)
            if isinstance(values, dict):
                names |= {f"{name}.{key}" for key in values}
        message = str(err)
        from_file = any(
            message.startswith((f"{name} ", f"{name}:", f"{name}=")) for name in names - later
        )
        if not from_file:
            raise
        raise ConfigError(f"{config_file}: {message}") from None


def resolve_config(
    preset: dict[str, Any],
    *,
    config_file: str | Path | None = None,
    overrides: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge settings, later ones winning: preset <- config file <- ``--set`` <- explicit flags.

    Args:
        preset: the task's defaults for this data and model (a fresh dict; it is modified).
        config_file: a TOML/JSON file of sections (tables update the preset's, values replace).
        overrides: ``section.key=value`` strings (``--set``).
        flags: ``{"section.key": value}`` from dedicated command-line flags; None values are
            skipped (flag not given).

    Returns:
        The merged nested dict, to be validated by the task's config reader.
    """
    merged = preset
    if config_file:
        merge_config_file(merged, config_file)
    merged = apply_overrides(merged, list(overrides))
    for path, value in (flags or {}).items():
        if value is None:
            continue
        name, key = path.split(".")
        merged.setdefault(name, {})
        section(merged, name)[key] = value  # the table itself (`model = 3` is refused)
    return merged

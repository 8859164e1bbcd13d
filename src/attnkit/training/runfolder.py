"""Run folders, the same for every task (translation, image classification, ...).

A run folder holds everything needed to rebuild, resume and use a model::

    config.json            {"run_format", "attnkit_version", "config": {sections...}}
    metrics.jsonl          one JSON row per log/validation event (written by the Trainer)
    curves.png             training curves
    checkpoints/last/      model.safetensors + state.pt + meta.json (atomic)
    checkpoints/best-*/    the best N by the task's validation metric

Tasks add their own files (tokenizers for translation). This module reads and writes the
``config.json`` envelope, checks whether a folder may start or resume a run, applies the train
settings a resume may change, finds checkpoints, reads ``metrics.jsonl`` back and draws it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from attnkit.config import ConfigError, TrainConfig, from_dict, to_dict
from attnkit.files import read_json_lines, rewrite_json_lines, write_json_atomic
from attnkit.training.checkpoint import _is_complete, _resolve
from attnkit.training.manager import CheckpointManager
from attnkit.version import __version__
from attnkit.viz.curves import plot_curves

__all__ = [
    "RUN_KINDS",
    "describe_kind",
    "wrong_kind",
    "TRAIN_COMMANDS",
    "RUN_FORMAT",
    "RESUMABLE_TRAIN_FIELDS",
    "write_json_atomic",
    "write_run_config",
    "read_metric_rows",
    "trim_metrics",
    "read_run_config",
    "stored_config",
    "is_run_folder",
    "run_kind",
    "start_or_resume",
    "resumed_train_config",
    "find_checkpoint",
    "write_curves",
]

RUN_FORMAT = 1
#: Train settings a ``--resume`` may change; the others would silently change the run.
RESUMABLE_TRAIN_FIELDS = (
    "epochs",
    "time_budget",
    "patience",
    "log_every",
    "keep_best",
    "device",
    "eval_every",
    "keep_last",
)

log = logging.getLogger(__name__)


def write_run_config(run_dir: str | Path, config: dict[str, Any]) -> None:
    """Write ``run_dir/config.json``: the resolved config sections in the versioned envelope."""
    write_json_atomic(
        Path(run_dir) / "config.json",
        {"run_format": RUN_FORMAT, "attnkit_version": __version__, "config": config},
    )


def read_run_config(run_dir: str | Path, train_command: str = "attnkit train") -> dict[str, Any]:
    """The ``config`` sections of ``run_dir/config.json``; errors name the folder and the fix.

    Args:
        run_dir: the run folder.
        train_command: the command that makes such runs, quoted in the error messages.
    """
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(
            f"{run_dir}: not a run folder (no config.json); train one with "
            f"`{train_command} --run DIR`"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: unreadable ({err})") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: expected a JSON object with 'run_format' and 'config', got "
            f"{type(raw).__name__}; retrain the run or restore its config.json"
        )
    if raw.get("run_format") != RUN_FORMAT:
        raise ConfigError(
            f"{path}: run format {raw.get('run_format')!r} (attnkit "
            f"{raw.get('attnkit_version', '?')}) is not supported by attnkit {__version__} "
            f"(format {RUN_FORMAT}); retrain the run with this version"
        )
    if not isinstance(raw.get("config"), dict):
        raise ConfigError(f"{path}: no 'config' table; retrain the run with this version")
    return raw["config"]


@contextlib.contextmanager
def stored_config(run_dir: str | Path) -> Iterator[Path]:
    """Around the reading and checking of ``run_dir/config.json`` (yields its path): a
    ``ConfigError`` or the type error of a hand-edited value becomes one line naming the file,
    with what to do."""
    path = Path(run_dir) / "config.json"
    try:
        yield path
    except (ConfigError, TypeError, ValueError, AttributeError) as err:
        fix = "" if "restore" in str(err) else "; restore the file or retrain"
        raise ConfigError(f"{path}: {err}{fix}") from None


def is_run_folder(path: str | Path) -> bool:
    """Whether ``path/config.json`` is a training run's (an object with a ``config`` table), not
    a pretrained checkpoint's or an export's config.json (no error: for callers that choose
    what a folder is; :func:`read_run_config` says what is wrong with one)."""
    try:
        raw = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and isinstance(raw.get("config"), dict)


def run_kind(run_dir: str | Path) -> str:
    """The task of the run in ``run_dir``: the ``task`` field of its ``config.json``
    (``"translation"`` when absent, as in runs of attnkit 0.1.0, or when the file is missing or
    unreadable: the translation commands then report that as before)."""
    try:
        raw = json.loads((Path(run_dir) / "config.json").read_text(encoding="utf-8"))
        task = raw["config"].get("task", "translation")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "translation"
    return task if isinstance(task, str) else "translation"


#: How messages name a run of each kind ("runs/x is a language-model run").
RUN_KINDS = {
    "translation": "a translation run",
    "classification": "an image-classification (ViT) run",
    "lm": "a language-model run",
    "textclass": "a text-classification run",
}


#: The command that trains (and resumes) a run of each kind.
TRAIN_COMMANDS = {
    "translation": "attnkit train",
    "classification": "attnkit train-vit",
    "lm": "attnkit train-lm",
    "textclass": "attnkit finetune",
}


def describe_kind(kind: str) -> str:
    """``"lm"`` -> ``"a language-model run"`` (unknown kinds: ``"a <kind> run"``)."""
    return RUN_KINDS.get(kind, f"a {kind} run")


def wrong_kind(run_dir: str | Path, kind: str, wanted: str) -> ConfigError:
    """The error for a run of ``kind`` given where a run of ``wanted`` kind is needed: it names
    both, the command that continues this run, and the one that trains the wanted kind."""
    own = TRAIN_COMMANDS.get(kind)
    resume = f" (continue it with `{own} --run {run_dir} --resume`)" if own else ""
    return ConfigError(
        f"{run_dir} is {describe_kind(kind)}{resume}, not {describe_kind(wanted)}; train "
        f"one with `{TRAIN_COMMANDS[wanted]} --run DIR`"
    )


def start_or_resume(run_dir: str | Path, resume: bool) -> Path | None:
    """Check that ``run_dir`` may start a new run, or find the checkpoint to resume from.

    A run stopped after writing ``config.json`` but before its first checkpoint resumes from the
    start (step 0, the stored configuration), with a warning.

    Returns:
        None for a new run (or a resume from the start); the last checkpoint's folder when
        resuming.

    Raises:
        ConfigError: a new run in a folder that already holds one, or nothing to resume.
    """
    run_dir = Path(run_dir)
    if not resume:
        if (run_dir / "config.json").exists():
            raise ConfigError(
                f"{run_dir} already holds a run; use --resume to continue it or "
                "pick another --run folder"
            )
        return None
    found = CheckpointManager(run_dir).last_path()
    if found is None:
        if (run_dir / "config.json").is_file():
            log.warning(
                "%s: stopped before its first checkpoint; starting it again from step 0 with "
                "its stored configuration",
                run_dir,
            )
            return None
        raise ConfigError(
            f"{run_dir}: no checkpoint to resume from ({run_dir / 'checkpoints' / 'last'} missing)"
        )
    return found


def resumed_train_config(train: TrainConfig, overrides: dict[str, Any] | None) -> TrainConfig:
    """``train`` with the resume-time ``overrides`` applied (only :data:`RESUMABLE_TRAIN_FIELDS`).

    The time budget counts the run's total training time, earlier sessions included.
    """
    if not overrides:
        return train
    bad = sorted(set(overrides) - set(RESUMABLE_TRAIN_FIELDS))
    if bad:
        raise ConfigError(
            f"--resume cannot change train settings {bad}; only "
            f"{list(RESUMABLE_TRAIN_FIELDS)} (start a new run otherwise)"
        )
    return from_dict(TrainConfig, {**to_dict(train), **overrides}, "train")


def find_checkpoint(run_dir: str | Path, checkpoint: str = "best", keep_best: int = 3) -> Path:
    """``best`` (falling back to ``last`` when no best exists), ``last``, the name of a folder
    in ``run_dir/checkpoints`` (``averaged``), or a folder path.

    The best checkpoints are ranked in the direction their index (``best.json``) was written
    with: highest BLEU for translation, lowest validation loss for image classification.
    """
    metric, mode = "bleu", "max"
    index = Path(run_dir) / "checkpoints" / "best.json"
    if index.is_file():
        try:
            stored = json.loads(index.read_text(encoding="utf-8"))
            metric, mode = str(stored["metric"]), str(stored["mode"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConfigError(
                f"{index} is unreadable ({err}); delete it and the best-* "
                "folders, or pass a checkpoint folder"
            ) from err
    manager = CheckpointManager(run_dir, keep_best=keep_best, metric=metric, mode=mode)
    if checkpoint == "best":
        path = manager.best_path() or manager.last_path()
    elif checkpoint == "last":
        path = manager.last_path()
    elif "/" not in checkpoint and _is_complete(_resolve(manager.dir / checkpoint)):
        path = _resolve(manager.dir / checkpoint)  # a named one, e.g. from ``attnkit average``
    else:
        path = Path(checkpoint)
    if path is None or not Path(path).exists():
        if checkpoint in ("best", "last"):
            raise ConfigError(
                f"{run_dir}: no {checkpoint} checkpoint found; has the run "
                "trained for at least one epoch?"
            )
        raise ConfigError(
            f"--checkpoint {checkpoint!r} is neither a checkpoint in "
            f"{manager.dir} nor a folder; use best, last, a name made by "
            "`attnkit average`, or a checkpoint folder"
        )
    return Path(path)


def write_curves(run_dir: str | Path, scores: Sequence[str] | None = None) -> None:
    """Draw ``metrics.jsonl`` into ``curves.png``; a failure is logged, never raised. Nothing
    is drawn (or said) before the first row is logged (e.g. Ctrl-C at the first step).

    Args:
        run_dir: the run folder.
        scores: columns for the right axis (e.g. ``["valid_accuracy"]``); default: BLEU/chrF.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.jsonl").exists():
        return
    tmp = run_dir / ".curves.tmp.png"
    try:  # drawn aside, then renamed: a reader never sees half a picture
        plot_curves(read_metric_rows(run_dir / "metrics.jsonl"), path=tmp, y2=scores)
        os.replace(tmp, run_dir / "curves.png")
    except Exception as err:  # a plot must never fail a finished training run
        log.warning("could not draw training curves: %s", err)
        tmp.unlink(missing_ok=True)


def read_metric_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl`` (one JSON object per line), in order.

    An incomplete last line (a run killed while appending it) is skipped.

    Raises:
        ValueError: the file is missing, or a complete line is not JSON (naming the file and
            line).
    """
    if not Path(path).is_file():
        raise ValueError(f"metrics log {str(path)!r} does not exist; has the run trained?")
    return read_json_lines(path)


def trim_metrics(run_dir: str | Path, step: int) -> int:
    """Drop the rows of ``run_dir/metrics.jsonl`` logged after ``step`` (and an incomplete last
    line): what a run killed after its last checkpoint logged and its resume logs again.

    Returns:
        How many rows were dropped.
    """
    path = Path(run_dir) / "metrics.jsonl"

    def keep(row: Any) -> bool:
        logged_at = row.get("step") if isinstance(row, dict) else None
        return not isinstance(logged_at, int) or logged_at <= step

    dropped = rewrite_json_lines(path, keep)
    if dropped:
        log.info("%s: dropped %d row(s) logged after step %d", path, dropped, step)
    return dropped

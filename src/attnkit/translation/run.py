"""Training entry point of translation runs, and checkpoint averaging.

Layout of a translation run folder::

    config.json            resolved RunConfig + attnkit version + run format
    tokenizer/src, /tgt    the tokenizers (trained on the training split)
    metrics.jsonl          one JSON row per log/validation event
    curves.png             training curves
    checkpoints/last/      model.safetensors + state.pt + meta.json (atomic)
    checkpoints/best-*/    the best N by validation BLEU
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnkit.config import ConfigError, TrainConfig, from_dict
from attnkit.models import build_seq2seq
from attnkit.models.size import check_model_size
from attnkit.training.manager import CheckpointManager, save_averaged
from attnkit.training.runlock import run_lock
from attnkit.training.runs import train_run
from attnkit.training.trainer import TrainResult
from attnkit.translation.config import (
    RunConfig,
    load_run_config,
    model_config_class,
    run_config_dict,
)
from attnkit.translation.task import PreparedData, TranslationTask, prepare_data
from attnkit.translation.translator import Translator

__all__ = ["TranslationRecipe", "train_translator", "average_run_checkpoints"]


class TranslationRecipe:
    """How :func:`attnkit.training.runs.train_run` trains a translation run."""

    train_command = "attnkit train"
    curve_scores = None  # BLEU and chrF

    def load_config(self, run_dir: Path) -> RunConfig:
        return load_run_config(run_dir)

    def train_config(self, cfg: RunConfig) -> TrainConfig:
        return cfg.train

    def with_train_config(self, cfg: RunConfig, train: TrainConfig) -> RunConfig:
        return dataclasses.replace(cfg, train=train)

    def prepare(self, cfg: RunConfig, run_dir: Path, first: bool) -> PreparedData:
        torch.manual_seed(cfg.train.seed)
        return prepare_data(cfg.data, run_dir, cfg.data.max_len)

    def build(self, cfg: RunConfig, data: PreparedData) -> tuple[RunConfig, nn.Module]:
        model = {
            "src_vocab_size": data.src_tok.vocab_size,
            "tgt_vocab_size": data.tgt_tok.vocab_size,
            **cfg.model,
        }
        if cfg.model_type == "transformer":
            model.setdefault("max_len", cfg.data.max_len + 2)
            if data.src_tok is not data.tgt_tok and model.get("tie_embeddings") == "all":
                raise ConfigError("model.tie_embeddings='all' needs data.shared_vocab=true")
        cfg = dataclasses.replace(cfg, model=model)
        check_model_size(
            from_dict(model_config_class(cfg.model_type), model, "model"),
            "the model section",
            fix="choose smaller sizes (--set model.d_model=...)",
        )
        return cfg, build_seq2seq(cfg.model_type, model)

    def config_dict(self, cfg: RunConfig, data: PreparedData) -> dict[str, Any]:
        return run_config_dict(cfg)

    def task(self, cfg: RunConfig, data: PreparedData, device: torch.device) -> TranslationTask:
        return TranslationTask(
            data,
            max_tokens=cfg.train.max_tokens,
            seed=cfg.train.seed,
            label_smoothing=cfg.train.label_smoothing,
            decode=cfg.decode,
            device=device,
            cased=not cfg.data.lowercase,
        )


def train_translator(
    cfg: RunConfig | None,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = False,
    train_overrides: dict[str, Any] | None = None,
) -> tuple[TrainResult, Translator]:
    """Train (or resume) a translation run in ``run_dir``; return the result and the translator.

    With ``resume`` the stored configuration is used; ``train_overrides`` may change the fields in
    :data:`~attnkit.training.runfolder.RESUMABLE_TRAIN_FIELDS` (e.g. more epochs, a new time
    budget; the budget counts the run's total training time, earlier sessions included). The
    change is saved in config.json. The returned translator holds the final weights.
    """
    run = train_run(
        TranslationRecipe(),
        cfg,
        run_dir,
        resume=resume,
        progress=progress,
        train_overrides=train_overrides,
    )
    data = run.data
    return run.result, Translator(run.model, data.src_tok, data.tgt_tok, config=run.config)


def average_run_checkpoints(
    run_dir: str | Path, kind: str = "best", n: int | None = None, name: str = "averaged"
) -> tuple[Path, list[Path]]:
    """Average the weights of ``n`` of a run's kept checkpoints into ``checkpoints/<name>``.

    Args:
        run_dir: a translation run folder.
        kind: ``"best"`` (by validation BLEU) or ``"last"`` (the most recent: ``last``, then
            the ``recent-*`` (``train.keep_last``) and best-* ones by step).
        n: how many (default: every kept checkpoint of that kind).
        name: the new checkpoint's folder name under ``checkpoints/`` (not ``last``, ``best-*``
            or ``recent-*``).

    Returns:
        The new checkpoint's path and the checkpoints averaged.

    Raises:
        RunLockedError: another process is writing the run (training it, or averaging).
    """
    run_dir = Path(run_dir)
    if "/" in name or "\\" in name or name.startswith(".") or name.endswith((".tmp", ".old")):
        raise ConfigError(
            f"--name {name!r} is not a checkpoint name (a folder name under RUN/checkpoints: "
            "no /, no leading dot, not ending in .tmp or .old); choose e.g. averaged"
        )
    if not name or name in ("last", "best") or name.startswith(("best-", "last.", "recent-")):
        raise ConfigError(
            f"--name {name!r} would clash with the run's own checkpoints; "
            "choose another name, e.g. averaged"
        )
    if n is not None and n < 1:
        raise ConfigError(f"the number of checkpoints to average must be >= 1, got {n}")
    cfg = load_run_config(run_dir)
    with run_lock(run_dir, f"attnkit average --run {run_dir}"):
        return _average_locked(run_dir, cfg, kind, n, name)


def _average_locked(
    run_dir: Path, cfg: RunConfig, kind: str, n: int | None, name: str
) -> tuple[Path, list[Path]]:
    paths = CheckpointManager(
        run_dir, keep_best=cfg.train.keep_best, keep_recent=cfg.train.keep_last
    ).paths(kind)
    if not paths:
        raise ConfigError(f"{run_dir}: no checkpoints to average; train first")
    if n is not None and n > len(paths):
        raise ConfigError(
            f"{run_dir} keeps {len(paths)} {kind} checkpoint(s), fewer than the "
            f"{n} asked for; ask for at most {len(paths)} (train.keep_best and "
            "train.keep_last set how many best and recent ones a run keeps)"
        )
    chosen = paths if n is None else paths[:n]
    model = build_seq2seq(cfg.model_type, cfg.model)
    out = save_averaged(chosen, run_dir / "checkpoints" / name, model)
    return out, chosen

"""Training entry point of language-model runs (a decoder-only Transformer on text).

Layout of a language-model run folder::

    config.json            {"task": "lm", model, data, train[, init_from]} + version
    tokenizer/             the tokenizer (trained on the training split, or copied from the
                           run given to --init-from)
    metrics.jsonl          one JSON row per log/validation event
    curves.png             training curves
    checkpoints/last/      model.safetensors + state.pt + meta.json (atomic)
    checkpoints/best-*/    the best by validation loss

Use a trained run with :class:`attnkit.lm.generator.Generator`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnkit.config import ConfigError, TrainConfig
from attnkit.lm.config import LMRunConfig, lm_config_dict, load_lm_config
from attnkit.lm.data import TextData, prepare_text_data
from attnkit.lm.generator import Generator
from attnkit.lm.task import LMTask
from attnkit.models.decoder_lm import DecoderLM
from attnkit.models.size import check_model_size
from attnkit.training.checkpoint import load_checkpoint
from attnkit.training.runfolder import find_checkpoint
from attnkit.training.runs import train_run
from attnkit.training.trainer import TrainResult

__all__ = ["LMRecipe", "train_lm", "continued_config"]


class LMRecipe:
    """How :func:`attnkit.training.runs.train_run` trains a language-model run.

    Args:
        init_from: another language-model run to start from (its best weights and its
            tokenizer); the config must already carry its model (:func:`continued_config`).
    """

    train_command = "attnkit train-lm"
    curve_scores = ()  # loss only: bpc and perplexity are the same curve rescaled

    def __init__(self, init_from: str | Path | None = None) -> None:
        self.init_from = Path(init_from) if init_from is not None else None

    def load_config(self, run_dir: Path) -> LMRunConfig:
        return load_lm_config(run_dir)

    def train_config(self, cfg: LMRunConfig) -> TrainConfig:
        return cfg.train

    def with_train_config(self, cfg: LMRunConfig, train: TrainConfig) -> LMRunConfig:
        return dataclasses.replace(cfg, train=train)

    def prepare(self, cfg: LMRunConfig, run_dir: Path, first: bool) -> TextData:
        source = self.init_from / "tokenizer" if self.init_from is not None else None
        return prepare_text_data(cfg.data, run_dir, first=first, tokenizer_from=source)

    def build(self, cfg: LMRunConfig, data: TextData) -> tuple[LMRunConfig, nn.Module]:
        model_cfg = dataclasses.replace(cfg.model, vocab_size=data.tokenizer.vocab_size)
        cfg = dataclasses.replace(cfg, model=model_cfg)
        check_model_size(model_cfg, "the model section", fix="choose smaller model sizes")
        model = DecoderLM(model_cfg)
        if self.init_from is not None:
            source = load_lm_config(self.init_from)
            load_checkpoint(
                find_checkpoint(self.init_from, "best", source.train.keep_best),
                model,
                with_state=False,
            )
        return cfg, model

    def config_dict(self, cfg: LMRunConfig, data: TextData) -> dict[str, Any]:
        return lm_config_dict(cfg, self.init_from)

    def task(self, cfg: LMRunConfig, data: TextData, device: torch.device) -> LMTask:
        return LMTask(
            data,
            block_size=cfg.data.block_size,
            batch_size=cfg.data.batch_size,
            seed=cfg.data.seed,
            label_smoothing=cfg.train.label_smoothing,
            device=device,
        )


def continued_config(cfg: LMRunConfig, init_from: str | Path) -> LMRunConfig:
    """``cfg`` for continued pretraining from the run ``init_from``: its model and tokenizer
    settings replace ``cfg``'s (the block size may not exceed its context)."""
    source = load_lm_config(init_from)
    if cfg.data.block_size > source.model.max_len:
        raise ConfigError(
            f"data.block_size={cfg.data.block_size} exceeds the context of "
            f"{init_from} (max_len={source.model.max_len}); use --block-size "
            f"{source.model.max_len} or less"
        )
    data = dataclasses.replace(
        cfg.data, tokenizer=source.data.tokenizer, vocab_size=source.data.vocab_size
    )
    return dataclasses.replace(cfg, model=source.model, data=data)


def train_lm(
    cfg: LMRunConfig | None,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = False,
    train_overrides: dict[str, Any] | None = None,
    init_from: str | Path | None = None,
) -> tuple[TrainResult, Generator]:
    """Train (or resume) a language model in ``run_dir``; return the result and the generator.

    With ``resume`` the stored configuration is used and ``train_overrides`` may change the
    fields in :data:`~attnkit.training.runfolder.RESUMABLE_TRAIN_FIELDS` (saved in config.json),
    as for :func:`attnkit.translation.run.train_translator`. The returned generator holds the
    final weights; ``Generator.load(run_dir)`` loads the best checkpoint (lowest validation
    loss).

    Args:
        cfg: the run's configuration (None when resuming).
        run_dir: the run folder (must not hold a run unless ``resume``).
        resume: continue the run in ``run_dir`` from its last checkpoint, exactly.
        progress: show a progress bar.
        train_overrides: train settings changed on resume (e.g. ``{"time_budget": 600}``).
        init_from: continued pretraining: start from this language-model run's best weights
            and tokenizer (its model config replaces ``cfg.model``; the new text must be
            encodable by its tokenizer).

    Returns:
        ``(result, generator)``: the trainer's :class:`~attnkit.training.trainer.TrainResult`
        (``tokens_per_second`` counts predicted tokens) and the trained model.
    """
    if init_from is not None:
        if resume:
            raise ConfigError(
                "--init-from starts a new run; drop it to --resume (the run "
                "remembers where it started from)"
            )
        if cfg is None:
            raise ConfigError("init_from needs the new run's configuration")
        cfg = continued_config(cfg, init_from)
    run = train_run(
        LMRecipe(init_from),
        cfg,
        run_dir,
        resume=resume,
        progress=progress,
        train_overrides=train_overrides,
    )
    return run.result, Generator(run.model, run.data.tokenizer, run.config)

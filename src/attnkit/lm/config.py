"""Configuration of language-model runs: the text section, the run config, the presets, and
reading and writing a run folder's ``config.json``.

``config.json`` of a language-model run holds ``task`` (``"lm"``), ``model``
(:class:`~attnkit.config.DecoderLMConfig`, with ``vocab_size`` from the tokenizer and ``max_len``
= ``data.block_size``), ``data`` (:class:`TextDataConfig`), ``train``
(:class:`~attnkit.config.TrainConfig`) and, for continued pretraining, ``init_from`` (the run
whose weights and tokenizer it started from).

Presets (a plain dict, :data:`LM_PRESETS`): ``char-small`` is sized for two CPU cores: 4 layers
of width 128 with rotary positions, 16 windows of 128 characters per step, lr 4e-3 on a cosine
that follows its 150 s budget (``schedule_horizon="time"``), under bfloat16 autocast where the
CPU has AMX (``train.cpu_amp``). On tiny-shakespeare it reached a validation loss of 1.55 on two
cores of an AMX Xeon (1.60 in float32), and 1.69 in float32 on one core of a busy machine
(``--threads 1``), each in 2 min 35 s of wall time including start-up and the final validation.
``char-gpu`` (nanoGPT's shakespeare-char shape) and ``bpe-gpu`` are untuned starting points for
a GPU.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnkit.config import (
    ConfigError,
    DecoderLMConfig,
    TrainConfig,
    from_dict,
    require,
    require_choice,
    section,
    to_dict,
)
from attnkit.models.size import check_model_size
from attnkit.training.runfolder import read_run_config, stored_config, wrong_kind

__all__ = [
    "BUILTIN_TEXTS",
    "DERIVED_MODEL_FIELDS",
    "LM_PRESETS",
    "TextDataConfig",
    "LMRunConfig",
    "lm_preset",
    "lm_config_from_dict",
    "load_lm_config",
    "lm_config_dict",
]

#: Text sources known by name (downloaded once); anything else is a file or a folder.
BUILTIN_TEXTS = ("tinyshakespeare",)
#: Model fields that come from the tokenizer and the data, never from the user.
DERIVED_MODEL_FIELDS = ("vocab_size", "max_len", "pad_id")


@dataclass(frozen=True)
class TextDataConfig:
    """Where the text comes from, how it is tokenized, split and cut into windows.

    ``source``: ``tinyshakespeare`` (downloaded once), a UTF-8 text file, or a folder of
    ``.txt`` files (read in name order). ``tokenizer``: ``char`` (one id per character) or
    ``bpe`` (sentencepiece, ``vocab_size`` pieces; each line is encoded on its own and line
    ends become the EOS id). The split is made on the characters: the first
    ``1 - valid_fraction`` trains (the tokenizer too), the last ``valid_fraction`` validates.
    Each step draws ``batch_size`` random windows of ``block_size + 1`` tokens (over all
    processes). Validation scores the first ``valid_chars`` characters of the validation split
    (None: all of it; tiny-shakespeare's 111,540 fit) in non-overlapping windows.
    """

    source: str = "tinyshakespeare"
    tokenizer: str = "char"
    vocab_size: int = 2000
    valid_fraction: float = 0.1
    block_size: int = 128
    batch_size: int = 32
    valid_chars: int | None = 250_000
    seed: int = 0

    def __post_init__(self) -> None:
        require(
            bool(self.source),
            "TextDataConfig.source is empty; use tinyshakespeare, a "
            "text file or a folder of .txt files",
        )
        require_choice(self, "tokenizer", ("char", "bpe"))
        require(
            self.vocab_size > 4,
            f"TextDataConfig.vocab_size must be > 4 (the special ids), got {self.vocab_size}",
        )
        require(
            0.0 < self.valid_fraction < 1.0,
            f"TextDataConfig.valid_fraction must be in (0, 1), got {self.valid_fraction}",
        )
        require(
            self.block_size >= 1, f"TextDataConfig.block_size must be >= 1, got {self.block_size}"
        )
        require(
            self.batch_size >= 1, f"TextDataConfig.batch_size must be >= 1, got {self.batch_size}"
        )
        require(
            self.valid_chars is None or self.valid_chars >= 1,
            f"TextDataConfig.valid_chars must be >= 1 (or None: all), got {self.valid_chars}",
        )


def _placeholder_model() -> DecoderLMConfig:
    return DecoderLMConfig(vocab_size=1, pad_id=None)


@dataclass(frozen=True)
class LMRunConfig:
    """Everything needed to rebuild a language-model run from its folder.

    Until the tokenizer exists (a new run), ``model.vocab_size`` is a placeholder (1);
    :class:`~attnkit.lm.run.LMRecipe` fills it in.
    """

    model: DecoderLMConfig = field(default_factory=_placeholder_model)
    data: TextDataConfig = field(default_factory=TextDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


_TRAIN = {
    "betas": [0.9, 0.99],
    "label_smoothing": 0.0,
    "clip_norm": 1.0,
    "keep_best": 1,
    "log_every": 50,
}

#: Defaults per preset, merged under the user's config file and ``--set`` overrides.
LM_PRESETS: dict[str, dict[str, Any]] = {
    # CPU minutes (see the module docstring); rotary positions and 16 windows per step learned
    # much faster per second here than learned positions or 32 windows
    "char-small": {
        "model": {
            "d_model": 128,
            "num_heads": 4,
            "ffn_hidden": 512,
            "num_layers": 4,
            "dropout": 0.0,
            "positional": "rotary",
        },
        "data": {"tokenizer": "char", "block_size": 128, "batch_size": 16},
        "train": {
            **_TRAIN,
            "epochs": 100,
            "time_budget": 150.0,
            "schedule": "cosine",
            "schedule_horizon": "time",
            "lr": 4e-3,
            "warmup_steps": 50,
            "weight_decay": 0.1,
            "log_every": 25,
            "cpu_amp": True,  # bf16 autocast where the CPU has AMX (1.35x the steps here)
        },
    },
    # untuned starting points for a GPU (nanoGPT's shakespeare-char shape)
    "char-gpu": {
        "model": {
            "d_model": 384,
            "num_heads": 6,
            "ffn_hidden": 1536,
            "num_layers": 6,
            "dropout": 0.2,
        },
        "data": {"tokenizer": "char", "block_size": 256, "batch_size": 64},
        "train": {
            **_TRAIN,
            "epochs": 80,
            "schedule": "cosine",
            "lr": 1e-3,
            "warmup_steps": 100,
            "weight_decay": 0.1,
            "eval_every": 250,
        },
    },
    "bpe-gpu": {
        "model": {
            "d_model": 512,
            "num_heads": 8,
            "ffn_hidden": 2048,
            "num_layers": 8,
            "dropout": 0.1,
        },
        "data": {"tokenizer": "bpe", "vocab_size": 8000, "block_size": 256, "batch_size": 64},
        "train": {
            **_TRAIN,
            "epochs": 50,
            "schedule": "cosine",
            "lr": 6e-4,
            "warmup_steps": 200,
            "weight_decay": 0.1,
            "eval_every": 250,
        },
    },
}


def lm_preset(name: str) -> dict[str, Any]:
    """A copy of the preset ``name`` (``char-small``, ``char-gpu``, ``bpe-gpu``)."""
    if name not in LM_PRESETS:
        raise ConfigError(f"no language-model preset {name!r}; choose one of {list(LM_PRESETS)}")
    return copy.deepcopy(LM_PRESETS[name])


def lm_config_from_dict(data: dict[str, Any], derived: bool = False) -> LMRunConfig:
    """Validate a nested ``{"model", "data", "train"}`` dict (unknown keys are errors).

    The model section is checked before any data is read. For a new run (``derived=False``)
    ``model.vocab_size``, ``model.max_len`` and ``model.pad_id`` may not be given: the tokenizer
    sets the vocabulary, ``data.block_size`` the context. A stored run (``derived=True``) has
    them; ``task`` and ``init_from`` entries of a ``config.json`` are accepted and ignored.
    """
    known = {"model", "data", "train"} | ({"task", "init_from"} if derived else set())
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}; known: model, data, train")
    text = from_dict(TextDataConfig, section(data, "data"), "data")
    model = dict(section(data, "model"))
    if not derived:
        given = sorted(set(model) & set(DERIVED_MODEL_FIELDS))
        if given:
            fix = "data.block_size" if given[0] == "max_len" else "data.vocab_size (bpe)"
            raise ConfigError(
                f"model.{given[0]} is set by the tokenizer and the data; remove "
                f"it (set {fix} instead)"
            )
        model = {**model, "vocab_size": 1, "pad_id": None, "max_len": text.block_size}
    return LMRunConfig(
        model=from_dict(DecoderLMConfig, model, "model"),
        data=text,
        train=from_dict(TrainConfig, section(data, "train"), "train"),
    )


def load_lm_config(run_dir: str | Path) -> LMRunConfig:
    """Read a language-model run's ``run_dir/config.json``; errors name the folder and the fix."""
    raw = read_run_config(run_dir, train_command="attnkit train-lm")
    if raw.get("task") != "lm":
        raise wrong_kind(run_dir, raw.get("task", "translation"), "lm")
    with stored_config(run_dir):
        cfg = lm_config_from_dict(raw, derived=True)
        check_model_size(cfg.model, "model")  # before any allocation
    return cfg


def lm_config_dict(cfg: LMRunConfig, init_from: str | Path | None = None) -> dict[str, Any]:
    """The sections written to ``config.json`` (``task`` = ``"lm"``)."""
    out: dict[str, Any] = {
        "task": "lm",
        "model": to_dict(cfg.model),
        "data": to_dict(cfg.data),
        "train": to_dict(cfg.train),
    }
    if init_from is not None:
        out["init_from"] = str(init_from)
    return out

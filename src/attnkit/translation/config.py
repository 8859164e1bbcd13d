"""Configuration of translation runs: the data section, the run config, presets per corpus and
model, and reading a run folder's ``config.json``.

``config.json`` of a translation run holds ``model_type`` (``transformer`` or ``bahdanau``),
``model`` (the fields of :class:`~attnkit.config.TransformerConfig` or
:class:`~attnkit.config.BahdanauConfig`, vocabulary sizes included), ``data``
(:class:`DataConfig`), ``train`` and ``decode``.

The presets: ``dates`` is sized to train to near-perfect accuracy in a few minutes on 2 CPU
cores; ``fra-eng`` (and any other TSV) is the configuration measured in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnkit.config import (
    BahdanauConfig,
    ConfigError,
    DecodeConfig,
    TrainConfig,
    TransformerConfig,
    from_dict,
    require_choice,
    require_positive,
    require_probability,
    section,
    to_dict,
)
from attnkit.models.size import check_model_size
from attnkit.training.runfolder import read_run_config, stored_config, wrong_kind

__all__ = [
    "DataConfig",
    "RunConfig",
    "PRESETS",
    "DERIVED_MODEL_FIELDS",
    "preset_for",
    "run_config_from_dict",
    "load_run_config",
    "run_config_dict",
    "model_config_class",
]

#: Model fields that come from the tokenizers, never from the user.
DERIVED_MODEL_FIELDS = ("src_vocab_size", "tgt_vocab_size")
_MODEL_CLASSES = {"transformer": TransformerConfig, "bahdanau": BahdanauConfig}


@dataclass(frozen=True)
class DataConfig:
    """Where sentence pairs come from and how they are tokenized."""

    source: str = "dates"
    valid: str | None = None
    tokenizer: str = "bpe"
    vocab_size: int = 8000
    shared_vocab: bool = True
    split_digits: bool = False
    min_freq: int = 2
    lowercase: bool = False
    tidy_source_punctuation: bool = True
    max_len: int = 128
    num_examples: int = 20000
    valid_fraction: float = 0.05
    valid_limit: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        require_choice(self, "tokenizer", ("word", "bpe", "unigram"))
        require_positive(self, "vocab_size", "min_freq", "max_len", "num_examples")
        require_probability(self, "valid_fraction")


@dataclass(frozen=True)
class RunConfig:
    """Everything needed to rebuild a translation run from its folder."""

    model_type: str = "transformer"
    model: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def __post_init__(self) -> None:
        require_choice(self, "model_type", tuple(_MODEL_CLASSES))


def model_config_class(model_type: str) -> type:
    """The model config dataclass of ``model_type`` (``transformer`` or ``bahdanau``)."""
    if model_type not in _MODEL_CLASSES:
        raise ConfigError(f"no model {model_type!r}; choose transformer or bahdanau")
    return _MODEL_CLASSES[model_type]


def _check_model_section(model_type: str, model: dict[str, Any], derived: bool) -> None:
    """Validate a ``model`` section now, before any data work: unknown keys, types and ranges.

    For a new run (``derived=False``) the vocabulary sizes are not known yet and may not be
    given; placeholders stand in for them. A stored run has them (``derived=True``).
    """
    cls = model_config_class(model_type)
    if not derived:
        given = sorted(set(model) & set(DERIVED_MODEL_FIELDS))
        if given:
            raise ConfigError(
                f"model.{given[0]} is set by the tokenizer; remove it (set "
                "data.vocab_size for the tokenizer's size instead)"
            )
        model = {"src_vocab_size": 2, "tgt_vocab_size": 2, **model}
    from_dict(cls, model, "model")


_DATES_DATA = {
    "tokenizer": "bpe",
    "vocab_size": 200,
    "split_digits": True,
    "max_len": 40,
    "num_examples": 20000,
    "valid_fraction": 0.05,
    "valid_limit": 500,
    "lowercase": True,  # the course's preprocessing
}
_TEXT_DATA = {"tokenizer": "bpe", "vocab_size": 4000, "shared_vocab": True, "max_len": 64}
#: Corpora read the course's way (lower-cased): d2l's own download of the Tatoeba pairs.
COURSE_CORPORA = ("fra-eng",)

PRESETS: dict[str, dict[str, Any]] = {
    "dates/transformer": {
        "model": {
            "d_model": 128,
            "num_heads": 4,
            "ffn_hidden": 512,
            "num_encoder_layers": 2,
            "num_decoder_layers": 2,
            "dropout": 0.1,
            "norm_first": True,
        },
        "data": _DATES_DATA,
        "train": {
            "epochs": 5,
            "max_tokens": 2048,
            "lr": 2e-3,
            "warmup_steps": 200,
            "label_smoothing": 0.1,
            "log_every": 50,
        },
        "decode": {"beam_size": 1},
    },
    "dates/bahdanau": {
        "model": {"embed_size": 64, "num_hiddens": 128, "num_layers": 1, "dropout": 0.1},
        "data": _DATES_DATA,
        "train": {
            "epochs": 8,
            "max_tokens": 2048,
            "lr": 3e-3,
            "warmup_steps": 100,
            "schedule": "constant",
            "label_smoothing": 0.0,
            "log_every": 50,
        },
        "decode": {"beam_size": 1},
    },
    "text/transformer": {
        "model": {
            "d_model": 256,
            "num_heads": 4,
            "ffn_hidden": 768,
            "num_encoder_layers": 3,
            "num_decoder_layers": 2,
            # no dropout: a time-budgeted run sees the corpus a few times and is limited by
            # updates, not by overfitting (fra-eng, 20 minutes: +2 greedy BLEU at the same
            # update; benchmarks/RESULTS.md). Long runs on small corpora: model.dropout=0.1.
            "dropout": 0.0,
            "norm_first": True,
            "tie_embeddings": "all",
        },
        "data": _TEXT_DATA,
        "train": {
            "epochs": 30,
            "max_tokens": 3000,
            "lr": 2e-3,
            "warmup_steps": 300,
            "label_smoothing": 0.1,
            "log_every": 25,
            # with --time-budget the cosine decay ends with the budget (benchmarks/RESULTS.md)
            "schedule": "cosine",
            "schedule_horizon": "auto",
            # bfloat16 autocast on a CPU with AMX: 1.5x the updates in 20 minutes, +3 BLEU
            "cpu_amp": True,
        },
        "decode": {"beam_size": 5, "length_penalty": 1.0, "length_penalty_kind": "average"},
    },
    "text/bahdanau": {
        "model": {"embed_size": 256, "num_hiddens": 256, "num_layers": 2, "dropout": 0.2},
        "data": _TEXT_DATA,
        "train": {
            "epochs": 20,
            "max_tokens": 6000,
            "lr": 2e-3,
            "warmup_steps": 200,
            "schedule": "constant",
            "label_smoothing": 0.1,
            "log_every": 50,
        },
        "decode": {"beam_size": 5, "length_penalty": 0.6},
    },
}


def preset_for(data: str, model_type: str) -> dict[str, Any]:
    """The preset for a corpus name and model type.

    ``dates`` has its own; every other corpus is a text corpus, kept in its case (true-cased
    tokenizer and model) except the course's ``fra-eng`` download, lower-cased as the course does.
    """
    kind = "dates" if data == "dates" else "text"
    key = f"{kind}/{model_type}"
    if key not in PRESETS:
        raise ConfigError(f"no preset for model {model_type!r}; choose transformer or bahdanau")
    preset = copy.deepcopy(PRESETS[key])
    if data in COURSE_CORPORA:
        preset["data"]["lowercase"] = True
    return preset


def run_config_from_dict(data: dict[str, Any], derived: bool = False) -> RunConfig:
    """Validate a nested run-config dict (unknown keys and sections are errors).

    Args:
        data: ``{"model_type", "model", "data", "train", "decode"}``.
        derived: the ``model`` section holds the tokenizer-derived vocabulary sizes (a stored
            run); a new run's must not.
    """
    unknown = sorted(set(data) - {"model_type", "model", "data", "train", "decode"})
    if unknown:
        raise ConfigError(
            f"unknown config section(s) {unknown}; known: model_type, model, data, train, decode"
        )
    model_type = data.get("model_type", "transformer")
    model = dict(section(data, "model"))
    model_config_class(model_type)
    _check_model_section(model_type, model, derived)
    return RunConfig(
        model_type=model_type,
        model=model,
        data=from_dict(DataConfig, section(data, "data"), "data"),
        train=from_dict(TrainConfig, section(data, "train"), "train"),
        decode=from_dict(DecodeConfig, section(data, "decode"), "decode"),
    )


def load_run_config(run_dir: str | Path) -> RunConfig:
    """Read a translation run's ``run_dir/config.json``; errors name the file and the fix.

    A model section that is malformed, or describes a model too big for this machine's memory
    (a damaged or edited file), is refused before anything is built.
    """
    raw = read_run_config(run_dir)
    if raw.get("task", "translation") != "translation":
        raise wrong_kind(run_dir, raw["task"], "translation")
    with stored_config(run_dir):
        cfg = run_config_from_dict(raw, derived=True)
        check_model_size(from_dict(model_config_class(cfg.model_type), cfg.model, "model"), "model")
    return cfg


def run_config_dict(cfg: RunConfig) -> dict[str, Any]:
    """The sections written to ``config.json`` (the format attnkit 0.1.0 wrote)."""
    return {
        "model_type": cfg.model_type,
        "model": dict(cfg.model),
        "data": to_dict(cfg.data),
        "train": to_dict(cfg.train),
        "decode": to_dict(cfg.decode),
    }

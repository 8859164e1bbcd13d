"""Configuration of text-classification (fine-tuning) runs: the sections, the presets, and
reading and writing a run folder's ``config.json``.

``config.json`` of such a run holds ``task`` (``"textclass"``), ``backbone`` (:class:`Backbone`:
where the pretrained model came from, its kind and its architecture, so that the run rebuilds
without the source), ``model`` (:class:`HeadConfig`: pooling, dropout, the problem and the number
of outputs), ``data`` (:class:`TextClassDataConfig`), ``finetune`` (:class:`FinetuneConfig`:
layer-wise lr decay, frozen layers, the checkpoint metric), ``train``
(:class:`~attnkit.config.TrainConfig`) and ``labels`` (the class names, in output order; empty
for regression). The tokenizer is copied into ``RUN/tokenizer``.

Backbones: ``bert`` (a Hugging Face BERT-family checkpoint folder, or ``minilm``; see
:mod:`attnkit.pretrained`) or ``lm`` (an attnkit language-model run folder, ``"task": "lm"``).

The defaults (:func:`textclass_preset`) are chosen for all-MiniLM-L6-v2 on SST-2 within a 15
minute CPU budget: batches of 32 sentences of similar length (2 % padding where random batches
have 67 %), AdamW at 1e-4 (head and encoder alike), 100 warm-up steps, then a linear decay that
follows the time budget when one is given (``schedule_horizon="time"``; over ``epochs``
otherwise), validation every 500 steps and the best checkpoint by validation accuracy. Trial
runs on this 2-core CPU with a full decay: 87.3 % dev accuracy after 400 steps (12,800 examples),
89.4 % after 800 (25,600; 5 minutes on one busy core); at about 190 examples/s a 15-minute
budget trains 2 to 3 epochs (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnkit.config import (
    ConfigError,
    DecoderLMConfig,
    EncoderConfig,
    TrainConfig,
    from_dict,
    require,
    require_choice,
    require_probability,
    section,
    to_dict,
)
from attnkit.models.size import check_model_size
from attnkit.training.runfolder import read_run_config, stored_config, wrong_kind

__all__ = [
    "BACKBONE_KINDS",
    "POOLINGS",
    "PROBLEMS",
    "SELECT_BY",
    "Backbone",
    "HeadConfig",
    "TextClassDataConfig",
    "FinetuneConfig",
    "TextClassRunConfig",
    "backbone_kind",
    "textclass_preset",
    "textclass_config_from_dict",
    "load_textclass_config",
    "textclass_config_dict",
]

BACKBONE_KINDS = ("bert", "lm")
#: ``auto``: ``mean`` for sentence encoders, ``cls`` for other BERT-style models, ``last`` for
#: causal language models.
POOLINGS = ("auto", "mean", "cls", "last")
PROBLEMS = ("auto", "classification", "regression")
#: Validation metrics that may pick the best checkpoint (``auto``: accuracy or Pearson).
SELECT_BY = ("auto", "accuracy", "macro_f1", "loss", "pearson", "spearman")
_CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "loss")
_REGRESSION_METRICS = ("pearson", "spearman", "loss")
TRAIN_COMMAND = "attnkit finetune"


@dataclass(frozen=True)
class Backbone:
    """The pretrained model under the head.

    ``source``: ``minilm``, a BERT-family checkpoint folder, or an attnkit language-model run
    folder (as given to ``--model``). ``kind`` (``bert`` or ``lm``) and ``config`` (the
    :class:`~attnkit.config.EncoderConfig` or :class:`~attnkit.config.DecoderLMConfig` fields)
    are filled in from the source; a stored run rebuilds from them without it.
    """

    source: str = "minilm"
    kind: str | None = None
    config: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        require(bool(self.source), "backbone.source is empty; pass --model minilm|FOLDER|RUN_DIR")
        if self.kind is not None:
            require_choice(self, "kind", BACKBONE_KINDS)

    def model_config(self) -> EncoderConfig | DecoderLMConfig:
        """The backbone's architecture (only once ``kind`` and ``config`` are filled in)."""
        if self.kind is None or self.config is None:
            raise ConfigError("backbone.kind/config are not filled in yet (a new run)")
        cls = EncoderConfig if self.kind == "bert" else DecoderLMConfig
        return from_dict(cls, dict(self.config), "backbone.config")

    @property
    def num_layers(self) -> int:
        return int((self.config or {}).get("num_layers", 0))


@dataclass(frozen=True)
class HeadConfig:
    """The head: pooled representation -> dropout -> Linear.

    ``pooling``: ``auto``, ``mean`` (masked mean over real tokens), ``cls`` (first token) or
    ``last`` (last real token; for causal language models). ``problem``: ``auto`` (regression
    when every label is a number and some are not whole numbers), ``classification`` or
    ``regression`` (one float output, MSE). ``num_labels`` comes from the data (1 for
    regression).
    """

    pooling: str = "auto"
    dropout: float = 0.1
    problem: str = "auto"
    num_labels: int = 0

    def __post_init__(self) -> None:
        require_choice(self, "pooling", POOLINGS)
        require_probability(self, "dropout")
        require_choice(self, "problem", PROBLEMS)
        require(self.num_labels >= 0, f"model.num_labels must be >= 0, got {self.num_labels}")


@dataclass(frozen=True)
class TextClassDataConfig:
    """Labelled text: files, columns, tokenization length and batching.

    ``source`` (training) and ``valid``: TSV or CSV files with a header row, or JSON lines
    (``.jsonl``); without ``valid`` a seeded ``valid_fraction`` of ``source`` validates.
    ``text_column`` / ``label_column``: column (JSON key) names; None finds ``sentence`` or
    ``text``, and ``label``. Texts are cut to ``max_length`` tokens (special tokens included).
    Batches hold ``batch_size`` sentences of similar length (``bucket``: sorted by length within
    shuffled chunks of ``bucket_batches`` batches; False: random batches), or, with
    ``max_tokens``, as many as fit that many padded tokens.
    """

    source: str = ""
    valid: str | None = None
    text_column: str | None = None
    label_column: str | None = None
    max_length: int = 64
    batch_size: int = 32
    max_tokens: int | None = None
    bucket: bool = True
    bucket_batches: int = 100
    eval_batch_size: int = 128
    valid_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        require(
            self.max_length >= 2,
            f"data.max_length must be >= 2 tokens (room for the special tokens), got "
            f"{self.max_length}",
        )
        for name in ("batch_size", "bucket_batches", "eval_batch_size"):
            value = getattr(self, name)
            require(value >= 1, f"data.{name} must be >= 1, got {value}")
        require(
            self.max_tokens is None or self.max_tokens >= self.max_length,
            f"data.max_tokens must be >= data.max_length={self.max_length} (or unset), got "
            f"{self.max_tokens}",
        )
        require(
            0.0 < self.valid_fraction < 1.0,
            f"data.valid_fraction must be in (0, 1), got {self.valid_fraction}",
        )


@dataclass(frozen=True)
class FinetuneConfig:
    """How the pretrained weights are trained.

    ``layer_lr_decay`` (in (0, 1]): with L backbone layers, depth ``d`` (embeddings 0, layer
    ``i`` at ``i + 1``, head ``L + 1``) trains at ``train.lr * layer_lr_decay ** (L + 1 - d)``:
    the head at ``train.lr``, the top layer one factor lower, the embeddings ``L + 1`` factors
    lower (as in BEiT; 1.0: one lr for all).
    ``freeze_layers`` N > 0 freezes the embeddings and the lowest N layers. ``select_by``: the
    validation metric that picks the best checkpoint. ``init``: ``pretrained`` (the backbone's
    weights) or ``random`` (the same architecture and tokenizer, freshly initialised: the
    from-scratch baseline that shows what pretraining buys).
    """

    layer_lr_decay: float = 1.0
    freeze_layers: int = 0
    select_by: str = "auto"
    init: str = "pretrained"

    def __post_init__(self) -> None:
        require(
            0.0 < self.layer_lr_decay <= 1.0,
            f"finetune.layer_lr_decay must be in (0, 1], got {self.layer_lr_decay}",
        )
        require(
            self.freeze_layers >= 0,
            f"finetune.freeze_layers must be >= 0, got {self.freeze_layers}",
        )
        require_choice(self, "select_by", SELECT_BY)
        require_choice(self, "init", ("pretrained", "random"))


@dataclass(frozen=True)
class TextClassRunConfig:
    """Everything needed to rebuild a fine-tuning run from its folder."""

    backbone: Backbone = field(default_factory=Backbone)
    model: HeadConfig = field(default_factory=HeadConfig)
    data: TextClassDataConfig = field(default_factory=TextClassDataConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def metric(self) -> tuple[str, str]:
        """The validation metric that picks the best checkpoint and its direction."""
        regression = self.model.problem == "regression"
        name = self.finetune.select_by
        if name == "auto":
            name = "pearson" if regression else "accuracy"
        allowed = _REGRESSION_METRICS if regression else _CLASSIFICATION_METRICS
        if name not in allowed:
            raise ConfigError(
                f"finetune.select_by={name!r} is not a {self.model.problem} metric; use one of "
                f"{list(allowed)}"
            )
        return name, "min" if name == "loss" else "max"


#: Epochs when none are given: 3, or with a time budget as many as the budget allows.
EPOCHS, EPOCHS_WITH_BUDGET = 3, 100

_TRAIN = {
    "lr": 1e-4,
    "betas": [0.9, 0.999],
    "weight_decay": 0.01,
    "schedule": "linear",
    "warmup_steps": 100,
    "label_smoothing": 0.0,
    "clip_norm": 1.0,
    "keep_best": 1,
    "log_every": 50,
    "eval_every": 500,
}

#: Defaults per backbone kind, merged under the user's config file and ``--set`` overrides.
#: ``bert``: measured with all-MiniLM-L6-v2 on SST-2 (benchmarks/RESULTS.md). ``lm``: small
#: attnkit language models trained from scratch take a larger lr (an untuned starting point).
TEXTCLASS_PRESETS: dict[str, dict[str, Any]] = {
    "bert": {
        "model": {"pooling": "auto", "dropout": 0.1},
        "data": {"max_length": 64, "batch_size": 32},
        "finetune": {},
        "train": dict(_TRAIN),
    },
    "lm": {
        "model": {"pooling": "auto", "dropout": 0.1},
        "data": {"max_length": 64, "batch_size": 32},
        "finetune": {},
        "train": {**_TRAIN, "lr": 5e-4, "warmup_steps": 50},
    },
}


def backbone_kind(source: str | Path) -> str:
    """``lm`` for an attnkit language-model run folder, ``bert`` for anything else (a checkpoint
    folder or a short name, checked when it is loaded).

    Raises:
        ConfigError: ``source`` is an attnkit run of another task.
    """
    path = Path(source) / "config.json"
    if not path.is_file():
        return "bert"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "bert"  # the checkpoint loader reports it
    if not isinstance(raw, dict) or "run_format" not in raw:
        return "bert"
    task = (raw.get("config") or {}).get("task", "translation")
    if task != "lm":
        raise ConfigError(
            f"--model {source} is an attnkit {task} run; fine-tuning starts from a "
            "language-model run (attnkit train-lm), minilm, or a BERT-family checkpoint folder"
        )
    return "lm"


def textclass_preset(kind: str = "bert") -> dict[str, Any]:
    """A copy of the defaults for a backbone of ``kind`` (``bert`` or ``lm``)."""
    if kind not in TEXTCLASS_PRESETS:
        raise ConfigError(f"backbone kind must be one of {BACKBONE_KINDS}, got {kind!r}")
    return copy.deepcopy(TEXTCLASS_PRESETS[kind])


_SECTIONS = ("backbone", "model", "data", "finetune", "train")


def textclass_config_from_dict(data: dict[str, Any], derived: bool = False) -> TextClassRunConfig:
    """Validate a nested dict of sections (unknown keys are errors), the model before the data.

    For a new run (``derived=False``) ``backbone.kind``, ``backbone.config`` and
    ``model.num_labels`` come from the backbone and the data and may not be given. With a time
    budget, the decay follows it (``train.schedule_horizon = "time"``) unless a horizon is set,
    and training runs until it ends (100 epochs at most) unless ``train.epochs`` is set;
    without one, ``train.epochs`` defaults to 3. A stored run (``derived=True``) has them; its
    ``task`` and ``labels`` entries are accepted.
    """
    known = set(_SECTIONS) | ({"task", "labels"} if derived else set())
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}; known: {', '.join(_SECTIONS)}")
    backbone = dict(section(data, "backbone"))
    head = dict(section(data, "model"))
    train = dict(section(data, "train"))
    if not derived:
        given = sorted({"kind", "config"} & set(backbone))
        if given:
            raise ConfigError(
                f"backbone.{given[0]} is read from the pretrained model; remove it (choose the "
                "model with --model)"
            )
        if "num_labels" in head:
            raise ConfigError("model.num_labels is set by the data's labels; remove it")
        if not section(data, "data").get("source"):
            raise ConfigError("data.source is empty; pass the training file with --data FILE")
        budget = train.get("time_budget") is not None
        train.setdefault("epochs", EPOCHS_WITH_BUDGET if budget else EPOCHS)
        if budget and "schedule_horizon" not in train:
            if train.get("schedule", "inverse_sqrt") in ("cosine", "linear"):
                train["schedule_horizon"] = "time"
    cfg = TextClassRunConfig(
        backbone=from_dict(Backbone, backbone, "backbone"),
        model=from_dict(HeadConfig, head, "model"),
        data=from_dict(TextClassDataConfig, section(data, "data"), "data"),
        finetune=from_dict(FinetuneConfig, section(data, "finetune"), "finetune"),
        train=from_dict(TrainConfig, train, "train"),
    )
    if cfg.model.problem != "auto":
        cfg.metric()  # a metric of the other problem is an error before any data work
    if cfg.backbone.config is not None and cfg.finetune.freeze_layers > cfg.backbone.num_layers:
        raise ConfigError(
            f"finetune.freeze_layers={cfg.finetune.freeze_layers} exceeds the backbone's "
            f"{cfg.backbone.num_layers} layers"
        )
    return cfg


def load_textclass_config(run_dir: str | Path) -> tuple[TextClassRunConfig, list[str]]:
    """A fine-tuning run's config and label names from ``run_dir/config.json``."""
    raw = read_run_config(run_dir, train_command=TRAIN_COMMAND)
    if raw.get("task") != "textclass":
        raise wrong_kind(run_dir, raw.get("task", "translation"), "textclass")
    labels = raw.get("labels")
    if not isinstance(labels, list):
        raise ConfigError(f"{run_dir}/config.json has no label list; retrain the run")
    with stored_config(run_dir):
        cfg = textclass_config_from_dict(raw, derived=True)
        if cfg.backbone.kind is None or cfg.backbone.config is None or cfg.model.num_labels < 1:
            raise ConfigError("no backbone or head: restore the file or retrain")
        check_model_size(cfg.backbone.model_config(), "backbone")
    return cfg, [str(x) for x in labels]


def textclass_config_dict(cfg: TextClassRunConfig, labels: list[str]) -> dict[str, Any]:
    """The sections written to ``config.json`` (``task`` = ``"textclass"``)."""
    return {
        "task": "textclass",
        "backbone": to_dict(cfg.backbone),
        "model": to_dict(cfg.model),
        "data": to_dict(cfg.data),
        "finetune": to_dict(cfg.finetune),
        "train": to_dict(cfg.train),
        "labels": list(labels),
    }

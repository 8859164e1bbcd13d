"""Training entry point of fine-tuning runs: a pretrained backbone with a classification (or
regression) head, trained on labelled text.

Layout of a fine-tuning run folder::

    config.json            {"task": "textclass", backbone, model, data, finetune, train, labels}
    tokenizer/             the backbone's tokenizer (a BERT folder's tokenizer.json, or a
                           language-model run's tokenizer)
    metrics.jsonl          one JSON row per log/validation event
    curves.png             training curves
    checkpoints/last/      model.safetensors (backbone + head) + state.pt + meta.json
    checkpoints/best-*/    the best by the validation metric (accuracy; regression: Pearson)

The run holds the whole model and its tokenizer: it is used without the pretrained source
(:class:`attnkit.textclass.classifier.TextClassifier`). Two-stage training inside attnkit:
``attnkit train-lm --run LM`` then ``attnkit finetune --model LM ...``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnkit.config import ConfigError, DecoderLMConfig, EncoderConfig, TrainConfig, to_dict
from attnkit.data.errors import DataError
from attnkit.models.decoder_lm import DecoderLM
from attnkit.pretrained.bert import (
    encoder_config_from_hf,
    load_encoder,
    read_hf_config,
    resolve_model_path,
)
from attnkit.pretrained.embeddings import read_pooling
from attnkit.textclass.classifier import TextClassifier
from attnkit.textclass.config import (
    TRAIN_COMMAND,
    Backbone,
    TextClassRunConfig,
    backbone_kind,
    load_textclass_config,
    textclass_config_dict,
)
from attnkit.textclass.data import (
    LabelledTexts,
    Labels,
    LMTextEncoder,
    TextEncoder,
    class_counts,
    load_text_encoder,
    read_labelled,
    resolve_labels,
    save_text_encoder,
    split_labelled,
)
from attnkit.textclass.model import (
    BertBackbone,
    LMBackbone,
    TextClassificationModel,
    build_backbone,
)
from attnkit.textclass.task import TextClassTask, freeze_lower_layers
from attnkit.training import distributed as dist
from attnkit.training.checkpoint import load_checkpoint
from attnkit.training.runfolder import find_checkpoint
from attnkit.training.runs import train_run
from attnkit.training.schedules import check_warmup
from attnkit.training.trainer import TrainResult

__all__ = [
    "TextClassData",
    "TextClassRecipe",
    "train_textclass",
    "resolve_backbone",
    "validation_texts",
]

log = logging.getLogger(__name__)


@dataclass
class ResolvedBackbone:
    """Where a new run's pretrained weights are and what they are."""

    kind: str
    folder: Path  # the BERT checkpoint folder, or the language-model run folder
    config: EncoderConfig | DecoderLMConfig
    pooling: str  # the default pooling of this backbone


def resolve_backbone(source: str | Path) -> ResolvedBackbone:
    """Find ``source`` (``minilm``, a BERT-family folder, or an attnkit language-model run) and
    read its architecture; nothing is loaded yet.

    Raises:
        ConfigError, CheckpointError: not a usable backbone (the message says why).
    """
    kind = backbone_kind(source)
    if kind == "lm":
        from attnkit.lm.config import load_lm_config

        folder = Path(source)
        if not (folder / "tokenizer").is_dir():
            raise ConfigError(f"{folder}/tokenizer is missing; the language-model run is damaged")
        return ResolvedBackbone("lm", folder, load_lm_config(folder).model, "last")
    folder = resolve_model_path(source)
    config = encoder_config_from_hf(read_hf_config(folder), str(folder / "config.json"))
    sentence_encoder = (folder / "1_Pooling").is_dir() or (
        folder / "sentence_bert_config.json"
    ).is_file()
    pooling = read_pooling(folder) if sentence_encoder else "cls"
    return ResolvedBackbone("bert", folder, config, pooling)


@dataclass
class TextClassData:
    """A run's texts, targets and tokenizer (``backbone`` is set for a new run only)."""

    train: LabelledTexts
    valid: LabelledTexts
    labels: Labels
    encoder: TextEncoder
    train_ids: list[list[int]]
    valid_ids: list[list[int]]
    backbone: ResolvedBackbone | None


class TextClassRecipe:
    """How :func:`attnkit.training.runs.train_run` trains a fine-tuning run.

    Args:
        report: called with one-line summaries of the data (files, class counts, truncation);
            default: logged.
    """

    train_command = TRAIN_COMMAND
    curve_scores: tuple[str, ...] = ("valid_accuracy",)

    def __init__(self, report: Callable[[str], None] | None = None) -> None:
        self.report = report or log.info
        self.stored_labels: list[str] | None = None

    def _report(self, line: str) -> None:
        if dist.is_main():
            self.report(line)

    def load_config(self, run_dir: Path) -> TextClassRunConfig:
        cfg, self.stored_labels = load_textclass_config(run_dir)
        return cfg

    def train_config(self, cfg: TextClassRunConfig) -> TrainConfig:
        return cfg.train

    def with_train_config(self, cfg: TextClassRunConfig, train: TrainConfig) -> TextClassRunConfig:
        return dataclasses.replace(cfg, train=train)

    def prepare(self, cfg: TextClassRunConfig, run_dir: Path, first: bool) -> TextClassData:
        d = cfg.data
        train = read_labelled(d.source, d.text_column, d.label_column)
        if d.valid:
            valid = read_labelled(d.valid, train.text_column, train.label_column)
        else:
            train, valid = split_labelled(train, d.valid_fraction, d.seed)
        labels = resolve_labels(train, valid, cfg.model.problem)
        if self.stored_labels is not None and labels.names != self.stored_labels:
            raise DataError(
                f"{d.source}: its labels {labels.names} differ from the run's "
                f"{self.stored_labels}; resume with the data the run started with"
            )
        fresh = cfg.backbone.kind is None
        resolved = resolve_backbone(cfg.backbone.source) if fresh else None
        kind = resolved.kind if resolved else str(cfg.backbone.kind)
        config = resolved.config if resolved else cfg.backbone.model_config()
        tok_dir = run_dir / "tokenizer"
        if resolved is not None and first:
            save_text_encoder(kind, resolved.folder, run_dir)
        elif not tok_dir.is_dir():
            raise DataError(
                f"{tok_dir} is missing; "
                + ("rank 0 writes it first" if fresh else "the run folder is damaged")
            )
        max_length = min(d.max_length, config.max_len)
        pad_id = config.pad_id if kind == "bert" else 0
        encoder = load_text_encoder(kind, tok_dir, max_length, int(pad_id or 0))
        train_ids, valid_ids = encoder.encode(train.texts), encoder.encode(valid.texts)
        self.curve_scores = (
            ("valid_pearson",) if labels.problem == "regression" else ("valid_accuracy",)
        )
        if first and isinstance(encoder, LMTextEncoder):  # a model of other text (BERT: no UNK)
            chars, count = encoder.unknown([*train.texts, *valid.texts])
            if chars:
                log.warning(
                    "%d distinct characters of the texts are not in the language model's "
                    "vocabulary and read as <unk> (in %d of %d texts): %s; pretrain on text "
                    "that has them to use them",
                    len(chars),
                    count,
                    len(train.texts) + len(valid.texts),
                    " ".join(repr(c) for c in chars[:20]) + (" ..." if len(chars) > 20 else ""),
                )
        if first:
            for name, rows, ids in (("train", train, train_ids), ("valid", valid, valid_ids)):
                cut = sum(len(x) >= max_length for x in ids)
                counts = class_counts(labels, name)
                self._report(
                    f"{name}: {rows.path}: {len(rows)} texts ({labels.problem}; {counts}); "
                    f"{sum(map(len, ids)) / max(len(ids), 1):.1f} tokens on average, "
                    f"{cut} at the max_length of {max_length}"
                )
        return TextClassData(train, valid, labels, encoder, train_ids, valid_ids, resolved)

    def build(
        self, cfg: TextClassRunConfig, data: TextClassData
    ) -> tuple[TextClassRunConfig, nn.Module]:
        resolved = data.backbone
        if resolved is not None:  # a new run: fill in the backbone and the head
            pooling = resolved.pooling if cfg.model.pooling == "auto" else cfg.model.pooling
            outputs = 1 if data.labels.problem == "regression" else len(data.labels.names)
            cfg = dataclasses.replace(
                cfg,
                backbone=Backbone(cfg.backbone.source, resolved.kind, to_dict(resolved.config)),
                model=dataclasses.replace(
                    cfg.model, pooling=pooling, problem=data.labels.problem, num_labels=outputs
                ),
            )
            self._report(
                f"backbone: {resolved.kind} {cfg.backbone.source} ({resolved.config.num_layers} "
                f"layers, d_model {resolved.config.d_model}); pooling: {pooling}"
            )
        cfg.metric()  # the checkpoint metric fits the problem
        if resolved is not None:  # (a resume keeps the warm-up its run started with)
            _check_warmup(cfg, len(data.train))
        if cfg.finetune.freeze_layers > cfg.backbone.num_layers:
            raise ConfigError(
                f"finetune.freeze_layers={cfg.finetune.freeze_layers} exceeds the backbone's "
                f"{cfg.backbone.num_layers} layers"
            )
        fresh = resolved is None or cfg.finetune.init == "random"
        backbone = None if fresh else _pretrained_backbone(resolved)
        if backbone is None:  # resumed (weights from its checkpoint) or from scratch
            backbone = build_backbone(str(cfg.backbone.kind), cfg.backbone.model_config())
        model = TextClassificationModel(
            backbone,
            cfg.model.num_labels,
            pooling=cfg.model.pooling,
            dropout=cfg.model.dropout,
        )
        freeze_lower_layers(model, cfg.finetune.freeze_layers)
        return cfg, model

    def config_dict(self, cfg: TextClassRunConfig, data: TextClassData) -> dict[str, Any]:
        return textclass_config_dict(cfg, data.labels.names)

    def task(
        self, cfg: TextClassRunConfig, data: TextClassData, device: torch.device
    ) -> TextClassTask:
        metric, mode = cfg.metric()
        d = cfg.data
        return TextClassTask(
            data.train_ids,
            data.labels.train,
            data.valid_ids,
            data.labels.valid,
            problem=data.labels.problem,
            pad_id=data.encoder.pad_id,
            batch_size=d.batch_size,
            max_tokens=d.max_tokens,
            bucket=d.bucket,
            bucket_batches=d.bucket_batches,
            eval_batch_size=d.eval_batch_size,
            seed=d.seed,
            label_smoothing=cfg.train.label_smoothing,
            metric=metric,
            mode=mode,
            lr=cfg.train.lr,
            layer_lr_decay=cfg.finetune.layer_lr_decay,
            device=device,
        )


def validation_texts(cfg: TextClassRunConfig) -> LabelledTexts:
    """The run's validation rows: ``data.valid``, or the part of ``data.source`` held out."""
    d = cfg.data
    if d.valid:
        return read_labelled(d.valid, d.text_column, d.label_column)
    train = read_labelled(d.source, d.text_column, d.label_column)
    return split_labelled(train, d.valid_fraction, d.seed)[1]


def _check_warmup(cfg: TextClassRunConfig, examples: int) -> None:
    """:func:`~attnkit.training.schedules.check_warmup` before the backbone is loaded (with
    ``data.max_tokens`` the batches are known only once packed: checked when training starts)."""
    if cfg.data.max_tokens is None:
        batches = -(-examples // cfg.data.batch_size)
        how = f"{examples} texts in batches of {cfg.data.batch_size}"
        check_warmup(cfg.train, batches, how)


def _pretrained_backbone(resolved: ResolvedBackbone) -> nn.Module:
    """The backbone with its pretrained weights: a BERT checkpoint, or a language-model run's
    best checkpoint."""
    if resolved.kind == "bert":
        encoder, _ = load_encoder(resolved.folder)
        return BertBackbone(encoder.train())
    assert isinstance(resolved.config, DecoderLMConfig)
    lm = DecoderLM(resolved.config)
    from attnkit.lm.config import load_lm_config

    keep_best = load_lm_config(resolved.folder).train.keep_best
    load_checkpoint(find_checkpoint(resolved.folder, "best", keep_best), lm, with_state=False)
    return LMBackbone(lm)


def train_textclass(
    cfg: TextClassRunConfig | None,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = False,
    train_overrides: dict[str, Any] | None = None,
    report: Callable[[str], None] | None = None,
) -> tuple[TrainResult, TextClassifier]:
    """Fine-tune (or resume) a text classifier in ``run_dir``; return the result and classifier.

    With ``resume`` the stored configuration is used and ``train_overrides`` may change the
    fields in :data:`~attnkit.training.runfolder.RESUMABLE_TRAIN_FIELDS` (saved in
    config.json), as for :func:`attnkit.translation.run.train_translator`. The returned
    classifier holds the final weights; ``TextClassifier.load(run_dir)`` loads the best
    checkpoint (by validation accuracy; regression: Pearson; see ``finetune.select_by``).

    Args:
        cfg: the run's configuration (None when resuming); ``cfg.backbone.source`` names the
            pretrained model (``minilm``, a BERT-family folder, a language-model run).
        run_dir: the run folder (must not hold a run unless ``resume``).
        resume: continue the run in ``run_dir`` from its last checkpoint, exactly.
        progress: show a progress bar.
        train_overrides: train settings changed on resume (e.g. ``{"epochs": 5}``).
        report: receives one-line summaries of the data (default: logged).

    Returns:
        ``(result, classifier)``: the trainer's :class:`~attnkit.training.trainer.TrainResult`
        (``tokens_per_second`` counts sentences) and the fine-tuned model.
    """
    recipe = TextClassRecipe(report)
    run = train_run(
        recipe, cfg, run_dir, resume=resume, progress=progress, train_overrides=train_overrides
    )
    classifier = TextClassifier(run.model, run.data.encoder, run.config, run.data.labels.names)
    return run.result, classifier

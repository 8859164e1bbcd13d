"""Translation runs: a folder that holds everything needed to rebuild, resume and use a model.

Layout of ``runs/NAME``::

    config.json            resolved RunConfig + attnkit version + run format
    tokenizer/src, /tgt    the tokenizers (trained on the training split)
    metrics.jsonl          one JSON row per log/validation event
    curves.png             training curves
    checkpoints/last/      model.safetensors + state.pt + meta.json (atomic)
    checkpoints/best-*/    the best N by validation BLEU

The run-folder plumbing shared with other tasks lives in :mod:`attnkit.tasks.rundir`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnkit.config import (
    ConfigError,
    DataConfig,
    DecodeConfig,
    RunConfig,
    TrainConfig,
    from_dict,
    to_dict,
)
from attnkit.data.errors import DataError
from attnkit.data.text import tidy_punctuation_spacing
from attnkit.data.tokenizers import Tokenizer
from attnkit.models import build_seq2seq
from attnkit.tasks.rundir import (
    RUN_FORMAT,
    find_checkpoint,
    read_run_config,
    resumed_train_config,
    start_or_resume,
    write_curves,
    write_json_atomic,
    write_run_config,
)
from attnkit.tasks.translation import (
    TranslationTask,
    decode_corpus,
    load_tokenizers,
    prepare_data,
)
from attnkit.training import distributed as dist
from attnkit.training.checkpoint import load_checkpoint
from attnkit.training.manager import CheckpointManager, save_averaged
from attnkit.training.trainer import Trainer, TrainResult, resolve_device

__all__ = ["RUN_FORMAT", "Translator", "average_run_checkpoints", "train_translator",
           "load_run_config", "write_json_atomic"]

log = logging.getLogger(__name__)


def load_run_config(run_dir: str | Path) -> RunConfig:
    """Read ``run_dir/config.json``; errors name the folder and what to do."""
    return run_config_from_dict(read_run_config(run_dir))


def run_config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Validate a nested run-config dict (unknown keys are errors)."""
    unknown = sorted(set(data) - {"model_type", "model", "data", "train", "decode"})
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}; known: model_type, model, data, "
                          "train, decode")
    return RunConfig(
        model_type=data.get("model_type", "transformer"),
        model=dict(data.get("model", {})),
        data=from_dict(DataConfig, data.get("data", {}), "data"),
        train=from_dict(TrainConfig, data.get("train", {}), "train"),
        decode=from_dict(DecodeConfig, data.get("decode", {}), "decode"),
    )


def _model_dict(cfg: RunConfig, src_tok: Tokenizer, tgt_tok: Tokenizer) -> dict[str, Any]:
    model = {"src_vocab_size": src_tok.vocab_size, "tgt_vocab_size": tgt_tok.vocab_size,
             **cfg.model}
    if cfg.model_type == "transformer":
        model.setdefault("max_len", cfg.data.max_len + 2)
        if src_tok is not tgt_tok and model.get("tie_embeddings") == "all":
            raise ConfigError("model.tie_embeddings='all' needs data.shared_vocab=true")
    return model


def train_translator(
    cfg: RunConfig | None,
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = False,
    train_overrides: dict[str, Any] | None = None,
) -> tuple[TrainResult, Translator]:
    """Train (or resume) a translation run in ``run_dir``; return the result and the translator.

    With ``resume`` the stored configuration is used; ``train_overrides`` may change the fields in
    :data:`~attnkit.tasks.rundir.RESUMABLE_TRAIN_FIELDS` (e.g. more epochs, a new time budget;
    the budget counts the run's total training time, earlier sessions included). The change is
    saved in config.json.
    """
    run_dir = Path(run_dir)
    ckpt = start_or_resume(run_dir, resume)
    if resume:
        cfg = load_run_config(run_dir)
        cfg = RunConfig(cfg.model_type, cfg.model, cfg.data,
                        resumed_train_config(cfg.train, train_overrides), cfg.decode)
    elif cfg is None:
        raise ConfigError("train_translator needs a RunConfig unless resume=True")
    device = resolve_device(cfg.train.device)
    dist.init_from_env(device.type)
    if dist.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.train.seed)
    max_len = cfg.data.max_len
    if dist.is_main():
        data = prepare_data(cfg.data, run_dir, max_len)
    dist.barrier()
    if not dist.is_main():
        data = prepare_data(cfg.data, run_dir, max_len)
    model_dict = _model_dict(cfg, data.src_tok, data.tgt_tok)
    torch.manual_seed(cfg.train.seed)
    model = build_seq2seq(cfg.model_type, model_dict)
    cfg = RunConfig(cfg.model_type, model_dict, cfg.data, cfg.train, cfg.decode)
    if dist.is_main() and (not resume or train_overrides):
        write_run_config(run_dir, {
            "model_type": cfg.model_type, "model": cfg.model, "data": to_dict(cfg.data),
            "train": to_dict(cfg.train), "decode": to_dict(cfg.decode)})
    task = TranslationTask(data, cfg.train.max_tokens, cfg.train.seed, cfg.train.label_smoothing,
                           cfg.decode, device)
    trainer = Trainer(model, task, cfg.train, run_dir, progress=progress)
    if ckpt is not None:
        trainer.resume(ckpt)
    result = trainer.fit()
    if dist.is_main():
        write_curves(run_dir)
    return result, Translator(model, data.src_tok, data.tgt_tok, cfg)


def average_run_checkpoints(run_dir: str | Path, kind: str = "best", n: int | None = None,
                            name: str = "averaged") -> tuple[Path, list[Path]]:
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
    """
    run_dir = Path(run_dir)
    if name in ("last", "best") or name.startswith(("best-", "last.", "recent-")) or \
            "/" in name or name in ("", ".", ".."):
        raise ConfigError(f"--name {name!r} would clash with the run's own checkpoints; "
                          "choose another name, e.g. averaged")
    if n is not None and n < 1:
        raise ConfigError(f"the number of checkpoints to average must be >= 1, got {n}")
    cfg = load_run_config(run_dir)
    paths = CheckpointManager(run_dir, keep_best=cfg.train.keep_best,
                              keep_recent=cfg.train.keep_last).paths(kind)
    if not paths:
        raise ConfigError(f"{run_dir}: no checkpoints to average; train first")
    if n is not None and n > len(paths):
        raise ConfigError(f"{run_dir} keeps {len(paths)} {kind} checkpoint(s), fewer than the "
                          f"{n} asked for; ask for at most {len(paths)} (train.keep_best and "
                          "train.keep_last set how many best and recent ones a run keeps)")
    chosen = paths if n is None else paths[:n]
    model = build_seq2seq(cfg.model_type, cfg.model)
    out = save_averaged(chosen, run_dir / "checkpoints" / name, model)
    return out, chosen


@dataclass
class Translation:
    """One translated sentence; ``alternatives`` holds the n-best list of beam search."""

    source: str
    text: str
    tokens: list[int]
    score: float | None = None
    alternatives: list[tuple[str, float]] | None = None
    weights: dict[str, Any] | None = None


class Translator:
    """A trained model with its tokenizers: translate and evaluate text.

    Build one with :meth:`load` from a run folder.
    """

    def __init__(self, model: nn.Module, src_tok: Tokenizer, tgt_tok: Tokenizer,
                 config: RunConfig) -> None:
        self.model, self.src_tok, self.tgt_tok, self.config = model.eval(), src_tok, tgt_tok, config

    @classmethod
    def load(cls, run_dir: str | Path, checkpoint: str = "best",
             device: str = "auto") -> Translator:
        """Load ``best`` (highest validation BLEU), ``last``, or a checkpoint folder path."""
        run_dir = Path(run_dir)
        cfg = load_run_config(run_dir)
        src_tok, tgt_tok = load_tokenizers(run_dir / "tokenizer")
        model = build_seq2seq(cfg.model_type, cfg.model)
        path = find_checkpoint(run_dir, checkpoint, cfg.train.keep_best)
        load_checkpoint(path, model, with_state=False)
        return cls(model.to(resolve_device(device)), src_tok, tgt_tok, cfg)

    def encode_sources(self, sentences: Sequence[str]) -> list[list[int]]:
        """Token ids of each sentence; a sentence longer than the model's limit is an error."""
        limit = self.config.model.get("max_len", self.config.data.max_len)
        ids = []
        for i, sentence in enumerate(sentences, 1):
            if self.config.data.tidy_source_punctuation:
                sentence = tidy_punctuation_spacing(sentence)  # as the training sources were
            tokens = self.src_tok.encode(sentence)
            if len(tokens) > limit:
                raise DataError(f"input {i} has {len(tokens)} tokens, more than the model's "
                                f"limit of {limit}: {sentence[:40]!r}...; split it into shorter "
                                "sentences")
            if not tokens:
                tokens = []
            ids.append(tokens)
        return ids

    def translate(self, sentences: Sequence[str], beam_size: int | None = None,
                  need_weights: bool = False, max_tokens: int = 8192,
                  n_best: int | None = None) -> list[Translation]:
        """Translate sentences (greedy when ``beam_size`` is 1; ``n_best`` alternatives with
        beam search)."""
        beam = self.config.decode.beam_size if beam_size is None else beam_size
        if beam < 1:
            raise ConfigError(f"--beam must be >= 1, got {beam}")
        sources = self.encode_sources(sentences)
        results = decode_corpus(self.model, sources, self.config.decode, beam_size=beam,
                                max_tokens=max_tokens, need_weights=need_weights, n_best=n_best)
        out = []
        for sentence, result in zip(sentences, results, strict=True):
            if isinstance(result, list) and not result:  # constraints allowed no output
                out.append(Translation(sentence, "", [], float("-inf"), []))
            elif isinstance(result, list):  # n-best list from beam search
                best = result[0]
                alternatives = [(self.tgt_tok.decode(h.tokens), float(h.score)) for h in result]
                out.append(Translation(sentence, alternatives[0][0], list(best.tokens),
                                       float(best.score), alternatives,
                                       getattr(best, "weights", None)))
            else:
                out.append(Translation(sentence, self.tgt_tok.decode(result.tokens),
                                       list(result.tokens), float(result.score), None,
                                       getattr(result, "weights", None)))
        return out

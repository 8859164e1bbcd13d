"""Translation as a trainer task: data preparation, loss, validation BLEU, corpus decoding.

A translation run folder holds, besides the common files (:mod:`attnkit.training.runfolder`),
``tokenizer/src`` and ``tokenizer/tgt``: the tokenizers trained on the training split.
"""

from __future__ import annotations

import filecmp
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnkit.config import DecodeConfig
from attnkit.data.batching import (
    Batch,
    TokenBucketSampler,
    collate,
    encode_pairs,
    example_lengths,
    pad_sequences,
)
from attnkit.data.corpora import group_references, load_corpus, split_pairs
from attnkit.data.errors import DataError
from attnkit.data.fingerprint import DataIdentity
from attnkit.data.text import PAD_ID, tidy_punctuation_spacing
from attnkit.data.tokenizers import SentencePieceTokenizer, Tokenizer, WordTokenizer, load_tokenizer
from attnkit.decoding import beam_search, greedy_decode
from attnkit.evaluation.metrics import corpus_bleu, corpus_chrf
from attnkit.files import fsync_path
from attnkit.training import distributed as dist
from attnkit.training.losses import Seq2SeqObjective, masked_cross_entropy
from attnkit.translation.config import DataConfig

__all__ = [
    "PreparedData",
    "TranslationTask",
    "prepare_data",
    "build_tokenizers",
    "load_tokenizers",
    "decode_corpus",
]

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """Tokenizers and encoded splits of one run."""

    src_tok: Tokenizer
    tgt_tok: Tokenizer
    train: list[tuple[list[int], list[int]]]
    valid: list[tuple[list[int], list[int]]]
    valid_refs: list[tuple[str, list[str]]]


def build_tokenizers(
    cfg: DataConfig, pairs: Sequence[tuple[str, str]], directory: Path
) -> tuple[Tokenizer, Tokenizer]:
    """Train the tokenizers on the training split and save them under ``directory``."""
    src_texts = [s for s, _ in pairs]
    tgt_texts = [t for _, t in pairs]
    if cfg.tokenizer == "word":
        src = WordTokenizer.build(src_texts, min_freq=cfg.min_freq, lowercase=cfg.lowercase)
        tgt = WordTokenizer.build(tgt_texts, min_freq=cfg.min_freq, lowercase=cfg.lowercase)
    elif cfg.shared_vocab:
        src = tgt = SentencePieceTokenizer.train(
            src_texts + tgt_texts,
            vocab_size=cfg.vocab_size,
            model_type=cfg.tokenizer,
            lowercase=cfg.lowercase,
            split_digits=cfg.split_digits,
        )
    else:
        src, tgt = (
            SentencePieceTokenizer.train(
                texts,
                vocab_size=cfg.vocab_size,
                model_type=cfg.tokenizer,
                lowercase=cfg.lowercase,
                split_digits=cfg.split_digits,
            )
            for texts in (src_texts, tgt_texts)
        )
    src.save(directory / "src")
    tgt.save(directory / "tgt")
    return src, tgt


def _same_files(a: Path, b: Path) -> bool:
    """Whether folders ``a`` and ``b`` hold the same files with the same bytes."""
    if not (a.is_dir() and b.is_dir()):
        return False
    names = sorted(p.name for p in a.iterdir())
    if names != sorted(p.name for p in b.iterdir()):
        return False
    return all(
        (a / n).is_file() and (b / n).is_file() and filecmp.cmp(a / n, b / n, shallow=False)
        for n in names
    )


def load_tokenizers(directory: Path) -> tuple[Tokenizer, Tokenizer]:
    """Read back the tokenizers written by :func:`build_tokenizers` (a shared vocabulary comes
    back as one tokenizer for both sides, as it was built: ``src is tgt``).

    Raises:
        DataError: one line naming the missing or damaged file and what to do.
    """
    try:
        src = load_tokenizer(directory / "src")
        if _same_files(directory / "src", directory / "tgt"):
            return src, src  # a shared vocabulary, saved twice: one tokenizer, as when built
        return src, load_tokenizer(directory / "tgt")
    except DataError as err:
        raise DataError(
            f"{err}; the run's tokenizer folder {directory} is damaged: restore it from a copy "
            "of the run or retrain the run"
        ) from None


def _build_tokenizers_atomically(
    cfg: DataConfig, pairs: Sequence[tuple[str, str]], directory: Path
) -> tuple[Tokenizer, Tokenizer]:
    """:func:`build_tokenizers` into ``<directory>.tmp``, then renamed to ``directory``: a run
    killed while writing them leaves no half tokenizer folder behind."""
    building = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(building, ignore_errors=True)  # what a killed run left
    tokenizers = build_tokenizers(cfg, pairs, building)
    for file in sorted(building.rglob("*")):
        fsync_path(file)
    if directory.exists():
        shutil.rmtree(directory)
    os.rename(building, directory)
    fsync_path(directory.parent)
    return tokenizers


def prepare_data(cfg: DataConfig, run_dir: Path, max_len: int) -> PreparedData:
    """Load the corpus, split it, build (or re-load) tokenizers, and encode both splits.

    The tokenizers are trained on the training split only and kept in ``run_dir/tokenizer``; a
    run that already has them (resume) re-uses them, so ids never change under a checkpoint.
    """
    pairs = load_corpus(cfg.source, n=cfg.num_examples, seed=cfg.seed)
    if not pairs:
        raise DataError(f"{cfg.source}: the corpus is empty")
    if cfg.valid is not None:
        train_pairs, valid_pairs = pairs, load_corpus(cfg.valid)
    else:
        train_pairs, valid_pairs, _ = split_pairs(
            pairs, valid_frac=cfg.valid_fraction, seed=cfg.seed
        )
    if cfg.valid_limit is not None:
        keep = {src for src, _ in group_references(valid_pairs)[: cfg.valid_limit]}
        valid_pairs = [p for p in valid_pairs if p[0] in keep]
    if cfg.tidy_source_punctuation:
        train_pairs = [(tidy_punctuation_spacing(s), t) for s, t in train_pairs]
        valid_pairs = [(tidy_punctuation_spacing(s), t) for s, t in valid_pairs]
    tok_dir = run_dir / "tokenizer"
    if (tok_dir / "src").exists():
        src_tok, tgt_tok = load_tokenizers(tok_dir)
    else:
        if not dist.is_main():
            raise DataError(
                f"{tok_dir}: tokenizers must be built by rank 0 before other ranks "
                "start; launch through `attnkit train --nproc N`"
            )
        src_tok, tgt_tok = _build_tokenizers_atomically(cfg, train_pairs, tok_dir)
    train = encode_pairs(train_pairs, src_tok, tgt_tok, max_len=max_len, on_too_long="drop")
    if not train:
        raise DataError(f"{cfg.source}: no training pair fits max_len={max_len} tokens")
    valid = encode_pairs(valid_pairs, src_tok, tgt_tok, max_len=max_len, on_too_long="truncate")
    return PreparedData(src_tok, tgt_tok, train, valid, group_references(valid_pairs))


def decode_corpus(
    model: nn.Module,
    sources: Sequence[list[int]],
    decode: DecodeConfig,
    beam_size: int = 1,
    max_tokens: int = 8192,
    device: torch.device | None = None,
    need_weights: bool = False,
    n_best: int | None = None,
    shard: tuple[int, int] = (0, 1),
) -> list[Any]:
    """Translate many id sequences in length-sorted batches; results come back in input order.

    ``shard=(r, n)`` decodes only the batches ``r, r + n, ...`` (the other entries stay None), so
    that n processes together decode exactly the batches, and get exactly the results, of one.

    Returns, per source, the greedy result or the n-best list of beam search
    (``decoding.greedy_decode`` / ``decoding.beam_search`` items).
    """
    if not 0 <= shard[0] < shard[1]:
        raise ValueError(
            f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard}"
        )
    if not sources:
        return []
    device = device or next(model.parameters()).device
    lengths = [len(s) + 1 for s in sources]
    sampler = TokenBucketSampler(lengths, max(max_tokens, max(lengths, default=1)), shuffle=False)
    results: list[Any] = [None] * len(sources)
    model.eval()
    with torch.inference_mode():
        for k, indices in enumerate(sampler):
            if k % shard[1] != shard[0]:
                continue
            src, lens = _pad([sources[i] for i in indices], device)
            mask = torch.arange(src.shape[1], device=device) < lens[:, None]  # (B, S)
            if beam_size > 1:
                keep = decode.n_best if n_best is None else n_best
                cfg = DecodeConfig(
                    **{**decode.__dict__, "beam_size": beam_size, "n_best": min(keep, beam_size)}
                )
                out = beam_search(model, src, mask, cfg, need_weights=need_weights)
            else:
                out = greedy_decode(model, src, mask, config=decode, need_weights=need_weights)
            for i, item in zip(indices, _per_sentence(out), strict=True):
                results[i] = item
    return results


def _per_sentence(out: Any) -> list[Any]:
    return list(out) if isinstance(out, list) else out.per_sentence()


def _pad(seqs: Sequence[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    ids, lens = pad_sequences(seqs, PAD_ID)  # (B, S), (B,)
    return ids.to(device), lens.to(device)


class TranslationTask:
    """Teacher-forced training on token-bucketed batches; validation loss, BLEU, chrF, accuracy.

    Args:
        data: :class:`PreparedData`.
        max_tokens: padded tokens per (global) batch.
        seed: data-order seed.
        label_smoothing: epsilon for the training loss (validation loss uses none).
        decode: settings for validation decoding (greedy).
        device: where batches go.
        cased: score BLEU and exact matches with case (a true-cased run); False lower-cases
            both sides (a run whose tokenizers lower-case).
    """

    metric = "bleu"
    mode = "max"

    def __init__(
        self,
        data: PreparedData,
        *,
        max_tokens: int,
        seed: int,
        label_smoothing: float,
        decode: DecodeConfig,
        device: torch.device,
        cased: bool = True,
    ) -> None:
        self.cased = cased
        self.data, self.decode, self.device = data, decode, device
        self.label_smoothing, self.max_tokens = label_smoothing, max_tokens
        self.sampler = TokenBucketSampler(
            example_lengths(data.train),
            max_tokens,
            shuffle=True,
            seed=seed,
            num_replicas=dist.world_size(),
            rank=dist.rank(),
        )
        pairs = f"{len(data.train):,} training and {len(data.valid):,} validation pairs"
        self.data_identity = DataIdentity.of(pairs, data.train, data.valid)

    def batches_per_epoch(self) -> int:
        return len(self.sampler)

    def train_batches(self, epoch: int) -> Iterator[Batch]:
        self.sampler.set_epoch(epoch)
        for indices in self.sampler:
            yield collate([self.data.train[i] for i in indices]).to(self.device)

    def objective(self, model: nn.Module) -> Seq2SeqObjective:
        """The model with its label-smoothed training loss (fused output projection + loss)."""
        return Seq2SeqObjective(model, pad_id=PAD_ID, label_smoothing=self.label_smoothing)

    def loss(self, objective: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        """Summed training loss of ``objective`` (from :meth:`objective`, maybe DDP-wrapped)."""
        return objective(batch.src, batch.tgt_in, batch.src_mask, batch.tgt_out)

    def tokens(self, batch: Batch) -> int:
        """Target tokens (EOS included, padding excluded): the throughput unit."""
        return batch.num_tgt_tokens

    def state_dict(self) -> dict[str, Any]:
        """The batch order's state, and what the data was (its fingerprint and size)."""
        return {"sampler": self.sampler.state_dict(), **self.data_identity.state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.data_identity.check(
            state,
            "resume with the files the run started with (data.source and data.valid in its "
            "config.json), or train a new run",
        )
        self.sampler.load_state_dict(state["sampler"])

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation loss (all pairs) and greedy BLEU/chrF/accuracy (distinct sources).

        Distributed: rank r takes every world-size-th batch of the single-process batching and
        the pieces are gathered, so every rank returns the single-process numbers.
        """
        shard = (dist.rank(), dist.world_size())
        lengths = example_lengths(self.data.valid)
        losses: dict[int, tuple[float, int]] = {}
        for k, indices in enumerate(
            TokenBucketSampler(lengths, max(self.max_tokens, max(lengths)), shuffle=False)
        ):
            if k % shard[1] != shard[0]:
                continue
            batch = collate([self.data.valid[i] for i in indices]).to(self.device)
            loss_sum, n = masked_cross_entropy(
                model(batch.src, batch.tgt_in, batch.src_mask), batch.tgt_out, pad_id=PAD_ID
            )
            losses[k] = (float(loss_sum), n)
        mine = self.translate_valid(model, shard)
        hyps: list[str | None] = [None] * len(mine)
        for part_losses, part_hyps in dist.all_gather_objects((losses, mine)):
            losses.update(part_losses)
            hyps = [h if h is not None else p for h, p in zip(hyps, part_hyps, strict=True)]
        total, count = 0.0, 0
        for k in sorted(losses):  # batch order: the single-process sum, bit for bit
            total, count = total + losses[k][0], count + losses[k][1]
        refs = [r for _, r in self.data.valid_refs]
        fold = (lambda x: x.strip()) if self.cased else (lambda x: x.strip().lower())
        exact = sum(fold(h) in {fold(x) for x in r} for h, r in zip(hyps, refs, strict=True))
        return {
            "loss": total / max(count, 1),
            "bleu": corpus_bleu(hyps, refs, lowercase=not self.cased).score,
            "chrf": corpus_chrf(hyps, refs).score,
            "accuracy": exact / max(len(refs), 1),
        }

    def translate_valid(
        self, model: nn.Module, shard: tuple[int, int] = (0, 1)
    ) -> list[str | None]:
        """Greedy translations of the distinct validation sources (None outside ``shard``)."""
        src_tok, tgt_tok = self.data.src_tok, self.data.tgt_tok
        sources = [src_tok.encode(s) for s, _ in self.data.valid_refs]
        results = decode_corpus(
            model,
            sources,
            self.decode,
            beam_size=1,
            max_tokens=self.max_tokens,
            device=self.device,
            shard=shard,
        )
        return [None if r is None else tgt_tok.decode(r.tokens) for r in results]

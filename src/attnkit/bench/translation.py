"""Translation benchmarks: training vs ``nn.Transformer``, data loading, memory, decoding speed.

Both sides of every comparison get the same sizes, the same batches and the same initial weights
policy, and are timed alternately in one process (see :func:`attnkit.bench.timing.alternate`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.bench.references import TorchTransformerSeq2Seq
from attnkit.bench.timing import alternate, median
from attnkit.config import TransformerConfig
from attnkit.data.batching import TokenBucketSampler, collate, encode_pairs, example_lengths
from attnkit.data.corpora import generate_dates, read_pairs
from attnkit.data.text import BOS_ID, PAD_ID
from attnkit.data.tokenizers import SentencePieceTokenizer
from attnkit.models.transformer import Transformer
from attnkit.training.allocator import tune_glibc_malloc
from attnkit.training.losses import Seq2SeqObjective
from attnkit.training.optimizers import adamw

__all__ = [
    "BenchData",
    "attnkit_model",
    "bench_beam",
    "bench_data_pipeline",
    "bench_decoding",
    "bench_training",
    "bench_training_memory",
    "load_bench_batches",
    "step_loss",
    "train_step",
    "transformer_config",
]

FRA_ENG = Path(
    os.environ.get(
        "ATTNKIT_FRA_ENG",
        Path(__file__).resolve().parents[3].parent / "shared" / "data" / "fra-eng" / "train.txt",
    )
)


@dataclass(kw_only=True)
class BenchData:
    """Collated batches, plus the encoded examples and index lists they were collated from."""

    batches: list[Any]
    vocab_size: int
    source: str
    examples: list[Any] = field(default_factory=list)
    indices: list[list[int]] = field(default_factory=list)
    max_tokens: int = 4096
    seed: int = 0


def load_bench_batches(
    *,
    max_tokens: int = 4096,
    num_pairs: int = 20000,
    vocab_size: int = 8000,
    num_batches: int = 12,
    seed: int = 0,
    source: str = "auto",
) -> BenchData:
    """Token-bucketed batches from fra-eng (``auto``: if ../shared has it) or the dates corpus."""
    if source not in ("auto", "fra-eng", "dates"):
        raise ValueError(f"source must be auto, fra-eng or dates, got {source!r}")
    if source == "fra-eng" or (source == "auto" and FRA_ENG.is_file()):
        pairs, source = read_pairs(FRA_ENG)[:num_pairs], "fra-eng"
    else:
        pairs, source = generate_dates(num_pairs, seed=seed), "dates"
    tok = SentencePieceTokenizer.train(
        [s for s, _ in pairs] + [t for _, t in pairs], vocab_size=vocab_size
    )
    examples = encode_pairs(pairs, tok, tok, max_len=64)
    sampler = TokenBucketSampler(example_lengths(examples), max_tokens, shuffle=True, seed=seed)
    indices = list(sampler)[:num_batches]
    batches = [collate([examples[i] for i in idx]) for idx in indices]
    return BenchData(
        batches=batches,
        vocab_size=tok.vocab_size,
        source=source,
        examples=examples,
        indices=indices,
        max_tokens=max_tokens,
        seed=seed,
    )


def transformer_config(vocab_size: int, *, max_len: int = 128, **sizes: int) -> TransformerConfig:
    """The Transformer the translation benchmarks measure: pre-LN, one vocabulary of
    ``vocab_size`` with all embeddings tied, dropout 0.1.

    Args:
        vocab_size: source and target vocabulary. max_len: longest sequence.
        sizes: ``d_model``, ``num_heads``, ``ffn_hidden``, ``num_encoder_layers``,
            ``num_decoder_layers``.
    """
    return TransformerConfig(
        src_vocab_size=vocab_size,
        tgt_vocab_size=vocab_size,
        norm_first=True,
        tie_embeddings="all",
        dropout=0.1,
        max_len=max_len,
        **sizes,
    )


def attnkit_model(config: TransformerConfig) -> Seq2SeqObjective:
    """attnkit's side: the Transformer inside the objective its trainer differentiates."""
    return Seq2SeqObjective(Transformer(config), PAD_ID, label_smoothing=0.1)


def step_loss(
    model: nn.Module, *, src: Tensor, tgt_in: Tensor, src_mask: Tensor | None, tgt_out: Tensor
) -> Tensor:
    """The mean token loss as attnkit's trainer computes it (:class:`Seq2SeqObjective`: fused
    output projection + loss) or, for the reference, as a tutorial does (logits, then
    ``F.cross_entropy``); the same label-smoothed objective either way.

    Shapes: src (B, S), tgt_in (B, L), src_mask (B, S) bool, tgt_out (B, L) -> ().
    """
    if isinstance(getattr(model, "_orig_mod", model), Seq2SeqObjective):  # also when compiled
        loss_sum, count = model(src, tgt_in, src_mask, tgt_out)
        return loss_sum / max(count, 1)
    logits = model(src, tgt_in, src_mask)  # (B, L, V)
    return F.cross_entropy(
        logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD_ID, label_smoothing=0.1
    )


def _batch_loss(model: nn.Module, batch: Any) -> Tensor:
    return step_loss(
        model, src=batch.src, tgt_in=batch.tgt_in, src_mask=batch.src_mask, tgt_out=batch.tgt_out
    )


def train_step(model: nn.Module, opt: torch.optim.Optimizer, batch: Any) -> None:
    """One training step on a collated batch (src (B, S), tgt_in/tgt_out (B, L), src_mask (B, S)):
    :func:`step_loss`, backward, optimizer step, gradients cleared."""
    _batch_loss(model, batch).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def bench_training(
    config: TransformerConfig,
    data: BenchData,
    *,
    device: str = "cpu",
    repeats: int = 3,
    amp: bool = False,
) -> dict[str, Any]:
    """Training tokens/s of attnkit's Transformer vs the ``nn.Transformer`` reference."""
    tune_glibc_malloc()
    torch.manual_seed(0)
    ours = attnkit_model(config).to(device).train()
    ref = TorchTransformerSeq2Seq(config).to(device).train()
    opts = {
        name: adamw(m.parameters(), device, lr=1e-4)
        for name, m in (("attnkit", ours), ("nn.Transformer", ref))
    }
    batches = [b.to(device) for b in data.batches]
    tokens = sum(int(b.tgt_lens.sum()) for b in batches)
    ctx = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if amp and device == "cuda"
        else torch.autocast("cpu", enabled=False)
    )

    def run(model: nn.Module, opt: torch.optim.Optimizer) -> None:
        with ctx:
            for batch in batches:
                train_step(model, opt, batch)

    times = alternate(
        {
            "attnkit": lambda: run(ours, opts["attnkit"]),
            "nn.Transformer": lambda: run(ref, opts["nn.Transformer"]),
        },
        repeats=repeats,
        warmup=1,
        device=device,
    )
    tps = {name: tokens / median(t) for name, t in times.items()}
    return {
        "tokens_per_s": tps,
        "ratio": tps["attnkit"] / tps["nn.Transformer"],
        "params": sum(p.numel() for p in ours.parameters()),
        "ref_params": sum(p.numel() for p in ref.parameters()),
        "tokens_per_round": tokens,
        "batches": len(batches),
    }


@torch.inference_mode()
def _greedy_steps(
    model: Transformer, src: Tensor, src_mask: Tensor, *, steps: int, use_cache: bool
) -> Tensor:
    """Exactly ``steps`` greedy steps (no early stop), with or without the KV cache.

    Shapes: src (B, S), src_mask (B, S) -> tokens (B, steps).
    """
    memory, _ = model.encode(src, src_mask)
    ys = torch.full((src.shape[0], 1), BOS_ID, dtype=torch.long, device=src.device)
    cache = model.init_cache(memory, src_mask) if use_cache else None
    for _ in range(steps):
        inp = ys[:, -1:] if use_cache else ys
        logits, _ = model.decode(inp, memory, src_mask, cache=cache)
        ys = torch.cat([ys, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ys[:, 1:]


def bench_decoding(
    config: TransformerConfig,
    data: BenchData,
    *,
    device: str = "cpu",
    out_len: int = 64,
    batch_size: int = 32,
    repeats: int = 3,
) -> dict[str, Any]:
    """Greedy tokens/s with the KV cache vs full recomputation at a fixed output length."""
    torch.manual_seed(0)
    model = Transformer(config).to(device).eval()
    batch = next(b for b in data.batches if b.src.shape[0] >= batch_size)
    src, mask = batch.src[:batch_size].to(device), batch.src_mask[:batch_size].to(device)
    same = torch.equal(
        _greedy_steps(model, src, mask, steps=8, use_cache=True),
        _greedy_steps(model, src, mask, steps=8, use_cache=False),
    )
    times = alternate(
        {
            "kv_cache": lambda: _greedy_steps(model, src, mask, steps=out_len, use_cache=True),
            "recompute": lambda: _greedy_steps(model, src, mask, steps=out_len, use_cache=False),
        },
        repeats=repeats,
        warmup=1,
        device=device,
    )
    tps = {name: batch_size * out_len / median(t) for name, t in times.items()}
    return {
        "tokens_per_s": tps,
        "speedup": tps["kv_cache"] / tps["recompute"],
        "same_tokens": same,
        "out_len": out_len,
        "batch_size": batch_size,
    }


def bench_data_pipeline(
    config: TransformerConfig, data: BenchData, *, device: str = "cpu", repeats: int = 3
) -> dict[str, Any]:
    """Is data loading a bottleneck? Training tokens/s from pre-collated in-memory batches vs the
    real pipeline (collate each token bucket from the encoded examples at every step, as
    ``TranslationTask.train_batches`` does), on the same batches; plus the pipeline alone.

    Returns:
        dict with ``tokens_per_s`` ({"in-memory", "pipeline"} while training), ``ratio``
        (pipeline / in-memory), ``pipeline_only_tokens_per_s`` (collate + epoch planning, no
        model) and ``data_share`` (pipeline-alone time / in-memory training time).
    """
    if not data.examples or not data.indices:
        raise ValueError(
            "bench_data_pipeline needs BenchData from load_bench_batches "
            "(examples and indices are empty)"
        )
    tune_glibc_malloc()
    torch.manual_seed(0)
    model = attnkit_model(config).to(device).train()
    opt = adamw(model.parameters(), device, lr=1e-4)
    in_memory = [b.to(device) for b in data.batches]
    tokens = sum(int(b.tgt_lens.sum()) for b in in_memory)
    sampler = TokenBucketSampler(
        example_lengths(data.examples), data.max_tokens, shuffle=True, seed=data.seed
    )
    plan = alternate(
        {"plan": lambda: sampler.global_batches(epoch=sampler.epoch + 1)}, repeats=repeats, warmup=0
    )["plan"]
    # Planning an epoch (shuffle + sort + pack) happens once per epoch: charge its share.
    plan_share = median(plan) * len(data.indices) / max(1, len(sampler))

    def pipeline() -> list[Any]:
        return [collate([data.examples[i] for i in idx]).to(device) for idx in data.indices]

    def train_in_memory() -> None:
        for batch in in_memory:
            train_step(model, opt, batch)

    def train_pipeline() -> None:
        for idx in data.indices:
            train_step(model, opt, collate([data.examples[i] for i in idx]).to(device))

    times = alternate(
        {"in-memory": train_in_memory, "pipeline": train_pipeline},
        repeats=repeats,
        warmup=1,
        device=device,
    )
    alone = (
        median(
            alternate({"collate": pipeline}, repeats=repeats, warmup=1, device=device)["collate"]
        )
        + plan_share
    )
    tps = {name: tokens / median(t) for name, t in times.items()}
    return {
        "tokens_per_s": tps,
        "ratio": tps["pipeline"] / tps["in-memory"],
        "pipeline_only_tokens_per_s": tokens / alone,
        "data_share": alone / median(times["in-memory"]),
        "tokens_per_round": tokens,
    }


def bench_training_memory(
    config: TransformerConfig, data: BenchData, device: str = "cpu"
) -> dict[str, int]:
    """Training memory of attnkit's Transformer and the ``nn.Transformer`` reference.

    On CUDA: peak allocated bytes during one training step on the largest batch, above what
    was allocated before it. On CPU: bytes autograd saves for backward in that step's forward
    pass and loss (the activation memory, which dominates a step's peak).
    """
    from attnkit.bench.attention import saved_bytes

    batch = max(data.batches, key=lambda b: b.src.numel() + b.tgt_in.numel()).to(device)
    torch.manual_seed(0)
    out: dict[str, int] = {}
    for name, build in (("attnkit", attnkit_model), ("nn.Transformer", TorchTransformerSeq2Seq)):
        model = build(config).to(device).train()
        if torch.device(device).type == "cuda":
            opt = adamw(model.parameters(), device, lr=1e-4)
            train_step(model, opt, batch)  # optimizer state exists from here on
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            train_step(model, opt, batch)
            torch.cuda.synchronize()
            out[name] = torch.cuda.max_memory_allocated() - base
        else:
            out[name] = saved_bytes(model, lambda model=model: _batch_loss(model, batch))
        del model
    return out


def bench_beam(
    config: TransformerConfig,
    data: BenchData,
    *,
    device: str = "cpu",
    beam_size: int = 4,
    out_len: int = 64,
    batch_size: int = 32,
    repeats: int = 3,
) -> dict[str, Any]:
    """Cost per sentence of beam search vs greedy decoding (both with the KV cache).

    EOS is forbidden before the last step (``min_len_a`` large), so every hypothesis of both
    searches runs all ``out_len`` steps: the worst case for beam search, whose pruning of
    finished hypotheses never gets to help.

    Returns:
        dict with ``ms_per_sentence`` ({"greedy", "beam"}), ``ratio`` (beam / greedy),
        ``lengths_ok`` (every output has ``out_len`` tokens or ``out_len - 1`` plus EOS).
    """
    from attnkit.config import DecodeConfig
    from attnkit.decoding import beam_search, greedy_decode

    torch.manual_seed(0)
    model = Transformer(config).to(device).eval()
    batch = max(data.batches, key=lambda b: b.src.shape[0])
    n = min(batch_size, batch.src.shape[0])
    src, mask = batch.src[:n].to(device), batch.src_mask[:n].to(device)
    greedy_cfg = DecodeConfig(beam_size=1, min_len_a=1e3)
    beam_cfg = DecodeConfig(beam_size=beam_size, min_len_a=1e3)
    g = greedy_decode(model, src, mask, max_len=out_len, config=greedy_cfg)
    b = beam_search(model, src, mask, beam_cfg, max_len=out_len)
    lengths_ok = all(len(t) + e == out_len for t, e in zip(g.tokens, g.eos, strict=True)) and all(
        h[0].length == out_len for h in b
    )
    times = alternate(
        {
            "greedy": lambda: greedy_decode(model, src, mask, max_len=out_len, config=greedy_cfg),
            "beam": lambda: beam_search(model, src, mask, beam_cfg, max_len=out_len),
        },
        repeats=repeats,
        warmup=1,
        device=device,
    )
    ms = {name: 1e3 * median(t) / n for name, t in times.items()}
    return {
        "ms_per_sentence": ms,
        "ratio": ms["beam"] / ms["greedy"],
        "lengths_ok": lengths_ok,
        "beam_size": beam_size,
        "out_len": out_len,
        "batch_size": n,
    }

"""Translation benchmarks: training throughput vs ``nn.Transformer``; decoding with vs without cache.

Both sides of every comparison get the same sizes, the same batches and the same initial weights
policy, and are timed alternately in one process (see :func:`attnkit.bench.timing.alternate`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.bench.timing import alternate, median
from attnkit.config import TransformerConfig
from attnkit.data.batching import TokenBucketSampler, collate, encode_pairs, example_lengths
from attnkit.data.corpora import generate_dates, read_pairs
from attnkit.data.text import BOS_ID, PAD_ID
from attnkit.data.tokenizers import SentencePieceTokenizer
from attnkit.layers.positional import sinusoidal_table
from attnkit.models.transformer import Transformer
from attnkit.training.allocator import tune_glibc_malloc

__all__ = ["TorchTransformerSeq2Seq", "bench_training", "bench_decoding", "load_bench_batches"]

FRA_ENG = Path(os.environ.get(
    "ATTNKIT_FRA_ENG",
    Path(__file__).resolve().parents[3].parent / "shared" / "data" / "fra-eng" / "train.txt"))


class TorchTransformerSeq2Seq(nn.Module):
    """The reference: ``nn.Transformer`` with the same sizes, embeddings and tied output layer."""

    def __init__(self, c: TransformerConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(c.src_vocab_size, c.d_model, padding_idx=PAD_ID)
        self.scale = math.sqrt(c.d_model)
        self.register_buffer("pe", sinusoidal_table(c.max_len, c.d_model), persistent=False)
        self.drop = nn.Dropout(c.dropout)
        self.core = nn.Transformer(
            c.d_model, c.num_heads, c.num_encoder_layers, c.num_decoder_layers, c.ffn_hidden,
            c.dropout, batch_first=True, norm_first=c.norm_first)

    def _embed(self, ids: Tensor) -> Tensor:
        return self.drop(self.embed(ids) * self.scale + self.pe[: ids.shape[1]])  # (B, L, D)

    def forward(self, src: Tensor, tgt_in: Tensor, src_mask: Tensor) -> Tensor:
        length = tgt_in.shape[1]
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=src.device)
        out = self.core(self._embed(src), self._embed(tgt_in), tgt_mask=causal,
                        src_key_padding_mask=~src_mask, memory_key_padding_mask=~src_mask,
                        tgt_is_causal=True)  # (B, L, D)
        return F.linear(out, self.embed.weight)  # (B, L, V)


@dataclass
class BenchData:
    batches: list[Any]
    vocab_size: int
    source: str


def load_bench_batches(max_tokens: int = 4096, num_pairs: int = 20000, vocab_size: int = 8000,
                       num_batches: int = 12, seed: int = 0) -> BenchData:
    """Token-bucketed batches from fra-eng (if ../shared is there) or the dates corpus."""
    if FRA_ENG.is_file():
        pairs, source = read_pairs(FRA_ENG)[:num_pairs], "fra-eng"
    else:
        pairs, source = generate_dates(num_pairs, seed=seed), "dates"
    tok = SentencePieceTokenizer.train([s for s, _ in pairs] + [t for _, t in pairs],
                                       vocab_size=vocab_size)
    examples = encode_pairs(pairs, tok, tok, max_len=64)
    sampler = TokenBucketSampler(example_lengths(examples), max_tokens, shuffle=True, seed=seed)
    batches = [collate([examples[i] for i in idx]) for idx in list(sampler)[:num_batches]]
    return BenchData(batches, tok.vocab_size, source)


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, batch: Any) -> None:
    logits = model(batch.src, batch.tgt_in, batch.src_mask)  # (B, L, V)
    loss = F.cross_entropy(logits.flatten(0, 1), batch.tgt_out.flatten(), ignore_index=PAD_ID,
                           label_smoothing=0.1)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def bench_training(config: TransformerConfig, data: BenchData, device: str = "cpu",
                   repeats: int = 3, amp: bool = False) -> dict[str, Any]:
    """Training tokens/s of attnkit's Transformer vs the ``nn.Transformer`` reference."""
    tune_glibc_malloc()
    torch.manual_seed(0)
    ours = Transformer(config).to(device).train()
    ref = TorchTransformerSeq2Seq(config).to(device).train()
    opts = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in
            (("attnkit", ours), ("nn.Transformer", ref))}
    batches = [b.to(device) for b in data.batches]
    tokens = sum(int(b.tgt_lens.sum()) for b in batches)
    ctx = (torch.autocast("cuda", dtype=torch.bfloat16) if amp and device == "cuda"
           else torch.autocast("cpu", enabled=False))

    def run(model: nn.Module, opt: torch.optim.Optimizer) -> None:
        with ctx:
            for batch in batches:
                _train_step(model, opt, batch)

    times = alternate({"attnkit": lambda: run(ours, opts["attnkit"]),
                       "nn.Transformer": lambda: run(ref, opts["nn.Transformer"])},
                      repeats=repeats, warmup=1, device=device)
    tps = {name: tokens / median(t) for name, t in times.items()}
    return {"tokens_per_s": tps, "ratio": tps["attnkit"] / tps["nn.Transformer"],
            "params": sum(p.numel() for p in ours.parameters()),
            "ref_params": sum(p.numel() for p in ref.parameters()),
            "tokens_per_round": tokens, "batches": len(batches)}


@torch.inference_mode()
def _greedy_steps(model: Transformer, src: Tensor, src_mask: Tensor, steps: int,
                  use_cache: bool) -> Tensor:
    """Exactly ``steps`` greedy steps (no early stop), with or without the KV cache."""
    memory, _ = model.encode(src, src_mask)
    ys = torch.full((src.shape[0], 1), BOS_ID, dtype=torch.long, device=src.device)
    cache = model.init_cache(memory, src_mask) if use_cache else None
    for _ in range(steps):
        inp = ys[:, -1:] if use_cache else ys
        logits, _ = model.decode(inp, memory, src_mask, cache=cache)
        ys = torch.cat([ys, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ys[:, 1:]


def bench_decoding(config: TransformerConfig, data: BenchData, device: str = "cpu",
                   out_len: int = 64, batch_size: int = 32, repeats: int = 3) -> dict[str, Any]:
    """Greedy tokens/s with the KV cache vs full recomputation at a fixed output length."""
    torch.manual_seed(0)
    model = Transformer(config).to(device).eval()
    batch = next(b for b in data.batches if b.src.shape[0] >= batch_size)
    src, mask = batch.src[:batch_size].to(device), batch.src_mask[:batch_size].to(device)
    same = torch.equal(_greedy_steps(model, src, mask, 8, True),
                       _greedy_steps(model, src, mask, 8, False))
    times = alternate({"kv_cache": lambda: _greedy_steps(model, src, mask, out_len, True),
                       "recompute": lambda: _greedy_steps(model, src, mask, out_len, False)},
                      repeats=repeats, warmup=1, device=device)
    tps = {name: batch_size * out_len / median(t) for name, t in times.items()}
    return {"tokens_per_s": tps, "speedup": tps["kv_cache"] / tps["recompute"],
            "same_tokens": same, "out_len": out_len, "batch_size": batch_size}

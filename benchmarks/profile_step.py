"""Where the time goes: torch.profiler tables for one training step and one decoding step (CPU).

    python benchmarks/profile_step.py [--threads N] [--rows 25] [--size full|preset]

``full`` is the ``attnkit bench train`` model (D=256, 3+3 layers, 8k vocabulary, 4k padded
tokens per batch); ``preset`` is the text preset that ``attnkit train`` uses on fra-eng (D=256,
3+2 layers, 4k vocabulary, 3k tokens). The training step is what the trainer runs
(``Seq2SeqObjective``: the model with the output projection fused into the label-smoothed loss,
backward, clipping, AdamW); ``--logits-loss`` computes the (N, V) logits and
``masked_cross_entropy`` instead, as attnkit did before. The decoding step is one greedy step
with the KV cache at position 32 of a batch of 32 sources. The findings are written up in
benchmarks/PROFILE.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from torch.profiler import ProfilerActivity, profile

from attnkit.bench import suite
from attnkit.bench import translation as tr_bench
from attnkit.data.text import BOS_ID, PAD_ID
from attnkit.models.transformer import Transformer
from attnkit.training.allocator import tune_glibc_malloc
from attnkit.training.losses import Seq2SeqObjective, masked_cross_entropy
from attnkit.training.optimizers import adamw

SIZES = {
    "full": suite.SIZES["full"],  # the model and batches of `attnkit bench train`
    "preset": dataclasses.replace(  # the text preset of `attnkit train` on fra-eng
        suite.SIZES["full"],
        model=dict(
            d_model=256, num_heads=4, ffn_hidden=768, num_encoder_layers=3, num_decoder_layers=2
        ),
        vocab_size=4000,
        max_tokens=3000,
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--size", choices=tuple(SIZES), default="full")
    parser.add_argument("--steps", type=int, default=3, help="profiled training steps")
    parser.add_argument(
        "--logits-loss",
        action="store_true",
        help="the unfused loss: full logits, then masked_cross_entropy",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tune_glibc_malloc()
    size = SIZES[args.size]
    data = tr_bench.load_bench_batches(
        max_tokens=size.max_tokens,
        num_pairs=size.num_pairs,
        vocab_size=size.vocab_size,
        num_batches=args.steps + 2,
    )
    cfg = tr_bench.transformer_config(data.vocab_size, **size.model)
    torch.manual_seed(0)
    model = Transformer(cfg).train()
    opt = adamw(model.parameters(), "cpu", lr=1e-4)

    objective = Seq2SeqObjective(model, pad_id=PAD_ID, label_smoothing=0.1)

    def train_step(batch: object) -> None:
        if args.logits_loss:
            logits = model(batch.src, batch.tgt_in, batch.src_mask)  # (B, L, V)
            loss, n = masked_cross_entropy(
                logits, batch.tgt_out, pad_id=PAD_ID, label_smoothing=0.1
            )
        else:
            loss, n = objective(batch.src, batch.tgt_in, batch.src_mask, batch.tgt_out)
        (loss / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    batches = data.batches
    for b in batches[:2]:  # warm-up: allocator, optimizer state
        train_step(b)
    tokens = sum(int(b.tgt_lens.sum()) for b in batches[2:])
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for b in batches[2:]:
            train_step(b)
    seconds = time.perf_counter() - start
    loss_kind = "logits + masked_cross_entropy" if args.logits_loss else "fused objective"
    print(
        f"# training ({loss_kind}): {args.size} size, {args.threads} threads, "
        f"{args.steps} steps, {tokens} target tokens, {tokens / seconds:.0f} target "
        "tokens/s under the profiler"
    )
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))

    model.eval()
    batch = max(batches, key=lambda b: b.src.shape[0])
    src, mask = batch.src[:32], batch.src_mask[:32]
    with torch.inference_mode():
        memory, _ = model.encode(src, mask)
        cache = model.init_cache(memory, mask)
        ys = torch.full((src.shape[0], 1), BOS_ID, dtype=torch.long)
        for _ in range(32):
            logits, _ = model.decode(ys[:, -1:], memory, mask, cache=cache)
            ys = torch.cat([ys, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(8):
                logits, _ = model.decode(ys[:, -1:], memory, mask, cache=cache)
                ys = torch.cat([ys, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    print(f"# decoding: 8 greedy steps with the KV cache at positions 33-40, batch {src.shape[0]}")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()

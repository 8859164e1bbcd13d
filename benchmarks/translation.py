"""Translation benchmark: training tokens/s vs nn.Transformer; greedy decoding, cache vs none.

    python benchmarks/translation.py [--device cpu|cuda] [--quick] [--amp]

Prints both comparisons from one run; see benchmarks/RESULTS.md for recorded figures.
"""

from __future__ import annotations

import argparse
import os

import torch

from attnkit.bench.machine import processor
from attnkit.bench.suite import SIZES
from attnkit.bench.translation import (
    bench_decoding,
    bench_training,
    load_bench_batches,
    transformer_config,
)


def print_rates(rates: dict[str, float], unit: str) -> None:
    """One line per candidate: its rate in ``unit``."""
    for name, rate in rates.items():
        print(f"  {name:16s} {rate:10.0f} {unit}")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="smaller model and fewer batches")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = SIZES["quick" if args.quick else "full"]  # the models of `attnkit bench train`
    data = load_bench_batches(
        max_tokens=4096, num_batches=4 if args.quick else 12, vocab_size=sizes.vocab_size
    )
    config = transformer_config(data.vocab_size, **sizes.model)
    print(
        f"# {processor()}, torch {torch.__version__}, "
        f"device {args.device}, threads {torch.get_num_threads()}, data {data.source}"
    )
    train = bench_training(
        config, data, device=args.device, amp=args.amp, repeats=2 if args.quick else 3
    )
    print(
        f"training  params {train['params']:,} (reference {train['ref_params']:,}), "
        f"{train['batches']} batches, {train['tokens_per_round']} target tokens per round"
    )
    print_rates(train["tokens_per_s"], "target tokens/s")
    ratio = train["ratio"]
    print(f"  ratio attnkit / nn.Transformer = {ratio:.2f}  (target >= 1.0: {verdict(ratio >= 1)})")
    dec = bench_decoding(config, data, device=args.device, repeats=2 if args.quick else 3)
    print(
        f"decoding  greedy, batch {dec['batch_size']}, output length {dec['out_len']}, "
        f"cached tokens == recomputed tokens: {dec['same_tokens']}"
    )
    print_rates(dec["tokens_per_s"], "tokens/s")
    speedup = dec["speedup"]
    print(
        f"  speed-up kv_cache / recompute = {speedup:.1f}x  (target >= 5x: {verdict(speedup >= 5)})"
    )


if __name__ == "__main__":
    main()

"""Translation benchmark: training tokens/s vs nn.Transformer; greedy decoding, cache vs none.

    python benchmarks/translation.py [--device cpu|cuda] [--quick] [--amp]

Prints both comparisons from one run; see benchmarks/RESULTS.md for recorded figures.
"""

from __future__ import annotations

import argparse
import os
import platform

import torch

from attnkit.bench.translation import bench_decoding, bench_training, load_bench_batches
from attnkit.config import TransformerConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="smaller model and fewer batches")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_bench_batches(max_tokens=4096, num_batches=4 if args.quick else 12,
                              vocab_size=4000 if args.quick else 8000)
    size = dict(d_model=128, num_heads=4, ffn_hidden=512, num_encoder_layers=2,
                num_decoder_layers=2) if args.quick else dict(
        d_model=256, num_heads=4, ffn_hidden=1024, num_encoder_layers=3, num_decoder_layers=3)
    config = TransformerConfig(src_vocab_size=data.vocab_size, tgt_vocab_size=data.vocab_size,
                               norm_first=True, tie_embeddings="all", dropout=0.1, max_len=128,
                               **size)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"device {args.device}, threads {torch.get_num_threads()}, data {data.source}")
    train = bench_training(config, data, device=args.device, amp=args.amp,
                           repeats=2 if args.quick else 3)
    print(f"training  params {train['params']:,} (reference {train['ref_params']:,}), "
          f"{train['batches']} batches, {train['tokens_per_round']} target tokens per round")
    for name, tps in train["tokens_per_s"].items():
        print(f"  {name:16s} {tps:10.0f} target tokens/s")
    verdict = "PASS" if train["ratio"] >= 1.0 else "FAIL"
    print(f"  ratio attnkit / nn.Transformer = {train['ratio']:.2f}  (target >= 1.0: {verdict})")
    dec = bench_decoding(config, data, device=args.device, repeats=2 if args.quick else 3)
    print(f"decoding  greedy, batch {dec['batch_size']}, output length {dec['out_len']}, "
          f"cached tokens == recomputed tokens: {dec['same_tokens']}")
    for name, tps in dec["tokens_per_s"].items():
        print(f"  {name:16s} {tps:10.0f} tokens/s")
    verdict = "PASS" if dec["speedup"] >= 5.0 else "FAIL"
    print(f"  speed-up kv_cache / recompute = {dec['speedup']:.1f}x  (target >= 5x: {verdict})")


if __name__ == "__main__":
    main()

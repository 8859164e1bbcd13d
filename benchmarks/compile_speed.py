"""Does ``torch.compile`` (``--set train.compile=true``) make attnkit's training faster here?

    python benchmarks/compile_speed.py [--threads 2] [--repeats 3] [--dynamic|--no-dynamic]

Trains two copies of the ``attnkit bench train`` model (D=256, 3+3 pre-LN layers, tied 8k BPE,
dropout 0.1, about 4k padded tokens per batch from fra-eng) on the same eight batches, one eager
and one compiled with Inductor, as the trainer differentiates it (``Seq2SeqObjective``: model and
fused loss together). Prints the compile time (the first pass over the batches, whose shapes
vary with the length buckets), then eager and compiled target tokens/s from alternating rounds
and their ratio. Results: benchmarks/PROFILE.md ("torch.compile").
"""

from __future__ import annotations

import argparse
import time

import torch

from attnkit.bench import translation as tr_bench
from attnkit.bench.suite import SIZES
from attnkit.bench.timing import alternate, median
from attnkit.training.allocator import tune_glibc_malloc
from attnkit.training.optimizers import adamw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--dynamic",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compile with dynamic shapes (default; one graph for all buckets)",
    )
    args = parser.parse_args()
    if args.threads < 1 or args.repeats < 1:
        parser.error("--threads and --repeats must be >= 1")
    torch.set_num_threads(args.threads)
    tune_glibc_malloc()
    sizes = SIZES["full"]
    data = tr_bench.load_bench_batches(
        max_tokens=sizes.max_tokens,
        num_pairs=sizes.num_pairs,
        vocab_size=sizes.vocab_size,
        num_batches=sizes.num_batches,
    )
    cfg = tr_bench.transformer_config(data.vocab_size, **sizes.model)
    torch.manual_seed(0)
    eager = tr_bench.attnkit_model(cfg).train()
    inner = tr_bench.attnkit_model(cfg).train()
    inner.load_state_dict(eager.state_dict())
    compiled = torch.compile(inner, dynamic=args.dynamic)
    opts = {
        "eager": adamw(eager.parameters(), "cpu", lr=1e-4),
        "compiled": adamw(inner.parameters(), "cpu", lr=1e-4),
    }
    models = {"eager": eager, "compiled": compiled}
    tokens = sum(int(b.tgt_lens.sum()) for b in data.batches)

    def run(name: str) -> None:
        for batch in data.batches:
            tr_bench.train_step(models[name], opts[name], batch)

    start = time.perf_counter()
    run("compiled")
    compile_s = time.perf_counter() - start
    times = alternate(
        {"eager": lambda: run("eager"), "compiled": lambda: run("compiled")},
        repeats=args.repeats,
        warmup=1,
    )
    tps = {name: tokens / median(t) for name, t in times.items()}
    print(
        f"# torch.compile vs eager: {torch.__version__}, {args.threads} threads, "
        f"{len(data.batches)} batches, {tokens} target tokens per round, "
        f"shapes {sorted({tuple(b.tgt_in.shape) for b in data.batches})}"
    )
    print(f"first compiled pass (compiling): {compile_s:.1f} s")
    for name in ("eager", "compiled"):
        rounds = ", ".join(f"{s:.2f}" for s in times[name])
        print(f"{name:9s} {tps[name]:8.0f} target tokens/s  (rounds: {rounds} s)")
    print(f"compiled / eager: {tps['compiled'] / tps['eager']:.3f}")


if __name__ == "__main__":
    main()

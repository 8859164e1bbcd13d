"""Vision Transformer benchmark: training images/s vs a ViT built from nn.TransformerEncoder, and
the default ``attnkit train-vit`` run (test accuracy on the digits, wall time).

    python benchmarks/vit.py [--device cpu|cuda] [--threads 2] [--size digits|cifar|both]
                             [--skip-run] [--run-threads 2]

Both models (attnkit's VisionTransformer and attnkit.bench.references.TorchViT) are timed
alternately in one process (attnkit.bench.vit.bench_vit_training) on the same random batches,
with the same sizes, dropout and AdamW settings; the printed ratio is attnkit images/s over
reference images/s (target >= 1.0). The training run is a subprocess of the real
command line, so its wall time includes start-up. See benchmarks/RESULTS.md for recorded figures.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

import torch

from attnkit.bench.machine import load_average, processor
from attnkit.bench.vit import VIT_SIZES, bench_vit_training


def default_run(threads: int) -> tuple[str, float]:
    """Run ``attnkit train-vit`` (digits preset, CPU) in a subprocess; return its output, wall s."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "attnkit.cli",
                "train-vit",
                "--run",
                f"{tmp}/run",
                "--device",
                "cpu",
                "--no-progress",
                "--threads",
                str(threads),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--size", default="both", choices=(*VIT_SIZES, "both"))
    parser.add_argument("--batches", type=int, help="batches per timed pass (default per size)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-run", action="store_true", help="only the throughput comparison")
    parser.add_argument("--run-threads", type=int, default=2, help="threads of the train-vit run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"# {processor()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
        f"load average {load_average()}"
    )
    for size in tuple(VIT_SIZES) if args.size == "both" else (args.size,):
        r = bench_vit_training(size, device=args.device, batches=args.batches, repeats=args.repeats)
        print(
            f"training  {size}: {r['params']:,} parameters, batch {r['batch_size']}, "
            f"{r['batches']} batches per timed pass"
        )
        for name in ("attnkit", "nn.TransformerEncoder"):
            print(f"  {name:22s} {r[name]:10.0f} images/s")
        verdict = "PASS" if r["ratio"] >= 1.0 else "FAIL"
        print(
            f"  ratio attnkit / nn.TransformerEncoder = {r['ratio']:.2f}  "
            f"(target >= 1.0: {verdict})"
        )
    if args.skip_run:
        return
    print(
        f"default run: attnkit train-vit (digits preset, CPU, {args.run_threads} threads), "
        f"load average before {load_average()}"
    )
    out, wall = default_run(args.run_threads)
    for line in out.splitlines():
        print(f"  {line}")
    accuracy = [float(m) for m in re.findall(r"test accuracy: ([\d.]+)%", out)]
    verdict = "PASS" if accuracy and min(accuracy) >= 97.0 else "FAIL"
    print(
        f"  wall time {wall:.0f} s (with start-up); test accuracy {min(accuracy, default=0):.2f}%"
        f" at worst of final/best (target >= 97%: {verdict}); load average after "
        f"{load_average()}"
    )


if __name__ == "__main__":
    main()

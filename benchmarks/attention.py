"""Benchmark attnkit's MultiHeadAttention against PyTorch and two hand-written baselines (CPU).

    python benchmarks/attention.py [--quick]

A thin report over :mod:`attnkit.bench.attention`, which defines the candidates (``ours``,
``mha``, ``mha_nw``, ``plain``, ``naive`` and the A/A control ``plain2``), the interleaved timing
and the activation-memory probe. ``attnkit bench attention`` runs the same measurements as part of
the whole suite; this script prints the detailed per-candidate tables recorded in
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from attnkit.bench.attention import (
    CANDIDATES,
    activation_memory,
    bench_attention,
    check_agreement,
)
from attnkit.bench.machine import load_average, processor, usable_cores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few repetitions")
    args = parser.parse_args(argv)
    torch.set_num_threads(usable_cores())
    heads = 8
    if args.quick:
        shapes = [(8, 16, 128), (8, 64, 128), (8, 256, 128)]  # (B, T, D)
        reps, min_s, mem_lens, mem_batch = 3, 0.01, (16, 64, 256), 2
    else:
        # T=1024 at B=8 (as many tokens as 32 x 256) keeps the whole run near 3 minutes on 2 cores.
        shapes = [(64, 16, 256), (32, 64, 256), (32, 256, 256), (32, 256, 512), (8, 1024, 256)]
        reps, min_s, mem_lens, mem_batch = 7, 0.05, (16, 64, 256, 1024), 4

    print(
        f"# attention benchmark  torch {torch.__version__}  threads {torch.get_num_threads()}  "
        f"{processor()}  load avg {load_average()}  {'--quick' if args.quick else 'full'}"
    )
    print(
        f"agreement: max |difference| between candidates' outputs = "
        f"{check_agreement(64, heads):.2e}"
    )
    begin = time.perf_counter()
    results = []
    for mode in ("fwd", "fwd+bwd"):
        print(f"\n## {mode} (ms, median over repetitions; ratios = median of paired ours / other)")
        print(
            f"{'B':>3} {'T':>5} {'D':>4} | "
            + " ".join(f"{c:>8}" for c in CANDIDATES)
            + " | ours/mha ours/mha_nw ours/plain plain2/plain"
        )
        for shape in shapes:
            # the last shape (T=1024) gets two repetitions fewer: it dominates the run time
            n = reps if shape[1] < 1024 else max(3, reps - 2)
            row = bench_attention([shape], heads, modes=(mode,), reps=n, min_s=min_s)[0]
            results.append(row)
            cells = " ".join(
                f"{row.ms[c]:8.2f}" if c in row.ms else f"{'-':>8}" for c in CANDIDATES
            )
            r = row.ratios
            print(
                f"{row.batch:>3} {row.length:>5} {row.d_model:>4} | {cells} | {r['mha']:8.3f} "
                f"{r['mha_nw']:11.3f} {r['plain']:10.3f} {r['noise']:12.3f}",
                flush=True,
            )

    d = shapes[0][2]
    print(f"\n## activation memory saved for backward (MiB; B={mem_batch}, D={d}, H={heads})")
    memory = activation_memory(d, heads, mem_lens, batch=mem_batch)
    print(f"{'T':>5} | " + " ".join(f"{c:>8}" for c in memory))
    for t in mem_lens:
        print(f"{t:>5} | " + " ".join(f"{memory[c][t] / 2**20:8.2f}" for c in memory))
    growth = {c: memory[c][mem_lens[-1]] / memory[c][mem_lens[0]] for c in memory}
    factor = mem_lens[-1] / mem_lens[0]
    print(
        f"growth T={mem_lens[0]}->{mem_lens[-1]} (x{factor:.0f} longer): "
        + ", ".join(f"{c} x{g:.1f}" for c, g in growth.items())
    )

    print("\n## targets")
    fails = 0

    def target(ok: bool, text: str) -> None:
        nonlocal fails
        fails += not ok
        print(f"[{'PASS' if ok else 'FAIL'}] {text}")

    for row in results:
        where = f"{row.mode:>7} B={row.batch} T={row.length} D={row.d_model}"
        target(
            row.ratios["plain"] <= 1.05,
            f"{where}: ours / plain SDPA = {row.ratios['plain']:.3f} (<= 1.05; A/A noise "
            f"plain2/plain = {row.ratios['noise']:.3f})",
        )
    for row in results:
        if row.length >= 256:
            where = f"{row.mode:>7} B={row.batch} T={row.length} D={row.d_model}"
            for ref in ("mha", "mha_nw"):
                target(
                    row.ratios[ref] <= 0.9,
                    f"{where}: ours / {ref} = {row.ratios[ref]:.3f} (<= 0.90)",
                )
    per_token = [memory["ours"][t] / t for t in mem_lens]
    spread = max(per_token) / min(per_token)
    target(
        spread <= 1.1,
        f"ours' saved memory is linear in T (bytes per token vary x"
        f"{spread:.2f}; naive grows x{growth['naive']:.1f} for x{factor:.0f} longer T)",
    )
    print(
        f"\n{fails} target(s) failed; took {time.perf_counter() - begin:.0f} s; "
        f"load avg now {load_average()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

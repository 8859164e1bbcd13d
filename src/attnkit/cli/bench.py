"""``attnkit bench``: the benchmark suite (ratios against PyTorch's own modules, PASS/FAIL)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from attnkit.cli.options import add_threads_option, apply_threads

__all__ = ["register", "cmd_bench"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark attnkit against PyTorch references (ratios, PASS/FAIL)",
        description="Time attnkit against reference implementations on the same inputs in "
        "one process (alternating runs, medians) and print one table with the issue's "
        "targets. Sections: attention (vs nn.MultiheadAttention and plain SDPA), train "
        "(vs nn.Transformer; data loading; FLOPs utilisation), decode (KV cache vs "
        "recomputation; beam vs greedy), vit (vs nn.TransformerEncoder).",
    )
    p.add_argument(
        "section",
        nargs="?",
        default="all",
        choices=("attention", "train", "decode", "vit", "deploy", "all"),
        help="deploy (not part of all): attnkit vs CTranslate2, int8 vs float32, the HTTP "
        "server with and without dynamic batching, on a trained model (--run, or a dates "
        "model trained first)",
    )
    p.add_argument("--run", help="deploy: the translation run to measure (default: train one)")
    p.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="auto: cuda if available, else cpu",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sizes and few repetitions (about a minute or two on 2 cores)",
    )
    p.add_argument(
        "--sizes",
        choices=("full", "quick", "tiny"),
        help="size preset (overrides --quick; tiny is for tests, figures mean nothing)",
    )
    add_threads_option(p)
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument("--strict", action="store_true", help="exit with status 1 if a target fails")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from attnkit.bench.machine import describe_machine, usable_cores
    from attnkit.bench.suite import SECTIONS, format_table, run_suite, summary

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    apply_threads(args, default=usable_cores())
    sizes = args.sizes or ("quick" if args.quick else "full")
    sections = SECTIONS if args.section == "all" else (args.section,)
    info = describe_machine(device)
    gpu = f", {info['gpu']}" if "gpu" in info else ""
    print(
        f"# attnkit bench {args.section} ({sizes}): {info['cpu']}, {info['cores']} cores, "
        f"{info['threads']} threads, torch {info['torch']}, device {device}{gpu}, "
        f"load avg {info['load']}",
        flush=True,
    )
    start = time.perf_counter()
    first = [True]

    def emit(rows: list) -> None:
        print(format_table(rows, markdown=args.markdown, header=first[0]), flush=True)
        first[0] = False

    if args.section == "deploy":
        from attnkit.bench.deploy import deploy_rows

        if device != "cpu":
            raise ValueError("bench deploy measures CPU serving; use --device cpu")
        rows = deploy_rows(run=args.run, sizes=sizes, emit=emit)
    else:
        rows = run_suite(sections, device=device, sizes=sizes, emit=emit)
    counts = summary(rows)
    info = describe_machine(device)
    peak = f"process peak RSS {info['peak_rss_mib']:.0f} MiB"
    if "gpu_peak_mib" in info:
        peak += f", GPU peak allocated {info['gpu_peak_mib']:.0f} MiB"
    print(
        f"# {counts['pass']} PASS, {counts['fail']} FAIL; {time.perf_counter() - start:.0f} s; "
        f"{peak}; load avg now {info['load']}"
    )
    for row in rows:
        if row.passed is False:
            print(
                f"FAIL {row.section}: {row.measure}: ratio {row.ratio:.3f}, target {row.target}",
                file=sys.stderr,
            )
    return 1 if args.strict and counts["fail"] else 0

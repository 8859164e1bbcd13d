"""Language model against nanoGPT, side by side in one run (issue 15's targets).

    python benchmarks/lm.py [--text ../shared/data/tinyshakespeare/input.txt]
                            [--peer ../shared/peers/nanogpt] [--skip-preset] [--threads 2]

1. nanoGPT, unchanged, trains its README's CPU recipe (4 layers, 4 heads, 128 wide, context 64,
   batch 12, 2000 iterations, no dropout; attnkit.bench.nanogpt).
2. attnkit trains the same model shape (learned positions, no biases, tied embeddings, GELU),
   the same batch, learning rate, warm-up and betas, for the same training time: once in
   float32 (as nanoGPT on a CPU), once under bfloat16 autocast (``train.cpu_amp``) when the
   CPU has AMX (nanoGPT autocasts only on CUDA).
3. Both are scored on the validation split (the last 10% of the characters) with one
   estimator: non-overlapping windows of the context, every character predicted once.
4. attnkit's ``char-small`` preset, as `attnkit train-lm` runs it (3-minute target, wall time).
5. Generation: tokens/s with the KV cache vs recomputing the whole context per token (what
   nanoGPT's ``generate`` does), 500 new tokens, on a model whose context holds them.
6. Peak memory (RSS) of each training process.

Prints one table; see benchmarks/RESULTS.md for recorded figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from attnkit.bench.machine import describe_machine
from attnkit.bench.nanogpt import nanogpt_val_loss, run_nanogpt, training_rate, val_windows
from attnkit.config import DecoderLMConfig
from attnkit.decoding import generate_tokens
from attnkit.files import scratch_dir
from attnkit.hardware import has_amx_bf16
from attnkit.models.decoder_lm import DecoderLM

ROOT = Path(__file__).resolve().parents[1]


def train_lm_argv(text: Path, run: Path, threads: int) -> list[str]:
    """``attnkit train-lm --preset char-small`` on ``text`` into ``run``, as a subprocess."""
    return [
        sys.executable, "-m", "attnkit.cli", "train-lm", "--data", str(text), "--run", str(run),
        "--preset", "char-small", "--threads", str(threads), "--no-progress",
    ]  # fmt: skip


def attnkit_same_shape(
    text: Path, run: Path, seconds: float, threads: int, cpu_amp: bool = False
) -> dict:
    """Train attnkit with nanoGPT's recipe for ``seconds`` of training (``cpu_amp``: under
    bfloat16 autocast, as on an AMX CPU); return its numbers."""
    sets = {
        "model.d_model": 128,
        "model.num_heads": 4,
        "model.ffn_hidden": 512,
        "model.num_layers": 4,
        "model.dropout": 0.0,
        "model.positional": "learned",
        "model.bias": "false",
        "data.block_size": 64,
        "data.batch_size": 12,
        "train.lr": 1e-3,
        "train.warmup_steps": 100,
        "train.betas": "[0.9, 0.99]",
        "train.weight_decay": 0.1,
        "train.schedule": "cosine",
        "train.schedule_horizon": "time",
        "train.eval_every": 100000,
        "train.clip_norm": 1.0,
        "train.cpu_amp": str(cpu_amp).lower(),
    }
    argv = train_lm_argv(text, run, threads)
    argv += ["--time-budget", f"{seconds:.1f}s", "--sample-tokens", "0"]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]
    train = [r for r in rows if r.get("split") == "train"]
    steps = max(r["step"] for r in train)
    return {
        "wall_s": wall,
        "steps": steps,
        "train_tokens_per_s": training_rate(rows, tokens_per_step=12 * 64),
        "stdout": proc.stdout,
        "peak_rss_mib": _child_peak_mib(),
    }


def _child_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def attnkit_val_loss(run: Path, val_text: str) -> float:
    """attnkit's model (best checkpoint) on the validation text, the estimator of
    :func:`attnkit.bench.nanogpt.nanogpt_val_loss`."""
    from attnkit.lm import Generator

    gen = Generator.load(run, "last", device="cpu")
    ids = np.array(gen.encode(val_text, what="the validation text"), dtype=np.int64)
    windows = val_windows(ids, gen.model.max_len)
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(windows), 64):
            w = windows[start : start + 64]
            logits, _ = gen.model(w[:, :-1])  # (b, T, V)
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1), reduction="sum"
            )
            total, count = total + float(loss), count + w[:, 1:].numel()
    return total / count


def generation_speed(new_tokens: int = 500, context: int = 512) -> dict[str, float]:
    """Greedy tokens/s with the KV cache and by recomputing the context, same tokens."""
    torch.manual_seed(0)
    model = DecoderLM(
        DecoderLMConfig(
            vocab_size=65, d_model=128, num_heads=4, ffn_hidden=512, num_layers=4, max_len=context
        )
    ).eval()
    prompt = list(range(1, 11))
    out = {}
    tokens = {}
    for use_cache in (True, False):
        start = time.perf_counter()
        tokens[use_cache] = generate_tokens(
            model, prompt, max_new_tokens=new_tokens, temperature=0.0, use_cache=use_cache
        )
        out["cached" if use_cache else "recomputed"] = new_tokens / (time.perf_counter() - start)
    assert tokens[True] == tokens[False]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--text", default=str(ROOT.parent / "shared/data/tinyshakespeare/input.txt")
    )
    parser.add_argument("--peer", default=str(ROOT.parent / "shared/peers/nanogpt"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-preset", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("#", json.dumps(describe_machine("cpu")))
    work = scratch_dir("attnkit-lm-bench-")
    text = Path(args.text)
    raw = text.read_text(encoding="utf-8")
    val_text = raw[int(len(raw) * 0.9) :]

    peer = run_nanogpt(args.peer, text, work / "nanogpt", threads=args.threads)
    peer_rss = _child_peak_mib()
    peer_loss = nanogpt_val_loss(peer.workdir)
    print(
        f"nanoGPT: {peer.iters} iterations, wall {peer.wall_s:.1f} s, training "
        f"{peer.train_s:.1f} s, {peer.tokens_per_s:.0f} tokens/s, val loss printed "
        f"{peer.reported_val_loss:.4f} (20 random batches), full split {peer_loss:.4f}"
    )

    rows = []
    precisions = [("float32", False)] + ([("bf16 autocast", True)] if has_amx_bf16() else [])
    for label, cpu_amp in precisions:
        run = work / f"same-shape-{cpu_amp}"
        ours = attnkit_same_shape(text, run, peer.train_s, args.threads, cpu_amp)
        ours_loss = attnkit_val_loss(run, val_text)
        ours_tps = ours["train_tokens_per_s"]
        print(
            f"attnkit (same shape, {label}, {peer.train_s:.1f} s of training): {ours['steps']} "
            f"steps, wall {ours['wall_s']:.1f} s, {ours_tps:.0f} tokens/s, val loss {ours_loss:.4f}"
        )
        rows += [
            (f"val loss, same shape and time, {label}", ours_loss, peer_loss, "<= 1.0"),
            (f"training tokens/s, same shape, {label}", ours_tps, peer.tokens_per_s, ">= 1.3"),
        ]
    if not has_amx_bf16():
        print("no AMX (amx_bf16 not in /proc/cpuinfo): the bfloat16 autocast rows are skipped")
    if not args.skip_preset:
        start = time.perf_counter()
        proc = subprocess.run(
            train_lm_argv(text, work / "preset", args.threads),
            capture_output=True,
            text=True,
            check=True,
        )
        wall = time.perf_counter() - start
        preset_loss = attnkit_val_loss(work / "preset", val_text)
        print(
            f"attnkit char-small preset: wall {wall:.1f} s (training + evaluation), val loss "
            f"{preset_loss:.4f}; its own report: {proc.stdout.strip().splitlines()[-2:]}"
        )
        rows.append(
            ("char-small: wall time (s) / val loss", wall, preset_loss, "<= 180 s, <= 1.70")
        )
    speed = generation_speed()
    rows.append(
        (
            "generation tokens/s, KV cache vs recomputing",
            speed["cached"],
            speed["recomputed"],
            ">= 5",
        )
    )
    print(
        f"peak RSS: nanoGPT {peer_rss:.0f} MiB, attnkit runs {_child_peak_mib():.0f} MiB "
        "(the largest child process so far)"
    )
    print(f"\n{'measure':<48} {'attnkit':>10} {'reference':>10} {'ratio':>7}  target")
    for name, a, b, target in rows:
        ratio = a / b if "wall" not in name else float("nan")
        print(f"{name:<48} {a:>10.4g} {b:>10.4g} {ratio:>7.3f}  {target}")


if __name__ == "__main__":
    main()

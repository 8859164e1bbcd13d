"""Benchmark attnkit's MultiHeadAttention against PyTorch and two hand-written baselines (CPU).

Candidates, all self-attention with the same weights and no mask:

* ``ours``      attnkit.attention.MultiHeadAttention (fused QKV + SDPA, need_weights=False)
* ``mha``       torch.nn.MultiheadAttention(batch_first=True) called the default way
                (need_weights=True, so it builds and averages the (L, S) weights)
* ``mha_nw``    the same module called with need_weights=False
* ``plain``     a minimal module written here: fused qkv Linear + SDPA + out Linear
* ``naive``     the course's formulation: (B*H, T, T) scores by bmm, softmax, bmm
* ``plain2``    a second, identical ``plain`` module: an A/A control whose ratio to ``plain``
                shows how large the timing noise is (any deviation from 1.000 is noise)

Timing: in each repetition every candidate runs once, in a rotating order (interleaved in one
process, so load changes hit all of them alike); the median over repetitions is reported.
"fwd" runs in eval mode under ``torch.inference_mode()``; "fwd+bwd" runs in train mode (dropout 0)
and backpropagates ``out.sum()`` into the parameters.

Memory: bytes of the tensors autograd saves for backward in one forward pass (caught with
``torch.autograd.graph.saved_tensors_hooks``), counted once per storage and excluding parameters.
That is the activation memory a training step holds between forward and backward.

Usage: ``python benchmarks/attention.py [--quick]``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.attention import MultiHeadAttention

CANDIDATES = ("ours", "mha", "mha_nw", "plain", "naive", "plain2")
MEMORY_CANDIDATES = CANDIDATES[:-1]  # plain2 is plain again


# -- baselines ------------------------------------------------------------------------------------
class PlainSDPA(nn.Module):
    """The smallest fast self-attention: one qkv Linear, SDPA, one output Linear."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def heads(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.num_heads, d // self.num_heads).transpose(1, 2)  # (B, H, T, Dh)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # (B, T, D) each
        y = F.scaled_dot_product_attention(self.heads(q), self.heads(k), self.heads(v))
        return self.out(y.transpose(1, 2).reshape(b, t, d))  # (B, T, D)


class NaiveAttention(PlainSDPA):
    """Materialises the (B*H, T, T) weights, as the course's MultiHeadAttention does."""

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        h, dh = self.num_heads, d // self.num_heads
        q, k, v = (z.reshape(b * h, t, dh) for z in map(self.heads, self.qkv(x).chunk(3, -1)))
        scores = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(dh)  # (B*H, T, T)
        y = torch.bmm(torch.softmax(scores, dim=-1), v)  # (B*H, T, Dh)
        return self.out(y.view(b, h, t, dh).transpose(1, 2).reshape(b, t, d))  # (B, T, D)


def build(d_model: int, num_heads: int) -> dict[str, tuple[nn.Module, Callable[[Tensor], Tensor]]]:
    """All candidates with identical weights, each with a call ``x -> output``."""
    torch.manual_seed(0)
    ours = MultiHeadAttention(d_model, num_heads)
    mha = ours.to_torch()
    plain, naive = PlainSDPA(d_model, num_heads), NaiveAttention(d_model, num_heads)
    plain2 = PlainSDPA(d_model, num_heads)
    with torch.no_grad():
        for m in (plain, naive, plain2):
            m.qkv.weight.copy_(ours.in_proj.weight)
            m.qkv.bias.copy_(ours.in_proj.bias)
            m.out.load_state_dict(ours.out_proj.state_dict())
    return {
        "ours": (ours, lambda x: ours(x, x, x)[0]),
        "mha": (mha, lambda x: mha(x, x, x)[0]),
        "mha_nw": (mha, lambda x: mha(x, x, x, need_weights=False)[0]),
        "plain": (plain, plain),
        "naive": (naive, naive),
        "plain2": (plain2, plain2),
    }


# -- measurement ----------------------------------------------------------------------------------
def make_step(module: nn.Module, call: Callable, x: Tensor, backward: bool) -> Callable[[], None]:
    params = list(module.parameters())

    def fwd() -> None:
        with torch.inference_mode():
            call(x)

    def fwd_bwd() -> None:
        for p in params:
            p.grad = None
        call(x).sum().backward()

    module.train(backward)
    return fwd_bwd if backward else fwd


def time_interleaved(
    steps: dict[str, Callable[[], None]], reps: int, min_s: float
) -> dict[str, list[float]]:
    """Seconds per call of each step, one sample per repetition; candidates interleaved, their
    order rotated each repetition."""
    inner = {}
    for name, step in steps.items():  # warm up and pick a loop count giving >= min_s per sample
        step()
        start = time.perf_counter()
        step()
        inner[name] = max(1, math.ceil(min_s / max(time.perf_counter() - start, 1e-6)))
    samples: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            start = time.perf_counter()
            for _ in range(inner[name]):
                steps[name]()
            samples[name].append((time.perf_counter() - start) / inner[name])
    return samples


def paired_ratio(samples: dict[str, list[float]], a: str, b: str) -> float:
    """Median over repetitions of a's time / b's time in the same repetition (robust to drift)."""
    return statistics.median(x / y for x, y in zip(samples[a], samples[b], strict=True))


def saved_bytes(module: nn.Module, call: Callable, x: Tensor) -> int:
    """Bytes of distinct non-parameter storages saved for backward by one forward pass."""
    param_ptrs = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in param_ptrs:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    module.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = call(x)
    del out
    return sum(seen.values())


def check_agreement(d_model: int, num_heads: int) -> float:
    """Max difference between candidates' outputs (they share weights), as a sanity check."""
    x = torch.randn(2, 12, d_model)
    outs = []
    for module, call in build(d_model, num_heads).values():
        module.eval()
        with torch.no_grad():
            outs.append(call(x))
    return max(float((o - outs[0]).abs().max()) for o in outs)


# -- report ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few repetitions")
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(cores or 1)
    heads = 8
    if args.quick:
        shapes = [(8, 16, 128), (8, 64, 128), (8, 256, 128)]  # (B, T, D)
        reps, min_s, naive_max_t, mem_lens, mem_batch = 3, 0.01, 256, (16, 64, 256), 2
    else:
        # T=1024 at B=8 (as many tokens as 32 x 256) keeps the whole run near 3 minutes on 2 cores.
        shapes = [(64, 16, 256), (32, 64, 256), (32, 256, 256), (32, 256, 512), (8, 1024, 256)]
        reps, min_s, naive_max_t, mem_lens, mem_batch = 7, 0.05, 256, (16, 64, 256, 1024), 4

    load = os.getloadavg()
    print(
        f"# attention benchmark  torch {torch.__version__}  threads {torch.get_num_threads()}  "
        f"{platform.processor() or platform.machine()}  load avg {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f}  {'--quick' if args.quick else 'full'}"
    )
    print(
        f"agreement: max |difference| between candidates' outputs = "
        f"{check_agreement(64, heads):.2e}"
    )
    begin = time.perf_counter()
    results: dict[tuple, dict[str, float]] = {}
    for backward in (False, True):
        mode = "fwd+bwd" if backward else "fwd"
        print(f"\n## {mode} (ms, median over repetitions; ratios = median of paired ours / other)")
        print(
            f"{'B':>3} {'T':>5} {'D':>4} | "
            + " ".join(f"{c:>8}" for c in CANDIDATES)
            + " | ours/mha ours/mha_nw ours/plain plain2/plain"
        )
        for b, t, d in shapes:
            x = torch.randn(b, t, d)
            built = build(d, heads)
            steps = {
                name: make_step(m, call, x, backward)
                for name, (m, call) in built.items()
                if name != "naive" or t <= naive_max_t
            }
            samples = time_interleaved(steps, reps if t < 1024 else max(3, reps - 2), min_s)
            ratios = {ref: paired_ratio(samples, "ours", ref) for ref in ("mha", "mha_nw", "plain")}
            ratios["noise"] = paired_ratio(samples, "plain2", "plain")
            results[(mode, b, t, d)] = ratios
            cells = " ".join(
                f"{1e3 * statistics.median(samples[c]):8.2f}" if c in samples else f"{'-':>8}"
                for c in CANDIDATES
            )
            print(
                f"{b:>3} {t:>5} {d:>4} | {cells} | {ratios['mha']:8.3f} "
                f"{ratios['mha_nw']:11.3f} {ratios['plain']:10.3f} {ratios['noise']:12.3f}",
                flush=True,
            )

    d = shapes[0][2]
    print(f"\n## activation memory saved for backward (MiB; B={mem_batch}, D={d}, H={heads})")
    print(f"{'T':>5} | " + " ".join(f"{c:>8}" for c in MEMORY_CANDIDATES))
    memory: dict[str, dict[int, int]] = {c: {} for c in MEMORY_CANDIDATES}
    for t in mem_lens:
        x = torch.randn(mem_batch, t, d)
        built = build(d, heads)
        for name in memory:
            memory[name][t] = saved_bytes(built[name][0], built[name][1], x)
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

    for key, ratios in results.items():
        ratio = ratios["plain"]
        target(
            ratio <= 1.05,
            f"{key[0]:>7} B={key[1]} T={key[2]} D={key[3]}: "
            f"ours / plain SDPA = {ratio:.3f} (<= 1.05; A/A noise plain2/plain = "
            f"{ratios['noise']:.3f})",
        )
    for key, ratios in results.items():
        if key[2] >= 256:
            for ref in ("mha", "mha_nw"):
                ratio = ratios[ref]
                target(
                    ratio <= 0.9,
                    f"{key[0]:>7} B={key[1]} T={key[2]} D={key[3]}: "
                    f"ours / {ref} = {ratio:.3f} (<= 0.90)",
                )
    per_token = [memory["ours"][t] / t for t in mem_lens]
    target(
        max(per_token) / min(per_token) <= 1.1,
        f"ours' saved memory is linear in T (bytes per token vary x"
        f"{max(per_token) / min(per_token):.2f}; naive grows x{growth['naive']:.1f} "
        f"for x{factor:.0f} longer T)",
    )
    load = os.getloadavg()
    print(
        f"\n{fails} target(s) failed; took {time.perf_counter() - begin:.0f} s; "
        f"load avg now {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Multi-head attention benchmark: attnkit's MultiHeadAttention against PyTorch and two baselines.

Candidates, all self-attention with the same weights and no mask:

* ``ours``    :class:`~attnkit.attention.MultiHeadAttention` (fused QKV + SDPA, no weights kept)
* ``mha``     ``nn.MultiheadAttention(batch_first=True)`` called the default way
  (``need_weights=True``: it builds and averages the (L, S) weights)
* ``mha_nw``  the same module called with ``need_weights=False``
* ``plain``   :class:`~attnkit.bench.references.PlainSDPA`, the smallest fast module: one qkv
  Linear, SDPA, one out Linear
* ``naive``   :class:`~attnkit.bench.references.NaiveAttention`, the course's formulation:
  (B*H, T, T) scores by bmm
* ``plain2``  a second ``plain``: an A/A control whose ratio to ``plain`` is pure timing noise

Timing (:func:`time_interleaved`): in every repetition each candidate runs once, in an order that
rotates between repetitions, so load changes on a shared machine hit all of them alike; ratios are
medians of per-repetition ratios. Memory (:func:`saved_bytes`): bytes of the tensors autograd
saves for backward in one forward pass, the activation memory a training step holds.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from attnkit.attention import MultiHeadAttention
from attnkit.bench.references import NaiveAttention, PlainSDPA
from attnkit.bench.timing import sync

__all__ = [
    "CANDIDATES",
    "AttentionRow",
    "activation_memory",
    "bench_attention",
    "build_candidates",
    "check_agreement",
    "paired_ratio",
    "saved_bytes",
    "sdpa_kernels",
    "time_interleaved",
]

CANDIDATES = ("ours", "mha", "mha_nw", "plain", "naive", "plain2")


Call = Callable[[Tensor], Tensor]


def build_candidates(
    d_model: int,
    num_heads: int,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> dict[str, tuple[nn.Module, Call]]:
    """Every candidate with identical weights, each as ``(module, call x -> output)``.

    Shapes: the calls map x (B, T, D) -> (B, T, D).
    """
    torch.manual_seed(0)
    ours = MultiHeadAttention(d_model, num_heads)
    mha = ours.to_torch()
    plain, naive, plain2 = (
        cls(d_model, num_heads) for cls in (PlainSDPA, NaiveAttention, PlainSDPA)
    )
    with torch.no_grad():
        for m in (plain, naive, plain2):
            m.qkv.weight.copy_(ours.in_proj.weight)
            m.qkv.bias.copy_(ours.in_proj.bias)
            m.out.load_state_dict(ours.out_proj.state_dict())
    for m in (ours, mha, plain, naive, plain2):
        m.to(device=device, dtype=dtype)
    return {
        "ours": (ours, lambda x: ours(x, x, x)[0]),
        "mha": (mha, lambda x: mha(x, x, x)[0]),
        "mha_nw": (mha, lambda x: mha(x, x, x, need_weights=False)[0]),
        "plain": (plain, plain),
        "naive": (naive, naive),
        "plain2": (plain2, plain2),
    }


def make_step(module: nn.Module, call: Call, x: Tensor, *, backward: bool) -> Callable[[], None]:
    """A no-argument step: forward under inference mode, or forward + backward into the params.

    Shapes: x (B, T, D), passed to ``call``.
    """
    params = list(module.parameters())

    def fwd() -> None:
        with torch.inference_mode():
            call(x)

    def fwd_bwd() -> None:
        for p in params:
            p.grad = None
        call(x).float().sum().backward()

    module.train(backward)
    return fwd_bwd if backward else fwd


def time_interleaved(
    steps: dict[str, Callable[[], None]],
    reps: int,
    *,
    min_s: float = 0.0,
    device: torch.device | str = "cpu",
) -> dict[str, list[float]]:
    """Seconds per call of each step, one sample per repetition.

    Each step is warmed up, then given an inner loop count that makes one sample last at least
    ``min_s``; candidates are interleaved and their order rotated every repetition.
    """
    inner: dict[str, int] = {}
    for name, step in steps.items():
        step()
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        inner[name] = max(1, math.ceil(min_s / max(time.perf_counter() - start, 1e-6)))
    samples: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            sync(device)
            start = time.perf_counter()
            for _ in range(inner[name]):
                steps[name]()
            sync(device)
            samples[name].append((time.perf_counter() - start) / inner[name])
    return samples


def paired_ratio(samples: dict[str, list[float]], a: str, b: str) -> float:
    """Median over repetitions of a's time / b's time in the same repetition (robust to drift)."""
    return statistics.median(x / y for x, y in zip(samples[a], samples[b], strict=True))


def saved_bytes(module: nn.Module, call: Callable[[], Tensor]) -> int:
    """Bytes of distinct non-parameter storages autograd saves in one forward pass ``call()``."""
    param_ptrs = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in param_ptrs:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = call()
    del out
    return sum(seen.values())


def check_agreement(d_model: int = 64, num_heads: int = 8) -> float:
    """Largest |difference| between the candidates' outputs (they share weights): a sanity check."""
    x = torch.randn(2, 12, d_model)
    outs = []
    for module, call in build_candidates(d_model, num_heads).values():
        module.eval()
        with torch.no_grad():
            outs.append(call(x))
    return max(float((o - outs[0]).abs().max()) for o in outs)


@dataclass(kw_only=True)
class AttentionRow:
    """One shape of the benchmark: median ms per candidate and paired ratios ``ours / other``."""

    mode: str  # "fwd" or "fwd+bwd"
    batch: int
    length: int
    d_model: int
    ms: dict[str, float] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)  # mha, mha_nw, plain, noise


def bench_attention(
    shapes: list[tuple[int, int, int]],
    num_heads: int = 8,
    *,
    modes: tuple[str, ...] = ("fwd", "fwd+bwd"),
    reps: int = 5,
    min_s: float = 0.02,
    naive_max_len: int = 256,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> list[AttentionRow]:
    """Time every candidate on every (B, T, D) shape in each mode.

    Args:
        shapes: (batch, length, d_model) triples.
        num_heads: H.
        modes: ``fwd`` (eval, inference mode) and/or ``fwd+bwd`` (train mode, dropout 0).
        reps: repetitions (samples) per candidate. min_s: minimum seconds per sample.
        naive_max_len: skip the naive candidate above this length (its memory is O(T^2)).
        device, dtype: where and in what precision to run.

    Returns:
        One :class:`AttentionRow` per (mode, shape).
    """
    rows = []
    for mode in modes:
        for b, t, d in shapes:
            x = torch.randn(b, t, d, device=device, dtype=dtype)
            built = build_candidates(d, num_heads, device=device, dtype=dtype)
            steps = {
                name: make_step(m, call, x, backward=mode == "fwd+bwd")
                for name, (m, call) in built.items()
                if name != "naive" or t <= naive_max_len
            }
            samples = time_interleaved(steps, reps, min_s=min_s, device=device)
            ratios = {ref: paired_ratio(samples, "ours", ref) for ref in ("mha", "mha_nw", "plain")}
            ratios["noise"] = paired_ratio(samples, "plain2", "plain")
            ms = {name: 1e3 * statistics.median(s) for name, s in samples.items()}
            rows.append(AttentionRow(mode=mode, batch=b, length=t, d_model=d, ms=ms, ratios=ratios))
    return rows


def activation_memory(
    d_model: int,
    num_heads: int,
    lengths: tuple[int, ...],
    *,
    batch: int,
    device: torch.device | str = "cpu",
) -> dict[str, dict[int, int]]:
    """Bytes saved for backward by each candidate (``plain2`` left out) at each length T.

    Returns:
        ``{candidate: {T: bytes}}`` for inputs (batch, T, d_model).
    """
    memory: dict[str, dict[int, int]] = {c: {} for c in CANDIDATES if c != "plain2"}
    for t in lengths:
        x = torch.randn(batch, t, d_model, device=device)
        built = build_candidates(d_model, num_heads, device=device)
        for name in memory:
            module, call = built[name]
            module.train()
            memory[name][t] = saved_bytes(module, lambda: call(x))  # noqa: B023
    return memory


def sdpa_kernels(fn: Callable[[], object]) -> list[str]:
    """Names of the CUDA kernels launched by ``fn`` that look like attention kernels.

    Used to verify that flash / memory-efficient / cuDNN attention is selected on a GPU.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    names = {e.name for e in prof.events() if e.device_type.name == "CUDA"}
    keys = ("flash", "fmha", "efficient", "attention", "sdpa", "softmax")
    return sorted(n[:90] for n in names if any(k in n.lower() for k in keys))

"""Model FLOPs utilisation: achieved FLOP/s of a training step over a measured matmul ceiling.

The ceiling is measured, not taken from a datasheet: the FLOP/s of a large square matmul on the
same device, threads and precision (fp32 on CPU, bf16 on CUDA). A step's FLOPs are counted by
``torch.utils.flop_counter.FlopCounterMode`` on the real shapes of that step (forward and
backward; matmuls, convolutions and attention). PyTorch's counter has no formula for the CPU
flash-attention kernel, so one is registered here with the same rule it uses on CUDA (its
backward counts five score-sized matmuls, the recomputed scores included; at the lengths used
here attention is about 1% of a step's FLOPs, the projections and the FFN are the rest).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils import flop_counter

from attnkit.bench.references import TorchTransformerSeq2Seq
from attnkit.bench.timing import alternate, median, sync
from attnkit.models.transformer import Transformer
from attnkit.training.losses import Seq2SeqObjective
from attnkit.training.optimizers import adamw

__all__ = ["count_flops", "matmul_ceiling", "measure_training_mfu"]

_aten = torch.ops.aten


def _cpu_sdpa_flops(
    query_shape: Any,
    key_shape: Any,
    value_shape: Any,
    *args: Any,
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flops(
    grad_out_shape: Any,
    query_shape: Any,
    key_shape: Any,
    value_shape: Any,
    *args: Any,
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    return flop_counter.sdpa_backward_flop_count(
        grad_out_shape, query_shape, key_shape, value_shape
    )


def _custom_mapping() -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    if hasattr(_aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[_aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_flops
        mapping[_aten._scaled_dot_product_flash_attention_for_cpu_backward] = (
            _cpu_sdpa_backward_flops
        )
    return mapping


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations (a multiply-add counts 2) performed by one call of ``fn``."""
    with flop_counter.FlopCounterMode(display=False, custom_mapping=_custom_mapping()) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_ceiling(
    device: torch.device | str = "cpu",
    *,
    dtype: torch.dtype | None = None,
    n: int | None = None,
    repeats: int = 5,
) -> float:
    """Measured FLOP/s of an (n, n) @ (n, n) matmul: the best this device does in practice.

    Args:
        device: where to measure.
        dtype: default fp32 on CPU, bf16 on CUDA.
        n: matrix side (default 2048 on CPU, 8192 on CUDA).
        repeats: timed calls after two warm-up calls; the fastest one is used (a ceiling is
            the best the device does, and on a shared machine load only ever slows a call).

    Returns:
        FLOP/s (``2 n^3`` per call).
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    dtype = dtype or (torch.bfloat16 if cuda else torch.float32)
    n = n or (8192 if cuda else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    for _ in range(2):
        torch.mm(a, b, out=out)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times)


def measure_training_mfu(
    *,
    d_model: int = 512,
    num_heads: int = 8,
    ffn_hidden: int = 2048,
    num_layers: int = 2,
    batch: int = 32,
    src_len: int = 32,
    tgt_len: int = 32,
    vocab_size: int = 8000,
    device: torch.device | str = "cpu",
    repeats: int = 3,
    ceiling: float | None = None,
    reference: bool = False,
) -> dict[str, Any]:
    """Achieved FLOP/s of a Transformer training step as a fraction of the matmul ceiling.

    The step is forward, label-smoothed cross-entropy, backward and AdamW on unpadded random
    token batches (so every counted FLOP is useful work); bf16 autocast on CUDA, fp32 on CPU.
    attnkit's step is its trainer's (:class:`~attnkit.training.losses.Seq2SeqObjective`, the
    output projection fused with the loss); the reference computes logits, then the loss.
    With ``reference`` the ``nn.Transformer`` model of the same size is timed too (alternately)
    and credited with the same model FLOPs: its utilisation bounds how much faster than it any
    implementation doing the same FLOPs can be (at most ``1 / its mfu``).

    Args:
        d_model, num_heads, ffn_hidden: sizes; ``num_layers`` encoder and decoder blocks each.
        batch, src_len, tgt_len: batch shape (B, S) and (B, L).
        vocab_size: shared, tied vocabulary.
        device: where to run. repeats: timed steps (median; one warm-up step first).
        ceiling: FLOP/s to compare with (default: :func:`matmul_ceiling` measured now).
        reference: also measure the ``nn.Transformer`` model.

    Returns:
        dict with ``flops_per_step``, ``ceiling``, ``params`` and, for attnkit at the top level
        and for the reference under ``"reference"``: ``seconds``, ``achieved`` (FLOP/s),
        ``mfu``, ``tokens_per_s`` (target tokens).
    """
    from attnkit.bench.translation import step_loss, transformer_config

    device = torch.device(device)
    layers = {"num_encoder_layers": num_layers, "num_decoder_layers": num_layers}
    cfg = transformer_config(
        vocab_size,
        max_len=max(src_len, tgt_len),
        d_model=d_model,
        num_heads=num_heads,
        ffn_hidden=ffn_hidden,
        **layers,
    )
    src = torch.randint(4, vocab_size, (batch, src_len), device=device)
    tgt = torch.randint(4, vocab_size, (batch, tgt_len + 1), device=device)
    mask = torch.ones_like(src, dtype=torch.bool)
    cuda = device.type == "cuda"

    def make_step(model: torch.nn.Module) -> Callable[[], None]:
        model.to(device).train()
        opt = adamw(model.parameters(), device, lr=1e-4)

        def step() -> None:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                # no padding here
                loss = step_loss(
                    model, src=src, tgt_in=tgt[:, :-1], src_mask=mask, tgt_out=tgt[:, 1:]
                )
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    torch.manual_seed(0)
    ours = Transformer(cfg)
    steps = {"attnkit": make_step(Seq2SeqObjective(ours, pad_id=0, label_smoothing=0.1))}
    if reference:
        steps["nn.Transformer"] = make_step(TorchTransformerSeq2Seq(cfg))
    flops = count_flops(steps["attnkit"])
    ceiling = ceiling or matmul_ceiling(device)
    times = alternate(steps, repeats=repeats, warmup=1, device=device)

    def figures(name: str) -> dict[str, float]:
        seconds = median(times[name])
        return {
            "seconds": seconds,
            "achieved": flops / seconds,
            "mfu": flops / seconds / ceiling,
            "tokens_per_s": batch * tgt_len / seconds,
        }

    out: dict[str, Any] = {
        "flops_per_step": flops,
        "ceiling": ceiling,
        "params": ours.num_parameters(),
        **figures("attnkit"),
    }
    if reference:
        out["reference"] = figures("nn.Transformer")
    return out

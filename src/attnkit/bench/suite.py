"""The benchmark suite behind ``attnkit bench``: one table of ratios against reference code.

Sections (each compares attnkit with a reference on the same inputs, in the same process, with
runs alternated and medians quoted):

* ``attention``: MultiHeadAttention vs ``nn.MultiheadAttention`` and a plain SDPA module
  (:mod:`attnkit.bench.attention`); activation memory; on CUDA, the SDPA kernels selected.
* ``train``: Transformer training tokens/s vs an ``nn.Transformer`` model of identical size and
  data; training memory; data loading (in-memory batches vs the real pipeline); model FLOPs
  utilisation at d_model 512 against a measured matmul ceiling (:mod:`attnkit.bench.mfu`).
* ``decode``: greedy decoding with the KV cache vs recomputation at output length 64; beam 4 vs
  greedy cost per sentence.
* ``vit``: VisionTransformer vs the same network built from ``nn.TransformerEncoder`` (target
  from the ViT issue: training images/s >= 1.0x).

Every row carries the issue's target (if it has one) and PASS/FAIL; no row asserts anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from attnkit.bench import attention as attn_bench
from attnkit.bench import translation as tr_bench
from attnkit.bench import vit as vit_bench
from attnkit.bench.mfu import measure_training_mfu
from attnkit.bench.timing import alternate, median
from attnkit.config import TransformerConfig, ViTConfig
from attnkit.training.allocator import tune_glibc_malloc
from attnkit.training.optimizers import adamw

__all__ = [
    "SECTIONS",
    "SIZES",
    "Row",
    "Sizes",
    "format_table",
    "run_suite",
    "summary",
]

SECTIONS = ("attention", "train", "decode", "vit")


@dataclass(frozen=True, kw_only=True)
class Sizes:
    """Problem sizes and repetitions of every section (presets in :data:`SIZES`)."""

    attn_shapes: tuple[tuple[int, int, int], ...]  # (B, T, D)
    attn_reps: int
    attn_min_s: float
    attn_mem_lens: tuple[int, ...]
    model: dict[str, int]  # TransformerConfig sizes for train/decode
    max_tokens: int
    num_batches: int
    vocab_size: int
    num_pairs: int
    repeats: int
    out_len: int
    decode_batch: int
    vit: dict[str, int]  # ViTConfig sizes
    vit_batch: int
    mfu: dict[str, int]  # measure_training_mfu sizes
    data_source: str = "auto"
    heads: int = 8


SIZES: dict[str, Sizes] = {
    "full": Sizes(
        attn_shapes=((32, 64, 256), (32, 256, 256), (8, 1024, 256)),
        attn_reps=7,
        attn_min_s=0.15,
        attn_mem_lens=(64, 256, 1024),
        model=dict(
            d_model=256, num_heads=4, ffn_hidden=1024, num_encoder_layers=3, num_decoder_layers=3
        ),
        max_tokens=4096,
        num_batches=8,
        vocab_size=8000,
        num_pairs=20000,
        repeats=3,
        out_len=64,
        decode_batch=32,
        vit=vit_bench.VIT_SIZES["cifar"].model,
        vit_batch=vit_bench.VIT_SIZES["cifar"].batch_size,
        mfu=dict(num_layers=2, batch=32, src_len=32, tgt_len=32, vocab_size=8000),
    ),
    "quick": Sizes(
        attn_shapes=((4, 64, 128), (4, 256, 128)),
        attn_reps=3,
        attn_min_s=0.005,
        attn_mem_lens=(32, 64, 256),
        model=dict(
            d_model=128, num_heads=4, ffn_hidden=512, num_encoder_layers=2, num_decoder_layers=2
        ),
        max_tokens=2048,
        num_batches=4,
        vocab_size=4000,
        num_pairs=5000,
        repeats=2,
        out_len=64,
        decode_batch=16,
        vit=dict(
            image_size=32,
            patch_size=4,
            in_channels=3,
            d_model=128,
            num_layers=2,
            num_heads=4,
            ffn_hidden=512,
        ),
        vit_batch=32,
        mfu=dict(num_layers=1, batch=16, src_len=32, tgt_len=32, vocab_size=8000),
    ),
    # For tests: every code path, tiny shapes; the figures mean nothing.
    "tiny": Sizes(
        attn_shapes=((2, 8, 32),),
        attn_reps=1,
        attn_min_s=0.0,
        attn_mem_lens=(4, 8),
        model=dict(
            d_model=32, num_heads=2, ffn_hidden=64, num_encoder_layers=1, num_decoder_layers=1
        ),
        max_tokens=256,
        num_batches=2,
        vocab_size=200,
        num_pairs=300,
        repeats=1,
        out_len=6,
        decode_batch=4,
        vit=dict(
            image_size=8,
            patch_size=4,
            in_channels=1,
            d_model=32,
            num_layers=1,
            num_heads=2,
            ffn_hidden=64,
        ),
        vit_batch=4,
        mfu=dict(
            d_model=32,
            num_heads=2,
            ffn_hidden=64,
            num_layers=1,
            batch=2,
            src_len=6,
            tgt_len=6,
            vocab_size=50,
        ),
        data_source="dates",
        heads=2,
    ),
}


@dataclass(kw_only=True)
class Row:
    """One line of the table. ``ratio`` is ``ours / reference`` of the two shown values."""

    section: str
    measure: str
    ours: str
    reference: str
    ratio: float | None = None
    target: str = ""
    passed: bool | None = None  # None: no target for this row
    note: str = ""

    @property
    def verdict(self) -> str:
        return "" if self.passed is None else ("PASS" if self.passed else "FAIL")


def _target(ratio: float, op: str, bound: float) -> dict[str, Any]:
    """A row's ``target`` and ``passed`` fields for the target ``ratio op bound``."""
    ok = ratio <= bound if op == "<=" else ratio >= bound
    return {"target": f"{op} {bound:g}", "passed": bool(ok and math.isfinite(ratio))}


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


# -- attention ----------------------------------------------------------------------------------
def _attention_rows(device: str, sizes: Sizes) -> list[Row]:
    rows: list[Row] = []
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    results = attn_bench.bench_attention(
        list(sizes.attn_shapes),
        sizes.heads,
        reps=sizes.attn_reps,
        min_s=sizes.attn_min_s,
        device=device,
        dtype=dtype,
    )
    for r in results:
        shape = f"{r.mode} B={r.batch} T={r.length} D={r.d_model}"
        note = f"A/A {r.ratios['noise']:.2f}"
        for ref, label in (
            ("mha", "nn.MHA"),
            ("mha_nw", "nn.MHA(need_weights=False)"),
            ("plain", "plain SDPA"),
        ):
            ratio = r.ratios[ref]
            target: dict[str, Any] = {}
            row_note = note
            if ref == "plain":
                target = _target(ratio, "<=", 1.05)
            elif ref == "mha" and r.mode == "fwd+bwd" and r.length >= 256:
                target = _target(ratio, "<=", 0.9)
            elif ref == "mha_nw":
                row_note = f"{note}; same SDPA kernel, no target"
            rows.append(
                Row(
                    section="attention",
                    measure=f"{shape} vs {label}",
                    ours=f"{r.ms['ours']:.2f} ms",
                    reference=f"{r.ms[ref]:.2f} ms",
                    ratio=ratio,
                    note=row_note,
                    **target,
                )
            )
    d = sizes.attn_shapes[0][2]
    mem = attn_bench.activation_memory(d, sizes.heads, sizes.attn_mem_lens, batch=2, device=device)
    lens = sizes.attn_mem_lens
    per_token = [mem["ours"][t] / t for t in lens]
    spread = max(per_token) / min(per_token)
    for t in lens:
        rows.append(
            Row(
                section="attention",
                measure=f"saved activations B=2 T={t} D={d} vs nn.MHA",
                ours=_mib(mem["ours"][t]),
                reference=_mib(mem["mha"][t]),
                ratio=mem["ours"][t] / mem["mha"][t],
                note=f"naive {_mib(mem['naive'][t])}",
            )
        )
    # Lengths above Dh: for S <= Dh the CPU math path keeps one (L, S) tensor per head, at most
    # the size of the queries (attention.functional.uses_math_path), so per-token bytes differ.
    rows.append(
        Row(
            section="attention",
            measure=f"activation bytes/token, T={lens[0]}..{lens[-1]} (linear)",
            ours=f"x{spread:.2f}",
            reference="x1.00",
            ratio=spread,
            note=f"T > Dh={d // sizes.heads}",
            **_target(spread, "<=", 1.1),
        )
    )
    if device == "cuda":
        x = torch.randn(8, 1024, 512, device=device, dtype=torch.bfloat16, requires_grad=True)
        mha = attn_bench.build_candidates(512, 8, device=device, dtype=torch.bfloat16)["ours"][1]
        names = attn_bench.sdpa_kernels(lambda: mha(x).sum().backward())
        fused = [
            n for n in names if any(k in n.lower() for k in ("flash", "efficient", "cudnn", "fmha"))
        ]
        rows.append(
            Row(
                section="attention",
                measure="CUDA SDPA kernel (bf16 T=1024 fwd+bwd)",
                ours=fused[0][:40] if fused else "none",
                reference="flash/mem-efficient",
                target="fused kernel",
                passed=bool(fused),
            )
        )
    return rows


# -- train / decode -----------------------------------------------------------------------------
def _model_config(sizes: Sizes, vocab_size: int) -> TransformerConfig:
    """The Transformer of the ``train`` and ``decode`` sections at ``sizes``."""
    return tr_bench.transformer_config(
        vocab_size, max_len=max(128, sizes.out_len + 1), **sizes.model
    )


def _train_rows(device: str, sizes: Sizes, data: tr_bench.BenchData) -> list[Row]:
    cfg = _model_config(sizes, data.vocab_size)
    res = tr_bench.bench_training(
        cfg, data, device=device, repeats=sizes.repeats, amp=device == "cuda"
    )
    tps = res["tokens_per_s"]
    size = f"D={cfg.d_model} {cfg.num_encoder_layers}+{cfg.num_decoder_layers} layers"
    rows = [
        Row(
            section="train",
            measure=f"tokens/s vs nn.Transformer ({size}, {data.source})",
            ours=f"{tps['attnkit']:.0f}",
            reference=f"{tps['nn.Transformer']:.0f}",
            ratio=res["ratio"],
            note=f"params {res['params']:,} = {res['ref_params']:,}",
            **_target(res["ratio"], ">=", 1.2),
        )
    ]
    mem = tr_bench.bench_training_memory(cfg, data, device=device)
    what = "peak step memory" if device == "cuda" else "saved activations"
    rows.append(
        Row(
            section="train",
            measure=f"{what}, largest batch",
            ours=_mib(mem["attnkit"]),
            reference=_mib(mem["nn.Transformer"]),
            ratio=mem["attnkit"] / mem["nn.Transformer"],
        )
    )
    pipe = tr_bench.bench_data_pipeline(cfg, data, device=device, repeats=sizes.repeats)
    rows.append(
        Row(
            section="train",
            measure="tokens/s, real pipeline vs in-memory batches",
            ours=f"{pipe['tokens_per_s']['pipeline']:.0f}",
            reference=f"{pipe['tokens_per_s']['in-memory']:.0f}",
            ratio=pipe["ratio"],
            note="collate from token buckets every step",
        )
    )
    share = pipe["data_share"]
    rows.append(
        Row(
            section="train",
            measure="data loading time / training time",
            ours=f"{pipe['pipeline_only_tokens_per_s']:.0f} tok/s",
            reference=f"{pipe['tokens_per_s']['in-memory']:.0f} tok/s",
            ratio=share,
            note="pipeline alone vs training",
            **_target(share, "<=", 0.05),
        )
    )
    mfu_args = {"d_model": 512, "num_heads": 8, "ffn_hidden": 2048, **sizes.mfu}
    m = measure_training_mfu(**mfu_args, device=device, repeats=sizes.repeats, reference=True)
    unit = 1e12 if device == "cuda" else 1e9
    name = "TFLOP/s" if device == "cuda" else "GFLOP/s"
    what = (
        f"{mfu_args['num_layers']}+{mfu_args['num_layers']} layers, B={mfu_args['batch']}x"
        f"{mfu_args['tgt_len']}, {'bf16' if device == 'cuda' else 'fp32'}, "
        f"{m['flops_per_step'] / 1e9:.0f} GFLOP/step"
    )
    rows.append(
        Row(
            section="train",
            measure=f"MFU: training D={mfu_args['d_model']} vs matmul ceiling",
            ours=f"{m['achieved'] / unit:.1f} {name}",
            reference=f"{m['ceiling'] / unit:.1f} {name}",
            ratio=m["mfu"],
            note=what,
            **_target(m["mfu"], ">=", 0.4),
        )
    )
    ref = m["reference"]
    rows.append(
        Row(
            section="train",
            measure=f"MFU of nn.Transformer, same model FLOPs (D={mfu_args['d_model']})",
            ours=f"{ref['achieved'] / unit:.1f} {name}",
            reference=f"{m['ceiling'] / unit:.1f} {name}",
            ratio=ref["mfu"],
            note=f"attnkit/nn.Transformer step time {m['seconds'] / ref['seconds']:.3f}",
        )
    )
    return rows


def _decode_rows(device: str, sizes: Sizes, data: tr_bench.BenchData) -> list[Row]:
    cfg = _model_config(sizes, data.vocab_size)
    dec = tr_bench.bench_decoding(
        cfg,
        data,
        device=device,
        out_len=sizes.out_len,
        batch_size=sizes.decode_batch,
        repeats=sizes.repeats,
    )
    tps = dec["tokens_per_s"]
    rows = [
        Row(
            section="decode",
            measure=f"greedy tokens/s, KV cache vs recompute, length {dec['out_len']}",
            ours=f"{tps['kv_cache']:.0f}",
            reference=f"{tps['recompute']:.0f}",
            ratio=dec["speedup"],
            note=f"batch {dec['batch_size']}, same tokens: {dec['same_tokens']}",
            **_target(dec["speedup"], ">=", 5.0),
        )
    ]
    beam = tr_bench.bench_beam(
        cfg,
        data,
        device=device,
        out_len=sizes.out_len,
        batch_size=sizes.decode_batch,
        repeats=sizes.repeats,
    )
    ms = beam["ms_per_sentence"]
    rows.append(
        Row(
            section="decode",
            measure=f"beam {beam['beam_size']} vs greedy, ms/sentence, length {beam['out_len']}",
            ours=f"{ms['beam']:.2f} ms",
            reference=f"{ms['greedy']:.2f} ms",
            ratio=beam["ratio"],
            note="no early EOS (worst case)" + ("" if beam["lengths_ok"] else "; LENGTHS?"),
            **_target(beam["ratio"], "<=", 3.0),
        )
    )
    return rows


# -- ViT ----------------------------------------------------------------------------------------
def _vit_rows(device: str, sizes: Sizes) -> list[Row]:
    cfg = ViTConfig(num_classes=10, dropout=0.1, **sizes.vit)
    models = vit_bench.vit_candidates(cfg, device)
    opts = {k: adamw(m.parameters(), device, lr=1e-4) for k, (m, _) in models.items()}
    images = torch.rand(
        sizes.vit_batch, cfg.in_channels, cfg.image_size, cfg.image_size, device=device
    )
    labels = torch.randint(0, cfg.num_classes, (sizes.vit_batch,), device=device)
    amp = device == "cuda"

    def train(name: str) -> Callable[[], None]:
        return lambda: vit_bench.train_step(
            models[name], opts[name], images=images, labels=labels, amp=amp
        )

    def infer(name: str) -> Callable[[], None]:
        module, call = models[name]

        def run() -> None:
            module.eval()
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                call(images)

        return run

    params = [sum(p.numel() for p in m.parameters()) for m, _ in models.values()]
    tokens = 1 + models["attnkit"][0].num_patches
    note = (
        f"D={cfg.d_model} depth {cfg.num_layers}, {tokens} tokens, params "
        f"{params[0]:,} = {params[1]:,}"
    )
    rows = []
    for what, make in (("training", train), ("inference", infer)):
        times = alternate(
            {k: make(k) for k in models}, repeats=sizes.repeats, warmup=1, device=device
        )
        ips = {k: sizes.vit_batch / median(t) for k, t in times.items()}
        ratio = ips["attnkit"] / ips["nn.TransformerEncoder"]
        target = _target(ratio, ">=", 1.0) if what == "training" else {}
        rows.append(
            Row(
                section="vit",
                measure=f"{what} images/s vs nn.TransformerEncoder",
                ours=f"{ips['attnkit']:.0f}",
                reference=f"{ips['nn.TransformerEncoder']:.0f}",
                ratio=ratio,
                note=note,
                **target,
            )
        )
    mem = {
        k: attn_bench.saved_bytes(m, lambda call=call: call(images))
        for k, (m, call) in models.items()
    }
    rows.append(
        Row(
            section="vit",
            measure="saved activations, one batch",
            ours=_mib(mem["attnkit"]),
            reference=_mib(mem["nn.TransformerEncoder"]),
            ratio=mem["attnkit"] / mem["nn.TransformerEncoder"],
        )
    )
    return rows


# -- the suite ----------------------------------------------------------------------------------
def run_suite(
    sections: Sequence[str] = SECTIONS,
    *,
    device: str = "cpu",
    sizes: Sizes | str = "full",
    emit: Callable[[list[Row]], None] | None = None,
) -> list[Row]:
    """Run the asked sections and return all rows (``emit`` gets each section's rows as done).

    Args:
        sections: names from :data:`SECTIONS`.
        device: ``cpu`` or ``cuda``.
        sizes: a :class:`Sizes` or a preset name (``full``, ``quick``, ``tiny``).
        emit: called with each section's rows when it finishes (to print progressively).
    """
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown bench section(s) {unknown}; choose from {list(SECTIONS)}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available")
    if isinstance(sizes, str):
        if sizes not in SIZES:
            raise ValueError(f"sizes must be one of {list(SIZES)}, got {sizes!r}")
        sizes = SIZES[sizes]
    tune_glibc_malloc()
    data: tr_bench.BenchData | None = None
    rows: list[Row] = []
    for section in sections:
        if section in ("train", "decode") and data is None:
            data = tr_bench.load_bench_batches(
                max_tokens=sizes.max_tokens,
                num_pairs=sizes.num_pairs,
                vocab_size=sizes.vocab_size,
                num_batches=sizes.num_batches,
                source=sizes.data_source,
            )
        if section == "attention":
            new = _attention_rows(device, sizes)
        elif section == "train":
            new = _train_rows(device, sizes, data)  # type: ignore[arg-type]
        elif section == "decode":
            new = _decode_rows(device, sizes, data)  # type: ignore[arg-type]
        else:
            new = _vit_rows(device, sizes)
        rows.extend(new)
        if emit is not None:
            emit(new)
    return rows


def format_table(rows: Sequence[Row], markdown: bool = False, header: bool = True) -> str:
    """The rows as an aligned text table (or a Markdown table)."""
    cols = ("section", "measure", "attnkit", "reference", "ratio", "target", "verdict", "note")
    cells = [
        (
            r.section,
            r.measure,
            r.ours,
            r.reference,
            "" if r.ratio is None else f"{r.ratio:.3f}",
            r.target,
            r.verdict,
            r.note,
        )
        for r in rows
    ]
    if markdown:
        lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)] if header else []
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])
    minimum = (9, 56, 14, 14, 6, 7, 7, 0)  # so that tables printed section by section align
    widths = [
        max([len(c), minimum[i]] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)
    ]
    fmt = "  ".join(f"{{:{'>' if i in (2, 3, 4) else '<'}{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*cols).rstrip()] if header else []
    return "\n".join(lines + [fmt.format(*c).rstrip() for c in cells])


def summary(rows: Sequence[Row]) -> dict[str, int]:
    """Counts of PASS and FAIL rows."""
    return {
        "pass": sum(r.passed is True for r in rows),
        "fail": sum(r.passed is False for r in rows),
    }

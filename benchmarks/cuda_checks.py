"""CUDA checks and figures: SDPA kernel selection, correctness on the GPU, AMP training, speed.

    python benchmarks/cuda_checks.py            # needs a CUDA device

Prints one section per check; the figures recorded in benchmarks/RESULTS.md come from this script.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torch.nn.functional as F

from attnkit.attention.multihead import MultiHeadAttention
from attnkit.bench.attention import build_candidates, sdpa_kernels
from attnkit.bench.mfu import matmul_ceiling
from attnkit.bench.timing import alternate, median
from attnkit.bench.translation import transformer_config
from attnkit.config import TransformerConfig
from attnkit.models.transformer import Transformer


def check_kernels() -> None:
    print("== SDPA kernel selection (bf16, B=8, H=8, T=1024, D=512)")
    mha = MultiHeadAttention(512, 8).cuda().to(torch.bfloat16)
    x = torch.randn(8, 1024, 512, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    lens = torch.tensor([1024, 900, 800, 700, 600, 500, 400, 300], device="cuda")
    cases = {
        "no mask": lambda: mha(x, x, x)[0].sum().backward(),
        "causal (is_causal)": lambda: mha(x, x, x, is_causal=True)[0].sum().backward(),
        "padding (valid_lens)": lambda: mha(x, x, x, valid_lens=lens)[0].sum().backward(),
        "need_weights (math path)": lambda: mha(x, x, x, need_weights=True)[0].sum().backward(),
    }
    for name, fn in cases.items():
        fn()
        print(f"  {name:26s} {sdpa_kernels(fn)}")


def check_correctness() -> None:
    print("== correctness on CUDA (float32)")
    torch.manual_seed(0)
    mha = MultiHeadAttention(64, 4, kdim=32, vdim=48).cuda().eval()
    ref = mha.to_torch().eval()
    q = torch.randn(3, 7, 64, device="cuda")
    k = torch.randn(3, 9, 32, device="cuda")
    v = torch.randn(3, 9, 48, device="cuda")
    lens = torch.tensor([9, 5, 1], device="cuda")
    kpm = torch.arange(9, device="cuda") >= lens[:, None]
    ours = mha(q, k, v, valid_lens=lens)[0]
    theirs = ref(q, k, v, key_padding_mask=kpm)[0]
    print(f"  MHA vs nn.MultiheadAttention max |diff| = {(ours - theirs).abs().max().item():.2e}")
    cfg = TransformerConfig(
        src_vocab_size=100,
        tgt_vocab_size=100,
        d_model=64,
        num_heads=4,
        ffn_hidden=128,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dropout=0.0,
    )
    from attnkit.decoding import greedy_decode

    model = Transformer(cfg).cuda().eval()
    src = torch.randint(4, 100, (4, 12), device="cuda")
    mask = torch.ones_like(src, dtype=torch.bool)
    mask[1, 8:] = False
    a = greedy_decode(model, src, mask, max_len=30, use_cache=True)
    b = greedy_decode(model, src, mask, max_len=30, use_cache=False)
    print(f"  greedy with KV cache == recomputation on CUDA: {a.tokens == b.tokens}")


def check_amp_training() -> None:
    print("== AMP training through the shared trainer (dates corpus, bf16 autocast)")
    from attnkit.translation.config import preset_for, run_config_from_dict
    from attnkit.translation.run import train_translator

    cfg = preset_for("dates", "transformer")
    cfg["data"]["source"] = "dates"
    cfg["model_type"] = "transformer"
    cfg["train"].update({"device": "cuda", "amp": True, "epochs": 6})
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result, _ = train_translator(run_config_from_dict(cfg), f"{tmp}/run")
        print(
            f"  {result.steps} steps in {time.perf_counter() - start:.1f} s, "
            f"{result.tokens_per_second:.0f} target tokens/s; validation {result.last_metrics}"
        )


def check_attention_speed() -> None:
    print("== multi-head attention fwd+bwd, bf16, B=16, D=512, H=8 (median of 5, alternating)")
    # attnkit, nn.MultiheadAttention called with need_weights=False, and the plain SDPA module
    built = build_candidates(512, 8, device="cuda", dtype=torch.bfloat16)
    calls = {
        "attnkit": built["ours"][1],
        "nn.MHA": built["mha_nw"][1],
        "plain SDPA": built["plain"][1],
    }
    for t in (256, 1024, 4096):
        x = torch.randn(16, t, 512, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        times = alternate(
            {name: (lambda f=f, x=x: f(x).sum().backward()) for name, f in calls.items()},
            repeats=5,
            warmup=2,
            device="cuda",
        )
        m = {k: median(v) for k, v in times.items()}
        print(
            f"  T={t:5d}  attnkit {m['attnkit'] * 1e3:7.2f} ms   ours/nn.MHA "
            f"{m['attnkit'] / m['nn.MHA']:.2f}   ours/plain {m['attnkit'] / m['plain SDPA']:.2f}"
        )


def check_mfu() -> None:
    print("== model FLOPs utilisation, training step, d_model 512, 6+6 layers, bf16 autocast")
    ceiling = matmul_ceiling("cuda")  # bf16, n = 8192
    print(f"  measured bf16 matmul ceiling: {ceiling / 1e12:.0f} TFLOP/s")
    sizes = dict(d_model=512, num_heads=8, ffn_hidden=2048, num_encoder_layers=6)
    cfg = transformer_config(8000, max_len=256, num_decoder_layers=6, **sizes)
    model = Transformer(cfg).cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    b, s, l = 128, 64, 64
    src = torch.randint(4, 8000, (b, s), device="cuda")
    tgt = torch.randint(4, 8000, (b, l), device="cuda")
    mask = torch.ones_like(src, dtype=torch.bool)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(src, tgt, mask)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), tgt.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    times = alternate({"step": step}, repeats=10, warmup=3, device="cuda")["step"]
    seconds = median(times)
    enc = sum(p.numel() for p in model.encoder.parameters())
    dec = sum(p.numel() for p in model.decoder.parameters())
    d, v = cfg.d_model, cfg.tgt_vocab_size
    # 6 * params * tokens for the matmuls, + attention scores/values (4 * T * D per token per
    # layer, x3 for fwd+bwd), + the tied output layer (6 * D * V per target token).
    attn = (
        3
        * 4
        * d
        * (cfg.num_encoder_layers * s * s * b + cfg.num_decoder_layers * (l * l + l * s) * b)
    )
    flops = 6 * (enc * b * s + dec * b * l) + attn + 6 * d * v * b * l
    print(
        f"  step {seconds * 1e3:.1f} ms, {b * l / seconds:.0f} target tokens/s, "
        f"{flops / seconds / 1e12:.1f} TFLOP/s = {flops / seconds / ceiling:.0%} of the ceiling"
    )


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    assert torch.cuda.is_available(), "this script needs a CUDA device"
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}")
    for check in (
        check_kernels,
        check_correctness,
        check_attention_speed,
        check_mfu,
        check_amp_training,
    ):
        try:
            check()
        except Exception as err:  # report and go on: one failing check must not hide the rest
            print(f"  FAILED: {type(err).__name__}: {err}")


if __name__ == "__main__":
    main()

"""CUDA checks and figures: SDPA kernel selection, correctness on the GPU, AMP training, speed.

    python benchmarks/cuda_checks.py            # needs a CUDA device

Prints one section per check; the figures recorded in benchmarks/RESULTS.md come from this script.
"""

from __future__ import annotations

import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

from attnkit.attention.multihead import MultiHeadAttention
from attnkit.bench.timing import alternate, median
from attnkit.config import TransformerConfig
from attnkit.models.transformer import Transformer


def kernels_used(fn) -> list[str]:
    """Names of the CUDA kernels launched by ``fn`` whose names mention attention."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    names = {e.name for e in prof.events() if e.device_type.name == "CUDA"}
    keys = ("flash", "fmha", "efficient", "attention", "softmax")
    return sorted(n[:90] for n in names if any(k in n.lower() for k in keys))


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
        print(f"  {name:26s} {kernels_used(fn)}")


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
    cfg = TransformerConfig(src_vocab_size=100, tgt_vocab_size=100, d_model=64, num_heads=4,
                            ffn_hidden=128, num_encoder_layers=2, num_decoder_layers=2,
                            dropout=0.0)
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
    from attnkit.tasks.presets import preset_for
    from attnkit.tasks.runs import run_config_from_dict, train_translator

    cfg = preset_for("dates", "transformer")
    cfg["data"]["source"] = "dates"
    cfg["model_type"] = "transformer"
    cfg["train"].update({"device": "cuda", "amp": True, "epochs": 6})
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result, _ = train_translator(run_config_from_dict(cfg), f"{tmp}/run")
        print(f"  {result.steps} steps in {time.perf_counter() - start:.1f} s, "
              f"{result.tokens_per_second:.0f} target tokens/s; validation {result.last_metrics}")


def matmul_ceiling(dtype: torch.dtype = torch.bfloat16, n: int = 8192) -> float:
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * 10 / (time.perf_counter() - start)


def check_attention_speed() -> None:
    print("== multi-head attention fwd+bwd, bf16, B=16, D=512, H=8 (median of 5, alternating)")

    class PlainSDPA(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv, self.out = nn.Linear(512, 1536), nn.Linear(512, 512)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, t, _ = x.shape
            q, k, v = self.qkv(x).view(b, t, 3, 8, 64).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, k, v)
            return self.out(y.transpose(1, 2).reshape(b, t, 512))

    ours = MultiHeadAttention(512, 8).cuda().to(torch.bfloat16)
    ref = nn.MultiheadAttention(512, 8, batch_first=True).cuda().to(torch.bfloat16)
    plain = PlainSDPA().cuda().to(torch.bfloat16)
    for t in (256, 1024, 4096):
        x = torch.randn(16, t, 512, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        times = alternate({
            "attnkit": lambda x=x: ours(x, x, x)[0].sum().backward(),
            "nn.MHA": lambda x=x: ref(x, x, x, need_weights=False)[0].sum().backward(),
            "plain SDPA": lambda x=x: plain(x).sum().backward(),
        }, repeats=5, warmup=2, device="cuda")
        m = {k: median(v) for k, v in times.items()}
        print(f"  T={t:5d}  attnkit {m['attnkit'] * 1e3:7.2f} ms   ours/nn.MHA "
              f"{m['attnkit'] / m['nn.MHA']:.2f}   ours/plain {m['attnkit'] / m['plain SDPA']:.2f}")


def check_mfu() -> None:
    print("== model FLOPs utilisation, training step, d_model 512, 6+6 layers, bf16 autocast")
    ceiling = matmul_ceiling()
    print(f"  measured bf16 matmul ceiling: {ceiling / 1e12:.0f} TFLOP/s")
    cfg = TransformerConfig(src_vocab_size=8000, tgt_vocab_size=8000, d_model=512, num_heads=8,
                            ffn_hidden=2048, num_encoder_layers=6, num_decoder_layers=6,
                            dropout=0.1, norm_first=True, tie_embeddings="all", max_len=256)
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
    attn = 3 * 4 * d * (cfg.num_encoder_layers * s * s * b + cfg.num_decoder_layers *
                        (l * l + l * s) * b)
    flops = 6 * (enc * b * s + dec * b * l) + attn + 6 * d * v * b * l
    print(f"  step {seconds * 1e3:.1f} ms, {b * l / seconds:.0f} target tokens/s, "
          f"{flops / seconds / 1e12:.1f} TFLOP/s = {flops / seconds / ceiling:.0%} of the ceiling")


if __name__ == "__main__":
    assert torch.cuda.is_available(), "this script needs a CUDA device"
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}")
    for check in (check_kernels, check_correctness, check_attention_speed, check_mfu,
                  check_amp_training):
        try:
            check()
        except Exception as err:  # report and go on: one failing check must not hide the rest
            print(f"  FAILED: {type(err).__name__}: {err}")

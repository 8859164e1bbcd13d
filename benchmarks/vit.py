"""Vision Transformer benchmark: training images/s vs a ViT built from nn.TransformerEncoder, and
the default ``attnkit train-vit`` run (test accuracy on the digits, wall time).

    python benchmarks/vit.py [--device cpu|cuda] [--threads 2] [--size digits|cifar|both]
                             [--skip-run] [--run-threads 2]

Both models are timed alternately in one process (attnkit.bench.timing.alternate) on the same
random batches, with the same sizes, dropout and AdamW settings; the printed ratio is attnkit
images/s over reference images/s (target >= 1.0). The training run is a subprocess of the real
command line, so its wall time includes start-up. See benchmarks/RESULTS.md for recorded figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.bench.timing import alternate, median
from attnkit.config import ViTConfig
from attnkit.models.vit import VisionTransformer
from attnkit.training.optimizers import adamw

# name: (model sizes, batch size, batches per timed pass on CPU)
SIZES = {
    # the digits preset of `attnkit train-vit`
    "digits": (
        dict(image_size=8, patch_size=2, in_channels=1, d_model=64, num_layers=2, num_heads=4, ffn_hidden=128),
        64,
        20,
    ),
    # a CIFAR-sized model (ViT-Tiny width, 6 layers)
    "cifar": (
        dict(image_size=32, patch_size=4, in_channels=3, d_model=192, num_layers=6, num_heads=3, ffn_hidden=768),
        128,
        3,
    ),
}


class ReferenceViT(nn.Module):
    """The same ViT from PyTorch's own modules: Conv2d patches, nn.TransformerEncoder (pre-LN)."""

    def __init__(self, c: ViTConfig) -> None:
        super().__init__()
        n = (c.image_size // c.patch_size) ** 2
        self.patch = nn.Conv2d(c.in_channels, c.d_model, c.patch_size, c.patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, c.d_model))
        self.pos = nn.Parameter(torch.zeros(1, 1 + n, c.d_model))
        self.drop = nn.Dropout(c.dropout)
        layer = nn.TransformerEncoderLayer(
            c.d_model,
            c.num_heads,
            c.ffn_hidden,
            c.dropout,
            activation="gelu",
            layer_norm_eps=c.layer_norm_eps,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, c.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.head = nn.Linear(c.d_model, c.num_classes)

    def forward(self, images: Tensor) -> tuple[Tensor, None]:
        x = self.patch(images).flatten(2).transpose(1, 2)  # (B, N, D)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1) + self.pos  # (B, 1 + N, D)
        x = self.norm(self.encoder(self.drop(x)))  # (B, 1 + N, D)
        return self.head(x[:, 0]), None  # (B, classes)


def bench_training(size: str, device: str, batches: int | None, repeats: int) -> dict[str, float]:
    """Images/s of one pass over ``batches`` random batches for both models, alternately."""
    fields, batch_size, cpu_batches = SIZES[size]
    batches = batches or (cpu_batches if device == "cpu" else 50)
    cfg = ViTConfig(num_classes=10, dropout=0.1, **fields)
    torch.manual_seed(0)
    models = {"attnkit": VisionTransformer(cfg), "nn.TransformerEncoder": ReferenceViT(cfg)}
    counts = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    assert counts["attnkit"] == counts["nn.TransformerEncoder"], counts
    shape = (batch_size, cfg.in_channels, cfg.image_size, cfg.image_size)
    data = [
        (torch.rand(shape, device=device), torch.randint(0, 10, (batch_size,), device=device))
        for _ in range(batches)
    ]
    opts = {}
    for name, model in models.items():
        model.to(device).train()
        opts[name] = adamw(model.parameters(), device, lr=1e-3, weight_decay=0.05)

    def epoch(name: str) -> None:
        model, opt = models[name], opts[name]
        for images, labels in data:
            logits, _ = model(images)
            F.cross_entropy(logits, labels).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    times = alternate(
        {name: (lambda n=name: epoch(n)) for name in models},
        repeats=repeats,
        warmup=1,
        device=device,
    )
    ips = {name: batches * batch_size / median(t) for name, t in times.items()}
    return {
        "params": counts["attnkit"],
        "batch_size": batch_size,
        "batches": batches,
        **ips,
        "ratio": ips["attnkit"] / ips["nn.TransformerEncoder"],
    }


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


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        return "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--size", default="both", choices=("digits", "cifar", "both"))
    parser.add_argument("--batches", type=int, help="batches per timed pass (default per size)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-run", action="store_true", help="only the throughput comparison")
    parser.add_argument("--run-threads", type=int, default=2, help="threads of the train-vit run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
        f"load average {load_average()}"
    )
    for size in ("digits", "cifar") if args.size == "both" else (args.size,):
        r = bench_training(size, args.device, args.batches, args.repeats)
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

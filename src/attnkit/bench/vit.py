"""Vision Transformer benchmark: attnkit's VisionTransformer vs :class:`TorchViT`.

Both models get the same config, the same seed and the same random images, and are timed
alternately in one process (:func:`attnkit.bench.timing.alternate`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.bench.references import TorchViT
from attnkit.bench.timing import alternate, median
from attnkit.config import ViTConfig
from attnkit.models.vit import VisionTransformer
from attnkit.training.optimizers import adamw

__all__ = ["VIT_SIZES", "ViTSize", "bench_vit_training", "train_step", "vit_candidates"]

Call = Callable[[Tensor], Tensor]


@dataclass(frozen=True, kw_only=True)
class ViTSize:
    """A model size of the ViT benchmark (presets in :data:`VIT_SIZES`)."""

    model: dict[str, int]  # ViTConfig sizes
    batch_size: int
    cpu_batches: int  # batches per timed pass on the CPU (50 on a GPU)


VIT_SIZES: dict[str, ViTSize] = {
    # the digits preset of `attnkit train-vit`
    "digits": ViTSize(
        model=dict(
            image_size=8,
            patch_size=2,
            in_channels=1,
            d_model=64,
            num_layers=2,
            num_heads=4,
            ffn_hidden=128,
        ),
        batch_size=64,
        cpu_batches=20,
    ),
    # a CIFAR-sized model (ViT-Tiny width, 6 layers)
    "cifar": ViTSize(
        model=dict(
            image_size=32,
            patch_size=4,
            in_channels=3,
            d_model=192,
            num_layers=6,
            num_heads=3,
            ffn_hidden=768,
        ),
        batch_size=128,
        cpu_batches=3,
    ),
}


def vit_candidates(
    config: ViTConfig, device: torch.device | str = "cpu"
) -> dict[str, tuple[nn.Module, Call]]:
    """attnkit's model and the reference, built after ``torch.manual_seed(0)``.

    Returns:
        ``{"attnkit": (module, call), "nn.TransformerEncoder": (module, call)}``; each call maps
        images (B, C, H, W) -> logits (B, num_classes).
    """
    torch.manual_seed(0)
    ours, ref = VisionTransformer(config).to(device), TorchViT(config).to(device)
    return {"attnkit": (ours, lambda images: ours(images)[0]), "nn.TransformerEncoder": (ref, ref)}


def train_step(
    candidate: tuple[nn.Module, Call],
    opt: torch.optim.Optimizer,
    *,
    images: Tensor,
    labels: Tensor,
    amp: bool = False,
) -> None:
    """One training step (cross-entropy, backward, optimizer step) of a candidate.

    Shapes: images (B, C, H, W), labels (B,). ``amp``: bf16 autocast (CUDA).
    """
    module, call = candidate
    module.train()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        loss = F.cross_entropy(call(images).float(), labels)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def bench_vit_training(
    size: str | ViTSize,
    *,
    device: str = "cpu",
    batches: int | None = None,
    repeats: int = 5,
) -> dict[str, float]:
    """Images/s of one training pass over ``batches`` random batches for both models, alternately.

    Args:
        size: a :class:`ViTSize` or a name from :data:`VIT_SIZES`.
        device: where to run (fp32; AdamW lr 1e-3, weight decay 0.05; dropout 0.1).
        batches: batches per timed pass (default: the size's ``cpu_batches`` on the CPU, 50
            elsewhere).
        repeats: timed passes per model, after one warm-up pass.

    Returns:
        dict with ``params`` (the same for both), ``batch_size``, ``batches``, images/s under
        ``"attnkit"`` and ``"nn.TransformerEncoder"``, and ``ratio`` (attnkit / reference).
    """
    size = VIT_SIZES[size] if isinstance(size, str) else size
    batches = batches or (size.cpu_batches if device == "cpu" else 50)
    cfg = ViTConfig(num_classes=10, dropout=0.1, **size.model)
    models = vit_candidates(cfg)
    counts = {k: sum(p.numel() for p in m.parameters()) for k, (m, _) in models.items()}
    if counts["attnkit"] != counts["nn.TransformerEncoder"]:
        raise AssertionError(f"the two models differ in size: {counts}")
    shape = (size.batch_size, cfg.in_channels, cfg.image_size, cfg.image_size)
    data = [
        (torch.rand(shape, device=device), torch.randint(0, 10, (size.batch_size,), device=device))
        for _ in range(batches)
    ]
    opts = {}
    for name, (module, _) in models.items():
        module.to(device).train()
        opts[name] = adamw(module.parameters(), device, lr=1e-3, weight_decay=0.05)

    def epoch(name: str) -> None:
        for images, labels in data:
            train_step(models[name], opts[name], images=images, labels=labels)

    times = alternate(
        {name: (lambda n=name: epoch(n)) for name in models},
        repeats=repeats,
        warmup=1,
        device=device,
    )
    ips = {name: batches * size.batch_size / median(t) for name, t in times.items()}
    return {
        "params": counts["attnkit"],
        "batch_size": size.batch_size,
        "batches": batches,
        **ips,
        "ratio": ips["attnkit"] / ips["nn.TransformerEncoder"],
    }

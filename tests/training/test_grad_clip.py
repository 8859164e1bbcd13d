"""The trainer's one-pass gradient normalisation and clipping equals PyTorch's ``div_`` then
``clip_grad_norm_``."""

from __future__ import annotations

import pytest
import torch

from attnkit.training.trainer import _normalise_and_clip


def _grads(scale: float) -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.zeros(s)) for s in ((7, 5), (5,), (3, 2, 4))]
    for p in params:
        p.grad = torch.randn(p.shape) * scale
    params.append(torch.nn.Parameter(torch.zeros(2)))  # no gradient: skipped
    return params


@pytest.mark.parametrize("scale", [0.01, 50.0])  # below and above the clipping threshold
@pytest.mark.parametrize("clip", [0.0, 1.0])
def test_normalise_and_clip_equals_div_then_clip_grad_norm(scale: float, clip: float) -> None:
    ours, ref = _grads(scale), _grads(scale)
    norm = _normalise_and_clip(ours, 12.0, clip)
    for p in ref:
        if p.grad is not None:
            p.grad.div_(12.0)
    ref_norm = torch.nn.utils.clip_grad_norm_(ref, clip) if clip > 0 else torch.tensor(0.0)
    assert float(norm) == pytest.approx(float(ref_norm), rel=1e-6)
    for a, b in zip(ours, ref, strict=True):
        if b.grad is None:
            assert a.grad is None
        else:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-9)
    if clip > 0 and scale > 1:  # clipped: the global norm is now the threshold
        total = torch.cat([p.grad.flatten() for p in ours if p.grad is not None]).norm()
        assert float(total) == pytest.approx(clip, rel=1e-5)

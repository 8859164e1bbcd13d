"""attnkit's CPU dropout against the definition of dropout and against ``nn.Dropout``."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attnkit.layers.dropout import Dropout, dropout


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
def test_drop_rate_and_scale(p: float) -> None:
    """The fraction dropped is p within 5 standard errors; kept values are x / (1 - p')."""
    torch.manual_seed(0)
    x = torch.rand(200_003) + 0.5  # odd size: the 4-per-draw packing must cover the tail
    out = dropout(x, p)
    dropped = out == 0
    n = x.numel()
    assert abs(float(dropped.float().mean()) - p) < 5 * math.sqrt(p * (1 - p) / n)
    cut = round(p * 2**16)
    torch.testing.assert_close(out[~dropped], x[~dropped] * (2**16 / (2**16 - cut)))
    # the tail elements (last packed word) are dropped at the same rate as the rest
    tail = dropped[-50_000:].float().mean()
    assert abs(float(tail) - p) < 5 * math.sqrt(p * (1 - p) / 50_000)


def test_unbiased_and_independent_of_position() -> None:
    """E[dropout(x)] = x, and the four 16-bit lanes of each draw are equally likely to drop."""
    torch.manual_seed(1)
    x = torch.ones(400_000)
    out = dropout(x, 0.25)
    assert float(out.mean()) == pytest.approx(1.0, abs=5 * math.sqrt(0.25 / 0.75 / 400_000))
    lanes = (out == 0).view(-1, 4).float().mean(0)
    assert torch.all((lanes - 0.25).abs() < 5 * math.sqrt(0.25 * 0.75 / 100_000))
    # neighbouring elements are uncorrelated
    d = (out == 0).float()
    corr = torch.corrcoef(torch.stack([d[:-1], d[1:]]))[0, 1]
    assert abs(float(corr)) < 0.01


def test_gradient_is_the_mask_times_the_scale() -> None:
    torch.manual_seed(2)
    x = torch.randn(64, 33, requires_grad=True)
    out = dropout(x, 0.2)
    out.backward(torch.ones_like(out))
    scale = out.detach() / x.detach()  # 0 where dropped, the scale where kept
    torch.testing.assert_close(x.grad, torch.where(out == 0, 0.0, scale))


def test_eval_mode_zero_p_one_p_and_reproducible() -> None:
    x = torch.randn(10, 7)
    module = Dropout(0.3).eval()
    assert module(x) is x
    assert dropout(x, 0.0) is x
    assert torch.all(dropout(x, 1.0) == 0)
    torch.manual_seed(5)
    a = dropout(x, 0.3)
    torch.manual_seed(5)
    assert torch.equal(a, dropout(x, 0.3))
    assert "p=0.3" in repr(module)


def test_same_statistics_as_nn_dropout() -> None:
    """Mean and variance of the output match nn.Dropout's (the same distribution)."""
    torch.manual_seed(3)
    x = torch.full((300_000,), 2.0)
    ours = Dropout(0.4).train()(x)
    ref = nn.Dropout(0.4).train()(x)
    assert float(ours.mean()) == pytest.approx(float(ref.mean()), abs=0.02)
    assert float(ours.var()) == pytest.approx(float(ref.var()), rel=0.02)


def test_bad_probability() -> None:
    with pytest.raises(ValueError, match="must be in"):
        Dropout(1.5)
    with pytest.raises(ValueError, match="must be in"):
        dropout(torch.ones(3), -0.1)

"""PositionWiseFFN against a float64 reference built from PyTorch's own modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnkit.layers.feedforward import PositionWiseFFN, make_activation


@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_tanh"])
def test_output_and_gradients_match_torch_sequential_in_float64(activation: str) -> None:
    torch.manual_seed(0)
    ffn = PositionWiseFFN(8, 16, activation=activation).double()
    act = {"relu": nn.ReLU(), "gelu": nn.GELU(), "gelu_tanh": nn.GELU(approximate="tanh")}
    ref = nn.Sequential(nn.Linear(8, 16), act[activation], nn.Linear(16, 8)).double()
    ref[0].load_state_dict(ffn.dense1.state_dict())
    ref[2].load_state_dict(ffn.dense2.state_dict())
    x = torch.randn(3, 5, 8, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out, expected = ffn(x), ref(x_ref)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    out.square().sum().backward()
    expected.square().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(ffn.dense1.weight.grad, ref[0].weight.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(ffn.dense2.weight.grad, ref[2].weight.grad, rtol=0, atol=1e-12)


def test_relu_runs_in_place_and_leaves_the_input_alone() -> None:
    ffn = PositionWiseFFN(4, 6)
    assert isinstance(ffn.activation, nn.ReLU) and ffn.activation.inplace
    x = torch.randn(2, 3, 4)
    before = x.clone()
    ffn(x)
    torch.testing.assert_close(x, before, rtol=0, atol=0)  # only dense1's output is overwritten


def test_unknown_activation_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="activation must be 'relu', 'gelu' or 'gelu_tanh'"):
        make_activation("swish")

"""Nadaraya–Watson kernel regression: attention pooling before attention had parameters.

The estimate at a query ``q`` is a weighted average of the training targets ``y_i``, with weights
``k((q - x_i) / h) / sum_j k((q - x_j) / h)`` — queries, keys ``x_i``, values ``y_i``.

Two versions of the d2l course teach this:

* the older one ("Attention Pooling: Nadaraya–Watson Kernel Regression", d2l 0.17) uses the
  Gaussian ``softmax(-(q - x_i)^2 / 2)`` — :func:`nadaraya_watson` with ``kernel="gaussian"``,
  ``bandwidth=1`` — and then a parametric version with a learnable ``w``, trained with
  leave-one-out keys: :class:`NWKernelRegression`, :func:`leave_one_out_keys`,
  :func:`fit_kernel_regression`, and its toy data :func:`make_kernel_regression_data`;
* the newer one ("Attention Pooling by Similarity", d2l 1.0) compares kernels: ``gaussian``
  (its ``gaussian_with_width(sigma)`` is ``bandwidth=sigma``), ``boxcar``, ``constant`` and the
  function it calls ``epanechikov``, which computes ``max(1 - |u|, 0)``: that is the triangular
  kernel, here ``kernel="triangular"``; ``kernel="epanechnikov"`` is the textbook
  ``max(1 - u^2, 0)``. d2l 1.0 returns weights as (keys, queries); ours are (queries, keys).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = [
    "KERNELS",
    "nadaraya_watson",
    "NWKernelRegression",
    "leave_one_out_keys",
    "fit_kernel_regression",
    "KernelRegressionData",
    "kernel_regression_truth",
    "make_kernel_regression_data",
]

#: Unnormalised kernels of the scaled distance ``u = (q - k) / bandwidth``.
KERNELS: dict[str, Callable[[Tensor], Tensor]] = {
    "gaussian": lambda u: torch.exp(-(u**2) / 2),
    "boxcar": lambda u: (u.abs() < 1).to(u.dtype),
    "constant": lambda u: torch.ones_like(u),
    "epanechnikov": lambda u: (1 - u**2).clamp(min=0),
    "triangular": lambda u: (1 - u.abs()).clamp(min=0),
}


def nadaraya_watson(
    queries: Tensor,
    keys: Tensor,
    values: Tensor,
    bandwidth: float = 1.0,
    kernel: str = "gaussian",
) -> tuple[Tensor, Tensor]:
    """Nadaraya–Watson estimate at each query.

    ``weights[i, j] = k((q_i - x_j) / bandwidth) / sum_j' k((q_i - x_j') / bandwidth)``; the
    Gaussian is computed as ``softmax(-(q - x)^2 / (2 bandwidth^2))`` so that a tiny bandwidth
    does not underflow to 0/0. With a compact kernel (boxcar, epanechnikov, triangular) a query
    with no key inside the window gets all-zero weights and a NaN estimate (undefined there;
    matplotlib leaves a gap).

    Args:
        queries: points where the regression is evaluated.
        keys: training inputs x_i.
        values: training targets y_i (scalar or vector).
        bandwidth: kernel width h > 0 (the Gaussian's sigma).
        kernel: one of ``KERNELS``: gaussian, boxcar, constant, epanechnikov, triangular.

    Returns:
        (output, weights); weight rows sum to 1.
        Shapes: queries (Q,), keys (K,), values (K,) or (K, Dv) -> output (Q,) or (Q, Dv),
        weights (Q, K).
    """
    if kernel not in KERNELS:
        raise ValueError(
            f"nadaraya_watson: kernel must be one of {sorted(KERNELS)}, got {kernel!r}"
        )
    if not bandwidth > 0:
        raise ValueError(f"nadaraya_watson: bandwidth must be > 0, got {bandwidth}")
    if queries.dim() != 1 or keys.dim() != 1:
        raise ValueError(
            f"nadaraya_watson: queries and keys must be 1-D, got {tuple(queries.shape)} and "
            f"{tuple(keys.shape)}"
        )
    if values.dim() not in (1, 2) or values.shape[0] != keys.shape[0]:
        raise ValueError(
            f"nadaraya_watson: values must be (K,) or (K, Dv) with K = {keys.shape[0]} keys, "
            f"got {tuple(values.shape)}"
        )
    u = (queries[:, None] - keys[None, :]) / bandwidth  # (Q, K)
    values = values.to(u.dtype)
    if kernel == "gaussian":
        weights = torch.softmax(-(u**2) / 2, dim=-1)  # (Q, K)
        return weights @ values, weights  # (Q,) or (Q, Dv)
    k = KERNELS[kernel](u)  # (Q, K)
    total = k.sum(dim=-1, keepdim=True)  # (Q, 1)
    weights = k / torch.where(total > 0, total, torch.ones_like(total))  # (Q, K)
    output = weights @ values  # (Q,) or (Q, Dv)
    empty = (total == 0).reshape(-1, *([1] * (output.dim() - 1)))  # (Q,) or (Q, 1)
    output = torch.where(empty, torch.full_like(output, float("nan")), output)
    return output, weights


class NWKernelRegression(nn.Module):
    """Parametric Nadaraya–Watson regression (older d2l): ``softmax(-((q - k) * w)^2 / 2)``.

    ``w`` is one learnable scalar, an inverse bandwidth. The course draws its initial value from
    U(0, 1); here it is ``init_w`` (default 1.0, the non-parametric estimator) for determinism.
    """

    def __init__(self, init_w: float = 1.0) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([float(init_w)]))

    def forward(self, queries: Tensor, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Args:
            queries: query points.
            keys: keys shared by all queries (``keys.dim() == queries.dim()``), or one row of keys
                per query (``keys.dim() == queries.dim() + 1``, e.g. leave-one-out keys).
            values: one value per key, same shape as ``keys``.

        Returns:
            (output, weights); weight rows sum to 1.
            Shapes: queries (Q,) or (B, Q); keys/values (K,) / (B, K) shared or (Q, K) / (B, Q, K)
            per query -> output (Q,) or (B, Q), weights (Q, K) or (B, Q, K).
        """
        if values.shape != keys.shape:
            raise ValueError(
                f"NWKernelRegression: values {tuple(values.shape)} must have the shape of keys "
                f"{tuple(keys.shape)}"
            )
        if keys.dim() == queries.dim() and keys.shape[:-1] == queries.shape[:-1]:
            keys, values = keys.unsqueeze(-2), values.unsqueeze(-2)  # (*, 1, K)
        elif keys.dim() != queries.dim() + 1 or keys.shape[:-1] != queries.shape:
            raise ValueError(
                f"NWKernelRegression: for queries {tuple(queries.shape)} keys must be (*, K) "
                f"shared or (*, Q, K) per query with matching leading axes, got {tuple(keys.shape)}"
            )
        scores = -(((queries.unsqueeze(-1) - keys) * self.w) ** 2) / 2  # (*, Q, K)
        weights = torch.softmax(scores, dim=-1)  # (*, Q, K)
        output = (weights * values).sum(dim=-1)  # (*, Q)
        return output, weights


def leave_one_out_keys(x_train: Tensor, y_train: Tensor) -> tuple[Tensor, Tensor]:
    """Keys and values for training with each point excluded from its own keys (as the course does).

    Row i holds all training points except point i, in their original order.

    Returns:
        (keys, values). Shapes: x_train, y_train (n,) -> (n, n - 1) each.
    """
    if x_train.dim() != 1 or x_train.shape != y_train.shape or x_train.shape[0] < 2:
        raise ValueError(
            f"leave_one_out_keys: x_train and y_train must be (n,) with n >= 2, got "
            f"{tuple(x_train.shape)} and {tuple(y_train.shape)}"
        )
    n = x_train.shape[0]
    keep = ~torch.eye(n, dtype=torch.bool, device=x_train.device)  # (n, n)
    keys = x_train.expand(n, n)[keep].reshape(n, n - 1)  # (n, n-1)
    values = y_train.expand(n, n)[keep].reshape(n, n - 1)  # (n, n-1)
    return keys, values


def fit_kernel_regression(
    model: nn.Module, x_train: Tensor, y_train: Tensor, epochs: int = 5, lr: float = 0.5
) -> list[float]:
    """Train ``model`` (e.g. :class:`NWKernelRegression`) the course's way.

    Full-batch SGD on the *summed* squared error (the course's ``MSELoss(reduction='none')``
    followed by ``.sum()``, which its ``lr=0.5`` is tuned for), each training input querying the
    other training points (:func:`leave_one_out_keys`). Deterministic: no sampling.

    Args:
        model: called as ``model(queries, keys, values) -> (output, weights)``.
        x_train: training inputs.
        y_train: training targets.
        epochs: number of full-batch steps.
        lr: SGD learning rate.

    Returns:
        the summed squared error before each step, one per epoch. Shapes: x_train, y_train (n,).
    """
    if epochs < 1 or not lr > 0:
        raise ValueError(f"fit_kernel_regression: need epochs >= 1 and lr > 0, got {epochs}, {lr}")
    keys, values = leave_one_out_keys(x_train, y_train)  # (n, n-1) each
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    history = []
    for _ in range(epochs):
        optimizer.zero_grad()
        prediction, _ = model(x_train, keys, values)  # (n,)
        loss = ((prediction - y_train) ** 2).sum()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return history


class KernelRegressionData(NamedTuple):
    """The course's toy regression problem. Shapes: x_train, y_train (n,); x_test, y_test (50,)."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor  # the noiseless truth at x_test


def kernel_regression_truth(x: Tensor) -> Tensor:
    """The course's target function ``2 sin(x) + x^0.8``. Shapes: any -> same."""
    return 2 * torch.sin(x) + x**0.8


def make_kernel_regression_data(n_train: int = 50, seed: int = 0) -> KernelRegressionData:
    """The older d2l's data: sorted x ~ U[0, 5), y = 2 sin(x) + x^0.8 + N(0, 0.5^2) noise.

    The test grid is ``arange(0, 5, 0.1)`` with the noiseless truth. Uses its own generator, so
    the global RNG is untouched and the same seed gives the same data.

    Returns:
        a :class:`KernelRegressionData` of float32 tensors.
        Shapes: x_train, y_train (n_train,); x_test, y_test (50,).
    """
    if not isinstance(n_train, int) or n_train < 2:
        raise ValueError(f"make_kernel_regression_data: n_train must be an int >= 2, got {n_train}")
    gen = torch.Generator().manual_seed(seed)
    x_train, _ = torch.sort(torch.rand(n_train, generator=gen) * 5)  # (n,)
    noise = torch.randn(n_train, generator=gen) * 0.5  # (n,)
    y_train = kernel_regression_truth(x_train) + noise
    x_test = torch.arange(0, 5, 0.1)  # (50,)
    return KernelRegressionData(x_train, y_train, x_test, kernel_regression_truth(x_test))

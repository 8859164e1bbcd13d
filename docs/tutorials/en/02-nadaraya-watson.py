# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. Attention pooling: Nadaraya–Watson kernel regression
#
# **What you will learn**
#
# - that a 1964 regression method, Nadaraya–Watson kernel regression, *is* attention pooling:
#   the test input is the query, the training inputs are the keys, the training targets are
#   the values;
# - how the kernel and its width (the bandwidth) shape the attention weights and the fit;
# - how to make the pooling *parametric* by learning the width, and what the learned weights
#   look like.
#
# The code is in
# [`attnkit/attention/kernel_regression.py`](../../../src/attnkit/attention/kernel_regression.py).

# %%
# %matplotlib inline
import os

import matplotlib.pyplot as plt
import torch

from attnkit.attention.kernel_regression import (
    NWKernelRegression,
    fit_kernel_regression,
    make_kernel_regression_data,
    nadaraya_watson,
)
from attnkit.viz.heatmaps import show_heatmaps

torch.manual_seed(0)
FULL = os.environ.get("ATTNKIT_TUTORIAL_FULL", "") not in ("", "0")
N_TRAIN = 500 if FULL else 50

# %% [markdown]
# ## The data
#
# As in the course: $n$ inputs drawn uniformly from $[0, 5)$ (sorted, which makes the
# heatmaps readable) and noisy targets of
#
# $$ y_i = 2\sin(x_i) + x_i^{0.8} + \epsilon, \qquad \epsilon \sim \mathcal{N}(0, 0.5^2). $$
#
# The test inputs are the grid $0, 0.1, \dots, 4.9$, with the noiseless truth to compare
# against.

# %%
data = make_kernel_regression_data(N_TRAIN, seed=0)
x_train, y_train, x_test, y_test = data


def plot_fits(**fits):
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(x_train, y_train, "o", alpha=0.4, ms=3, label="training data")
    ax.plot(x_test, y_test, "k-", label="truth")
    for name, y_hat in fits.items():
        ax.plot(x_test, y_hat.detach(), "--", label=name)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(fontsize="small")


# %% [markdown]
# ## Average pooling
#
# The simplest estimator ignores the input: $f(x) = \frac{1}{n}\sum_{i=1}^n y_i$. It is
# attention pooling with the same weight $1/n$ for every key, whatever the query.

# %%
plot_fits(**{"average pooling": y_train.mean().expand_as(x_test)})

# %% [markdown]
# ## Nonparametric attention pooling
#
# Nadaraya and Watson weight each target by how close its input is to the query, using a
# kernel $K$:
#
# $$
# f(x) = \sum_{i=1}^n \frac{K(x - x_i)}{\sum_{j=1}^n K(x - x_j)}\, y_i .
# $$
#
# With the Gaussian kernel $K(u) = \exp(-u^2/2)$ the weights are exactly a softmax of the
# scores $-\frac{1}{2}(x - x_i)^2$:
#
# $$
# f(x) = \sum_{i=1}^n \operatorname{softmax}_i\!\left(-\tfrac{1}{2}(x - x_i)^2\right) y_i ,
# $$
#
# which is the attention pooling of tutorial 1 with query $x$, keys $x_i$ and values $y_i$.
# [`nadaraya_watson`](../../../src/attnkit/attention/kernel_regression.py) computes it for
# all queries at once and also returns the `(queries, keys)` weight matrix.

# %%
y_hat, weights = nadaraya_watson(x_test, x_train, y_train)  # (Q,), (Q, K)
print(
    "weights:",
    tuple(weights.shape),
    " each row sums to 1:",
    torch.allclose(weights.sum(1), torch.ones(len(x_test))),
)
plot_fits(**{"Nadaraya–Watson (Gaussian)": y_hat})

# %% [markdown]
# The weights: each test input (row) attends to the training inputs (columns) near it, so
# the sorted data give a band around the diagonal.

# %%
show_heatmaps(
    weights[None, None],
    xlabel="Sorted training inputs",
    ylabel="Sorted test inputs",
    figsize=(3.2, 3.2),
)

# %% [markdown]
# ## Kernels and bandwidth
#
# The newer edition of the course compares kernels of the scaled distance $u = (x - x_i)/h$.
# `nadaraya_watson(..., kernel=..., bandwidth=h)` has them all:
#
# | kernel | $K(u)$ |
# | --- | --- |
# | `gaussian` | $\exp(-u^2/2)$ |
# | `boxcar` | $1$ if $\lvert u\rvert < 1$ else $0$ |
# | `constant` | $1$ (average pooling) |
# | `epanechnikov` | $\max(1 - u^2, 0)$ |
# | `triangular` | $\max(1 - \lvert u\rvert, 0)$ |
#
# The bandwidth $h$ matters more than the kernel: a small $h$ follows the noise, a large one
# flattens the curve towards the average.

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3), sharey=True)
for kernel in ("gaussian", "boxcar", "epanechnikov", "triangular"):
    axes[0].plot(
        x_test,
        nadaraya_watson(x_test, x_train, y_train, bandwidth=0.5, kernel=kernel)[0],
        label=kernel,
    )
for h in (0.1, 0.3, 1.0, 3.0):
    axes[1].plot(
        x_test, nadaraya_watson(x_test, x_train, y_train, bandwidth=h)[0], label=f"h = {h}"
    )
for ax, title in zip(axes, ("kernels, h = 0.5", "Gaussian, several bandwidths"), strict=True):
    ax.plot(x_test, y_test, "k:", label="truth")
    ax.set_title(title)
    ax.set_xlabel("x")
    ax.legend(fontsize="x-small")

# %% [markdown]
# ## Parametric attention pooling: learning the width
#
# Put a learnable parameter $w$ inside the Gaussian (it is an inverse bandwidth):
#
# $$
# f(x) = \sum_{i=1}^n \operatorname{softmax}_i\!\left(-\tfrac{1}{2}\big((x - x_i)\,w\big)^2\right) y_i .
# $$
#
# [`NWKernelRegression`](../../../src/attnkit/attention/kernel_regression.py) is this model.
# Trained on the training points themselves, it would learn to put all the weight on the
# query's own point ($w \to \infty$: zero training error, a useless estimator), so each
# training input queries *the other* training points (leave-one-out keys), as the course
# does. [`fit_kernel_regression`](../../../src/attnkit/attention/kernel_regression.py) runs
# the course's full-batch SGD on the summed squared error.

# %%
model = NWKernelRegression(init_w=1.0)
losses = fit_kernel_regression(model, x_train, y_train, epochs=5, lr=0.5)
print("loss per epoch:", [round(v, 2) for v in losses])
print(f"learned w = {model.w.item():.2f} (bandwidth 1/w = {1 / model.w.item():.2f})")
with torch.no_grad():
    y_param, w_param = model(x_test, x_train, y_train)
plot_fits(**{"nonparametric (w = 1)": y_hat, f"parametric (w = {model.w.item():.1f})": y_param})

# %% [markdown]
# The learned width is narrower, so the weights concentrate on fewer training points: the
# fit is sharper (and noisier).

# %%
show_heatmaps(
    torch.stack([weights, w_param])[None],
    xlabel="Sorted training inputs",
    ylabel="Sorted test inputs",
    titles=["w = 1", f"learned w = {model.w.item():.1f}"],
    figsize=(6, 3.2),
)

# %% [markdown]
# ## Summary
#
# - Nadaraya–Watson regression is attention pooling: query = test input, keys = training
#   inputs, values = training targets, weights = normalised kernel.
# - The Gaussian kernel makes the weights a softmax of $-\frac{1}{2}$ the squared distance.
# - A learnable width makes the pooling parametric; training it needs care (leave-one-out
#   keys) not to overfit.
#
# ## Exercises
#
# 1. Increase the number of training points (`N_TRAIN`, or run with
#    `ATTNKIT_TUTORIAL_FULL=1`). Does the nonparametric estimate get closer to the truth? Which
#    bandwidth is best now?
# 2. Train `NWKernelRegression` *without* leave-one-out keys (each point may see itself).
#    What happens to $w$ and to the fit?
# 3. With a compact kernel (`boxcar`) and a very small bandwidth some test inputs have no
#    training input in their window. What does `nadaraya_watson` return there, and why?
# 4. Write the Gaussian weights as a scaled dot-product attention: expand
#    $-(x - x_i)^2/2$ and show which terms cancel in the softmax.
# 5. Replace the single $w$ by one width per training point. Is that still a sensible model?

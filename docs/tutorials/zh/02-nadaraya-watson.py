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
# # 2. 注意力汇聚：Nadaraya–Watson 核回归
#
# **你将学到**
#
# - 1964 年提出的 Nadaraya–Watson 核回归本身**就是**注意力汇聚：测试输入是查询，训练输入是键，训练输出是值；
# - 核函数及其宽度（带宽）如何决定注意力权重和拟合结果；
# - 如何通过学习宽度把汇聚变成**带参数**的注意力汇聚，以及学到的权重是什么样子。
#
# 代码位于 [`attnkit/attention/kernel_regression.py`](../../../src/attnkit/attention/kernel_regression.py)。

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
# ## 数据
#
# 与课程相同：从 $[0, 5)$ 中均匀抽取 $n$ 个输入（排好序，热图更易读），输出为带噪声的
#
# $$ y_i = 2\sin(x_i) + x_i^{0.8} + \epsilon, \qquad \epsilon \sim \mathcal{N}(0, 0.5^2). $$
#
# 测试输入是网格 $0, 0.1, \dots, 4.9$，并给出无噪声的真实值用于比较。

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
# ## 平均汇聚
#
# 最简单的估计器忽略输入：$f(x) = \frac{1}{n}\sum_{i=1}^n y_i$。它相当于无论查询是什么，每个键的权重都是 $1/n$ 的注意力汇聚。

# %%
plot_fits(**{"average pooling": y_train.mean().expand_as(x_test)})

# %% [markdown]
# ## 非参数注意力汇聚
#
# Nadaraya 和 Watson 根据输入与查询的距离，用核函数 $K$ 为每个输出加权：
#
# $$
# f(x) = \sum_{i=1}^n \frac{K(x - x_i)}{\sum_{j=1}^n K(x - x_j)}\, y_i .
# $$
#
# 使用高斯核 $K(u) = \exp(-u^2/2)$ 时，权重恰好是分数 $-\frac{1}{2}(x - x_i)^2$ 的 softmax：
#
# $$
# f(x) = \sum_{i=1}^n \operatorname{softmax}_i\!\left(-\tfrac{1}{2}(x - x_i)^2\right) y_i ,
# $$
#
# 这正是第 1 篇中的注意力汇聚：查询为 $x$，键为 $x_i$，值为 $y_i$。[`nadaraya_watson`](../../../src/attnkit/attention/kernel_regression.py) 一次计算所有查询，并返回 `(查询, 键)` 权重矩阵。

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
# 权重：每个测试输入（行）关注与它相近的训练输入（列），因此排好序的数据在对角线附近形成一条带。

# %%
show_heatmaps(
    weights[None, None],
    xlabel="Sorted training inputs",
    ylabel="Sorted test inputs",
    figsize=(3.2, 3.2),
)

# %% [markdown]
# ## 核函数与带宽
#
# 新版课程比较了以缩放距离 $u = (x - x_i)/h$ 为自变量的多种核。`nadaraya_watson(..., kernel=..., bandwidth=h)` 都支持：
#
# | 核 | $K(u)$ |
# | --- | --- |
# | `gaussian` | $\exp(-u^2/2)$ |
# | `boxcar` | $\lvert u\rvert < 1$ 时为 $1$，否则为 $0$ |
# | `constant` | $1$（平均汇聚） |
# | `epanechnikov` | $\max(1 - u^2, 0)$ |
# | `triangular` | $\max(1 - \lvert u\rvert, 0)$ |
#
# 带宽 $h$ 比核的种类更重要：$h$ 太小会追随噪声，太大则把曲线压平成平均值。

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
# ## 带参数注意力汇聚：学习宽度
#
# 在高斯核中加入一个可学习参数 $w$（它是带宽的倒数）：
#
# $$
# f(x) = \sum_{i=1}^n \operatorname{softmax}_i\!\left(-\tfrac{1}{2}\big((x - x_i)\,w\big)^2\right) y_i .
# $$
#
# [`NWKernelRegression`](../../../src/attnkit/attention/kernel_regression.py) 就是这个模型。如果直接在训练点上训练，它会学着把全部权重放在查询自身对应的点上（$w \to \infty$：训练误差为零，估计器却毫无用处），所以和课程一样，每个训练输入只查询**其他**训练点（留一法的键）。[`fit_kernel_regression`](../../../src/attnkit/attention/kernel_regression.py) 按课程的做法，对平方误差之和做全批量 SGD。

# %%
model = NWKernelRegression(init_w=1.0)
losses = fit_kernel_regression(model, x_train, y_train, epochs=5, lr=0.5)
print("loss per epoch:", [round(v, 2) for v in losses])
print(f"learned w = {model.w.item():.2f} (bandwidth 1/w = {1 / model.w.item():.2f})")
with torch.no_grad():
    y_param, w_param = model(x_test, x_train, y_train)
plot_fits(**{"nonparametric (w = 1)": y_hat, f"parametric (w = {model.w.item():.1f})": y_param})

# %% [markdown]
# 学到的宽度更窄，权重集中在更少的训练点上：拟合更尖锐（也更嘈杂）。

# %%
show_heatmaps(
    torch.stack([weights, w_param])[None],
    xlabel="Sorted training inputs",
    ylabel="Sorted test inputs",
    titles=["w = 1", f"learned w = {model.w.item():.1f}"],
    figsize=(6, 3.2),
)

# %% [markdown]
# ## 小结
#
# - Nadaraya–Watson 核回归就是注意力汇聚：查询是测试输入，键是训练输入，值是训练输出，权重是归一化的核。
# - 高斯核使权重成为负二分之一平方距离的 softmax。
# - 可学习的宽度使汇聚带有参数；训练时需要小心（留一法的键），以免过拟合。
#
# ## 练习
#
# 1. 增加训练点的数量（修改 `N_TRAIN`，或设置 `ATTNKIT_TUTORIAL_FULL=1` 运行）。非参数估计是否更接近真实值？现在哪个带宽最好？
# 2. **不用**留一法的键训练 `NWKernelRegression`（每个点都能看到自己）。$w$ 和拟合结果会怎样？
# 3. 使用紧支撑的核（`boxcar`）并取很小的带宽时，有些测试输入的窗口内没有任何训练输入。`nadaraya_watson` 在那里返回什么？为什么？
# 4. 把高斯权重写成缩放点积注意力：展开 $-(x - x_i)^2/2$，说明哪些项在 softmax 中被消掉。
# 5. 把单个 $w$ 换成每个训练点各自的宽度。这仍然是一个合理的模型吗？

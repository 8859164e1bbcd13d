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
# # 3. 注意力评分函数
#
# **你将学到**
#
# - **掩蔽softmax操作**：如何让填充的键恰好得到零权重，以及当某个查询一个键也不剩时 attnkit 如何处理；
# - **加性注意力**（Bahdanau），适用于查询和键长度不同的情形；
# - **缩放点积注意力**，以及分数**为什么**要除以 $\sqrt{d}$——用数字说明，而不只是论证；
# - attnkit 的实现与 PyTorch 的 `scaled_dot_product_attention` 给出相同的数值。
#
# 代码：[`attention/functional.py`](../../../src/attnkit/attention/functional.py)（掩蔽softmax、注意力函数）和 [`attention/scoring.py`](../../../src/attnkit/attention/scoring.py)（两种评分函数模块）。

# %%
# %matplotlib inline
import math
import os

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from attnkit.attention import AdditiveAttention, DotProductAttention, attention, masked_softmax
from attnkit.viz.heatmaps import show_heatmaps

torch.manual_seed(0)
FULL = os.environ.get("ATTNKIT_TUTORIAL_FULL", "") not in ("", "0")
SAMPLES = 20000 if FULL else 2000

# %% [markdown]
# ## 从分数到权重
#
# 第 2 篇用 softmax 把分数 $a(\mathbf{q}, \mathbf{k}_i)$（在那里是负二分之一的平方距离）变成权重。一般地，对查询 $\mathbf{q}$ 和 $m$ 个键值对，
#
# $$
# f(\mathbf{q}, (\mathbf{k}_1, \mathbf{v}_1), \dots, (\mathbf{k}_m, \mathbf{v}_m))
# = \sum_{i=1}^m \alpha(\mathbf{q}, \mathbf{k}_i)\, \mathbf{v}_i,
# \qquad
# \alpha(\mathbf{q}, \mathbf{k}_i) = \frac{\exp a(\mathbf{q}, \mathbf{k}_i)}{\sum_{j} \exp a(\mathbf{q}, \mathbf{k}_j)} .
# $$
#
# 本篇讨论的就是**注意力评分函数** $a$ 的选择。

# %% [markdown]
# ## 掩蔽softmax操作
#
# 一个小批量中的序列长短不一，要填充到最长的长度。填充的键不应得到任何权重。`masked_softmax(scores, valid_lens)` 在每一行中只保留前 `valid_len` 个键：
#
# $$
# \alpha_i = \frac{\exp(s_i)\,[i < n]}{\sum_{j < n} \exp(s_j)} .
# $$
#
# attnkit 在 softmax 之前把被掩蔽的分数填成该数据类型的最小值，因此它们的权重**恰好**为零（课程中填的是 $-10^6$）。

# %%
scores = torch.rand(2, 2, 4)  # (B, L, S)
print(masked_softmax(scores, valid_lens=torch.tensor([2, 3])))

# %% [markdown]
# `valid_lens` 也可以为每个查询分别给出长度，形状为 `(B, L)`。长度为 0 的查询根本没有键：attnkit 给它**全零的权重**（因而输出也是零），而课程的代码会给填充位置均匀的权重，PyTorch 的融合内核则给出 NaN。

# %%
print(masked_softmax(scores, valid_lens=torch.tensor([[1, 3], [2, 0]])))

# %% [markdown]
# ## 加性注意力
#
# 当查询 $\mathbf{q} \in \mathbb{R}^{q}$ 和键 $\mathbf{k} \in \mathbb{R}^{k}$ 长度不同时，把两者都投影到 $h$ 个隐藏单元，再用单隐藏层的多层感知机打分：
#
# $$
# a(\mathbf{q}, \mathbf{k}) = \mathbf{w}_v^\top \tanh(\mathbf{W}_q \mathbf{q} + \mathbf{W}_k \mathbf{k}),
# \qquad \mathbf{W}_q \in \mathbb{R}^{h \times q},\ \mathbf{W}_k \in \mathbb{R}^{h \times k},\ \mathbf{w}_v \in \mathbb{R}^{h}.
# $$
#
# 在 [`AdditiveAttention.forward`](../../../src/attnkit/attention/scoring.py) 中对应的是这几行：`q = self.W_q(queries)`、`k = self.project_keys(keys)`、`features = torch.tanh(q.unsqueeze(2) + k.unsqueeze(1))`（广播成 `(B, L, S, h)`）以及 `scores = self.w_v(features).squeeze(-1)`。课程中的小例子：查询长度 20，键长度 2，10 个键值对，有效长度分别为 2 和 6。

# %%
queries = torch.normal(0, 1, (2, 1, 20))  # (B, L, q)
keys = torch.ones(2, 10, 2)  # (B, S, k)
values = torch.arange(40, dtype=torch.float32).reshape(1, 10, 4).repeat(2, 1, 1)  # (B, S, Dv)
valid_lens = torch.tensor([2, 6])

additive = AdditiveAttention(key_size=2, query_size=20, num_hiddens=8, dropout=0.1).eval()
output, weights = additive(queries, keys, values, valid_lens=valid_lens)
print(output)

# %% [markdown]
# 这里所有的键都相同，所以权重在有效的键上均匀分布，输出就是前 2 个（或前 6 个）值的平均。

# %%
show_heatmaps(weights[None], xlabel="Keys", ylabel="Queries", figsize=(5, 1.6))

# %% [markdown]
# ## 缩放点积注意力
#
# 当查询和键的长度都是 $d$ 时，点积是更省计算的评分函数。除以 $\sqrt{d}$，并写成 $n$ 个查询、$m$ 个键的矩阵形式：
#
# $$
# a(\mathbf{q}, \mathbf{k}) = \frac{\mathbf{q}^\top \mathbf{k}}{\sqrt{d}},
# \qquad
# \operatorname{softmax}\!\left(\frac{\mathbf{Q}\mathbf{K}^\top}{\sqrt{d}}\right)\mathbf{V}
# \in \mathbb{R}^{n \times v} .
# $$
#
# [`attention`](../../../src/attnkit/attention/functional.py) 实现了两遍：一条普通的“数学路径”（`torch.matmul(queries, keys.transpose(-2, -1)) * scale`、掩蔽softmax、`torch.matmul(weights, values)`），可以返回权重；另一条是 PyTorch 融合的 `scaled_dot_product_attention` 内核，在不需要权重时使用；但在 CPU 上键的个数不超过特征数时（$m \le d$，如这里），数学路径更快，仍走数学路径。`kernel="sdpa"` 或 `"math"` 可以指定其中一条。[`DotProductAttention`](../../../src/attnkit/attention/scoring.py) 把它包装成模块。

# %%
queries = torch.normal(0, 1, (2, 1, 2))  # (B, L, d)
dot = DotProductAttention(dropout=0.5).eval()
output, weights = dot(queries, keys, values, valid_lens=valid_lens, need_weights=True)
print(output)
show_heatmaps(weights[None], xlabel="Keys", ylabel="Queries", figsize=(5, 1.6))

# %% [markdown]
# 两条路径都与 PyTorch 的结果一致（这里用随机的键，使权重各不相同）：

# %%
q, k, v = torch.randn(2, 5, 16), torch.randn(2, 7, 16), torch.randn(2, 7, 4)
mask = torch.arange(7) < valid_lens[:, None, None]  # (B, 1, S): True = may attend
ours_math, _ = dot(q, k, v, valid_lens=valid_lens, need_weights=True)
ours_fused, _ = attention(q, k, v, valid_lens=valid_lens, kernel="sdpa")  # the fused kernel, forced
reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
print("math path vs torch :", (ours_math - reference).abs().max().item())
print("fused path vs torch:", (ours_fused - reference).abs().max().item())

# %% [markdown]
# ## 为什么要除以 √d？看数字
#
# 如果 $\mathbf{q}$ 和 $\mathbf{k}$ 的元素相互独立、均值为 0、方差为 1，那么 $\mathbf{q}^\top\mathbf{k} = \sum_{j=1}^d q_j k_j$ 是 $d$ 个方差为 1 的项之和：
#
# $$
# \mathbb{E}[\mathbf{q}^\top\mathbf{k}] = 0, \qquad
# \operatorname{Var}[\mathbf{q}^\top\mathbf{k}] = d, \qquad
# \operatorname{Var}\!\left[\frac{\mathbf{q}^\top\mathbf{k}}{\sqrt{d}}\right] = 1 .
# $$
#
# 对逐渐增大的 $d$，在大量随机向量对上测一测：

# %%
print(f"{'d':>6} {'std(q.k)':>10} {'sqrt(d)':>8} {'std(q.k)/sqrt(d)':>17}")
for d in (4, 16, 64, 256, 1024):
    q, k = torch.randn(SAMPLES, d), torch.randn(SAMPLES, d)
    s = (q * k).sum(-1)
    print(f"{d:6d} {s.std():10.2f} {math.sqrt(d):8.2f} {(s / math.sqrt(d)).std():17.3f}")

# %% [markdown]
# 未缩放的分数按 $\sqrt{d}$ 增长。这对 softmax 有什么影响？在 10 个键上，分数很大时 softmax 几乎变成 one-hot：最大的权重趋于 1，而经过 softmax 反向传播的梯度趋于消失（其雅可比矩阵为 $\operatorname{diag}(\boldsymbol\alpha) - \boldsymbol\alpha\boldsymbol\alpha^\top$，当 $\boldsymbol\alpha$ 为 one-hot 时它等于 0）。缩放后的分数让这两者对任何 $d$ 都保持不变。

# %%
dims = [2**i for i in range(1, 12)]
stats = {"unscaled": ([], []), "scaled": ([], [])}
for d in dims:
    q = torch.randn(SAMPLES // 10, 1, d)
    k = torch.randn(SAMPLES // 10, 10, d)
    raw = (q @ k.transpose(1, 2)).squeeze(1)  # (N, 10) scores
    for name, s in (("unscaled", raw), ("scaled", raw / math.sqrt(d))):
        s = s.clone().requires_grad_(True)
        w = torch.softmax(s, dim=-1)
        (w * torch.randn_like(w)).sum().backward()  # a random upstream gradient
        stats[name][0].append(w.max(-1).values.mean().item())
        stats[name][1].append(s.grad.norm(dim=-1).mean().item())

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3))
for name, (top, grad) in stats.items():
    ax1.semilogx(dims, top, "o-", base=2, label=name)
    ax2.loglog(dims, grad, "o-", base=2, label=name)
ax1.set(xlabel="d", ylabel="mean largest weight", title="softmax saturation")
ax2.set(xlabel="d", ylabel="mean |gradient of the scores|", title="gradient through softmax")
ax1.legend()
ax2.legend()

# %% [markdown]
# 不缩放时，在 $d = 2048$ 下几乎每个查询都把全部权重放在一个键上，传到分数上的梯度随 $d$ 不断变小（$d = 2048$ 时约为 $d = 2$ 时的十分之一）：学习变慢。缩放后，两者都与 $d$ 无关。
#
# ## 小结
#
# - 掩蔽softmax让填充的键恰好得到零权重；对于没有任何键的查询，attnkit 给出零权重，而不是 NaN 或均匀权重。
# - 加性注意力用多层感知机打分，可以处理长度不同的查询和键。
# - 缩放点积注意力为 $\operatorname{softmax}(\mathbf{Q}\mathbf{K}^\top/\sqrt{d})\mathbf{V}$；$\sqrt{d}$ 使分数的方差保持为 1，因此随着 $d$ 增大，softmax 既不会饱和，也不会让梯度消失。
#
# ## 练习
#
# 1. 把加性注意力例子中的键改成随机值，权重如何变化？如果所有查询都相同呢？
# 2. 把加性注意力的隐藏单元数设为 1，评分函数还能表达什么？
# 3. 只用矩阵乘法，为长度不同的查询和键设计一个比加性注意力更省计算的评分函数。（提示：双线性形式 $\mathbf{q}^\top\mathbf{W}\mathbf{k}$。）
# 4. 用元素方差为 4 的键重做 $\sqrt{d}$ 实验。这时应该用什么缩放因子？
# 5. 对 512 个查询、长度为 64 的键，分别在 `need_weights=True` 和默认情况下计时 `dot(q, k, v)`。为什么融合内核更快？它不能给你什么？

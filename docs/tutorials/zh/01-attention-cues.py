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
# # 1. 注意力提示：查询、键和值
#
# **你将学到**
#
# - 心理学中的注意力（**自主性提示**与**非自主性提示**）如何变成每个注意力层都有的三个张量：**查询**（query）、**键**（key）和**值**（value）；
# - **注意力汇聚**（attention pooling）就是对值的加权平均，权重取决于查询与每个键的匹配程度；
# - attnkit 如何组织注意力权重（形状为 `(批量, 查询数, 键数)`），以及如何用[`show_heatmaps`](../../../src/attnkit/viz/heatmaps.py) 把它们画成热图。
#
# 本篇对应《动手学深度学习》（d2l）的“注意力提示”一节。本页由运行下面的代码生成，每张图都是代码的实际输出。

# %%
# %matplotlib inline
import os

import torch

from attnkit.attention import DotProductAttention, masked_softmax
from attnkit.viz.heatmaps import show_heatmaps

torch.manual_seed(0)
FULL = os.environ.get("ATTNKIT_TUTORIAL_FULL", "") not in ("", "0")  # no effect here

# %% [markdown]
# ## 从提示到张量
#
# 桌上放着几份黑白的报纸和一个红色的咖啡杯，杯子会自己“跳”进视线：这是**非自主性提示**，取决于物体本身有多显眼。决定去读一本书，则是**自主性提示**：我们有意识地引导注意力。注意力层把两者都建模出来：
#
# | 心理学 | 注意力层 | 这里 |
# | --- | --- | --- |
# | 自主性提示（我们想找什么） | **查询** $\mathbf{q}$ | 每个输出一个向量 |
# | 非自主性提示（每个物体呈现什么） | **键** $\mathbf{k}_1, \dots, \mathbf{k}_m$ | 每个输入一个向量 |
# | 感官输入（随后感知到的内容） | **值** $\mathbf{v}_1, \dots, \mathbf{v}_m$ | 与键一一配对 |
#
# **注意力汇聚**用权重 $\alpha(\mathbf{q}, \mathbf{k}_i)$ 组合各个值，权重表示查询对每个键的“想要程度”：
#
# $$
# f(\mathbf{q}) = \sum_{i=1}^{m} \alpha(\mathbf{q}, \mathbf{k}_i)\, \mathbf{v}_i,
# \qquad \alpha(\mathbf{q}, \mathbf{k}_i) = \frac{\exp a(\mathbf{q}, \mathbf{k}_i)}
# {\sum_{j=1}^{m} \exp a(\mathbf{q}, \mathbf{k}_j)} \ge 0,
# \qquad \sum_i \alpha(\mathbf{q}, \mathbf{k}_i) = 1 .
# $$
#
# 其中 $a(\mathbf{q}, \mathbf{k})$ 是**注意力评分函数**，第 3 篇专门讨论常见的选择。如果没有查询（“一视同仁地看所有东西”），权重就是均匀的，注意力汇聚退化为普通的平均汇聚。

# %% [markdown]
# ## 课程中的第一张热图
#
# 注意力权重构成一个矩阵：每行对应一个查询，每列对应一个键。课程从单位矩阵开始：第 $i$ 个查询只关注第$i$ 个键。[`show_heatmaps`](../../../src/attnkit/viz/heatmaps.py) 接受形状为`(行, 列, Q, K)` 的矩阵网格（前面的轴可以少几个），返回一个 matplotlib 图。

# %%
attention_weights = torch.eye(10).reshape(1, 1, 10, 10)  # (rows, cols, Q, K)
show_heatmaps(attention_weights, xlabel="Keys", ylabel="Queries", figsize=(3, 3))

# %% [markdown]
# ## 按相似度汇聚
#
# 现在换成真正的查询。键是 6 个二维点；每个值是标记对应键的 one-hot 向量，因此输出直接显示了每个值被取了多少。评分函数取点积 $a(\mathbf{q}, \mathbf{k}) = \mathbf{q}^\top \mathbf{k} / \sqrt{d}$，由[`DotProductAttention`](../../../src/attnkit/attention/scoring.py) 计算（它调用[`attention`](../../../src/attnkit/attention/functional.py)）。

# %%
keys = torch.tensor(
    [[1.0, 0.0], [0.9, 0.4], [0.0, 1.0], [-1.0, 0.2], [-0.6, -0.8], [0.5, -0.9]]
)  # (S, d) = (6, 2)
values = torch.eye(6)  # (S, Dv): value i is the one-hot vector e_i
queries = torch.tensor([[3.0, 0.0], [0.0, 3.0], [0.0, 0.0]])  # (L, d): right, up, nowhere

attend = DotProductAttention()
output, weights = attend(queries[None], keys[None], values[None], need_weights=True)
print("weights (rows: queries, columns: keys)\n", weights[0].round(decimals=3))
print("rows sum to", weights[0].sum(-1))
print("output == weights @ values:", torch.allclose(output, weights @ values))

# %% [markdown]
# 指向右边的查询主要取了键 0 和键 1（指向右边的键）；指向上方的查询偏爱键 2；零查询与每个键的匹配程度相同，于是处处得到平均值 $1/6$。画成热图：

# %%
labels = [f"k{i}" for i in range(6)]
show_heatmaps(
    weights,
    xlabel="Keys",
    ylabel="Queries",
    xticklabels=labels,
    yticklabels=["right", "up", "zero"],
    figsize=(3.5, 2.6),
)

# %% [markdown]
# ## 注意力有多“尖锐”？
#
# 把所有分数乘以同一个因子 $\beta$（温度的倒数），分数的大小顺序不变，但权重会变：$\beta$ 小时注意力分散，$\beta$ 大时注意力集中到最匹配的键上。下图直接对分数 $\mathbf{Q}\mathbf{K}^\top$ 使用[`masked_softmax`](../../../src/attnkit/attention/functional.py)。

# %%
scores = queries @ keys.T  # (L, S)
betas = [0.25, 1.0, 4.0]
sharpness = torch.stack([masked_softmax(beta * scores) for beta in betas])  # (3, L, S)
show_heatmaps(
    sharpness[None],  # (1, 3, L, S): one row of three panels
    xlabel="Keys",
    ylabel="Queries",
    titles=[f"β = {b}" for b in betas],
    figsize=(7, 2.4),
)

# %% [markdown]
# ## 批量、多头与掩码
#
# attnkit 中所有注意力函数都采用**批量优先**的张量：查询 `(B, L, d)`、键 `(B, S, d)`、值`(B, S, Dv)`，返回输出 `(B, L, Dv)`，需要时还返回权重 `(B, L, S)`（多头注意力多一个头的轴：`(B, H, L, S)`）。一个批量中的句子长短不一，因此有些键是填充词元。用 `valid_lens`（课程中的有效长度）或布尔掩码（**True 表示可以关注**）把它们去掉，它们的权重恰好为 0。

# %%
batch_keys = torch.randn(2, 6, 2)  # (B, S, d)
batch_queries = torch.randn(2, 3, 2)  # (B, L, d)
_, w = attend(
    batch_queries,
    batch_keys,
    torch.eye(6).expand(2, 6, 6),
    valid_lens=torch.tensor([6, 4]),
    need_weights=True,
)
print(w.shape, "- keys 4 and 5 of the second example get", w[1, :, 4:].abs().max().item())
show_heatmaps(
    w[None],
    xlabel="Keys",
    ylabel="Queries",
    titles=["6 real keys", "4 real keys"],
    figsize=(5, 2.4),
)

# %% [markdown]
# ## 小结
#
# - 查询（自主性提示）和键（非自主性提示）决定**权重**；值是被汇聚的内容。
# - 注意力汇聚是值的凸组合：对每个查询，权重非负且和为 1。
# - 每个样本（以及每个头）的权重是一个 `(查询, 键)` 矩阵，可以用热图展示。
#
# ## 练习
#
# 1. 把查询 `[3, 3]` 输入上面的 6 个键。哪些键胜出？为什么这次键 1 胜过了键 0？
# 2. 找一个查询，使键 2 和键 3 的权重（几乎）相同，其余键（几乎）为零。这个查询需要长一些还是短一些？
# 3. 当 $\beta \to \infty$ 时，汇聚只选取一个值（硬注意力）；当 $\beta = 0$ 时就是平均汇聚。对“向右”的查询，画出最佳键的权重随 $\beta$ 变化的曲线。
# 4. 为什么权重必须非负且和为 1，$f(\mathbf{q})$ 才能始终落在值的凸包内？构造一个含负权重的反例。
# 5. 视觉中的自主性提示（寻找红色物体）和语言中的自主性提示（找出动词的主语）：这两种情形下，键和值分别是什么？

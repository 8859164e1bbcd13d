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
# # 6. 自注意力和位置编码
#
# **你将学到**
#
# - **自注意力**：每个词元同时是查询、键和值；它与卷积神经网络、循环神经网络的比较；
# - Transformer 的两种掩码：**填充掩码**（忽略填充词元）和**未来掩码**（因果掩码：解码器不能偷看后面的词元）；
# - 为什么注意力需要**位置编码**，以及提供位置信息的五种方法：正弦位置编码表（并用数值验证它的相对位置性质）、可学习的位置嵌入、图像块的二维位置编码、旋转位置编码（RoPE）和 ALiBi。
#
# 代码：[`attention/masks.py`](../../../src/attnkit/attention/masks.py) 和 [`layers/positional.py`](../../../src/attnkit/layers/positional.py)。

# %%
# %matplotlib inline
import os

import matplotlib.pyplot as plt
import torch

from attnkit.attention import MultiHeadAttention, attention_mask, causal_mask, padding_mask
from attnkit.layers import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    alibi_bias,
    alibi_slopes,
    sincos_2d_table,
    sinusoidal_table,
)
from attnkit.viz.figures import relative_position_map
from attnkit.viz.heatmaps import show_heatmaps

torch.manual_seed(0)
FULL = os.environ.get("ATTNKIT_TUTORIAL_FULL", "") not in ("", "0")

# %% [markdown]
# ## 自注意力
#
# 把同一个序列 $\mathbf{x}_1, \dots, \mathbf{x}_n$ 同时作为查询、键和值：每个输出 $\mathbf{y}_i = f(\mathbf{x}_i, (\mathbf{x}_1, \mathbf{x}_1), \dots, (\mathbf{x}_n, \mathbf{x}_n))$ 都是整个序列的混合，由词元 $i$ 决定如何混合。

# %%
d_model, heads = 32, 4
self_attention = MultiHeadAttention(d_model, heads).eval()
x = torch.randn(2, 5, d_model)  # (B, n, d)
y, w = self_attention(x, x, x, need_weights=True)
print("in:", tuple(x.shape), "out:", tuple(y.shape), "weights:", tuple(w.shape))

# %% [markdown]
# 对长度为 $n$、维度为 $d$ 的序列：
#
# | 层 | 计算复杂度 | 顺序操作 | 任意两个词元间的最长路径 |
# | --- | --- | --- | --- |
# | 卷积神经网络（卷积核大小 $k$） | $\mathcal{O}(knd^2)$ | $\mathcal{O}(1)$ | $\mathcal{O}(n/k)$ |
# | 循环神经网络 | $\mathcal{O}(nd^2)$ | $\mathcal{O}(n)$ | $\mathcal{O}(n)$ |
# | 自注意力 | $\mathcal{O}(n^2d)$ | $\mathcal{O}(1)$ | $\mathcal{O}(1)$ |
#
# 自注意力一步就能连接任意两个词元，并且可以并行计算，代价是计算量随长度二次增长。
#
# ## 填充掩码与未来掩码
#
# 一个批量中较短的句子会被填充，填充词元不应被关注。用整个目标句子训练的解码器，不能看到它还没有生成的词元。attnkit 把两者都表示为布尔掩码（**True 表示可以关注**）：`padding_mask(valid_lens, S)` 的形状为 `(B, S)`，`causal_mask(L, S)` 的形状为 `(L, S)`（右下对齐，这样在缓存了过去的键时，新的查询能看到所有过去的键），`attention_mask` 把它们合并成 `(B, 1, L, S)`。

# %%
valid_lens = torch.tensor([5, 3])
pad = padding_mask(valid_lens, 5)  # (B, S)
future = causal_mask(5)  # (L, S)
both = attention_mask(
    key_valid_lens=valid_lens, key_len=5, query_len=5, causal=True
)  # (B, 1, L, S)
masks = torch.stack([pad[1].expand(5, 5), future, both[1, 0]]).float()
show_heatmaps(
    masks[None],
    xlabel="Keys",
    ylabel="Queries",
    titles=["padding (3 real)", "future (causal)", "both"],
    cmap="Blues",
    figsize=(7, 2.6),
)

# %%
_, w_masked = self_attention(x, x, x, mask=both, need_weights=True)
show_heatmaps(
    w_masked[:, 0][None],
    xlabel="Keys",
    ylabel="Queries",
    titles=["5 real tokens", "3 real tokens"],
    figsize=(5, 2.5),
)

# %% [markdown]
# ## 为什么需要位置信息
#
# 自注意力具有**置换等变性**：打乱词元的顺序，输出也以同样的方式被打乱。没有额外的信息，“狗咬人”和“人咬狗”就是同一袋词元。

# %%
perm = torch.tensor([3, 0, 4, 1, 2])
y_perm, _ = self_attention(x[:, perm], x[:, perm], x[:, perm])
print(
    "outputs of the shuffled input == shuffled outputs:",
    torch.allclose(y_perm, y[:, perm], atol=1e-6),
)

# %% [markdown]
# ## 正弦位置编码
#
# Transformer 把一个固定的表 $\mathbf{P} \in \mathbb{R}^{n \times d}$ 加到词元嵌入上，$\mathbf{X} + \mathbf{P}$，其中
#
# $$
# p_{i, 2j} = \sin\!\left(\frac{i}{10000^{2j/d}}\right), \qquad
# p_{i, 2j+1} = \cos\!\left(\frac{i}{10000^{2j/d}}\right).
# $$
#
# [`sinusoidal_table`](../../../src/attnkit/layers/positional.py) 计算这个表（用 float64）：`pos * inv_freq`，其中 `inv_freq = base ** (-torch.arange(0, d_model, 2) / d_model)`，偶数列放正弦，奇数列放余弦。`SinusoidalPositionalEncoding` 把它加到输入上（再做 dropout）。

# %%
P = sinusoidal_table(60, 32, dtype=torch.float64)  # (positions, d)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3))
ax1.imshow(P, cmap="Blues", aspect="auto")
ax1.set(xlabel="column (encoding dimension)", ylabel="row (position)")
for col in (6, 7, 8, 9):
    ax2.plot(P[:, col], label=f"col {col}")
ax2.set(xlabel="row (position)")
ax2.legend(fontsize="small")

# %%
encoding = SinusoidalPositionalEncoding(d_model=32, dropout=0.0)
print(torch.equal(encoding(torch.zeros(1, 60, 32))[0], P.float()))

# %% [markdown]
# 频率沿着列递减，就像二进制数的各位：最低位每一步翻转一次，下一位每两步翻转一次，依此类推——只不过是连续的。

# %%
for i in range(8):
    print(i, format(i, "03b"))

# %% [markdown]
# ### 用数值验证相对位置信息
#
# 对任意固定的偏移 $\delta$，存在一个线性映射，把位置 $i$ 的编码变成位置 $i + \delta$ 的编码，而且与 $i$ **无关**。记 $\omega_j = 1/10000^{2j/d}$，每一对（正弦，余弦）被旋转：
#
# $$
# \begin{bmatrix} \cos(\delta\omega_j) & \sin(\delta\omega_j) \\ -\sin(\delta\omega_j) & \cos(\delta\omega_j) \end{bmatrix}
# \begin{bmatrix} p_{i, 2j} \\ p_{i, 2j+1} \end{bmatrix}
# =
# \begin{bmatrix} p_{i+\delta, 2j} \\ p_{i+\delta, 2j+1} \end{bmatrix}.
# $$
#
# [`relative_position_map(delta, d)`](../../../src/attnkit/viz/figures.py) 构造这个分块对角矩阵 $\mathbf{M}_\delta$（作用于行向量：$P_{i+\delta} = P_i \mathbf{M}_\delta$）。在每一行上验证它，并观察两个位置编码的点积只取决于它们的偏移：

# %%
for delta in (1, 5, 17):
    M = relative_position_map(delta, 32)  # (d, d), float64
    error = (P[:-delta] @ M - P[delta:]).abs().max().item()
    print(f"delta = {delta:2d}: max |P[i] M - P[i + delta]| over all i = {error:.1e}")

for i in (0, 10, 30):
    print(f"P[{i}] . P[{i}+3] = {(P[i] @ P[i + 3]).item():.6f}")

# %% [markdown]
# ## 可学习的位置嵌入
#
# BERT 和 GPT-2 则学习这张表：一个形状为 `(max_len, d)`、从 $\mathcal{N}(0, 0.02^2)$ 初始化的参数（[`LearnedPositionalEmbedding`](../../../src/attnkit/layers/positional.py)）。它可以拟合任务需要的任何模式，但对训练中没见过的位置一无所知（无法外推到 `max_len` 之外）。

# %%
learned = LearnedPositionalEmbedding(max_len=60, d_model=32)
print(learned.weight.shape, learned.weight.requires_grad)

# %% [markdown]
# ## 图像块的二维位置编码
#
# Vision Transformer（第 8 篇）看到的是一个图像块网格。MAE 的二维正弦-余弦表（[`sincos_2d_table`](../../../src/attnkit/layers/positional.py)）把一半通道用于列、一半用于行，因此同一行或同一列的图像块彼此相似。下面是 4 x 4 网格中图像块 (1, 2) 与每个图像块的余弦相似度：

# %%
table = sincos_2d_table(4, 4, 64, dtype=torch.float64)  # (16 patches, 64), row-major
unit = table / table.norm(dim=1, keepdim=True)
similarity = (unit @ unit[1 * 4 + 2]).reshape(4, 4)
print("first half depends on the column only:", torch.equal(table[2, :32], table[14, :32]))
show_heatmaps(similarity, xlabel="column", ylabel="row", figsize=(2.8, 2.4), cmap="viridis")

# %% [markdown]
# ## 旋转位置编码（RoPE）
#
# RoPE 不是加一张表，而是按位置把每个查询和键**旋转**一个与位置成正比的角度，每对通道各自旋转（频率与正弦位置编码相同）。旋转保持点积，只依赖角度之差，所以
#
# $$
# \langle R_m\mathbf{q},\ R_n\mathbf{k}\rangle = \langle \mathbf{q},\ R_{n-m}\mathbf{k}\rangle
# $$
#
# 只通过 $m - n$ 依赖于位置：相对位置信息直接进入了分数。[`RotaryEmbedding.rotate`](../../../src/attnkit/layers/positional.py) 计算 `x * cos + rotate_half(x) * sin`；`MultiHeadAttention(..., rotary=RotaryEmbedding(head_dim))` 把它应用到每个头的查询和键上。

# %%
rope = RotaryEmbedding(head_dim=16)
q, k = torch.randn(16), torch.randn(16)


def rotated_score(m, n):
    rq = rope.rotate(q.expand(1, 1, m + 1, 16))[0, 0, m]  # q at position m
    rk = rope.rotate(k.expand(1, 1, n + 1, 16))[0, 0, n]  # k at position n
    return (rq @ rk).item()


for m, n in ((3, 1), (10, 8), (50, 48), (7, 7), (40, 40)):
    print(f"m = {m:2d}, n = {n:2d}, m - n = {m - n}: score = {rotated_score(m, n):+.5f}")

# %% [markdown]
# ## ALiBi：分数上的偏置
#
# ALiBi（Press 等，2022）根本不用嵌入：它从每个分数中减去一个与距离成正比的惩罚，每个头一个斜率，$\text{score}_{ij} - m_h\,\lvert i - j\rvert$，斜率 $m_h = 2^{-8h/H}$。斜率小的头看得远，斜率大的头看得近。[`alibi_bias`](../../../src/attnkit/layers/positional.py) 返回形状为 `(H, L, S)` 的偏置，作为 `attn_bias` 传给注意力。

# %%
print("slopes for 4 heads:", alibi_slopes(4).tolist())
bias = alibi_bias(num_heads=4, L=8, S=8)  # (H, L, S)
show_heatmaps(
    bias[None],
    xlabel="Keys",
    ylabel="Queries",
    titles=[f"head {h + 1}" for h in range(4)],
    cmap="Blues_r",
    figsize=(8, 2.4),
)

# %% [markdown]
# ## 小结
#
# - 自注意力在一个并行步骤中连接所有词元，代价是二次的；掩码去掉填充和未来的词元。
# - 注意力本身不考虑顺序；位置信息来自加上的表（正弦、可学习、二维）、对查询和键的旋转（RoPE）或分数上的偏置（ALiBi）。
# - 正弦位置编码对每个偏移都有一个固定的线性映射，上面已在 float64 精度下验证；RoPE 使分数精确地只依赖相对位置。
#
# ## 练习
#
# 1. 在置换测试的输入上加上正弦位置编码。这一层还具有置换等变性吗？
# 2. 位置编码表用 $10000$ 作为波长的底数。用底数 $100$ 画出这张表。对于长序列有什么变化？
# 3. 证明 $P_i \cdot P_{i+\delta} = \sum_j \cos(\delta\omega_j)$。为什么它与 $i$ 无关？
# 4. 构造 `MultiHeadAttention(32, 4, rotary=RotaryEmbedding(8))` 并重做置换测试。你观察到了什么？
# 5. 使用 ALiBi 和因果掩码时，对于长序列，斜率最大的头计算的是什么？

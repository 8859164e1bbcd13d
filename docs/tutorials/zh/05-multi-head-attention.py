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
# # 5. 多头注意力
#
# **你将学到**
#
# - 为什么多个各有投影的注意力“头”比一个大头看到的更多；
# - 让所有头只用各一次矩阵乘法就能算完（而不是对头循环）的**变形**，并验证它与循环的结果相同；
# - attnkit 的 `MultiHeadAttention` 与 `torch.nn.MultiheadAttention` 的计算完全一致：用 `MultiHeadAttention.to_torch()` 复制权重后逐数值对比。
#
# 代码：[`attention/multihead.py`](../../../src/attnkit/attention/multihead.py)。

# %%
# %matplotlib inline
import os
import time

import torch
from torch import nn

from attnkit.attention import (
    MultiHeadAttention,
    attention,
    padding_mask,
    to_key_padding_mask,
)
from attnkit.viz.heatmaps import show_heatmaps

torch.manual_seed(0)
FULL = os.environ.get("ATTNKIT_TUTORIAL_FULL", "") not in ("", "0")
REPEATS = 50 if FULL else 10

# %% [markdown]
# ## 模型
#
# 给定查询 $\mathbf{q} \in \mathbb{R}^{d_q}$、键 $\mathbf{k} \in \mathbb{R}^{d_k}$ 和值 $\mathbf{v} \in \mathbb{R}^{d_v}$，第 $i = 1, \dots, h$ 个头用各自的矩阵投影后做注意力汇聚：
#
# $$
# \mathbf{h}_i = f\big(\mathbf{W}_i^{(q)}\mathbf{q},\ \mathbf{W}_i^{(k)}\mathbf{k},\ \mathbf{W}_i^{(v)}\mathbf{v}\big) \in \mathbb{R}^{p_v},
# \qquad
# \text{输出} = \mathbf{W}_o \begin{bmatrix}\mathbf{h}_1\\ \vdots\\ \mathbf{h}_h\end{bmatrix} \in \mathbb{R}^{p_o},
# $$
#
# 其中 $f$ 是第 3 篇的缩放点积注意力。每个头可以学到不同的“相关性”（相邻的词、动词的主语、别处的同一个词……）。取 $p_q = p_k = p_v = D/h$ 时，总计算量与一个大小为 $D$ 的单头相同。
#
# 课程中的例子：$D = 100$ 个隐藏单元，$h = 5$ 个头，批量大小 2，4 个查询和 6 个键值对，其中分别有 3 个和 2 个是真实的。

# %%
D, H = 100, 5
mha = MultiHeadAttention(d_model=D, num_heads=H).eval()
B, L, S = 2, 4, 6
X = torch.randn(B, L, D)  # queries
Y = torch.randn(B, S, D)  # keys = values
valid_lens = torch.tensor([3, 2])
out, weights = mha(X, Y, Y, valid_lens=valid_lens, need_weights=True)
print("output:", tuple(out.shape), " weights:", tuple(weights.shape), "(B, H, L, S)")
print("parameters:", sum(p.numel() for p in mha.parameters()), "= 4 D^2 + 4 D =", 4 * D * D + 4 * D)

# %% [markdown]
# 第一个样本中 5 个头的权重：每个头有自己的模式，超出有效长度（3）的键在任何头中都没有权重。

# %%
show_heatmaps(
    weights[0][None],
    xlabel="Keys",
    ylabel="Queries",
    titles=[f"head {h + 1}" for h in range(H)],
    figsize=(9, 2.2),
)

# %% [markdown]
# ## 让各个头并行的变形
#
# 对头循环，就要在小矩阵上调用 $h$ 次注意力。attnkit 的做法是：用一个矩阵为**所有**头一次性投影查询、键和值（实际上与 PyTorch 一样，三者共用一个形状为 $(3D, D)$ 的打包矩阵 `in_proj`），再把最后一个轴拆成多个头，并把头的轴移到批量轴旁边：
#
# $$
# (B, L, D) \xrightarrow{\text{view}} (B, L, H, D/H) \xrightarrow{\text{transpose}} (B, H, L, D/H) .
# $$
#
# 之后注意力把 $(B, H)$ 当作一批相互独立的问题来处理。算完后把各个头重新并排放好，$(B, H, L, D/H) \to (B, L, H, D/H) \to (B, L, D)$，再由 $\mathbf{W}_o$ 混合。在 `MultiHeadAttention` 中，这分别是 `_split`（`x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)`）和 `forward` 中的 `out.transpose(1, 2).reshape(b, length, self.d_model)`。
#
# 下面手工把同一个计算做两遍：一遍用 Python 对头循环，一遍用变形。

# %%
W_q, W_k, W_v = mha.in_proj.weight.chunk(3)  # (D, D) each: the rows of head i are i*Dh:(i+1)*Dh
b_q, b_k, b_v = mha.in_proj.bias.chunk(3)
Dh = D // H
mask = padding_mask(valid_lens, S)[:, None, :]  # (B, 1, S), True = real key

with torch.no_grad():
    q, k, v = X @ W_q.T + b_q, Y @ W_k.T + b_k, Y @ W_v.T + b_v  # (B, L|S, D)

    # (a) a loop over heads
    heads = []
    for i in range(H):
        part = slice(i * Dh, (i + 1) * Dh)
        h_i, _ = attention(q[..., part], k[..., part], v[..., part], mask=mask)  # (B, L, Dh)
        heads.append(h_i)
    loop = mha.out_proj(torch.cat(heads, dim=-1))  # (B, L, D)

    # (b) one call for all heads
    def split(x):  # (B, n, D) -> (B, H, n, Dh)
        return x.view(x.shape[0], x.shape[1], H, Dh).transpose(1, 2)

    o, _ = attention(split(q), split(k), split(v), mask=mask[:, None])  # (B, H, L, Dh)
    batched = mha.out_proj(o.transpose(1, 2).reshape(B, L, D))  # (B, L, D)

print("loop    vs MultiHeadAttention:", (loop - out).abs().max().item())
print("reshape vs MultiHeadAttention:", (batched - out).abs().max().item())

# %% [markdown]
# 数值相同；而且序列较长时，批量的形式更快，因为它做的是少数几次大矩阵乘法，而不是许多次小矩阵乘法：

# %%
Xl = torch.randn(8, 256, 512)
big = MultiHeadAttention(d_model=512, num_heads=8).eval()
Wq, Wk, Wv = big.in_proj.weight.chunk(3)


def per_head_loop(x):
    q, k, v = x @ Wq.T, x @ Wk.T, x @ Wv.T
    n = 512 // 8
    outs = [
        attention(
            q[..., i * n : (i + 1) * n], k[..., i * n : (i + 1) * n], v[..., i * n : (i + 1) * n]
        )[0]
        for i in range(8)
    ]
    return big.out_proj(torch.cat(outs, dim=-1))


def timed(fn):
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(REPEATS):
        fn()
    return (time.perf_counter() - start) / REPEATS * 1000


with torch.inference_mode():
    print(f"loop over 8 heads: {timed(lambda: per_head_loop(Xl)):6.1f} ms")
    print(f"MultiHeadAttention: {timed(lambda: big(Xl, Xl, Xl)):6.1f} ms")

# %% [markdown]
# ## 与 PyTorch 数值一致
#
# attnkit 按 PyTorch 的布局保存参数，因此 `to_torch()` 返回一个权重相同的 `nn.MultiheadAttention(batch_first=True)`（`from_torch()` 则反过来）。边界处有一点不同：attnkit 的掩码中 **True 表示可以关注**，而 PyTorch 的 `key_padding_mask` 中 True 表示填充；用 `to_key_padding_mask` 转换。

# %%
torch_mha = mha.to_torch().eval()
key_padding_mask = to_key_padding_mask(padding_mask(valid_lens, S))  # (B, S), True = padding
with torch.no_grad():
    ref_out, ref_w = torch_mha(
        X, Y, Y, key_padding_mask=key_padding_mask, average_attn_weights=False
    )
print(isinstance(torch_mha, nn.MultiheadAttention))
print("output  max difference:", (ref_out - out).abs().max().item())
print("weights max difference:", (ref_w - weights).abs().max().item())

# %% [markdown]
# ## 小结
#
# - 多头注意力在不同的可学习投影上并行做 $h$ 次注意力汇聚，再用 $\mathbf{W}_o$ 混合输出；头的大小取 $D/h$ 时，代价与一个大小为 $D$ 的头相同。
# - 一次 `view` 加一次 `transpose` 把 $(B, L, D)$ 变成 $(B, H, L, D/H)$，于是所有头在一次批量调用中完成。
# - `MultiHeadAttention` 与 `torch.nn.MultiheadAttention` 的结果在浮点精度内一致；`to_torch()` / `from_torch()` 负责转换权重。
#
# ## 练习
#
# 1. 把训练好的模型中各个头的权重画出来（第 7 篇会画）。各个头有区别吗？
# 2. 去掉哪些头几乎不改变输出？把 `out_proj.weight` 中某个头对应的列置零，测量输出的变化。
# 3. 对自注意力来说，为什么打包的 `in_proj`（一个 $(3D, D)$ 矩阵）比三个分开的投影快？什么时候不能使用它？（参见 `MultiHeadAttention.project_kv`。）
# 4. 在训练模式下、dropout 为 0.1 时与 PyTorch 比较。为什么现在输出不同了？又该如何测试它们？
# 5. 数一数循环形式和批量形式各需要多少次乘加。它们不同吗？那为什么其中一个更快？

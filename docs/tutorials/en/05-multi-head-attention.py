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
# # 5. Multi-head attention
#
# **What you will learn**
#
# - why several attention "heads" with their own projections see more than one big head;
# - the **reshape** that computes all heads with one matrix multiplication each, instead of a
#   loop over heads — and a check that it gives the loop's numbers;
# - that attnkit's `MultiHeadAttention` computes exactly what `torch.nn.MultiheadAttention`
#   computes, with the weights copied over by `MultiHeadAttention.to_torch()`.
#
# Code: [`attention/multihead.py`](../../../src/attnkit/attention/multihead.py).

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
# ## The model
#
# Given a query $\mathbf{q} \in \mathbb{R}^{d_q}$, keys $\mathbf{k} \in \mathbb{R}^{d_k}$ and
# values $\mathbf{v} \in \mathbb{R}^{d_v}$, head $i = 1, \dots, h$ projects them with its own
# matrices and attends:
#
# $$
# \mathbf{h}_i = f\big(\mathbf{W}_i^{(q)}\mathbf{q},\ \mathbf{W}_i^{(k)}\mathbf{k},\ \mathbf{W}_i^{(v)}\mathbf{v}\big) \in \mathbb{R}^{p_v},
# \qquad
# \text{output} = \mathbf{W}_o \begin{bmatrix}\mathbf{h}_1\\ \vdots\\ \mathbf{h}_h\end{bmatrix} \in \mathbb{R}^{p_o},
# $$
#
# with $f$ the scaled dot-product attention of tutorial 3. Each head can learn a different
# notion of relevance (nearby words, the subject of a verb, the same word elsewhere, ...).
# With $p_q = p_k = p_v = D/h$ the total cost is that of one head of size $D$.
#
# The course's example: $D = 100$ hidden units, $h = 5$ heads, a batch of 2 with 4 queries and
# 6 key-value pairs, of which 3 and 2 are real.

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
# The weights of the 5 heads for the first example: each head has its own pattern, and the
# keys past the valid length (3) get no weight in any head.

# %%
show_heatmaps(
    weights[0][None],
    xlabel="Keys",
    ylabel="Queries",
    titles=[f"head {h + 1}" for h in range(H)],
    figsize=(9, 2.2),
)

# %% [markdown]
# ## The reshape that makes heads parallel
#
# Looping over heads would call attention $h$ times on small matrices. Instead, attnkit
# projects queries, keys and values for *all* heads with one matrix each (in fact one packed
# `in_proj` of shape $(3D, D)$ for all three, as PyTorch does), then splits the last axis
# into heads and moves the head axis next to the batch axis:
#
# $$
# (B, L, D) \xrightarrow{\text{view}} (B, L, H, D/H) \xrightarrow{\text{transpose}} (B, H, L, D/H) .
# $$
#
# Attention then treats $(B, H)$ as one batch of independent problems. Afterwards the heads
# are put back side by side, $(B, H, L, D/H) \to (B, L, H, D/H) \to (B, L, D)$, and
# $\mathbf{W}_o$ mixes them. In `MultiHeadAttention` these are `_split`
# (`x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)`) and the line
# `out.transpose(1, 2).reshape(b, length, self.d_model)` in `forward`.
#
# Here is the same computation twice, by hand: once with a Python loop over heads, once with
# the reshape.

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
# Same numbers; and for longer sequences the batched form is faster, since it makes a few
# large matrix products instead of many small ones:

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
# ## The same numbers as PyTorch
#
# attnkit stores its parameters in PyTorch's layout, so `to_torch()` returns an
# `nn.MultiheadAttention(batch_first=True)` with the same weights (and `from_torch()` goes the
# other way). One thing differs at the boundary: attnkit's masks say **True = may attend**,
# PyTorch's `key_padding_mask` says True = padding; `to_key_padding_mask` converts.

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
# ## Summary
#
# - Multi-head attention runs $h$ attention poolings on different learned projections and
#   mixes their outputs with $\mathbf{W}_o$; with head size $D/h$ it costs what one head of
#   size $D$ costs.
# - One `view` and one `transpose` turn $(B, L, D)$ into $(B, H, L, D/H)$, so all heads run in
#   one batched call.
# - `MultiHeadAttention` matches `torch.nn.MultiheadAttention` to float precision;
#   `to_torch()` / `from_torch()` convert the weights.
#
# ## Exercises
#
# 1. Visualise the weights of the heads of a trained model (tutorial 7 draws them). Do the
#    heads differ?
# 2. Which heads could be removed without changing the output much? Zero the columns of one head
#    in `out_proj.weight` and measure the change.
# 3. Why is the packed `in_proj` (one $(3D, D)$ matrix) faster for self-attention than three
#    separate projections? When can it not be used? (See `MultiHeadAttention.project_kv`.)
# 4. Run the comparison with PyTorch in train mode with dropout 0.1. Why do the outputs differ
#    now, and how would you test them anyway?
# 5. Count the multiply-adds of the loop and of the batched form. Are they different? Then why
#    is one faster?

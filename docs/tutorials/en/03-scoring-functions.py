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
# # 3. Attention scoring functions
#
# **What you will learn**
#
# - **masked softmax**: how padding keys get exactly zero weight, and what attnkit does when
#   a query has no key left;
# - **additive attention** (Bahdanau), which works for queries and keys of different sizes;
# - **scaled dot-product attention**, and *why* the scores are divided by $\sqrt{d}$ — shown
#   with numbers, not only argued;
# - that attnkit's implementation gives the same numbers as PyTorch's
#   `scaled_dot_product_attention`.
#
# Code: [`attention/functional.py`](../../../src/attnkit/attention/functional.py) (masked
# softmax, the attention function) and
# [`attention/scoring.py`](../../../src/attnkit/attention/scoring.py) (the two scoring
# modules).

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
# ## From scores to weights
#
# Tutorial 2 turned a score $a(\mathbf{q}, \mathbf{k}_i)$ (there: minus half the squared
# distance) into weights with a softmax. In general, for a query $\mathbf{q}$ and $m$
# key-value pairs,
#
# $$
# f(\mathbf{q}, (\mathbf{k}_1, \mathbf{v}_1), \dots, (\mathbf{k}_m, \mathbf{v}_m))
# = \sum_{i=1}^m \alpha(\mathbf{q}, \mathbf{k}_i)\, \mathbf{v}_i,
# \qquad
# \alpha(\mathbf{q}, \mathbf{k}_i) = \frac{\exp a(\mathbf{q}, \mathbf{k}_i)}{\sum_{j} \exp a(\mathbf{q}, \mathbf{k}_j)} .
# $$
#
# The choice of the **scoring function** $a$ is what this tutorial is about.

# %% [markdown]
# ## Masked softmax
#
# A minibatch holds sequences of different lengths, padded to the longest. Padding keys must
# get no weight. `masked_softmax(scores, valid_lens)` keeps, in each row, only the first
# `valid_len` keys:
#
# $$
# \alpha_i = \frac{\exp(s_i)\,[i < n]}{\sum_{j < n} \exp(s_j)} .
# $$
#
# attnkit fills masked scores with the dtype's lowest value before the softmax, so their
# weight is *exactly* zero (the course fills with $-10^6$).

# %%
scores = torch.rand(2, 2, 4)  # (B, L, S)
print(masked_softmax(scores, valid_lens=torch.tensor([2, 3])))

# %% [markdown]
# `valid_lens` can also give one length per query, `(B, L)`. A query with length 0 has no
# key at all: attnkit returns **zero weights** for it (and so a zero output), where the
# course's code gives uniform weights over the padding and PyTorch's fused kernel gives NaN.

# %%
print(masked_softmax(scores, valid_lens=torch.tensor([[1, 3], [2, 0]])))

# %% [markdown]
# ## Additive attention
#
# When queries $\mathbf{q} \in \mathbb{R}^{q}$ and keys $\mathbf{k} \in \mathbb{R}^{k}$ have
# different sizes, project both into $h$ hidden units and score with a one-layer MLP:
#
# $$
# a(\mathbf{q}, \mathbf{k}) = \mathbf{w}_v^\top \tanh(\mathbf{W}_q \mathbf{q} + \mathbf{W}_k \mathbf{k}),
# \qquad \mathbf{W}_q \in \mathbb{R}^{h \times q},\ \mathbf{W}_k \in \mathbb{R}^{h \times k},\ \mathbf{w}_v \in \mathbb{R}^{h}.
# $$
#
# In [`AdditiveAttention.forward`](../../../src/attnkit/attention/scoring.py) these are the
# lines `q = self.W_q(queries)`, `k = self.project_keys(keys)`,
# `features = torch.tanh(q.unsqueeze(2) + k.unsqueeze(1))` (broadcast to
# `(B, L, S, h)`) and `scores = self.w_v(features).squeeze(-1)`. The course's toy example:
# queries of size 20, keys of size 2, 10 key-value pairs, valid lengths 2 and 6.

# %%
queries = torch.normal(0, 1, (2, 1, 20))  # (B, L, q)
keys = torch.ones(2, 10, 2)  # (B, S, k)
values = torch.arange(40, dtype=torch.float32).reshape(1, 10, 4).repeat(2, 1, 1)  # (B, S, Dv)
valid_lens = torch.tensor([2, 6])

additive = AdditiveAttention(key_size=2, query_size=20, num_hiddens=8, dropout=0.1).eval()
output, weights = additive(queries, keys, values, valid_lens=valid_lens)
print(output)

# %% [markdown]
# All keys are equal here, so the weights are uniform over the valid keys and the output is
# the mean of the first 2 (resp. 6) values.

# %%
show_heatmaps(weights[None], xlabel="Keys", ylabel="Queries", figsize=(5, 1.6))

# %% [markdown]
# ## Scaled dot-product attention
#
# When queries and keys have the same size $d$, the dot product is a cheaper score. Divided
# by $\sqrt{d}$ and written for whole matrices of $n$ queries and $m$ keys,
#
# $$
# a(\mathbf{q}, \mathbf{k}) = \frac{\mathbf{q}^\top \mathbf{k}}{\sqrt{d}},
# \qquad
# \operatorname{softmax}\!\left(\frac{\mathbf{Q}\mathbf{K}^\top}{\sqrt{d}}\right)\mathbf{V}
# \in \mathbb{R}^{n \times v} .
# $$
#
# [`attention`](../../../src/attnkit/attention/functional.py) implements it twice: a plain
# "math path" (`torch.matmul(queries, keys.transpose(-2, -1)) * scale`, masked softmax,
# `torch.matmul(weights, values)`) that can return the weights, and PyTorch's fused
# `scaled_dot_product_attention` kernel, used when the weights are not needed, except on the
# CPU when there are no more keys than features ($m \le d$, as here): short keys are faster on
# the math path there. `kernel="sdpa"` or `"math"` picks one.
# [`DotProductAttention`](../../../src/attnkit/attention/scoring.py) wraps it as a module.

# %%
queries = torch.normal(0, 1, (2, 1, 2))  # (B, L, d)
dot = DotProductAttention(dropout=0.5).eval()
output, weights = dot(queries, keys, values, valid_lens=valid_lens, need_weights=True)
print(output)
show_heatmaps(weights[None], xlabel="Keys", ylabel="Queries", figsize=(5, 1.6))

# %% [markdown]
# Both paths give PyTorch's numbers (here with random keys, so that the weights differ):

# %%
q, k, v = torch.randn(2, 5, 16), torch.randn(2, 7, 16), torch.randn(2, 7, 4)
mask = torch.arange(7) < valid_lens[:, None, None]  # (B, 1, S): True = may attend
ours_math, _ = dot(q, k, v, valid_lens=valid_lens, need_weights=True)
ours_fused, _ = attention(q, k, v, valid_lens=valid_lens, kernel="sdpa")  # the fused kernel, forced
reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
print("math path vs torch :", (ours_math - reference).abs().max().item())
print("fused path vs torch:", (ours_fused - reference).abs().max().item())

# %% [markdown]
# ## Why divide by √d? The numbers
#
# If the entries of $\mathbf{q}$ and $\mathbf{k}$ are independent with mean 0 and variance 1,
# then $\mathbf{q}^\top\mathbf{k} = \sum_{j=1}^d q_j k_j$ is a sum of $d$ terms of variance 1:
#
# $$
# \mathbb{E}[\mathbf{q}^\top\mathbf{k}] = 0, \qquad
# \operatorname{Var}[\mathbf{q}^\top\mathbf{k}] = d, \qquad
# \operatorname{Var}\!\left[\frac{\mathbf{q}^\top\mathbf{k}}{\sqrt{d}}\right] = 1 .
# $$
#
# Let us measure it, for growing $d$, over many random pairs:

# %%
print(f"{'d':>6} {'std(q.k)':>10} {'sqrt(d)':>8} {'std(q.k)/sqrt(d)':>17}")
for d in (4, 16, 64, 256, 1024):
    q, k = torch.randn(SAMPLES, d), torch.randn(SAMPLES, d)
    s = (q * k).sum(-1)
    print(f"{d:6d} {s.std():10.2f} {math.sqrt(d):8.2f} {(s / math.sqrt(d)).std():17.3f}")

# %% [markdown]
# Unscaled scores grow like $\sqrt{d}$. What does that do to the softmax? With 10 keys, large
# scores make the softmax nearly one-hot: the largest weight tends to 1, and the gradient
# that flows back through the softmax vanishes (its Jacobian is
# $\operatorname{diag}(\boldsymbol\alpha) - \boldsymbol\alpha\boldsymbol\alpha^\top$, which
# is 0 for a one-hot $\boldsymbol\alpha$). The scaled scores keep both the same for every $d$.

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
# Without the scale, at $d = 2048$ almost every query puts nearly all its weight on one key,
# and the gradient reaching the scores keeps shrinking with $d$ (about ten times smaller at
# $d = 2048$ than at $d = 2$): learning slows down. With the scale, neither depends on $d$.
#
# ## Summary
#
# - Masked softmax gives padding keys exactly zero weight; attnkit gives a query without keys
#   zero weights instead of NaN or uniform weights.
# - Additive attention scores with an MLP and handles different query and key sizes.
# - Scaled dot-product attention is $\operatorname{softmax}(\mathbf{Q}\mathbf{K}^\top/\sqrt{d})\mathbf{V}$;
#   the $\sqrt{d}$ keeps the scores' variance at 1, so the softmax neither saturates nor
#   kills its gradient as $d$ grows.
#
# ## Exercises
#
# 1. Change the keys of the additive example to random values. How do the weights change?
#    What if the queries are all equal?
# 2. Make the additive attention's hidden size 1. What can the score still express?
# 3. Using matrix multiplications only, write a scoring function for queries and keys of
#    different sizes that is cheaper than additive attention. (Hint: a bilinear form
#    $\mathbf{q}^\top\mathbf{W}\mathbf{k}$.)
# 4. Repeat the $\sqrt{d}$ experiment with keys whose entries have variance 4. Which scale
#    would you use then?
# 5. Time `dot(q, k, v)` with and without `need_weights=True` for 512 queries and keys of
#    size 64. Why is the fused kernel faster, and what does it not give you?

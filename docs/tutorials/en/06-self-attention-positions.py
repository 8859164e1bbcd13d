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
# # 6. Self-attention and positional encoding
#
# **What you will learn**
#
# - **self-attention**: every token is query, key and value at once; how it compares with
#   CNNs and RNNs;
# - the two masks of a Transformer: **padding** (ignore pad tokens) and **future** (causal:
#   a decoder may not look ahead);
# - why attention needs **positional encoding**, and five ways to provide it: the sinusoidal
#   table (with its relative-position property checked numerically), a learned table, a 2-D
#   table for image patches, rotary embeddings (RoPE) and ALiBi.
#
# Code: [`attention/masks.py`](../../../src/attnkit/attention/masks.py) and
# [`layers/positional.py`](../../../src/attnkit/layers/positional.py).

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
# ## Self-attention
#
# Feed the same sequence $\mathbf{x}_1, \dots, \mathbf{x}_n$ as queries, keys and values:
# each output $\mathbf{y}_i = f(\mathbf{x}_i, (\mathbf{x}_1, \mathbf{x}_1), \dots,
# (\mathbf{x}_n, \mathbf{x}_n))$ is a mix of the whole sequence, chosen by token $i$.

# %%
d_model, heads = 32, 4
self_attention = MultiHeadAttention(d_model, heads).eval()
x = torch.randn(2, 5, d_model)  # (B, n, d)
y, w = self_attention(x, x, x, need_weights=True)
print("in:", tuple(x.shape), "out:", tuple(y.shape), "weights:", tuple(w.shape))

# %% [markdown]
# For a sequence of $n$ tokens of size $d$:
#
# | layer | computation | sequential operations | longest path between two tokens |
# | --- | --- | --- | --- |
# | CNN (kernel $k$) | $\mathcal{O}(knd^2)$ | $\mathcal{O}(1)$ | $\mathcal{O}(n/k)$ |
# | RNN | $\mathcal{O}(nd^2)$ | $\mathcal{O}(n)$ | $\mathcal{O}(n)$ |
# | self-attention | $\mathcal{O}(n^2d)$ | $\mathcal{O}(1)$ | $\mathcal{O}(1)$ |
#
# Self-attention connects any two tokens in one step and runs in parallel, at a cost
# quadratic in the length.
#
# ## Padding and future masks
#
# A batch pads shorter sentences; their pad tokens must not be attended to. A decoder trained
# on whole target sentences must not see tokens it has not produced yet. attnkit builds both
# as boolean masks (**True = may attend**): `padding_mask(valid_lens, S)` is `(B, S)`,
# `causal_mask(L, S)` is `(L, S)` (aligned bottom-right, so that with a cache of past keys
# the new queries see all of them), and `attention_mask` combines them into `(B, 1, L, S)`.

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
# ## Why positions are needed
#
# Self-attention is **permutation-equivariant**: shuffle the tokens and the outputs are
# shuffled the same way. Without extra information "dog bites man" and "man bites dog" are
# the same bag of tokens.

# %%
perm = torch.tensor([3, 0, 4, 1, 2])
y_perm, _ = self_attention(x[:, perm], x[:, perm], x[:, perm])
print(
    "outputs of the shuffled input == shuffled outputs:",
    torch.allclose(y_perm, y[:, perm], atol=1e-6),
)

# %% [markdown]
# ## Sinusoidal positional encoding
#
# The Transformer adds a fixed table $\mathbf{P} \in \mathbb{R}^{n \times d}$ to the token
# embeddings, $\mathbf{X} + \mathbf{P}$, with
#
# $$
# p_{i, 2j} = \sin\!\left(\frac{i}{10000^{2j/d}}\right), \qquad
# p_{i, 2j+1} = \cos\!\left(\frac{i}{10000^{2j/d}}\right).
# $$
#
# [`sinusoidal_table`](../../../src/attnkit/layers/positional.py) computes it (in float64):
# `pos * inv_freq` with `inv_freq = base ** (-torch.arange(0, d_model, 2) / d_model)`, sines in
# the even columns and cosines in the odd ones. `SinusoidalPositionalEncoding` adds it (then
# dropout).

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
# Frequencies fall along the columns, like the bits of a binary number: the lowest bit flips
# at every step, the next every two steps, and so on — but continuous.

# %%
for i in range(8):
    print(i, format(i, "03b"))

# %% [markdown]
# ### Relative positions, numerically
#
# For any fixed offset $\delta$ there is one linear map that takes the encoding of position
# $i$ to that of position $i + \delta$, *whatever* $i$. Writing $\omega_j = 1/10000^{2j/d}$,
# each (sin, cos) pair is rotated:
#
# $$
# \begin{bmatrix} \cos(\delta\omega_j) & \sin(\delta\omega_j) \\ -\sin(\delta\omega_j) & \cos(\delta\omega_j) \end{bmatrix}
# \begin{bmatrix} p_{i, 2j} \\ p_{i, 2j+1} \end{bmatrix}
# =
# \begin{bmatrix} p_{i+\delta, 2j} \\ p_{i+\delta, 2j+1} \end{bmatrix}.
# $$
#
# [`relative_position_map(delta, d)`](../../../src/attnkit/viz/figures.py) builds the
# block-diagonal matrix $\mathbf{M}_\delta$ (acting on row vectors: $P_{i+\delta} = P_i
# \mathbf{M}_\delta$). Check it on every row, and see that the dot product of two encodings
# depends only on their offset:

# %%
for delta in (1, 5, 17):
    M = relative_position_map(delta, 32)  # (d, d), float64
    error = (P[:-delta] @ M - P[delta:]).abs().max().item()
    print(f"delta = {delta:2d}: max |P[i] M - P[i + delta]| over all i = {error:.1e}")

for i in (0, 10, 30):
    print(f"P[{i}] . P[{i}+3] = {(P[i] @ P[i + 3]).item():.6f}")

# %% [markdown]
# ## Learned positions
#
# BERT and GPT-2 learn the table instead: a parameter of shape `(max_len, d)` initialised from
# $\mathcal{N}(0, 0.02^2)$ ([`LearnedPositionalEmbedding`](../../../src/attnkit/layers/positional.py)).
# It can fit whatever the task needs, but knows nothing about positions it never saw in
# training (no extrapolation beyond `max_len`).

# %%
learned = LearnedPositionalEmbedding(max_len=60, d_model=32)
print(learned.weight.shape, learned.weight.requires_grad)

# %% [markdown]
# ## 2-D positions for image patches
#
# A Vision Transformer (tutorial 8) sees a grid of patches. The 2-D sine-cosine table of MAE
# ([`sincos_2d_table`](../../../src/attnkit/layers/positional.py)) spends half the channels
# on the column and half on the row, so patches in the same row or column are similar. Here
# the cosine similarity of patch (1, 2) of a 4 x 4 grid to every patch:

# %%
table = sincos_2d_table(4, 4, 64, dtype=torch.float64)  # (16 patches, 64), row-major
unit = table / table.norm(dim=1, keepdim=True)
similarity = (unit @ unit[1 * 4 + 2]).reshape(4, 4)
print("first half depends on the column only:", torch.equal(table[2, :32], table[14, :32]))
show_heatmaps(similarity, xlabel="column", ylabel="row", figsize=(2.8, 2.4), cmap="viridis")

# %% [markdown]
# ## Rotary position embedding (RoPE)
#
# Instead of adding a table, RoPE *rotates* each query and key by an angle proportional to
# its position, pair of channels by pair of channels (frequencies as in the sinusoidal
# table). A rotation preserves dot products up to the difference of the angles, so
#
# $$
# \langle R_m\mathbf{q},\ R_n\mathbf{k}\rangle = \langle \mathbf{q},\ R_{n-m}\mathbf{k}\rangle
# $$
#
# depends on the positions only through $m - n$: relative positions inside the score itself.
# [`RotaryEmbedding.rotate`](../../../src/attnkit/layers/positional.py) computes
# `x * cos + rotate_half(x) * sin`; `MultiHeadAttention(..., rotary=RotaryEmbedding(head_dim))`
# applies it to every head's queries and keys.

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
# ## ALiBi: a bias on the scores
#
# ALiBi (Press et al., 2022) adds no embedding at all: it subtracts from each score a penalty
# proportional to the distance, with one slope per head,
# $\text{score}_{ij} - m_h\,\lvert i - j\rvert$, slopes $m_h = 2^{-8h/H}$. Heads with small
# slopes look far, heads with large slopes look near. [`alibi_bias`](../../../src/attnkit/layers/positional.py)
# returns the `(H, L, S)` bias, passed to attention as `attn_bias`.

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
# ## Summary
#
# - Self-attention connects all tokens in one parallel step, at quadratic cost; masks remove
#   padding and the future.
# - Attention alone ignores order; positions come from an added table (sinusoidal, learned,
#   2-D), a rotation of queries and keys (RoPE) or a bias on the scores (ALiBi).
# - The sinusoidal table has a fixed linear map per offset, checked above to float64
#   precision; RoPE makes scores depend on relative positions exactly.
#
# ## Exercises
#
# 1. Add the sinusoidal encoding to the input of the permutation test. Is the layer still
#    permutation-equivariant?
# 2. The table uses $10000$ as the wavelength base. Plot the table with base $100$. What
#    changes for long sequences?
# 3. Show that $P_i \cdot P_{i+\delta} = \sum_j \cos(\delta\omega_j)$. Why is it
#    independent of $i$?
# 4. Build `MultiHeadAttention(32, 4, rotary=RotaryEmbedding(8))` and repeat the permutation
#    test. What do you observe?
# 5. With ALiBi and a causal mask, what does the head with the largest slope compute for long
#    sequences?

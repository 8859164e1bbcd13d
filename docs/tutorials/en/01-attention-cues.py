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
# # 1. Attention cues: queries, keys and values
#
# **What you will learn**
#
# - how the psychology of attention (*volitional* and *nonvolitional* cues) becomes the three
#   tensors of every attention layer: **queries**, **keys** and **values**;
# - that *attention pooling* is a weighted average of the values, with weights that depend on
#   how well the query matches each key;
# - how attnkit lays out attention weights, `(batch, queries, keys)`, and draws them as
#   heatmaps with [`show_heatmaps`](../../../src/attnkit/viz/heatmaps.py).
#
# This follows the section "Attention Cues" of *Dive into Deep Learning* (d2l). The page was
# produced by running the code below; every figure is its output.

# %%
# %matplotlib inline
import os

import torch

from attnkit.attention import DotProductAttention, masked_softmax
from attnkit.viz.heatmaps import show_heatmaps

torch.manual_seed(0)
FULL = os.environ.get("ATTNKIT_TUTORIAL_FULL", "") not in ("", "0")  # no effect here

# %% [markdown]
# ## Cues become tensors
#
# Looking at a desk with a red coffee cup among black-and-white papers, the cup catches the
# eye by itself: a **nonvolitional cue**, driven by how salient the object is. Deciding to
# read a book is a **volitional cue**: we steer attention on purpose. Attention layers model
# both:
#
# | psychology | attention layer | here |
# | --- | --- | --- |
# | volitional cue (what we are looking for) | **query** $\mathbf{q}$ | one vector per output |
# | nonvolitional cues (what each object offers) | **keys** $\mathbf{k}_1, \dots, \mathbf{k}_m$ | one vector per input |
# | sensory inputs (what we then perceive) | **values** $\mathbf{v}_1, \dots, \mathbf{v}_m$ | paired with the keys |
#
# **Attention pooling** combines the values with weights $\alpha(\mathbf{q}, \mathbf{k}_i)$
# that say how much the query wants each key:
#
# $$
# f(\mathbf{q}) = \sum_{i=1}^{m} \alpha(\mathbf{q}, \mathbf{k}_i)\, \mathbf{v}_i,
# \qquad \alpha(\mathbf{q}, \mathbf{k}_i) = \frac{\exp a(\mathbf{q}, \mathbf{k}_i)}
# {\sum_{j=1}^{m} \exp a(\mathbf{q}, \mathbf{k}_j)} \ge 0,
# \qquad \sum_i \alpha(\mathbf{q}, \mathbf{k}_i) = 1 .
# $$
#
# The score $a(\mathbf{q}, \mathbf{k})$ is the *attention scoring function*; tutorial 3 is
# about the usual choices. Without a query ("look at everything equally") the weights are
# uniform and pooling is a plain average.

# %% [markdown]
# ## The course's first heatmap
#
# Attention weights form a matrix: one row per query, one column per key. The course starts
# with the identity matrix, where query $i$ attends only to key $i$.
# [`show_heatmaps`](../../../src/attnkit/viz/heatmaps.py) takes a `(rows, cols, Q, K)` grid
# of matrices (fewer leading axes are fine) and returns a matplotlib figure.

# %%
attention_weights = torch.eye(10).reshape(1, 1, 10, 10)  # (rows, cols, Q, K)
show_heatmaps(attention_weights, xlabel="Keys", ylabel="Queries", figsize=(3, 3))

# %% [markdown]
# ## Pooling by similarity
#
# Now a real query. Keys are six 2-D points; each value is a one-hot vector naming its key,
# so the output shows directly how much of each value was taken. The score is the dot product
# $a(\mathbf{q}, \mathbf{k}) = \mathbf{q}^\top \mathbf{k} / \sqrt{d}$, computed by
# [`DotProductAttention`](../../../src/attnkit/attention/scoring.py) (which calls
# [`attention`](../../../src/attnkit/attention/functional.py)).

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
# The query pointing right takes most of keys 0 and 1 (the keys pointing right); the query
# pointing up prefers key 2; the zero query matches every key equally and gets the plain
# average $1/6$ everywhere. Drawn as a heatmap:

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
# ## How sharp is the attention?
#
# Multiplying all scores by a factor $\beta$ (an inverse *temperature*) keeps their order but
# changes the weights: small $\beta$ spreads the attention, large $\beta$ concentrates it on the
# best key. The figure uses [`masked_softmax`](../../../src/attnkit/attention/functional.py)
# directly on the scores $\mathbf{Q}\mathbf{K}^\top$.

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
# ## Batches, heads and masks
#
# In attnkit every attention function takes **batch-first** tensors: queries `(B, L, d)`,
# keys `(B, S, d)`, values `(B, S, Dv)`, and returns the output `(B, L, Dv)` and, when asked,
# the weights `(B, L, S)` (multi-head attention adds a head axis: `(B, H, L, S)`). A batch
# holds sentences of different lengths, so some keys are padding. `valid_lens` (the course's
# form) or a boolean mask (**True = may attend**) removes them; their weight is exactly 0.

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
# ## Summary
#
# - Queries (volitional cues) and keys (nonvolitional cues) decide the **weights**; values are
#   what gets pooled.
# - Attention pooling is a convex combination of the values: weights are non-negative and sum
#   to one per query.
# - Weights are a `(queries, keys)` matrix per example (and per head); heatmaps show them.
#
# ## Exercises
#
# 1. Give the query `[3, 3]` to the six keys above. Which keys win, and why does key 1 beat
#    key 0 now?
# 2. Find a query that gives keys 2 and 3 (almost) the same weight and everything else
#    (almost) nothing. Does it need to be long or short?
# 3. With $\beta \to \infty$ the pooling picks one value (hard attention); with $\beta = 0$ it
#    is average pooling. Plot the weight of the best key against $\beta$ for the query
#    "right".
# 4. Why must the weights be non-negative and sum to one for $f(\mathbf{q})$ to stay inside
#    the convex hull of the values? Build a counter-example with a negative weight.
# 5. Volitional cues in vision (search for a red object) and language (find the subject of a
#    verb): what would the keys and values be in each case?

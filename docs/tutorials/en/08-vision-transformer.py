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
# # 8. The Vision Transformer
#
# **What you will learn**
#
# - how a Vision Transformer (ViT) turns an image into a sequence: **patches**, a linear
#   **patch embedding** (a strided convolution, checked against the matrix product), a class
#   token and position embeddings;
# - 1-D and 2-D position embeddings, and what a trained model's learned positions look like;
# - how to train a ViT on the bundled 8 x 8 digits in well under a minute, and where it looks:
#   per-head attention maps and attention rollout.
#
# Code: [`models/vit.py`](../../../src/attnkit/models/vit.py),
# [`layers/patches.py`](../../../src/attnkit/layers/patches.py),
# [`vision/classifier.py`](../../../src/attnkit/vision/classifier.py).

# %%
# %matplotlib inline
import os

import matplotlib.pyplot as plt
import torch

from attnkit.data.images import load_digits_dataset, to_float
from attnkit.files import scratch_dir
from attnkit.layers.patches import PatchEmbedding
from attnkit.layers.positional import sincos_2d_table
from attnkit.training.runs import resolve_config
from attnkit.vision import train_classifier
from attnkit.vision.config import vision_config_from_dict, vision_preset
from attnkit.vision.data import load_image_data
from attnkit.viz.heatmaps import show_heatmaps
from attnkit.viz.image_attention import image_attention_figure

torch.manual_seed(0)
FULL = os.environ.get("ATTNKIT_TUTORIAL_FULL", "") not in ("", "0")
if not FULL:
    torch.set_num_threads(1)  # a tiny model: one thread is faster on a busy 2-core machine

# %% [markdown]
# ## Images as sequences of patches
#
# An image of $h \times w$ pixels and $c$ channels is cut into $N = hw/p^2$ non-overlapping
# patches of $p \times p$ pixels. Each patch, flattened to a vector
# $\mathbf{x}_p^i \in \mathbb{R}^{p^2c}$, becomes a token through one shared linear map
# $\mathbf{E}$; a learned **class token** goes first and position embeddings are added:
#
# $$
# \mathbf{z}_0 = [\mathbf{x}_\text{class};\ \mathbf{x}_p^1\mathbf{E};\ \dots;\ \mathbf{x}_p^N\mathbf{E}] + \mathbf{E}_\text{pos},
# \qquad \mathbf{E} \in \mathbb{R}^{p^2c \times D},\ \mathbf{E}_\text{pos} \in \mathbb{R}^{(N+1) \times D}.
# $$
#
# After the encoder blocks (pre-LN, GELU), the class token's final state goes to a linear
# classification head. The bundled digits (scikit-learn's 8 x 8 handwritten digits) with
# $p = 2$ give a 4 x 4 grid of 16 patches.

# %%
train_set, test_set = load_digits_dataset(seed=0)
print(
    len(train_set),
    "training and",
    len(test_set),
    "test images of shape",
    tuple(train_set.images.shape[1:]),
)
images = to_float(test_set.images[:6])  # (6, 1, 8, 8), ink = high values
fig, axes = plt.subplots(1, 6, figsize=(9, 1.8))
for ax, image, label in zip(axes, images, test_set.labels[:6], strict=True):
    ax.imshow(image[0], cmap="gray_r")
    ax.set_xticks([1.5, 3.5, 5.5], minor=False)
    ax.set_yticks([1.5, 3.5, 5.5])
    ax.grid(color="C1", linewidth=1.5)
    ax.tick_params(labelbottom=False, labelleft=False, length=0)
    ax.set_title(f"label {int(label)}")

# %% [markdown]
# The orange grid marks the 2 x 2 patches. [`PatchEmbedding`](../../../src/attnkit/layers/patches.py)
# computes $\mathbf{x}_p\mathbf{E}$ for all patches at once as a convolution with
# `kernel_size = stride = p`. The same numbers from an explicit "cut and multiply":

# %%
embed = PatchEmbedding(patch_size=2, in_channels=1, dim=64)
with torch.no_grad():
    tokens = embed(images)  # (B, N, D)
    patches = images.unfold(2, 2, 2).unfold(3, 2, 2)  # (B, C, 4, 4, 2, 2)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(6, 16, -1)  # (B, N, C*p*p), row-major
    E = embed.proj.weight.reshape(64, -1).T  # (C*p*p, D)
    by_hand = patches @ E + embed.proj.bias
print(tuple(tokens.shape), "max difference:", (tokens - by_hand).abs().max().item())

# %% [markdown]
# ## Positions in two dimensions
#
# attnkit's ViT has three kinds of position embeddings (`ViTConfig.pos_embedding`):
# `learned1d`, the paper's default (one learned row per token, patches numbered row-major);
# `learned2d` (a learned table indexed by row and column); and `sincos2d`, MAE's fixed 2-D
# sine-cosine table (tutorial 6). In the fixed table, a patch is most similar to the patches
# in its row and column. Panel (row $r$, column $c$) shows the cosine similarity of patch
# $(r, c)$ to every patch; the averages sum it up.


# %%
def position_similarity(table):
    """Cosine similarities of a (16, D) table of 4 x 4 patches, as a (4, 4, 4, 4) grid."""
    unit = table / table.norm(dim=1, keepdim=True)
    sim = unit @ unit.T  # (N, N)
    row, col = torch.arange(16) // 4, torch.arange(16) % 4
    same_row, same_col = row[:, None] == row, col[:, None] == col
    other = ~torch.eye(16, dtype=torch.bool)
    for name, pick in (
        ("the same row", same_row & other),
        ("the same column", same_col & other),
        ("another row and column", ~same_row & ~same_col),
    ):
        print(f"mean similarity to the patches in {name}: {sim[pick].mean():+.3f}")
    return sim.reshape(4, 4, 4, 4)  # (row, col) x (row, col)


show_heatmaps(
    position_similarity(sincos_2d_table(4, 4, 64)),
    xlabel="col",
    ylabel=[f"row {r}" for r in range(4)],
    figsize=(5, 5),
    cmap="viridis",
)

# %% [markdown]
# ## Training
#
# `attnkit train-vit` trains the `digits` preset: patches of 2, $D = 64$, 2 layers, 4 heads,
# 60 epochs. Here, 25 epochs (about 15-40 seconds on two CPU cores).

# %%
overrides = [] if FULL else ["train.epochs=25"]
config = vision_config_from_dict(resolve_config(vision_preset("digits"), overrides=overrides))
run_dir = scratch_dir("attnkit-tutorial-08-") / "digits-vit"
result, classifier = train_classifier(config, run_dir)
print(f"{result.steps} steps in {result.seconds:.0f} s; validation: {result.last_metrics}")
data = load_image_data(config.data)
print("test:", classifier.evaluate(data.test))

# %% [markdown]
# ## What the model learned about positions
#
# As in the ViT paper (its figure 7), compare each patch's learned position embedding with
# every other patch's. The embeddings started random and were only ever told a 1-D number per
# patch; after 25 epochs on 1,438 small images, patches in the same row or the same column
# already have more similar embeddings than the others: the model is discovering the 2-D
# layout. (In the paper, after pretraining on millions of images, rows and columns stand out
# clearly.)

# %%
pos = classifier.model.position_embeddings().detach()[1:]  # (N, D): class token dropped
show_heatmaps(
    position_similarity(pos),
    xlabel="col",
    ylabel=[f"row {r}" for r in range(4)],
    figsize=(5, 5),
    cmap="viridis",
)

# %% [markdown]
# ## Where the model looks
#
# [`Classifier.attention_maps`](../../../src/attnkit/vision/classifier.py) returns, for each
# image, the class token's attention over the patches in every head of the last layer, and
# the **attention rollout** (Abnar and Zuidema, 2020), which follows the attention through
# all layers: average the heads, add the identity for the residual connection, renormalise,
# and multiply the layers' matrices,
#
# $$
# \tilde{\mathbf{A}}_\ell = \operatorname{norm}\!\left(\tfrac{1}{H}\textstyle\sum_h \mathbf{A}_{\ell,h} + \mathbf{I}\right),
# \qquad
# \text{rollout} = \tilde{\mathbf{A}}_L \cdots \tilde{\mathbf{A}}_1 .
# $$

# %%
maps = classifier.attention_maps(images[:3])


def attention_figure(m):
    title = f"predicted {m.prediction.labels[0]} ({m.prediction.probs[0]:.0%})"
    return image_attention_figure(m.image, m.heads, m.rollout, title=title, ink=True)


attention_figure(maps[0])

# %%
attention_figure(maps[1])

# %%
attention_figure(maps[2])

# %% [markdown]
# Each figure: the image, the 4 heads of the last layer, and the rollout.
#
# ## Summary
#
# - A ViT embeds non-overlapping patches linearly (a strided convolution), prepends a class
#   token, adds position embeddings and runs Transformer encoder blocks.
# - Position embeddings can be learned (1-D or 2-D) or fixed (2-D sine-cosine); learned 1-D
#   positions end up encoding the 2-D grid.
# - Attention maps and rollout show which patches the class token draws on.
#
# ## Exercises
#
# 1. Train with `model.pos_embedding=sincos2d` and with `learned2d` (add them to
#    `overrides` as `"model.pos_embedding=..."`). Compare the test accuracy.
# 2. Train with patches of 4 (4 patches per image) and of 1 (64 patches). What happens to the
#    accuracy and the speed?
# 3. Replace the class token by mean pooling (`model.pool=mean`). Do the attention maps
#    change?
# 4. Shuffle the patches of the test images (the same permutation for all). How much does the
#    accuracy drop with `learned1d` positions?
# 5. Train on CIFAR-10 (`attnkit train-vit --data cifar10`, a GPU helps). Do the learned
#    position embeddings look like the ones here?

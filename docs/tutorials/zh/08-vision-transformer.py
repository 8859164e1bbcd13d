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
# # 8. Vision Transformer
#
# **你将学到**
#
# - Vision Transformer（ViT）如何把图像变成序列：**图像块**、线性的**图像块嵌入**（一个带步幅的卷积，并与矩阵乘积逐数值核对）、类别词元和位置嵌入；
# - 一维与二维位置嵌入，以及训练后学到的位置嵌入是什么样子；
# - 如何在自带的 8 x 8 手写数字上用不到一分钟训练一个 ViT，以及它在看哪里：每个头的注意力图和注意力展开（attention rollout）。
#
# 代码：[`models/vit.py`](../../../src/attnkit/models/vit.py)、[`layers/patches.py`](../../../src/attnkit/layers/patches.py)、[`vision/classifier.py`](../../../src/attnkit/vision/classifier.py)。

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
# ## 把图像看成图像块的序列
#
# 一张 $h \times w$ 像素、$c$ 个通道的图像被切成 $N = hw/p^2$ 个互不重叠的 $p \times p$ 像素图像块。每个图像块展平成向量 $\mathbf{x}_p^i \in \mathbb{R}^{p^2c}$，再经同一个线性映射 $\mathbf{E}$ 变成词元；最前面是一个可学习的**类别词元**，然后加上位置嵌入：
#
# $$
# \mathbf{z}_0 = [\mathbf{x}_\text{class};\ \mathbf{x}_p^1\mathbf{E};\ \dots;\ \mathbf{x}_p^N\mathbf{E}] + \mathbf{E}_\text{pos},
# \qquad \mathbf{E} \in \mathbb{R}^{p^2c \times D},\ \mathbf{E}_\text{pos} \in \mathbb{R}^{(N+1) \times D}.
# $$
#
# 经过若干编码器块（pre-LN，GELU）之后，类别词元的最终状态送入一个线性分类头。自带的手写数字（scikit-learn 的 8 x 8 数字）取 $p = 2$，得到 4 x 4 共 16 个图像块。

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
# 橙色网格标出了 2 x 2 的图像块。[`PatchEmbedding`](../../../src/attnkit/layers/patches.py) 用 `kernel_size = stride = p` 的卷积一次算出所有图像块的 $\mathbf{x}_p\mathbf{E}$。用显式的“切块再相乘”得到同样的数值：

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
# ## 二维的位置
#
# attnkit 的 ViT 有三种位置嵌入（`ViTConfig.pos_embedding`）：`learned1d`，论文的默认做法（每个词元一行可学习的嵌入，图像块按行优先编号）；`learned2d`（按行和列索引的可学习表）；以及 `sincos2d`，MAE 的固定二维正弦-余弦表（第 6 篇）。在固定表中，一个图像块与同一行、同一列的图像块最相似。第 $r$ 行、第 $c$ 列的小图显示图像块 $(r, c)$ 与每个图像块的余弦相似度；打印出的平均值是它的概括。


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
# ## 训练
#
# `attnkit train-vit` 训练 `digits` 预设：图像块大小 2，$D = 64$，2 层，4 个头，60 轮。这里训练 25 轮（在两核 CPU 上大约 15-40 秒）。

# %%
overrides = [] if FULL else ["train.epochs=25"]
config = vision_config_from_dict(resolve_config(vision_preset("digits"), overrides=overrides))
run_dir = scratch_dir("attnkit-tutorial-08-") / "digits-vit"
result, classifier = train_classifier(config, run_dir)
print(f"{result.steps} steps in {result.seconds:.0f} s; validation: {result.last_metrics}")
data = load_image_data(config.data)
print("test:", classifier.evaluate(data.test))

# %% [markdown]
# ## 模型学到的位置信息
#
# 与 ViT 论文（图 7）一样，把每个图像块学到的位置嵌入与其他所有图像块的比较。这些嵌入从随机值开始，模型只知道每个图像块的一维编号；在 1,438 张小图像上训练 25 轮之后，同一行或同一列的图像块的嵌入已经比其他图像块的更相似：模型正在发现二维布局。（论文中在数百万张图像上预训练之后，行和列非常清晰。）

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
# ## 模型在看哪里
#
# [`Classifier.attention_maps`](../../../src/attnkit/vision/classifier.py) 为每张图像返回最后一层每个头中类别词元对各图像块的注意力，以及贯穿所有层的**注意力展开**（Abnar 和 Zuidema，2020）：对各个头取平均，加上单位矩阵以计入残差连接，重新归一化，再把各层的矩阵相乘：
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
# 每张图依次是：图像、最后一层的 4 个头，以及注意力展开。
#
# ## 小结
#
# - ViT 线性地嵌入互不重叠的图像块（一个带步幅的卷积），在前面加上类别词元，加上位置嵌入，再经过 Transformer 编码器块。
# - 位置嵌入可以是可学习的（一维或二维），也可以是固定的（二维正弦-余弦）；可学习的一维位置嵌入最终会编码二维网格。
# - 注意力图和注意力展开显示类别词元从哪些图像块汲取信息。
#
# ## 练习
#
# 1. 分别用 `model.pos_embedding=sincos2d` 和 `learned2d` 训练（以 `"model.pos_embedding=..."` 的形式加入 `overrides`），比较测试准确率。
# 2. 用大小为 4 的图像块（每张图 4 块）和大小为 1 的图像块（64 块）训练。准确率和速度如何变化？
# 3. 用平均汇聚代替类别词元（`model.pool=mean`）。注意力图会改变吗？
# 4. 打乱测试图像的图像块（所有图像用同一个置换）。使用 `learned1d` 位置嵌入时，准确率下降多少？
# 5. 在 CIFAR-10 上训练（`attnkit train-vit --data cifar10`，最好有 GPU）。学到的位置嵌入与这里的相像吗？

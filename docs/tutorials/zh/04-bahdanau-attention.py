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
# # 4. Bahdanau 注意力
#
# **你将学到**
#
# - 为什么序列到序列模型需要注意力：用一个固定的向量表示整个源句子是一个瓶颈；
# - Bahdanau 解码器：在每个时间步，用加性注意力对所有编码器状态做注意力汇聚，得到新的**上下文变量**；
# - 如何用 attnkit 在自带的**日期**语料上用大约半分钟训练它，以及如何解读它的注意力权重。
#
# 代码：[`models/bahdanau.py`](../../../src/attnkit/models/bahdanau.py)（模型）和 [`attention/scoring.py`](../../../src/attnkit/attention/scoring.py)（`AdditiveAttention`）。

# %%
# %matplotlib inline
import os

import torch

from attnkit.data.dates import generate_dates
from attnkit.files import scratch_dir
from attnkit.training.runs import resolve_config
from attnkit.translation import train_translator
from attnkit.translation.config import preset_for, run_config_from_dict
from attnkit.viz.curves import plot_curves
from attnkit.viz.figures import attention_figures
from attnkit.viz.samples import translation_sample

torch.manual_seed(0)
FULL = os.environ.get("ATTNKIT_TUTORIAL_FULL", "") not in ("", "0")
if not FULL:
    torch.set_num_threads(1)  # a tiny model: one thread is faster on a busy 2-core machine

# %% [markdown]
# ## 数据：人写的日期
#
# attnkit 自带一个无需下载、几秒钟就能学会的语料：用多种英语和法语写法写出的日期，要翻译成 ISO 8601 格式。[`generate_dates`](../../../src/attnkit/data/dates.py) 根据随机种子（确定性地）生成它们：

# %%
for source, target in generate_dates(8, seed=1):
    print(f"{source:40s} -> {target}")

# %% [markdown]
# ## 模型
#
# 编码器是一个 GRU，读入源词元 $x_1, \dots, x_T$，产生隐状态 $\mathbf{h}_1, \dots, \mathbf{h}_T$。在课程中普通的编码器-解码器里，解码器只得到整个句子的一个上下文变量。Bahdanau 等人（2014）让解码器在每个时间步 $t'$ 都以不同的方式回看**所有**编码器状态：解码器上一时间步的隐状态 $\mathbf{s}_{t'-1}$ 是查询，编码器状态既是键也是值，评分函数是加性注意力（第 3 篇）：
#
# $$
# \mathbf{c}_{t'} = \sum_{t=1}^{T} \alpha(\mathbf{s}_{t'-1}, \mathbf{h}_t)\, \mathbf{h}_t,
# \qquad
# \mathbf{s}_{t'} = \operatorname{GRU}\big([\mathbf{c}_{t'};\ \mathbf{e}(y_{t'-1})],\ \mathbf{s}_{t'-1}\big),
# $$
#
# 其中 $\mathbf{e}(y_{t'-1})$ 是上一个输出词元的嵌入。在 [`BahdanauSeq2Seq.decode`](../../../src/attnkit/models/bahdanau.py) 中，循环的每次迭代就是一个时间步：先 `query = hidden[-1].unsqueeze(1)`，再 `context, w = self.attention(query, memory, memory, mask=mask, ...)`，然后对 `torch.cat([context, embedded[:, t : t + 1]], dim=-1)` 做一步 GRU。编码器的键 $\mathbf{W}_k\mathbf{h}_t$ 每个句子只投影一次，而不是每个时间步都投影。
#
# ## 训练
#
# attnkit 用同一种运行目录和同一个训练循环训练所有模型。`dates` 和 `bahdanau` 的预设就是命令 `attnkit train --model bahdanau --data dates`（20,000 个样本，8 轮）；这里缩小到 4,000 个样本、6 轮，批量更小、学习率更大，在两核 CPU 上大约需要 15-40 秒。

# %%
run_dir = scratch_dir("attnkit-tutorial-04-") / "dates-bahdanau"
QUICK = ["data.num_examples=4000", "train.epochs=6", "train.lr=5e-3", "train.max_tokens=1024"]
overrides = [] if FULL else QUICK
config = resolve_config(preset_for("dates", "bahdanau"), overrides=overrides)
config["model_type"] = "bahdanau"
config = run_config_from_dict(config)
print(config.model)

result, translator = train_translator(config, run_dir)
print(
    f"{result.steps} steps, {result.epochs_done} epochs in {result.seconds:.0f} s; "
    f"held-out: {result.last_metrics}"
)

# %% [markdown]
# 运行目录中的 `metrics.jsonl` 记录了训练损失，以及每轮结束时的验证损失、BLEU、chrF 和完全匹配的准确率（对留出的日期做贪心解码）：

# %%
plot_curves(run_dir / "metrics.jsonl", figsize=(5, 3))

# %% [markdown]
# ## 翻译，以及解码器在看哪里
#
# [`Translator.translate`](../../../src/attnkit/translation/translator.py) 负责解码（这里用贪心搜索），设置 `need_weights=True` 时还会保留每一步的注意力权重。

# %%
sources = ["tuesday 10 march 1987", "le 1er août 1990", "the 23rd of may 2021", "04 / 07 / 1976"]
translations = translator.translate(sources, beam_size=1, need_weights=True)
for t in translations:
    print(f"{t.source:25s} -> {t.text}")

# %% [markdown]
# 热图的每一行是一个输出词元（查询：产生它的解码器状态），每一列是一个源词元。写年份时解码器关注年份的数字，写月份时关注月份的名称，写日时关注日：这种对齐是学出来的，没有人告诉模型各个字段在哪里。（源句子被切分成子词和单个数字，课程的预处理把它转成小写。）

# %%
sample = translation_sample(translator, translations[0])
attention_figures(sample)[0].figure

# %%
sample = translation_sample(translator, translations[1])
attention_figures(sample)[0].figure

# %% [markdown]
# ## 小结
#
# - Bahdanau 注意力在每个时间步为解码器提供新的上下文变量：以解码器状态为查询，对所有编码器状态做加性注意力汇聚。
# - 注意力权重是输出词元与输入词元之间的软对齐，在没有对齐标注的情况下学到。
# - attnkit 用 `train_translator`（即 `attnkit train --model bahdanau` 命令）训练它，并返回一个能展示权重的 `Translator`。
#
# ## 练习
#
# 1. 在解码器中用缩放点积注意力替换加性注意力（这里查询和键的长度相同）。训练得一样快吗？
# 2. 翻译一个语料中没有的日期写法，例如 `"1987-03-10"` 或 `"march the tenth 1987"`。注意力落在哪里？
# 3. 课程用编码器的最终状态初始化解码器；attnkit 使用每个句子最后一个真实词元处的 $\tanh(\mathbf{W}\mathbf{h}_T)$。在填充过的批量中，为什么“最后一个**真实**词元”很重要？
# 4. 设置 `ATTNKIT_TUTORIAL_FULL=1` 训练。准确率提高了多少？多花了多少时间？
# 5. 在同样的数据上训练 Transformer（`preset_for("dates", "transformer")`），比较速度和准确率。

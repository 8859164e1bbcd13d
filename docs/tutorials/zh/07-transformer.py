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
# # 7. Transformer
#
# **你将学到**
#
# - Transformer 的编码器块和解码器块：多头自注意力、编码器-解码器注意力、基于位置的前馈网络、残差连接和层规范化；
# - 如何用 attnkit 在英语-法语句子对上训练一个 Transformer（这里是一次小而快的训练；完整规模的训练只需一个开关）；
# - 贪心搜索与**束搜索**的区别，以及 **BLEU** 如何为翻译打分（课程中的句子级 BLEU 和 sacreBLEU 的语料级 BLEU）；
# - 如何查看每一层、每个头的注意力。
#
# 代码：[`models/transformer.py`](../../../src/attnkit/models/transformer.py)、[`layers/blocks.py`](../../../src/attnkit/layers/blocks.py)、[`layers/feedforward.py`](../../../src/attnkit/layers/feedforward.py)、[`decoding/beam.py`](../../../src/attnkit/decoding/beam.py)、[`evaluation/metrics.py`](../../../src/attnkit/evaluation/metrics.py)。

# %%
# %matplotlib inline
import os
from pathlib import Path

import torch

from attnkit.evaluation.metrics import corpus_bleu, corpus_chrf, course_bleu
from attnkit.files import scratch_dir
from attnkit.training.runs import resolve_config
from attnkit.translation import train_translator
from attnkit.translation.config import preset_for, run_config_from_dict
from attnkit.translation.task import prepare_data
from attnkit.viz.curves import plot_curves
from attnkit.viz.figures import attention_figures
from attnkit.viz.samples import translation_sample

torch.manual_seed(0)
FULL = os.environ.get("ATTNKIT_TUTORIAL_FULL", "") not in ("", "0")
if not FULL:
    torch.set_num_threads(1)  # a tiny model: one thread is faster on a busy 2-core machine

# %% [markdown]
# ## 模型架构
#
# 编码器由若干个相同的块堆叠而成。每个块有两个子层：多头自注意力和基于位置的前馈网络（FFN），每个子层外面都有残差连接和层规范化（“加法和规范化”）：
#
# $$
# \mathbf{Y} = \operatorname{LayerNorm}\big(\mathbf{X} + \operatorname{MHA}(\mathbf{X}, \mathbf{X}, \mathbf{X})\big),
# \qquad
# \mathbf{Z} = \operatorname{LayerNorm}\big(\mathbf{Y} + \operatorname{FFN}(\mathbf{Y})\big),
# \qquad
# \operatorname{FFN}(\mathbf{x}) = \max(0, \mathbf{x}\mathbf{W}_1 + \mathbf{b}_1)\mathbf{W}_2 + \mathbf{b}_2 .
# $$
#
# 解码器块在两者之间多了第三个子层：**编码器-解码器注意力**，其查询来自解码器，键和值是编码器的输出。解码器的自注意力是**因果的**（第 6 篇）：位置 $t$ 只能看到位置 $\le t$，因此训练时可以一次输入整个目标句子。词元嵌入乘以 $\sqrt{d}$ 后再加上正弦位置编码。
#
# 在 attnkit 中，它们是 [`layers/blocks.py`](../../../src/attnkit/layers/blocks.py) 中的 `EncoderBlock` 和 `DecoderBlock`（设置 `norm_first=True` 时，规范化移到每个子层的开头，即“pre-LN”，训练更稳定，预设都使用它）、[`layers/feedforward.py`](../../../src/attnkit/layers/feedforward.py) 中的 `PositionWiseFFN`，以及 [`models/transformer.py`](../../../src/attnkit/models/transformer.py) 中带有 `encode()`、`decode()`（带键值缓存）和 `forward()` 的模型。
#
# ## 数据
#
# 课程在 Tatoeba 项目的英语-法语句子对上训练。如果能找到这份数据（环境变量 `ATTNKIT_FRA_ENG`，或某个上级目录中的 `shared/data/fra-eng/train.txt`），快速训练就使用其中最短的 3,000 对；否则退回到自带的日期语料，所以本篇教程总能离线运行。设置 `ATTNKIT_TUTORIAL_FULL=1` 则在整个文件上训练文本预设（480 万参数）20 分钟，与[基准测试](../../../benchmarks/RESULTS.md)中 20 分钟的训练相同（其中最好的一次用 `--eval-every 250` 和束宽 5，在留出的句对上达到区分大小写的 BLEU 50.8；本教程的训练每个 epoch 验证一次）。


# %%
def find_fra_eng():
    candidates = [os.environ.get("ATTNKIT_FRA_ENG", "")]
    candidates += [
        str(p / "shared/data/fra-eng/train.txt") for p in [Path.cwd(), *Path.cwd().parents]
    ]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


work = scratch_dir("attnkit-tutorial-07-")
fra_eng = find_fra_eng()
if fra_eng is None:
    print("no English-French file found: training on the bundled dates corpus")
    data, preset = "dates", preset_for("dates", "transformer")
elif FULL:
    data, preset = str(fra_eng), preset_for("fra-eng", "transformer")
else:
    pairs = fra_eng.read_text(encoding="utf-8").splitlines()[:3000]  # the file is sorted by length
    (work / "train.tsv").write_text("\n".join(pairs) + "\n", encoding="utf-8")
    data, preset = str(work / "train.tsv"), preset_for("fra-eng", "transformer")
    print(f"{len(pairs)} pairs from {fra_eng}, e.g.:")
    for line in pairs[1000:1005]:
        print("   ", line.replace("\t", "  ->  "))

# %% [markdown]
# ## 训练
#
# `preset_for` 给出 `attnkit train` 会使用的配置；用 `--set` 风格的覆盖项把它缩小成快速训练：$d = 64$，4 个头，编码器和解码器各 2 层，FFN 大小 128，600 个子词的 BPE 词表，最多 40 秒。在命令行中同样的训练是 `attnkit train --data train.tsv --set model.d_model=64 ...`。

# %%
if FULL:
    overrides = ["train.time_budget=1200"]
    valid = fra_eng.with_name("valid.txt")
    if valid.is_file():
        overrides.append(f"data.valid={valid}")
elif data == "dates":
    overrides = ["data.num_examples=4000", "train.time_budget=40"]
else:
    overrides = [
        "data.vocab_size=600",
        "data.valid_limit=100",
        "model.d_model=64",
        "model.ffn_hidden=128",
        "model.num_heads=4",
        "model.num_encoder_layers=2",
        "model.num_decoder_layers=2",
        "train.max_tokens=600",
        "train.lr=3e-3",
        "train.warmup_steps=100",
        "train.epochs=40",
        "train.time_budget=40",
    ]
config = resolve_config(preset, overrides=[f"data.source={data}", *overrides])
config["model_type"] = "transformer"
config = run_config_from_dict(config)
run_dir = work / "run"
result, translator = train_translator(config, run_dir)
print(
    f"{result.steps} steps, {result.epochs_done} epochs, {result.seconds:.0f} s "
    f"({result.stopped_because}); {translator.model.num_parameters():,} parameters"
)
print("held-out:", {k: round(v, 3) for k, v in result.last_metrics.items()})
plot_curves(run_dir / "metrics.jsonl", figsize=(5, 3))

# %% [markdown]
# ## 贪心搜索与束搜索
#
# 贪心搜索在每一步输出概率最大的词元。束搜索保留 $k$ 个概率最大的前缀（即“束”），最后选出按长度归一化的对数概率最高的候选：
#
# $$
# \frac{1}{\mathrm{lp}(L)} \sum_{t=1}^{L} \log P(y_t \mid y_1, \dots, y_{t-1}, \mathbf{c}),
# \qquad \mathrm{lp}(L) = \left(\frac{5 + L}{6}\right)^{\alpha}
# $$
#
# （GNMT 的长度惩罚：attnkit 的默认值，$\alpha = 0.6$）。找到英法数据时这里使用的英法预设则直接除以长度（`length_penalty_kind="average"`，$\mathrm{lp}(L) = L$：每个词元的平均对数概率）；`translator.config.decode` 会告诉你一次训练用的是哪一种。attnkit 的 [`beam_search`](../../../src/attnkit/decoding/beam.py) 把所有句子的所有束作为一个批量运行，剪枝时对解码器的键值缓存重新排序。

# %%
if data == "dates":
    sources = [
        "tuesday 10 march 1987",
        "le 1er août 1990",
        "the 23rd of may 2021",
        "04 / 07 / 1976",
    ]
    references = ["1987-03-10", "1990-08-01", "2021-05-23", "1976-07-04"]
else:  # the course's four examples
    sources = ["go .", "i lost .", "he's calm .", "i'm home ."]
    references = ["va !", "j'ai perdu .", "il est calme .", "je suis chez moi ."]
greedy = translator.translate(sources, beam_size=1)
beam = translator.translate(sources, beam_size=4, n_best=3)
for g, b in zip(greedy, beam, strict=True):
    print(f"{g.source:14s} greedy: {g.text:24s} beam: {b.text}")
    for text, score in b.alternatives:
        print(f"{'':22s}{score:8.3f}  {text}")

# %% [markdown]
# ## BLEU
#
# 课程用下式把一个预测与一个标签比较：
#
# $$
# \mathrm{BLEU} = \exp\!\left(\min\!\left(0,\ 1 - \frac{\mathrm{len}_{\text{label}}}{\mathrm{len}_{\text{pred}}}\right)\right) \prod_{n=1}^{k} p_n^{1/2^n},
# $$
#
# 其中 $p_n$ 是预测中 $n$ 元语法的精度（标签中每个 $n$ 元语法最多按它出现的次数计数），第一个因子惩罚过短的预测。[`course_bleu`](../../../src/attnkit/evaluation/metrics.py) 就是这个公式，作用于以空格分隔的词元（所以先把预测中的标点按标签的方式用空格隔开）。论文中报告的则是 sacreBLEU 计算的**语料级 BLEU**（在整个测试集上汇总到 4 元语法，使用标准分词，取值 0–100）：[`corpus_bleu`](../../../src/attnkit/evaluation/metrics.py)。下面用它给这次训练留出的句子对打分，使用每个句子的全部参考译文。课程把这个语料转成小写，所以模型输出小写，打分时不区分大小写（训练中的验证也是如此）。


# %%
def spaced(text):
    for mark in ".!?,":
        text = text.replace(mark, f" {mark}")
    return " ".join(text.split())


for b, ref in zip(beam, references, strict=True):
    print(
        f"{b.source:14s} -> {b.text:22s} course BLEU (k=2) = {course_bleu(spaced(b.text), ref, k=2):.3f}"
    )

held_out = prepare_data(config.data, run_dir, config.data.max_len).valid_refs
srcs, refs = [s for s, _ in held_out], [r for _, r in held_out]  # refs: all references of each
lowercase = config.data.lowercase
for size in (1, 4):
    hyps = [t.text for t in translator.translate(srcs, beam_size=size)]
    print(f"beam {size}: {corpus_bleu(hyps, refs, lowercase=lowercase)}")
print(f"beam 4: {corpus_chrf(hyps, refs, lowercase=lowercase)}")

# %% [markdown]
# ## 每一层、每个头的注意力
#
# 设置 `need_weights=True` 时，翻译器会保存三种注意力在每一层（图中的行）和每个头（图中的列）上的权重：编码器的自注意力、解码器的因果自注意力，以及编码器-解码器注意力（每行一个输出词元，每列一个源词元）。

# %%
translation = translator.translate([sources[1]], beam_size=4, need_weights=True)[0]
figures = attention_figures(translation_sample(translator, translation))
print([f.name for f in figures])
figures[0].figure

# %%
figures[1].figure

# %%
figures[2].figure

# %% [markdown]
# ## 小结
#
# - Transformer 块由注意力和基于位置的前馈网络组成，每个子层都有残差连接和层规范化；解码器还有因果自注意力和编码器-解码器注意力。
# - attnkit 用 `train_translator`（即 `attnkit train` 命令）训练它，并借助键值缓存用贪心搜索或束搜索解码。
# - BLEU 比较预测与参考译文的 $n$ 元语法；报告 sacreBLEU 的语料级分数时要附上它的签名。
#
# ## 练习
#
# 1. 设置 `ATTNKIT_TUTORIAL_FULL=1` 运行（20 分钟），把 BLEU、译文和注意力图与快速训练比较。
# 2. 用 `model.norm_first=false`（post-LN，与论文相同）和更大的学习率训练。会发生什么？
# 3. 把束宽增加到 10。BLEU 会继续提高吗？在 `config.decode` 中试试 `length_penalty=0`，译文的长度会怎样变化？
# 4. 编码器-解码器注意力中哪些头是**对齐的**（有清晰的类似对角线的模式）？这与层有关吗？
# 5. 为什么在预测时，解码器的自注意力不能像训练时那样并行计算？

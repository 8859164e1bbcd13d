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
# # 9. 预训练与微调
#
# **你将学到**
#
# - Transformer 训练的两个阶段：先在无标注文本上**预训练**，再在有标注数据上**微调**；
# - 仅解码器（GPT 式）语言模型：未来掩蔽、预测下一个词元的目标、每字符比特数（bpc），以及借助
#   KV 缓存的温度、top-k 与 top-p 采样；
# - 如何查看训练好的语言模型的因果自注意力；
# - 在 SST-2 情感数据上微调分类器：从 attnkit 自己的语言模型出发（与同一模型从零训练对比），
#   以及从真实的预训练编码器 all-MiniLM-L6-v2 出发。
#
# 代码：[`models/decoder_lm.py`](../../../src/attnkit/models/decoder_lm.py)、
# [`decoding/sampling.py`](../../../src/attnkit/decoding/sampling.py)、
# [`lm/`](../../../src/attnkit/lm/__init__.py)、
# [`textclass/model.py`](../../../src/attnkit/textclass/model.py)。

# %%
# %matplotlib inline
import os
import time
from pathlib import Path

import torch

import attnkit
from attnkit.cli import main
from attnkit.decoding import generate_tokens
from attnkit.files import scratch_dir
from attnkit.lm import Generator
from attnkit.pretrained.bert import CheckpointError, resolve_model_path
from attnkit.textclass import TextClassifier
from attnkit.viz.heatmaps import show_heatmaps

torch.manual_seed(0)
FULL = os.environ.get("ATTNKIT_TUTORIAL_FULL", "") not in ("", "0")
WORK = scratch_dir("attnkit-tutorial-09-")
SHARED = Path("../shared/data")
for up in (Path.cwd(), *Path.cwd().parents):  # the data folder beside the repository, if any
    if (up / "shared" / "data").is_dir():
        SHARED = up / "shared" / "data"
        break
THREADS = "2" if FULL else "1"  # small models: one thread is faster on a busy 2-core machine
SOURCE = Path(attnkit.__file__).parent


def attnkit_cli(*argv: str) -> None:
    """An ``attnkit`` command, as on the command line; stop here if it fails."""
    status = main(list(argv))
    if status != 0:
        raise RuntimeError(f"`attnkit {' '.join(argv)}` failed (status {status}): see above")


# %% [markdown]
# ## 第一阶段：语言模型
#
# 仅解码器的 Transformer 读入文本 $x_1, \dots, x_T$，在每个位置预测下一个词元。它的自注意力是
# **掩蔽**的：位置 $t$ 只能看到 $x_{\le t}$（第 6 节中的未来掩码）。训练目标是最大化
#
# $$
# \log p(x_1, \dots, x_T) = \sum_{t=1}^{T} \log p(x_t \mid x_{<t}).
# $$
#
# 验证损失是每个词元的平均负对数似然（单位为奈特）；除以 $\ln 2$ 并按字符计，就是
# **每字符比特数**（bpc），不同分词器之间可以比较。这里不需要任何标签，任何文本都可以。我们用
# 莎士比亚的文本（tiny-shakespeare，最后 10% 的字符用于验证）。快速模式只在一个片段上训练 40 秒。

# %%
text = SHARED / "tinyshakespeare" / "input.txt"
corpus = WORK / "shakespeare.txt"
if text.is_file():
    raw = text.read_text(encoding="utf-8")
else:  # no data folder beside the repository: attnkit's own source code, as plain text
    raw = "\n".join(f.read_text(encoding="utf-8") for f in sorted(SOURCE.rglob("*.py")))
corpus.write_text(raw if FULL else raw[:300_000], encoding="utf-8")
budget = "150s" if FULL else "40s"
start = time.perf_counter()
attnkit_cli(
    "train-lm",
    "--data",
    str(corpus),
    "--run",
    str(WORK / "lm"),
    "--preset",
    "char-small",
    "--time-budget",
    budget,
    "--threads",
    THREADS,
    "--no-progress",
    "--sample-tokens",
    "0",
)
print(f"trained in {time.perf_counter() - start:.0f} s")

# %% [markdown]
# ## 生成文本
#
# 生成时每次采样一个词元，分布为 $\mathrm{softmax}(\mathbf{z}/\tau)$：把 logits $\mathbf{z}$
# 除以**温度** $\tau$（$\tau \to 0$ 即贪心，$\tau > 1$ 更平坦）；**top-k** 只保留概率最大的
# $k$ 个词元，**top-p**（核采样）保留概率之和至少为 $p$ 的最小集合。有了 **KV 缓存**，每一步
# 只需输入新的词元，之前词元的键和值都保留在缓存里。

# %%
gen = Generator.load(WORK / "lm", device="cpu")
for tau in (0.0, 0.8, 1.2):
    sample = gen.complete("ROMEO:\n", max_new_tokens=120, temperature=tau, top_k=40, seed=1)
    print(f"--- temperature {tau} ---\nROMEO:\n{sample}\n")

# %% [markdown]
# 缓存让生成变快：每一步都重新计算整个上下文，生成 $T$ 个词元要 $O(T^2)$ 的计算量，而缓存只需
# $O(T)$。两种方式得到的词元完全相同：

# %%
prompt = gen.encode("KING:\n")
timings = {}
for use_cache in (True, False):
    t0 = time.perf_counter()
    out = generate_tokens(
        gen.model, prompt, max_new_tokens=100, temperature=0.0, use_cache=use_cache
    )
    timings[use_cache] = (time.perf_counter() - t0, out)
assert timings[True][1] == timings[False][1]
print(
    f"with the cache {timings[True][0]:.2f} s, recomputing {timings[False][0]:.2f} s: "
    f"{timings[False][0] / timings[True][0]:.1f}x"
)

# %% [markdown]
# ## 因果注意力
#
# 下面是每一层每个头对一行文本的注意力权重：对角线以上的权重都严格为零（未来掩码）；许多头
# 关注前一个字符或单词的开头。

# %%
tokens, weights = gen.attention("To be, or not to be")
show_heatmaps(
    torch.stack(weights),
    xlabel="Keys",  # (layers, heads, L, L)
    ylabel=[f"layer {i + 1}" for i in range(len(weights))],
    titles=[f"head {h + 1}" for h in range(weights[0].shape[0])],
    figsize=(9, 9),
)

# %% [markdown]
# ## 第二阶段：在标注数据上微调
#
# 微调在文本的**汇聚**表示上加一个小的输出头，并在有标注的样本上训练整个模型。对因果模型而言，
# 最后一个真实词元已经看过整句话，所以用它的隐状态作为汇聚向量 $\mathbf{h}$，输出头为
#
# $$
# p(y \mid x) = \mathrm{softmax}(\mathbf{W}\,\mathrm{dropout}(\mathbf{h}) + \mathbf{b}).
# $$
#
# 数据是 SST-2：标注为正面或负面的影评短语。为了看出第一阶段带来了什么，同一个模型在相同时间内
# 训练两次：一次从语言模型的权重出发，一次从零开始（`finetune.init=random`：相同的结构和
# 分词器，全新初始化的权重）。

# %%
sst = SHARED / "sst2"
if sst.is_dir():
    rows = (sst / "train.tsv").read_text(encoding="utf-8").splitlines()
    dev = sst / "dev.tsv"
else:  # a tiny stand-in with the same format
    rows = ["sentence\tlabel"] + [f"{w} film\t{int(w == 'good')}" for w in ("good", "bad") * 200]
    dev = WORK / "dev.tsv"
    dev.write_text("\n".join(rows[:1] + rows[1:81]) + "\n", encoding="utf-8")
train = WORK / "train.tsv"
train.write_text("\n".join(rows if FULL else rows[:8001]) + "\n", encoding="utf-8")
ft_budget = "300s" if FULL else "20s"
accuracy = {}
for init in ("pretrained", "random"):
    run = WORK / f"sst-lm-{init}"
    attnkit_cli(
        "finetune",
        "--model",
        str(WORK / "lm"),
        "--data",
        str(train),
        "--valid",
        str(dev),
        "--run",
        str(run),
        "--time-budget",
        ft_budget,
        "--threads",
        THREADS,
        "--no-progress",
        "--set",
        f"finetune.init={init}",
        "--eval-every",
        "100",
    )
    scores = TextClassifier.load(run, device="cpu").evaluate(dev)
    accuracy[init] = scores["accuracy"]
print({k: f"{v:.1%}" for k, v in accuracy.items()})

# %% [markdown]
# 在 SST-2 上用快速设置时，两个数字都会接近随机水平（没有数据目录时使用的替代数据只有“good film”和“bad film”，两个模型都能完全学会）：开发集中约 51% 的短语是正面的，一个总回答“正面”的
# 模型就能得到这个分数。在标签上训练二十秒对两个模型都太短，而只在 40 秒莎士比亚文本上预训练的
# 语言模型懂得字符和单词，却不懂影评。给两者几分钟，并在影评本身（去掉标签的 SST-2 句子，见
# 练习 2）上预训练，差距就很大：各微调 2 分钟后，开发集准确率 69.95% 对从零训练的 60.44%
# （见[基准测试](../../../benchmarks/RESULTS.md)中的 SST-2 一节）。真实的预训练编码器在更大规模上
# 说明了同一点：all-MiniLM-L6-v2 是在十亿对句子上预训练的。

# %%
try:
    resolve_model_path("minilm")  # the folder of the installed model package
except CheckpointError as err:
    print("all-MiniLM-L6-v2 is not available here:", err)
else:
    attnkit_cli(
        "finetune",
        "--model",
        "minilm",
        "--data",
        str(train),
        "--valid",
        str(dev),
        "--run",
        str(WORK / "sst-minilm"),
        "--time-budget",
        "600s" if FULL else "30s",
        "--threads",
        THREADS,
        "--no-progress",
        "--eval-every",
        "100",
    )
    minilm = TextClassifier.load(WORK / "sst-minilm", device="cpu")
    print(f"all-MiniLM-L6-v2: {minilm.evaluate(dev)['accuracy']:.1%} dev accuracy")
    for p in minilm.predict(["a gripping, beautifully acted film", "a dull, lifeless plot"]):
        print(p)

# %% [markdown]
# ## 小结
#
# - 仅解码器的语言模型是一叠因果自注意力块，训练目标是预测下一个词元；以每字符比特数计的损失
#   衡量它压缩文本的能力。
# - 温度、top-k 和 top-p 采样决定输出的风格；KV 缓存让每个新词元只花一步计算。
# - 微调在汇聚表示上训练一个小输出头，同时训练整个模型；与从零训练的同一模型相比，就能看出
#   预训练权重的作用。
#
# ## 练习
#
# 1. 用 `top_p=0.9` 和温度 0.5、1.5 分别生成。哪一种文本更重复？
# 2. 在去掉标签的 SST-2 句子上预训练语言模型（把 `sentence` 列写入一个文本文件），再微调，并与
#    从零训练的结果比较。
# 3. 用 `attnkit train-lm --init-from RUN` 在 SST-2 句子上继续预训练莎士比亚模型，然后微调。
#    两段文本的先后顺序重要吗？
# 4. 只训练输出头（`--set finetune.freeze_layers=4`）：准确率下降多少？
# 5. 对 all-MiniLM-L6-v2 试试 `--set finetune.layer_lr_decay=0.8` 和更大的学习率。

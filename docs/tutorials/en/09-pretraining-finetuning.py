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
# # 9. Pretraining and fine-tuning
#
# **What you will learn**
#
# - the two stages of the Transformer's training: **pretraining** on unlabelled text, then
#   **fine-tuning** on labels;
# - a decoder-only (GPT-style) language model: the future mask, the next-token objective, bits
#   per character, and sampling with temperature, top-k and top-p through a KV cache;
# - how to see the causal attention of a trained language model;
# - fine-tuning a classifier on SST-2 sentiment: from attnkit's own language model (against the
#   same model from scratch) and from a real pretrained encoder, all-MiniLM-L6-v2.
#
# Code: [`models/decoder_lm.py`](../../../src/attnkit/models/decoder_lm.py),
# [`decoding/sampling.py`](../../../src/attnkit/decoding/sampling.py),
# [`lm/`](../../../src/attnkit/lm/__init__.py),
# [`textclass/model.py`](../../../src/attnkit/textclass/model.py).

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
# ## Stage 1: a language model
#
# A decoder-only Transformer reads a text $x_1, \dots, x_T$ and, at every position, predicts
# the next token. Its self-attention is **masked** so that position $t$ only sees
# $x_{\le t}$ (the future mask of tutorial 6), and it is trained to maximise
#
# $$
# \log p(x_1, \dots, x_T) = \sum_{t=1}^{T} \log p(x_t \mid x_{<t}).
# $$
#
# The validation loss is the mean negative log-likelihood per token in nats; divided by
# $\ln 2$ and taken per character it is the **bits per character** (bpc), comparable across
# tokenizers. No labels are needed: any text will do. Here, Shakespeare (tiny-shakespeare:
# the last 10% of the characters validate). The quick run trains for 40 seconds on a slice.

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
# ## Generating text
#
# Generation samples one token at a time from $\mathrm{softmax}(\mathbf{z}/\tau)$, the logits
# $\mathbf{z}$ divided by a **temperature** $\tau$ ($\tau \to 0$ is greedy, $\tau > 1$ flatter);
# **top-k** keeps the $k$ most probable tokens, **top-p** (nucleus) the smallest set whose
# probabilities sum to at least $p$. With a **KV cache** each step feeds only the new token:
# the keys and values of the earlier ones are kept from the steps before.

# %%
gen = Generator.load(WORK / "lm", device="cpu")
for tau in (0.0, 0.8, 1.2):
    sample = gen.complete("ROMEO:\n", max_new_tokens=120, temperature=tau, top_k=40, seed=1)
    print(f"--- temperature {tau} ---\nROMEO:\n{sample}\n")

# %% [markdown]
# The cache is what makes generation fast: recomputing the whole context at every step costs
# $O(T^2)$ token-steps for $T$ tokens, the cache $O(T)$. Both give the same tokens:

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
# ## The causal attention
#
# Every layer's heads, for one line: all weights above the diagonal are exactly zero (the
# future mask); many heads look at the previous character or at the start of the word.

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
# ## Stage 2: fine-tuning on labels
#
# Fine-tuning puts a small head on a **pooled** representation of the text and trains the
# whole model on labelled examples. For a causal model the last real token has seen the whole
# sentence, so it is the pooled vector $\mathbf{h}$; the head is
#
# $$
# p(y \mid x) = \mathrm{softmax}(\mathbf{W}\,\mathrm{dropout}(\mathbf{h}) + \mathbf{b}).
# $$
#
# The data: SST-2 movie-review phrases labelled positive or negative. To see what stage 1
# buys, the same model is trained twice for the same time: from the language model's weights
# and from scratch (`finetune.init=random`: the same architecture and tokenizer, fresh
# weights).

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
# On SST-2, expect both numbers near chance with the quick settings (the stand-in data used
# without the data folder, "good film" and "bad film", is learnt perfectly by both): about 51%
# of the dev phrases are positive, which a model scores by always answering "positive". Twenty
# seconds on the labels is too short for either model, and a language model of 40 seconds of
# Shakespeare knows characters and words, not film reviews. Give both minutes and pretrain on
# the reviews themselves (the SST-2 sentences without their labels: exercise 2), and the
# difference is large: 69.95% dev accuracy against 60.44% from scratch, 2 minutes of
# fine-tuning each (the SST-2 section of the [benchmarks](../../../benchmarks/RESULTS.md)). A
# real pretrained encoder shows the same thing at scale: all-MiniLM-L6-v2 was pretrained on a
# billion sentence pairs.

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
# ## Summary
#
# - A decoder-only language model is a stack of causal self-attention blocks trained to predict
#   the next token; its loss in bits per character measures how well it compresses text.
# - Sampling with temperature, top-k and top-p shapes the output; a KV cache makes each new
#   token cost one step.
# - Fine-tuning trains a small head on a pooled representation together with the whole model;
#   what the pretrained weights bring shows against the same model from scratch.
#
# ## Exercises
#
# 1. Generate with `top_p=0.9` and temperatures 0.5 and 1.5. Which text is more repetitive?
# 2. Pretrain the language model on the SST-2 sentences without their labels (write the
#    `sentence` column to a text file), fine-tune it, and compare with the from-scratch run.
# 3. Continue pretraining the Shakespeare model on the SST-2 sentences with
#    `attnkit train-lm --init-from RUN`, then fine-tune. Does the order of the two texts matter?
# 4. Freeze all but the head (`--set finetune.freeze_layers=4`): how much accuracy is lost?
# 5. Try `--set finetune.layer_lr_decay=0.8` with all-MiniLM-L6-v2 and a larger learning rate.

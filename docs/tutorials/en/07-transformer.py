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
# # 7. The Transformer
#
# **What you will learn**
#
# - the Transformer's encoder and decoder blocks: multi-head self-attention, encoder–decoder
#   attention, the position-wise feed-forward network, residual connections and layer
#   normalisation;
# - how to train one on English–French sentence pairs with attnkit (a small, quick run here;
#   the full-size run is one switch away);
# - greedy decoding versus **beam search**, and how **BLEU** scores a translation (the course's
#   sentence BLEU and sacreBLEU's corpus BLEU);
# - how to look at the attention of every layer and every head.
#
# Code: [`models/transformer.py`](../../../src/attnkit/models/transformer.py),
# [`layers/blocks.py`](../../../src/attnkit/layers/blocks.py),
# [`layers/feedforward.py`](../../../src/attnkit/layers/feedforward.py),
# [`decoding/beam.py`](../../../src/attnkit/decoding/beam.py),
# [`evaluation/metrics.py`](../../../src/attnkit/evaluation/metrics.py).

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
# ## The architecture
#
# The encoder is a stack of identical blocks. Each has two sublayers, multi-head
# self-attention and a position-wise feed-forward network (FFN), each wrapped in a residual
# connection and layer normalisation ("add & norm"):
#
# $$
# \mathbf{Y} = \operatorname{LayerNorm}\big(\mathbf{X} + \operatorname{MHA}(\mathbf{X}, \mathbf{X}, \mathbf{X})\big),
# \qquad
# \mathbf{Z} = \operatorname{LayerNorm}\big(\mathbf{Y} + \operatorname{FFN}(\mathbf{Y})\big),
# \qquad
# \operatorname{FFN}(\mathbf{x}) = \max(0, \mathbf{x}\mathbf{W}_1 + \mathbf{b}_1)\mathbf{W}_2 + \mathbf{b}_2 .
# $$
#
# The decoder block has a third sublayer between the two: **encoder–decoder attention**,
# whose queries come from the decoder and whose keys and values are the encoder's outputs.
# Its self-attention is **causal** (tutorial 6): position $t$ sees only positions $\le t$, so
# training can feed the whole target sentence at once. Token embeddings are scaled by
# $\sqrt{d}$ and the sinusoidal encoding is added.
#
# In attnkit these are `EncoderBlock` and `DecoderBlock` in
# [`layers/blocks.py`](../../../src/attnkit/layers/blocks.py) (with `norm_first=True` the
# normalisation moves to the start of each sublayer, "pre-LN", which trains more stably; the
# presets use it), `PositionWiseFFN` in
# [`layers/feedforward.py`](../../../src/attnkit/layers/feedforward.py), and the model with
# `encode()`, `decode()` (with a key-value cache) and `forward()` in
# [`models/transformer.py`](../../../src/attnkit/models/transformer.py).
#
# ## The data
#
# The course trains on English–French pairs from the Tatoeba project. If a copy is found
# (`ATTNKIT_FRA_ENG`, or `shared/data/fra-eng/train.txt` in a parent folder), the quick run
# uses its 3,000 shortest pairs; otherwise it falls back on the bundled dates corpus, so this
# tutorial always runs offline. `ATTNKIT_TUTORIAL_FULL=1` trains the text preset (4.8M
# parameters) on the whole file for 20 minutes, as the 20-minute runs of the
# [benchmarks](../../../benchmarks/RESULTS.md) do (their best, with `--eval-every 250` and beam 5:
# cased BLEU 50.8 on held-out pairs; this tutorial's run validates once an epoch).


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
# ## Training
#
# `preset_for` gives the configuration `attnkit train` would use; `--set`-style overrides
# shrink it for the quick run: $d = 64$, 4 heads, 2 encoder and 2 decoder layers, FFN size
# 128, a 600-piece BPE vocabulary, at most 40 seconds. The same run from the shell would be
# `attnkit train --data train.tsv --set model.d_model=64 ...`.

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
# ## Greedy search and beam search
#
# Greedy search emits the most probable token at each step. Beam search keeps the $k$ most
# probable prefixes (the *beam*) and, at the end, picks the hypothesis with the best
# length-normalised log-probability,
#
# $$
# \frac{1}{\mathrm{lp}(L)} \sum_{t=1}^{L} \log P(y_t \mid y_1, \dots, y_{t-1}, \mathbf{c}),
# \qquad \mathrm{lp}(L) = \left(\frac{5 + L}{6}\right)^{\alpha}
# $$
#
# (GNMT's length penalty: attnkit's default, with $\alpha = 0.6$). The English–French preset
# used here when the data is found divides by the length itself instead
# (`length_penalty_kind="average"`, $\mathrm{lp}(L) = L$: the mean log-probability per token);
# `translator.config.decode` says which one a run uses. attnkit's
# [`beam_search`](../../../src/attnkit/decoding/beam.py) runs all beams of all sentences as
# one batch and reorders the decoder's key-value cache when beams are pruned.

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
# The course scores one prediction against one label with
#
# $$
# \mathrm{BLEU} = \exp\!\left(\min\!\left(0,\ 1 - \frac{\mathrm{len}_{\text{label}}}{\mathrm{len}_{\text{pred}}}\right)\right) \prod_{n=1}^{k} p_n^{1/2^n},
# $$
#
# where $p_n$ is the precision of the prediction's $n$-grams (each label $n$-gram counted at
# most as often as it occurs) and the first factor penalises short predictions.
# [`course_bleu`](../../../src/attnkit/evaluation/metrics.py) is this formula, on
# space-separated tokens (so the predictions' punctuation is spaced as in the labels first).
# Papers instead report **corpus BLEU** computed by sacreBLEU (n-grams up to 4 pooled over the
# whole test set, standard tokenisation, 0–100 scale):
# [`corpus_bleu`](../../../src/attnkit/evaluation/metrics.py). Below it scores the run's
# held-out pairs with all their references. The course lower-cases this corpus, so the model
# writes lower case and is scored case-insensitively (as the validation during training is).


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
# ## The attention of every layer and head
#
# With `need_weights=True` the translator keeps the weights of the three kinds of attention,
# for every layer (rows of each figure) and every head (columns):
# the encoder's self-attention, the decoder's causal self-attention, and the encoder–decoder
# attention (one row per output token, one column per source token).

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
# ## Summary
#
# - A Transformer block is attention plus a position-wise FFN, each with a residual
#   connection and layer normalisation; the decoder adds causal self-attention and
#   encoder–decoder attention.
# - attnkit trains it with `train_translator` (the `attnkit train` command) and decodes with
#   greedy or beam search through a key-value cache.
# - BLEU compares $n$-grams with references; report sacreBLEU's corpus score with its
#   signature.
#
# ## Exercises
#
# 1. Run with `ATTNKIT_TUTORIAL_FULL=1` (20 minutes) and compare BLEU, the translations and the
#    attention maps with the quick run.
# 2. Train with `model.norm_first=false` (post-LN, as in the paper) and a larger learning rate.
#    What happens?
# 3. Increase the beam size to 10. Does BLEU keep improving? Try `length_penalty=0` in
#    `config.decode` — what happens to the length of the translations?
# 4. Which heads of the encoder–decoder attention are *aligned* (a clear diagonal-like
#    pattern)? Does it depend on the layer?
# 5. Why can't the decoder's self-attention use the same parallel computation at prediction
#    time as during training?

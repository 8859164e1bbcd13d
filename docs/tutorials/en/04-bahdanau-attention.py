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
# # 4. Bahdanau attention
#
# **What you will learn**
#
# - why a sequence-to-sequence model needs attention: one fixed vector is a bottleneck for
#   the whole source sentence;
# - the Bahdanau decoder, which computes a new **context variable** at every step by additive
#   attention over all encoder states;
# - how to train it with attnkit in about half a minute on the bundled **dates** corpus, and
#   how to read its attention weights.
#
# Code: [`models/bahdanau.py`](../../../src/attnkit/models/bahdanau.py) (the model) and
# [`attention/scoring.py`](../../../src/attnkit/attention/scoring.py) (`AdditiveAttention`).

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
# ## The data: dates written by people
#
# attnkit bundles a corpus that needs no download and is learned in seconds: dates written in
# many English and French styles, to be translated into ISO 8601.
# [`generate_dates`](../../../src/attnkit/data/dates.py) draws them (deterministically, from
# a seed):

# %%
for source, target in generate_dates(8, seed=1):
    print(f"{source:40s} -> {target}")

# %% [markdown]
# ## The model
#
# The encoder is a GRU that reads the source tokens $x_1, \dots, x_T$ and produces hidden
# states $\mathbf{h}_1, \dots, \mathbf{h}_T$. In the plain encoder–decoder of the course, the
# decoder gets one context vector for the whole sentence. Bahdanau et al. (2014) let the
# decoder look back at *every* encoder state, differently at each step $t'$: the decoder's
# previous hidden state $\mathbf{s}_{t'-1}$ is the query, the encoder states are both keys and
# values, and the score is additive attention (tutorial 3):
#
# $$
# \mathbf{c}_{t'} = \sum_{t=1}^{T} \alpha(\mathbf{s}_{t'-1}, \mathbf{h}_t)\, \mathbf{h}_t,
# \qquad
# \mathbf{s}_{t'} = \operatorname{GRU}\big([\mathbf{c}_{t'};\ \mathbf{e}(y_{t'-1})],\ \mathbf{s}_{t'-1}\big),
# $$
#
# where $\mathbf{e}(y_{t'-1})$ is the embedding of the previous output token. In
# [`BahdanauSeq2Seq.decode`](../../../src/attnkit/models/bahdanau.py) one loop iteration is
# one step: `query = hidden[-1].unsqueeze(1)`, then
# `context, w = self.attention(query, memory, memory, mask=mask, ...)`, then the GRU step on
# `torch.cat([context, embedded[:, t : t + 1]], dim=-1)`. The encoder's keys
# $\mathbf{W}_k\mathbf{h}_t$ are projected once per sentence, not at every step.
#
# ## Training
#
# attnkit trains every model through one run folder and one training loop. The preset for
# `dates` and `bahdanau` is the command `attnkit train --model bahdanau --data dates` (20,000
# examples, 8 epochs); here it is shrunk to 4,000 examples and 6 epochs with smaller batches
# and a larger learning rate, which takes about 15-40 seconds on two CPU cores.

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
# The run folder's `metrics.jsonl` has the training loss and, at every epoch end, the
# validation loss, BLEU, chrF and exact-match accuracy (greedy decoding of the held-out
# dates):

# %%
plot_curves(run_dir / "metrics.jsonl", figsize=(5, 3))

# %% [markdown]
# ## Translating, and where the decoder looks
#
# [`Translator.translate`](../../../src/attnkit/translation/translator.py) decodes (greedy
# here) and, with `need_weights=True`, keeps the attention weights of every step.

# %%
sources = ["tuesday 10 march 1987", "le 1er août 1990", "the 23rd of may 2021", "04 / 07 / 1976"]
translations = translator.translate(sources, beam_size=1, need_weights=True)
for t in translations:
    print(f"{t.source:25s} -> {t.text}")

# %% [markdown]
# Each row of the heatmap is one output token (the query: the decoder state that emits it),
# each column a source token. To write the year the decoder attends to the year's digits, for
# the month to the month's name, for the day to the day: the alignment is learned, nobody
# told the model where the fields are. (The source is tokenized into sub-words and single
# digits, the course's preprocessing lower-cases it.)

# %%
sample = translation_sample(translator, translations[0])
attention_figures(sample)[0].figure

# %%
sample = translation_sample(translator, translations[1])
attention_figures(sample)[0].figure

# %% [markdown]
# ## Summary
#
# - Bahdanau attention gives the decoder a new context vector at every step: an additive
#   attention pooling of all encoder states, queried by the decoder's state.
# - The attention weights are a soft alignment between output and input tokens, learned
#   without alignment labels.
# - attnkit trains it with `train_translator` (the `attnkit train --model bahdanau` command)
#   and returns a `Translator` that can show its weights.
#
# ## Exercises
#
# 1. Replace additive attention by scaled dot-product attention in the decoder. (The query
#    and keys have the same size here.) Does it train as fast?
# 2. Translate a date written in a style the corpus does not have, e.g. `"1987-03-10"` or
#    `"march the tenth 1987"`. Where does the attention go?
# 3. The course initialises the decoder with the encoder's final state; attnkit uses
#    $\tanh(\mathbf{W}\mathbf{h}_T)$ of each sentence's last real token. Why does the last
#    *real* token matter in a padded batch?
# 4. Train with `ATTNKIT_TUTORIAL_FULL=1`. How much better is the accuracy, and how much
#    longer does it take?
# 5. Train the Transformer on the same data (`preset_for("dates", "transformer")`). Compare
#    speed and accuracy.

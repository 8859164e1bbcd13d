"""Default settings per corpus and model: a plain dict of presets, merged under user overrides.

``dates`` is sized to train to near-perfect accuracy in a few minutes on 2 CPU cores;
``fra-eng`` (and any other TSV) is the configuration measured in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["PRESETS", "preset_for"]

_DATES_DATA = {"tokenizer": "bpe", "vocab_size": 200, "split_digits": True, "max_len": 40,
               "num_examples": 20000, "valid_fraction": 0.05, "valid_limit": 500}
_TEXT_DATA = {"tokenizer": "bpe", "vocab_size": 4000, "shared_vocab": True, "max_len": 64}

PRESETS: dict[str, dict[str, Any]] = {
    "dates/transformer": {
        "model": {"d_model": 128, "num_heads": 4, "ffn_hidden": 512, "num_encoder_layers": 2,
                  "num_decoder_layers": 2, "dropout": 0.1, "norm_first": True},
        "data": _DATES_DATA,
        "train": {"epochs": 5, "max_tokens": 2048, "lr": 2e-3, "warmup_steps": 200,
                  "label_smoothing": 0.1, "log_every": 50},
        "decode": {"beam_size": 1},
    },
    "dates/bahdanau": {
        "model": {"embed_size": 64, "num_hiddens": 128, "num_layers": 1, "dropout": 0.1},
        "data": _DATES_DATA,
        "train": {"epochs": 8, "max_tokens": 2048, "lr": 3e-3, "warmup_steps": 100,
                  "schedule": "constant", "label_smoothing": 0.0, "log_every": 50},
        "decode": {"beam_size": 1},
    },
    "text/transformer": {
        "model": {"d_model": 256, "num_heads": 4, "ffn_hidden": 768, "num_encoder_layers": 3,
                  "num_decoder_layers": 2, "dropout": 0.1, "norm_first": True,
                  "tie_embeddings": "all"},
        "data": _TEXT_DATA,
        "train": {"epochs": 30, "max_tokens": 3000, "lr": 2e-3, "warmup_steps": 300,
                  "label_smoothing": 0.1, "log_every": 25},
        "decode": {"beam_size": 5, "length_penalty": 0.6},
    },
    "text/bahdanau": {
        "model": {"embed_size": 256, "num_hiddens": 256, "num_layers": 2, "dropout": 0.2},
        "data": _TEXT_DATA,
        "train": {"epochs": 20, "max_tokens": 6000, "lr": 2e-3, "warmup_steps": 200,
                  "schedule": "constant", "label_smoothing": 0.1, "log_every": 50},
        "decode": {"beam_size": 5, "length_penalty": 0.6},
    },
}


def preset_for(data: str, model_type: str) -> dict[str, Any]:
    """The preset for a corpus name (``dates``; anything else is a text corpus) and model type."""
    kind = "dates" if data == "dates" else "text"
    key = f"{kind}/{model_type}"
    if key not in PRESETS:
        raise ValueError(f"no preset for model {model_type!r}; choose transformer or bahdanau")
    return copy.deepcopy(PRESETS[key])

"""Sentence-embedding benchmark pieces: synthetic sentences and the baselines attnkit's
:class:`~attnkit.pretrained.SentenceEncoder` is compared with on all-MiniLM-L6-v2.

The baselines need packages attnkit does not depend on (``sentence-transformers``, else
``transformers``); they are imported when a baseline is built.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["WORDS", "hf_baseline", "make_sentences", "sentence_transformers_baseline"]

Embed = Callable[[list[str]], np.ndarray]

WORDS = (
    "attention model query key value softmax weights layer network token sentence encoder "
    "decoder the a of to and in is learns every position vector matrix head residual norm "
    "training data language translation image patch transformer recurrent gradient loss"
).split()


def make_sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` seeded sentences of 3 to 60 words from :data:`WORDS`."""
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 60))).capitalize() + "."
        for _ in range(n)
    ]


def sentence_transformers_baseline(folder: str, batch_size: int) -> tuple[str, Embed]:
    """``(name, embed)`` with sentence-transformers, or :func:`hf_baseline` if not installed.

    Shapes: embed maps N texts -> (N, D) unit vectors.
    """
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return hf_baseline(folder, batch_size)
    model = SentenceTransformer(folder, device="cpu")

    def run(texts: list[str]) -> np.ndarray:
        return model.encode(texts, batch_size=batch_size, convert_to_numpy=True)

    return "sentence-transformers", run


def hf_baseline(folder: str, batch_size: int) -> tuple[str, Embed]:
    """``(name, embed)``: a ``transformers`` BertModel with masked-mean pooling, sorted by length
    as sentence-transformers does.

    Shapes: embed maps N texts -> (N, D) unit vectors.
    """
    from transformers import AutoTokenizer, BertModel

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = BertModel.from_pretrained(folder).eval()

    def run(texts: list[str]) -> np.ndarray:
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                index = order[start : start + batch_size]
                enc = tokenizer(
                    [texts[i] for i in index],
                    padding=True,
                    truncation=True,
                    max_length=256,
                    return_tensors="pt",
                )
                hidden = model(**enc).last_hidden_state  # (B, S, D)
                mask = enc["attention_mask"].unsqueeze(-1).float()  # (B, S, 1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, D)
                out[index] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out

    return "transformers BertModel + mean pooling (sentence-transformers not installed)", run

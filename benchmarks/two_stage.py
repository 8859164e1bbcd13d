"""The two-stage process inside attnkit on SST-2: pretrain a language model on the training
sentences without their labels, fine-tune it on the labels, and compare with the same model
fine-tuned from scratch (``finetune.init=random``) for the same fine-tuning time (issue 16).

    python benchmarks/two_stage.py [--pretrain 3m] [--finetune 3m] [--threads 2]

Every stage is the real command line (`attnkit train-lm`, `attnkit finetune`,
`attnkit evaluate`); the dev accuracies and the commands are printed. See benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from attnkit.files import scratch_dir

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"


def attnkit(*argv: str) -> str:
    cmd = [sys.executable, "-m", "attnkit.cli", *argv]
    print("$ attnkit", " ".join(argv), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--pretrain", default="3m")
    parser.add_argument("--finetune", default="3m")
    parser.add_argument("--threads", default="2")
    args = parser.parse_args()
    work = scratch_dir("attnkit-two-stage-")
    rows = (args.data / "train.tsv").read_text(encoding="utf-8").splitlines()
    header = rows[0].split("\t")
    column = header.index("sentence")
    sentences = [r.split("\t")[column] for r in rows[1:]]
    text = work / "sst2-sentences.txt"
    text.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    print(f"{len(sentences)} unlabelled training sentences, {text.stat().st_size:,} bytes")
    out = attnkit(
        "train-lm",
        "--data",
        str(text),
        "--run",
        str(work / "lm"),
        "--preset",
        "char-small",
        "--time-budget",
        args.pretrain,
        "--threads",
        args.threads,
        "--no-progress",
        "--sample-tokens",
        "60",
    )
    print(out.strip())
    scores = {}
    for init in ("pretrained", "random"):
        run = work / f"ft-{init}"
        out = attnkit(
            "finetune",
            "--model",
            str(work / "lm"),
            "--data",
            str(args.data / "train.tsv"),
            "--valid",
            str(args.data / "dev.tsv"),
            "--run",
            str(run),
            "--time-budget",
            args.finetune,
            "--threads",
            args.threads,
            "--no-progress",
            "--set",
            f"finetune.init={init}",
        )
        print(out.strip().splitlines()[-3:])
        out = attnkit("evaluate", "--run", str(run), "--data", str(args.data / "dev.tsv"))
        scores[init] = json.loads(out.strip().splitlines()[-1])
        print(f"{init}: {scores[init]}")
    print(
        f"\ndev accuracy: pretrained LM then fine-tuned {scores['pretrained']['accuracy']:.4f}; "
        f"same model from scratch {scores['random']['accuracy']:.4f}"
    )


if __name__ == "__main__":
    main()

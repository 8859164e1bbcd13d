"""``attnkit export``: a trained model to another inference engine (CTranslate2, ONNX)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from attnkit.cli.options import add_checkpoint_option

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to CTranslate2 (translation) or ONNX (ViT, pretrained encoders)",
        description="Export a translation run to a CTranslate2 model folder (default "
        "RUN/export/ctranslate2; use it with `attnkit translate --engine ctranslate2` or "
        "`attnkit serve --engine ctranslate2`), or a ViT run (default RUN/export/onnx) or a "
        "pretrained sentence encoder (--model) to ONNX, checked against PyTorch with "
        "onnxruntime (`--engine onnxruntime` of classify, embed and serve).",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="run folder (translation or ViT)")
    source.add_argument(
        "--model", help="pretrained encoder for --format onnx: minilm or a checkpoint folder"
    )
    p.add_argument("--format", required=True, choices=("ctranslate2", "onnx"))
    p.add_argument(
        "--quantization",
        "--quantize",
        dest="quantization",
        default="float32",
        choices=("float32", "int8", "int8_float32"),
        help="CTranslate2 weight type (default float32)",
    )
    p.add_argument(
        "--out",
        help="output folder (default RUN/export/<format>; --model: <name>-onnx); an existing one "
        "must be empty or an earlier export of the same format, which is replaced",
    )
    add_checkpoint_option(p)
    p.set_defaults(func=cmd_export, checkpoint=None)  # None: not given (best for --run)


def _check_run_folder(run: str) -> None:
    """One-line ValueError naming --run when ``run`` is not a folder holding a config.json."""
    path = Path(run)
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "no such folder"
        raise ValueError(f"--run {run}: {what}; pass the folder of a training run")
    if not (path / "config.json").is_file():
        raise ValueError(
            f"--run {run}: not a run folder (no config.json); pass the folder of a training run"
        )


def _export_ct2(args: argparse.Namespace, checkpoint: str) -> None:
    from attnkit.export.ct2 import export_ctranslate2

    if args.run is None:
        raise ValueError("--format ctranslate2 exports a translation run: pass --run DIR")
    _check_run_folder(args.run)
    out = export_ctranslate2(args.run, args.out, args.quantization, checkpoint=checkpoint)
    print(f"CTranslate2 model ({args.quantization}) written to {out}")
    # The translator finds an export in RUN/export/ctranslate2 or in the folder itself.
    where = args.run if args.out is None else out
    print(f"use it: attnkit translate --run {where} --engine ctranslate2 ...")


def _export_onnx(args: argparse.Namespace, checkpoint: str) -> None:
    from attnkit.export.onnx import META_FILE, export_onnx, export_run

    if args.quantization != "float32":
        raise ValueError("--quantization applies to --format ctranslate2 only")
    if args.run is not None:
        _check_run_folder(args.run)
        out = export_run(args.run, args.out, checkpoint=checkpoint)
    else:
        if args.checkpoint is not None:
            raise ValueError(
                "--checkpoint chooses a checkpoint of --run; a pretrained encoder (--model) has "
                "one set of weights: drop --checkpoint"
            )
        out = export_onnx(args.model, args.out)
    meta = json.loads((out / META_FILE).read_text(encoding="utf-8"))
    print(
        f"ONNX {meta['kind']} model written to {out / 'model.onnx'}; onnxruntime vs PyTorch: "
        f"max abs difference {meta.get('max_abs_diff', float('nan')):.3g}"
    )


def cmd_export(args: argparse.Namespace) -> int:
    checkpoint = args.checkpoint or "best"
    if args.format == "ctranslate2":
        _export_ct2(args, checkpoint)
    else:
        _export_onnx(args, checkpoint)
    return 0

"""``attnkit export``: a trained model to another inference engine (CTranslate2, ONNX)."""

from __future__ import annotations

import argparse
import json
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
        "--out", help="output folder (default RUN/export/<format>; --model: <name>-onnx)"
    )
    add_checkpoint_option(p)
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    if args.format == "ctranslate2":
        if args.run is None:
            raise ValueError("--format ctranslate2 exports a translation run: pass --run DIR")
        from attnkit.export.ct2 import export_ctranslate2

        out = export_ctranslate2(args.run, args.out, args.quantization, checkpoint=args.checkpoint)
        print(f"CTranslate2 model ({args.quantization}) written to {out}")
        # The translator finds an export in RUN/export/ctranslate2 or in the folder itself.
        where = args.run if args.out is None else out
        print(f"use it: attnkit translate --run {where} --engine ctranslate2 ...")
        return 0
    if args.quantization != "float32":
        raise ValueError("--quantization applies to --format ctranslate2 only")
    from attnkit.export.onnx import META_FILE, export_onnx

    out = export_onnx(args.run or args.model, args.out, checkpoint=args.checkpoint)
    meta = json.loads((out / META_FILE).read_text(encoding="utf-8"))
    print(
        f"ONNX {meta['kind']} model written to {out / 'model.onnx'}; onnxruntime vs PyTorch: "
        f"max abs difference {meta.get('max_abs_diff', float('nan')):.3g}"
    )
    return 0

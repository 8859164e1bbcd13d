"""``attnkit finetune`` and ``attnkit predict``; the text-classification side of ``attnkit
evaluate``, ``attnkit attention`` and ``attnkit embed`` (those commands dispatch here on the
run's kind)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from attnkit.cli.options import (
    add_checkpoint_option,
    add_device_option,
    add_run_options,
    apply_threads,
    input_chunks,
    interrupted,
    positive_float,
    positive_int,
    progress_wanted,
    resume_overrides,
    run_flags,
)

__all__ = [
    "register",
    "resolve_textclass_config",
    "evaluate_textclass",
    "attention_textclass",
    "embed_textclass",
]

#: Flags that set a config key (flag -> section.key), for the config and for --resume's check.
_FLAGS = {
    "batch_size": "data.batch_size",
    "max_length": "data.max_length",
    "text_column": "data.text_column",
    "label_column": "data.label_column",
    "lr": "train.lr",
    "eval_every": "train.eval_every",
}
#: Flags that choose the backbone, data and problem instead, and where config.json keeps them
#: (a pair: it keeps the converted value; None: not comparable).
_CHOSEN = {
    "model": "backbone.source",
    "data": "data.source",
    "valid": "data.valid",
    "regression": ("model.problem", lambda on: "regression" if on else None),
}


def register(sub: Any) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a pretrained encoder (or an attnkit language model) on labelled text",
        description="Train a classification (or regression) head on a pretrained model, the "
        "whole model fine-tuned, into a run folder; print the class counts, the validation "
        "scores and where the best checkpoint is. --data and --valid are TSV or CSV files "
        "with a header (label<TAB>sentence or sentence<TAB>label) or JSON lines.",
    )
    p.add_argument(
        "--model",
        help="minilm (all-MiniLM-L6-v2), a Hugging Face BERT-family folder, or an attnkit "
        "language-model run folder (attnkit train-lm)",
    )
    p.add_argument("--data", help="training file (.tsv, .csv or .jsonl)")
    p.add_argument("--valid", help="validation file (default: a held-out 10%% of --data)")
    p.add_argument("--run", help="run folder (default: runs/<data>-finetune)")
    p.add_argument("--text-column", help="text column or key (default: sentence or text)")
    p.add_argument("--label-column", help="label column or key (default: label)")
    p.add_argument(
        "--regression",
        action="store_true",
        help="numeric labels, one output, MSE (default: decided from the labels)",
    )
    add_run_options(p, set_example="finetune.layer_lr_decay=0.9", budget_example="15m")
    p.add_argument(
        "--batch-size", type=positive_int, help="sentences per optimizer step (default 32)"
    )
    p.add_argument("--max-length", type=positive_int, help="tokens per text, longer ones cut (64)")
    p.add_argument("--lr", type=positive_float, help="peak learning rate (default 1e-4)")
    p.add_argument(
        "--eval-every",
        type=positive_int,
        metavar="STEPS",
        help="validate (and keep the best checkpoint) every STEPS updates (default 500)",
    )
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser(
        "predict",
        help="label texts with a fine-tuned run",
        description="Print the label and its probability (tab-separated) for each text given "
        "as an argument or line on stdin (read and answered in chunks); a blank line gives a "
        "blank line. Regression runs print the value.",
    )
    p.add_argument("texts", nargs="*", help="texts (default: read lines from stdin)")
    p.add_argument("--run", required=True, help="run folder of attnkit finetune")
    p.add_argument("--json", action="store_true", help="one JSON object per text")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=32,
        help="texts per forward pass (default 32, as embed)",
    )
    add_checkpoint_option(p)
    add_device_option(p)
    p.set_defaults(func=cmd_predict)


def resolve_textclass_config(args: argparse.Namespace) -> Any:
    """Preset for the backbone kind <- config file <- --set overrides <- explicit flags."""
    from attnkit.config import ConfigError
    from attnkit.textclass.config import (
        backbone_kind,
        textclass_config_from_dict,
        textclass_preset,
    )
    from attnkit.training.runs import naming_config_file, resolve_config

    if not args.model or not args.data:
        raise ConfigError("a new fine-tuning run needs --model and --data (or --resume)")
    preset = textclass_preset(backbone_kind(args.model))
    preset["backbone"] = {"source": args.model}
    preset["data"]["source"] = args.data
    if args.valid:
        preset["data"]["valid"] = args.valid
    flags = {
        **run_flags(args, **_FLAGS),
        "model.problem": "regression" if args.regression else None,
    }
    merged = resolve_config(preset, config_file=args.config, overrides=args.set, flags=flags)
    with naming_config_file(args.config, args.set, flags):
        return textclass_config_from_dict(merged)


def _default_run(args: argparse.Namespace) -> Path:
    return Path("runs") / f"{Path(args.data or 'text').stem}-finetune"


def cmd_finetune(args: argparse.Namespace) -> int:
    from attnkit.training.launch import relaunch_with_torchrun, under_torchrun

    if args.resume and not args.run:
        raise ValueError("--resume needs --run DIR")
    run_dir = Path(args.run) if args.run else _default_run(args)
    if args.nproc > 1 and not under_torchrun():
        return relaunch_with_torchrun(args.nproc, args.argv, run_dir=run_dir)

    from attnkit.textclass.classifier import TextClassifier
    from attnkit.textclass.run import train_textclass, validation_texts
    from attnkit.training import distributed as dist
    from attnkit.training.runfolder import find_checkpoint

    apply_threads(args)
    cfg = None if args.resume else resolve_textclass_config(args)
    overrides = resume_overrides(args, run_dir, fixed={**_FLAGS, **_CHOSEN})
    result, classifier = train_textclass(
        cfg,
        run_dir,
        resume=args.resume,
        train_overrides=overrides,
        progress=progress_wanted(args),
        report=print,
    )
    if not dist.is_main():
        return 0
    print(
        f"run: {run_dir}  ({result.steps} steps, {result.epochs_done} epochs, "
        f"{result.seconds:.0f} s, {result.tokens_per_second:.1f} sentences/s, "
        f"stopped: {result.stopped_because})"
    )
    if interrupted(result, "finetune", run_dir):
        return 130
    if result.last_metrics:
        print("validation: " + "  ".join(f"{k}={v:.4g}" for k, v in result.last_metrics.items()))
    metric, _ = classifier.config.metric()
    best = TextClassifier.load(run_dir, "best", device=str(classifier.device))
    scores = best.evaluate(validation_texts(best.config))
    summary = _summary(scores, best.problem)
    path = find_checkpoint(run_dir, "best", best.config.train.keep_best)
    print(f"best checkpoint: {path} (by validation {metric}; used by predict): {summary}")
    return 0


def _summary(scores: dict[str, Any], problem: str) -> str:
    if problem == "regression":
        return (
            f"pearson={scores['pearson']:.4f}  spearman={scores['spearman']:.4f}  "
            f"mse={scores['loss']:.4g}  ({scores['n']} texts)"
        )
    return (
        f"accuracy={scores['accuracy']:.2%}  macro_f1={scores['macro_f1']:.4f}  "
        f"loss={scores['loss']:.4f}  ({scores['n']} texts)"
    )


def cmd_predict(args: argparse.Namespace) -> int:
    from attnkit.textclass.classifier import TextClassifier

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    classifier = TextClassifier.load(args.run, checkpoint=args.checkpoint, device=args.device)
    classifier.batch_size = args.batch_size
    for chunk in input_chunks(args.texts):  # stdin is read and answered chunk by chunk
        real = [t for t in chunk if t.strip()]
        found = iter(classifier.predict(real) if real else [])
        for text in chunk:
            if not text.strip():
                print()
                continue
            p = next(found)
            if args.json:
                row: dict[str, Any] = {"text": text}
                if p.value is not None:
                    row["value"] = round(p.value, 6)
                else:
                    row["label"] = p.label
                    pairs = zip(classifier.labels, p.probs, strict=True)
                    row["probs"] = {name: round(x, 6) for name, x in pairs}
                print(json.dumps(row, ensure_ascii=False))
            elif p.value is not None:
                print(f"{p.value:.6g}")
            else:
                print(f"{p.label}\t{p.probability:.4f}")
        sys.stdout.flush()
    return 0


def evaluate_textclass(args: argparse.Namespace) -> int:
    """``attnkit evaluate --run DIR --data FILE`` for a fine-tuning run: accuracy, macro-F1 and
    the confusion matrix (regression: Pearson and Spearman), then one JSON line."""
    from attnkit.data.errors import advise
    from attnkit.textclass.classifier import TextClassifier
    from attnkit.textclass.data import ColumnError

    classifier = TextClassifier.load(args.run, checkpoint=args.checkpoint, device=args.device)
    with advise(
        ColumnError,
        "the first line must be a header that names the columns, as in the run's training file",
    ):
        scores = classifier.evaluate(args.data)
    print(f"{args.data}: " + _summary(scores, classifier.problem))
    if classifier.problem == "classification":
        names = classifier.labels
        width = max(6, *(len(n) for n in names))
        print("confusion matrix (rows: true label, columns: predicted):")
        print(" " * width + "".join(f"  {n:>{width}}" for n in names))
        for name, row in zip(names, scores["confusion"], strict=True):
            print(f"{name:>{width}}" + "".join(f"  {c:>{width}}" for c in row))
    print(json.dumps(scores))
    return 0


def attention_textclass(args: argparse.Namespace, out: Path) -> int:
    """``attnkit attention --run DIR TEXT`` for a fine-tuning run: the fine-tuned backbone's
    self-attention, every layer and head."""
    from attnkit.cli.viz import save_self_attention
    from attnkit.textclass.classifier import TextClassifier

    classifier = TextClassifier.load(args.run, checkpoint=args.checkpoint, device=args.device)
    tokens, per_layer = classifier.attention(args.sentence)
    (p,) = classifier.predict([args.sentence])
    shown = f"{p.value:.4g}" if p.value is not None else f"{p.label} ({p.probability:.0%})"
    print(f"{args.sentence}  =>  {shown}")
    return save_self_attention(tokens, per_layer, out, args.dpi)


def embed_textclass(args: argparse.Namespace, texts: list[str]) -> Any:
    """Sentence embeddings of ``texts`` from a fine-tuning run's backbone (unit length)."""
    from attnkit.textclass.classifier import TextClassifier

    if getattr(args, "engine", "attnkit") != "attnkit" or getattr(args, "quantize", None):
        raise ValueError("--engine and --quantize apply to --model, not to --run")
    device = "cpu" if args.device == "auto" else args.device
    classifier = TextClassifier.load(
        args.run, checkpoint=getattr(args, "checkpoint", "best"), device=device
    )
    return classifier.embed(texts, batch_size=args.batch_size)

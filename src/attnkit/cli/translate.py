"""``attnkit train``, ``attnkit translate`` and ``attnkit evaluate``."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from attnkit.cli.options import add_checkpoint_option, add_threads_option, apply_threads

__all__ = ["register", "parse_duration", "resolve_run_config"]


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``20m``, ``1.5h`` -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}; use e.g. 90s, 20m or 1h")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"s": 1, "m": 60, "h": 3600}[unit]


def register(sub: Any) -> None:
    p = sub.add_parser("train", help="train a translator (default: Transformer on dates)",
                       description="Train a translation model into a run folder.")
    p.add_argument("--data", default="dates",
                   help="dates (bundled, offline), fra-eng (downloaded once), or a TSV/zip path")
    p.add_argument("--valid", help="validation TSV (default: a held-out split of --data)")
    p.add_argument("--model", default="transformer", choices=("transformer", "bahdanau"))
    p.add_argument("--run", help="run folder (default: runs/<data>-<model>)")
    p.add_argument("--config", help="TOML/JSON file with model/data/train/decode sections")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a setting, e.g. --set model.num_encoder_layers=2")
    p.add_argument("--epochs", type=int)
    p.add_argument("--time-budget", type=parse_duration, metavar="DURATION",
                   help="stop training after this long (e.g. 20m) and evaluate")
    p.add_argument("--max-tokens", type=int, help="padded tokens per batch")
    p.add_argument("--eval-every", type=int, metavar="STEPS",
                   help="also validate (and checkpoint) every STEPS updates, not only per epoch")
    p.add_argument("--device", help="auto (default), cpu or cuda")
    add_threads_option(p)
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", action="store_true", help="continue the run in --run exactly")
    p.add_argument("--nproc", type=int, default=1,
                   help="launch N local processes with torchrun (DDP)")
    p.add_argument("--samples", type=int, default=5, help="sample translations to print")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("average", help="average the weights of a run's checkpoints",
                       description="Average the weights of the best N (by validation BLEU) or "
                       "the N most recent of a run's kept checkpoints into a new checkpoint; "
                       "use it with --checkpoint NAME in translate and evaluate.")
    p.add_argument("--run", required=True, help="run folder")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--best", type=int, metavar="N",
                       help="the N best checkpoints (default: all kept best ones)")
    which.add_argument("--last", type=int, metavar="N",
                       help="the N most recent kept checkpoints: last, then recent-* (kept "
                       "with --set train.keep_last=K) and best-* by step")
    p.add_argument("--name", default="averaged",
                   help="checkpoint name, written to RUN/checkpoints/NAME (default: averaged)")
    p.set_defaults(func=cmd_average)

    p = sub.add_parser("translate", help="translate sentences with a trained run",
                       description="Translate sentences given as arguments or lines on stdin.")
    p.add_argument("sentences", nargs="*", help="sentences (default: read lines from stdin)")
    p.add_argument("--run", required=True, help="run folder")
    p.add_argument("--beam", type=int, help="beam size (1 = greedy; default from the run)")
    p.add_argument("--n-best", type=int, default=1, help="print the N best translations")
    add_checkpoint_option(p)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser("evaluate", help="BLEU/chrF of a run on a TSV of pairs",
                       description="Translate the sources of a TSV and score them with "
                       "sacrebleu (all references of each distinct source).")
    p.add_argument("--run", required=True)
    p.add_argument("--data", required=True, help="TSV of source<TAB>reference pairs")
    p.add_argument("--beam", type=int)
    add_checkpoint_option(p)
    p.add_argument("--out", help="hypotheses file (default: RUN/hyps-<data name>.txt)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_evaluate)


def resolve_run_config(args: argparse.Namespace) -> Any:
    """Preset for (data, model) <- config file <- --set overrides <- explicit flags."""
    from attnkit.config import apply_overrides, merge_config_file
    from attnkit.tasks.presets import preset_for
    from attnkit.tasks.runs import run_config_from_dict

    merged: dict[str, Any] = preset_for(args.data, args.model)
    merged["data"]["source"] = args.data
    if args.valid:
        merged["data"]["valid"] = args.valid
    if args.config:
        merge_config_file(merged, args.config)
    merged = apply_overrides(merged, args.set)
    for flag, section, key in (("epochs", "train", "epochs"),
                               ("time_budget", "train", "time_budget"),
                               ("eval_every", "train", "eval_every"),
                               ("max_tokens", "train", "max_tokens"),
                               ("device", "train", "device"), ("seed", "train", "seed")):
        if getattr(args, flag, None) is not None:
            merged[section][key] = getattr(args, flag)
    merged["model_type"] = args.model
    return run_config_from_dict(merged)


def _default_run(args: argparse.Namespace) -> Path:
    name = Path(args.data).stem if args.data not in ("dates", "fra-eng") else args.data
    return Path("runs") / f"{name}-{args.model}"


def cmd_train(args: argparse.Namespace) -> int:
    from attnkit.training.launch import relaunch_with_torchrun, under_torchrun

    run_dir = Path(args.run) if args.run else _default_run(args)
    if args.nproc > 1 and not under_torchrun():
        return relaunch_with_torchrun(args.nproc, args.argv)
    from attnkit.tasks.runs import train_translator
    from attnkit.training import distributed as dist

    apply_threads(args)
    cfg = None if args.resume else resolve_run_config(args)
    overrides = _resume_overrides(args) if args.resume else None
    result, translator = train_translator(cfg, run_dir, resume=args.resume,
                                          progress=not args.no_progress and sys.stderr.isatty(),
                                          train_overrides=overrides)
    if not dist.is_main():
        return 0
    print(f"run: {run_dir}  ({result.steps} steps, {result.epochs_done} epochs, "
          f"{result.seconds:.0f} s, {result.tokens_per_second:.0f} target tokens/s, "
          f"stopped: {result.stopped_because})")
    if result.stopped_because == "interrupted":
        print(f"interrupted: checkpoint saved; continue with: attnkit train --run {run_dir} "
              "--resume", file=sys.stderr)
        return 130
    metrics = result.last_metrics
    if metrics:
        print("validation: " + "  ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    if args.samples > 0:
        from attnkit.tasks.translation import prepare_data

        data = prepare_data(translator.config.data, run_dir, translator.config.data.max_len)
        sources = [s for s, _ in data.valid_refs[: args.samples]]
        refs = [r for _, r in data.valid_refs[: args.samples]]
        for t, ref in zip(translator.translate(sources, beam_size=1), refs, strict=True):
            print(f"  {t.source}  =>  {t.text}    (reference: {ref[0]})")
    return 0


def _resume_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Train settings given on a --resume command line (flags and --set train.KEY=VALUE)."""
    from attnkit.config import ConfigError, apply_overrides

    sets = apply_overrides({}, args.set)
    if set(sets) - {"train"}:
        raise ConfigError(f"--resume can only change train settings, got --set for "
                          f"{sorted(set(sets) - {'train'})}")
    overrides = dict(sets.get("train", {}))
    for flag in ("epochs", "time_budget", "device", "eval_every"):  # those the command has
        if getattr(args, flag, None) is not None:
            overrides[flag] = getattr(args, flag)
    return overrides


def _read_sentences(args: argparse.Namespace) -> list[str]:
    if args.sentences:
        return list(args.sentences)
    if sys.stdin is None or sys.stdin.isatty():
        raise ValueError("no sentences given: pass them as arguments or pipe lines on stdin")
    return [line.rstrip("\n") for line in sys.stdin if line.strip()]


def cmd_translate(args: argparse.Namespace) -> int:
    from attnkit.tasks.runs import Translator

    translator = Translator.load(args.run, checkpoint=args.checkpoint, device=args.device)
    beam = args.beam
    if args.n_best > 1:
        beam = max(beam or translator.config.decode.beam_size, args.n_best)
    results = translator.translate(_read_sentences(args), beam_size=beam, n_best=args.n_best)
    for r in results:
        if args.n_best > 1 and r.alternatives:
            for text, score in r.alternatives[: args.n_best]:
                print(f"{score:.4f}\t{text}")
            print()
        else:
            print(r.text)
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    from attnkit.tasks.runs import average_run_checkpoints

    n = args.best if args.best is not None else args.last
    path, sources = average_run_checkpoints(args.run, "last" if args.last is not None else "best",
                                            n, args.name)
    print(f"averaged {len(sources)} checkpoints ({', '.join(p.name for p in sources)}) into "
          f"{path}")
    print(f"use it: attnkit translate --run {args.run} --checkpoint {args.name} ...")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from attnkit.data.corpora import group_references, read_pairs
    from attnkit.evaluation.metrics import corpus_bleu, corpus_chrf
    from attnkit.tasks.runs import Translator

    pairs = read_pairs(args.data)
    grouped = group_references(pairs)
    translator = Translator.load(args.run, checkpoint=args.checkpoint, device=args.device)
    results = translator.translate([s for s, _ in grouped], beam_size=args.beam)
    hyps = [r.text for r in results]
    refs = [r for _, r in grouped]
    bleu = corpus_bleu(hyps, refs, lowercase=True)
    chrf = corpus_chrf(hyps, refs)
    out = Path(args.out) if args.out else Path(args.run) / f"hyps-{Path(args.data).stem}.txt"
    out.write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    print(f"BLEU = {bleu.score:.2f}   {bleu.signature}")
    print(f"chrF = {chrf.score:.2f}   {chrf.signature}")
    print(f"{len(hyps)} distinct sources ({len(pairs)} pairs); hypotheses written to {out}")
    print(json.dumps({"bleu": bleu.score, "chrf": chrf.score, "sources": len(hyps)}))
    return 0

"""``attnkit train``, ``attnkit translate`` and ``attnkit evaluate``."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from attnkit.cli.options import (
    add_checkpoint_option,
    add_device_option,
    add_run_options,
    apply_threads,
    check_engine_options,
    interrupted,
    nonnegative_int,
    positive_int,
    progress_wanted,
    refuse_run_kind,
    resume_overrides,
    run_flags,
    text_chunks,
)

__all__ = ["register", "resolve_run_config"]


#: Flags that set a config key (flag -> section.key), for the config and for --resume's check.
_FLAGS = {"eval_every": "train.eval_every", "max_tokens": "train.max_tokens"}
#: Flags that choose the preset and data instead, and where config.json keeps them.
_CHOSEN = {"data": "data.source", "valid": "data.valid", "model": "model_type"}


def register(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a translator (default: Transformer on dates)",
        description="Train a translation model into a run folder.",
    )
    p.add_argument(
        "--data",
        default="dates",
        help="dates (bundled, offline), fra-eng (downloaded once), or a TSV/zip path",
    )
    p.add_argument("--valid", help="validation TSV (default: a held-out split of --data)")
    p.add_argument("--model", default="transformer", choices=("transformer", "bahdanau"))
    p.add_argument("--run", help="run folder (default: runs/<data>-<model>)")
    add_run_options(p, set_example="model.num_encoder_layers=2")
    p.add_argument("--max-tokens", type=positive_int, help="padded tokens per batch")
    p.add_argument(
        "--eval-every",
        type=positive_int,
        metavar="STEPS",
        help="also validate (and checkpoint) every STEPS updates, not only per epoch",
    )
    p.add_argument(
        "--samples", type=nonnegative_int, default=5, help="sample translations to print"
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "average",
        help="average the weights of a run's checkpoints",
        description="Average the weights of the best N (by validation BLEU) or "
        "the N most recent of a run's kept checkpoints into a new checkpoint; "
        "use it with --checkpoint NAME in translate and evaluate.",
    )
    p.add_argument("--run", required=True, help="run folder")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--best",
        type=positive_int,
        metavar="N",
        help="the N best checkpoints (default: all kept best ones)",
    )
    which.add_argument(
        "--last",
        type=positive_int,
        metavar="N",
        help="the N most recent kept checkpoints: last, then recent-* (kept "
        "with --set train.keep_last=K) and best-* by step",
    )
    p.add_argument(
        "--name",
        default="averaged",
        help="checkpoint name, written to RUN/checkpoints/NAME (default: averaged)",
    )
    p.set_defaults(func=cmd_average)

    p = sub.add_parser(
        "translate",
        help="translate sentences with a trained run",
        description="Translate sentences given as arguments, lines of --file, or lines on stdin.",
    )
    p.add_argument(
        "sentences", nargs="*", help="sentences (default: the lines of --file, or of stdin)"
    )
    p.add_argument("--file", help="one text per line; output line N translates input line N")
    p.add_argument("--run", required=True, help="run folder")
    p.add_argument("--beam", type=positive_int, help="beam size (1 = greedy; default from the run)")
    p.add_argument(
        "--n-best",
        type=positive_int,
        default=1,
        help="print up to N best translations, 'score<TAB>text' per line and a blank line after "
        "each sentence's (beam search runs with at least N beams)",
    )
    add_checkpoint_option(p)
    add_device_option(p)
    p.add_argument(
        "--engine",
        default="attnkit",
        choices=("attnkit", "ctranslate2"),
        help="ctranslate2: the model exported by `attnkit export --format ctranslate2` "
        "(RUN/export/ctranslate2, or --run EXPORT_FOLDER), with the run's own tokenization",
    )
    p.add_argument(
        "--quantize",
        choices=("int8",),
        help="dynamic int8 quantization of the Linear layers (CPU, --engine attnkit)",
    )
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser(
        "evaluate",
        help="BLEU/chrF of a run on a TSV of pairs (language models: loss, bpc on a text; "
        "text classifiers: accuracy, macro-F1, confusion matrix)",
        description="Translate the sources of a TSV and score them with "
        "sacrebleu (all references of each distinct source). For a language-model run: "
        "loss, perplexity and bits per character of a text. For a fine-tuned text "
        "classifier (attnkit finetune): accuracy, macro-F1 and the confusion matrix of a "
        "labelled file (regression: Pearson and Spearman).",
    )
    p.add_argument("--run", required=True)
    p.add_argument(
        "--data",
        required=True,
        help="TSV of source<TAB>reference pairs (language models: a text file, a folder of "
        ".txt files, or tinyshakespeare; text classifiers: a labelled .tsv/.csv/.jsonl)",
    )
    p.add_argument("--beam", type=positive_int)
    add_checkpoint_option(p)
    p.add_argument(
        "--out",
        help="hypotheses file (default: RUN/hyps-<data name>.txt; -<checkpoint> added to the "
        "name for another checkpoint than best)",
    )
    add_device_option(p)
    p.set_defaults(func=cmd_evaluate)


def resolve_run_config(args: argparse.Namespace) -> Any:
    """Preset for (data, model) <- config file <- --set overrides <- explicit flags."""
    from attnkit.config import ConfigError
    from attnkit.training.runs import naming_config_file, resolve_config
    from attnkit.translation.config import preset_for, run_config_from_dict

    preset = preset_for(args.data, args.model)
    preset["data"]["source"] = args.data
    if args.valid:
        preset["data"]["valid"] = args.valid
    flags = run_flags(args, **_FLAGS)
    merged = resolve_config(
        preset,
        config_file=args.config,
        overrides=args.set,
        flags=flags,
    )
    given = merged.get("model_type", args.model)
    if given != args.model:  # the preset above was chosen by --model
        raise ConfigError(
            f"model_type {given!r} in --config/--set: choose the model with --model "
            "(transformer or bahdanau) instead"
        )
    merged["model_type"] = args.model
    with naming_config_file(args.config, args.set, flags):
        return run_config_from_dict(merged)


def _default_run(args: argparse.Namespace) -> Path:
    name = Path(args.data).stem if args.data not in ("dates", "fra-eng") else args.data
    return Path("runs") / f"{name}-{args.model}"


def cmd_train(args: argparse.Namespace) -> int:
    from attnkit.training.launch import relaunch_with_torchrun, under_torchrun

    run_dir = Path(args.run) if args.run else _default_run(args)
    if args.nproc > 1 and not under_torchrun():
        return relaunch_with_torchrun(args.nproc, args.argv, run_dir=run_dir)
    from attnkit.training import distributed as dist
    from attnkit.translation.run import train_translator

    apply_threads(args)
    cfg = None if args.resume else resolve_run_config(args)
    overrides = resume_overrides(args, run_dir, fixed={**_FLAGS, **_CHOSEN})
    result, translator = train_translator(
        cfg, run_dir, resume=args.resume, progress=progress_wanted(args), train_overrides=overrides
    )
    if not dist.is_main():
        return 0
    print(
        f"run: {run_dir}  ({result.steps} steps, {result.epochs_done} epochs, "
        f"{result.seconds:.0f} s, {result.tokens_per_second:.0f} target tokens/s, "
        f"stopped: {result.stopped_because})"
    )
    if interrupted(result, "train", run_dir):
        return 130
    metrics = result.last_metrics
    if metrics:
        print("validation: " + "  ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    if args.samples > 0:
        from attnkit.translation.task import prepare_data

        data = prepare_data(translator.config.data, run_dir, translator.config.data.max_len)
        sources = [s for s, _ in data.valid_refs[: args.samples]]
        refs = [r for _, r in data.valid_refs[: args.samples]]
        for t, ref in zip(translator.translate(sources, beam_size=1), refs, strict=True):
            print(f"  {t.source}  =>  {t.text}    (reference: {ref[0]})")
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    from attnkit.translation.translator import Translator

    check_engine_options(
        args.engine, checkpoint=args.checkpoint, quantize=args.quantize, device=args.device
    )
    if args.engine == "ctranslate2":
        from attnkit.export.ct2 import CTranslate2Translator

        translator: Translator = CTranslate2Translator.load(args.run, device=args.device)
    else:
        translator = Translator.load(
            args.run, checkpoint=args.checkpoint, device=args.device, quantize=args.quantize
        )
    beam = args.beam
    if args.n_best > 1:
        beam = max(beam or translator.config.decode.beam_size, args.n_best)
    for chunk in text_chunks(args.sentences, args.file):  # read and answered chunk by chunk
        results = translator.translate(chunk, beam_size=beam, n_best=args.n_best)
        for r in results:
            if args.n_best > 1 and r.alternatives:
                for text, score in r.alternatives[: args.n_best]:
                    print(f"{score:.4f}\t{text}")
                print()
            else:
                print(r.text)
        sys.stdout.flush()
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    from attnkit.translation.run import average_run_checkpoints

    n = args.best if args.best is not None else args.last
    path, sources = average_run_checkpoints(
        args.run, "last" if args.last is not None else "best", n, args.name
    )
    what = "checkpoint" if len(sources) == 1 else "checkpoints"
    print(f"averaged {len(sources)} {what} ({', '.join(p.name for p in sources)}) into {path}")
    print(f"use it: attnkit translate --run {args.run} --checkpoint {args.name} ...")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from attnkit.training.runfolder import run_kind

    kind = run_kind(args.run)
    given = [flag for flag, value in (("--beam", args.beam), ("--out", args.out)) if value]
    if kind in ("lm", "textclass") and given:  # (was: ignored without a word)
        from attnkit.training.runfolder import describe_kind

        raise ValueError(
            f"{' and '.join(given)} apply to translation runs only; {args.run} is "
            f"{describe_kind(kind)}: leave {'them' if len(given) > 1 else 'it'} out"
        )
    if kind == "lm":
        from attnkit.cli.lm import evaluate_lm

        return evaluate_lm(args)
    if kind == "textclass":
        from attnkit.cli.textclass import evaluate_textclass

        return evaluate_textclass(args)
    if kind != "translation":  # before the data is read as translation pairs
        refuse_run_kind(
            args.run, kind, "evaluate", "translation, language-model and text-classification runs"
        )
    from attnkit.data.corpora import group_references, read_pairs
    from attnkit.evaluation.metrics import corpus_bleu, corpus_chrf
    from attnkit.translation.translator import Translator

    pairs = read_pairs(args.data, hint="pass --data a file of source<TAB>reference lines")
    grouped = group_references(pairs)
    translator = Translator.load(args.run, checkpoint=args.checkpoint, device=args.device)
    results = translator.translate([s for s, _ in grouped], beam_size=args.beam)
    hyps = [r.text for r in results]
    refs = [r for _, r in grouped]
    bleu = corpus_bleu(hyps, refs)
    bleu_lc = corpus_bleu(hyps, refs, lowercase=True)
    chrf = corpus_chrf(hyps, refs)
    # (per checkpoint: evaluating another one does not overwrite the best one's hypotheses)
    tag = re.sub(r"[^\w.+-]+", "_", Path(args.checkpoint).resolve().name).strip("._")
    which = "" if args.checkpoint == "best" else f"-{tag or 'checkpoint'}"
    out = Path(args.out) if args.out else Path(args.run) / f"hyps-{Path(args.data).stem}{which}.txt"
    out.write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    print(f"BLEU = {bleu.score:.2f}   {bleu.signature}")
    print(f"BLEU (case-insensitive) = {bleu_lc.score:.2f}   {bleu_lc.signature}")
    print(f"chrF = {chrf.score:.2f}   {chrf.signature}")
    beam = translator.config.decode.beam_size if args.beam is None else args.beam
    print(
        f"{len(hyps)} distinct sources ({len(pairs)} pairs), checkpoint {args.checkpoint}, "
        f"beam {beam}; hypotheses written to {out}"
    )
    scores = {"bleu": bleu.score, "bleu_lc": bleu_lc.score, "chrf": chrf.score}
    print(json.dumps({**scores, "sources": len(hyps), "checkpoint": args.checkpoint, "beam": beam}))
    return 0

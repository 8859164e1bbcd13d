"""``attnkit train-lm`` and ``attnkit generate``; the language-model side of ``attnkit
evaluate``, ``attnkit attention`` and ``attnkit report`` (those commands dispatch here on the
run's kind)."""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any

from attnkit.cli.options import (
    add_checkpoint_option,
    add_device_option,
    add_run_options,
    apply_threads,
    input_lines,
    interrupted,
    nonnegative_float,
    nonnegative_int,
    positive_int,
    probability,
    progress_wanted,
    resume_overrides,
    run_flags,
)

__all__ = ["register", "resolve_lm_config", "evaluate_lm", "attention_lm", "report_lm"]


#: Flags that set a config key (flag -> section.key), for the config and for --resume's check.
_FLAGS = {
    "batch_size": "data.batch_size",
    "block_size": "data.block_size",
    "eval_every": "train.eval_every",
}
#: Flags that choose the preset, data and start instead, and where config.json keeps them
#: (None: not comparable).
_CHOSEN = {"data": "data.source", "preset": None, "init_from": "init_from"}


def register(sub: Any) -> None:
    from attnkit.lm.config import LM_PRESETS

    p = sub.add_parser(
        "train-lm",
        help="train a decoder-only language model on text (default: tiny-shakespeare, chars)",
        description="Train a GPT-style language model into a run folder and print its "
        "validation loss, bits per character and a sample. --data tinyshakespeare is "
        "downloaded once; a FILE is UTF-8 text; a FOLDER holds .txt files.",
    )
    p.add_argument(
        "--data",
        default="tinyshakespeare",
        help="tinyshakespeare (default), a UTF-8 text file, or a folder of .txt files",
    )
    p.add_argument("--run", help="run folder (default: runs/<data>-lm)")
    p.add_argument(
        "--preset",
        default="char-small",
        choices=sorted(LM_PRESETS),
        help="char-small (CPU minutes, default), char-gpu, bpe-gpu (GPU, untuned)",
    )
    p.add_argument(
        "--init-from",
        metavar="RUN",
        help="continued pretraining: start from this LM run's best weights and "
        "tokenizer (its model config is used)",
    )
    add_run_options(
        p, set_example="model.num_layers=6 --set data.tokenizer=bpe", budget_example="150s"
    )
    p.add_argument("--batch-size", type=positive_int, help="windows per optimizer step")
    p.add_argument(
        "--block-size", type=positive_int, help="tokens per window (the model's context)"
    )
    p.add_argument(
        "--eval-every",
        type=positive_int,
        metavar="STEPS",
        help="also validate (and checkpoint) every STEPS updates",
    )
    p.add_argument(
        "--sample-tokens",
        type=nonnegative_int,
        default=200,
        help="tokens of the sample printed at the end (0: none)",
    )
    p.set_defaults(func=cmd_train_lm)

    p = sub.add_parser(
        "generate",
        help="continue a prompt with a trained language model (streams to stdout)",
        description="Print the continuation of a prompt (argument, or stdin when none is given) "
        "token by token as it is generated. --temperature 0 is greedy decoding.",
    )
    p.add_argument("prompt", nargs="?", help="text to continue (default: stdin; '' = a new line)")
    p.add_argument("--run", required=True, help="run folder of a language model")
    p.add_argument("--max-new-tokens", type=positive_int, default=200)
    p.add_argument("--temperature", type=nonnegative_float, default=1.0, help="0 = greedy")
    p.add_argument("--top-k", type=positive_int, help="sample among the K most probable tokens")
    p.add_argument("--top-p", type=probability, help="nucleus sampling probability in (0, 1]")
    p.add_argument("--seed", type=int, help="seed of the sampling (same seed, same text)")
    p.add_argument(
        "--num-samples",
        type=positive_int,
        default=1,
        help="continuations to print (sample i uses seed + i)",
    )
    p.add_argument(
        "--stop",
        action="append",
        default=[],
        metavar="STR",
        help="end a continuation before this string (repeatable; \\n and \\t are a line "
        "break and a tab, e.g. --stop '\\n\\n' ends at a blank line)",
    )
    add_checkpoint_option(p)
    add_device_option(p)
    p.set_defaults(func=cmd_generate)


def resolve_lm_config(args: argparse.Namespace) -> Any:
    """Preset <- config file <- --set overrides <- explicit flags. With --init-from the model
    comes from that run, and its block size is the default."""
    from attnkit.config import ConfigError
    from attnkit.lm.config import lm_config_from_dict, lm_preset, load_lm_config
    from attnkit.training.runs import naming_config_file, resolve_config

    preset = lm_preset(args.preset)
    preset["data"]["source"] = args.data
    if args.init_from:
        if any(s.strip().startswith("model.") for s in args.set):
            raise ConfigError(
                "--init-from takes the model from RUN; drop the --set model.* options"
            )
        preset["data"]["block_size"] = load_lm_config(args.init_from).data.block_size
    flags = run_flags(args, **_FLAGS)
    merged = resolve_config(
        preset,
        config_file=args.config,
        overrides=args.set,
        flags=flags,
    )
    if args.init_from:
        merged.pop("model", None)
    with naming_config_file(args.config, args.set, flags):
        return lm_config_from_dict(merged)


def cmd_train_lm(args: argparse.Namespace) -> int:
    from attnkit.training.launch import relaunch_with_torchrun, under_torchrun

    name = args.data if args.data == "tinyshakespeare" else Path(args.data).stem
    run_dir = Path(args.run) if args.run else Path("runs") / f"{name}-lm"
    if args.nproc > 1 and not under_torchrun():
        return relaunch_with_torchrun(args.nproc, args.argv, run_dir=run_dir)
    from attnkit.lm.run import train_lm
    from attnkit.training import distributed as dist

    apply_threads(args)
    cfg = None if args.resume else resolve_lm_config(args)
    overrides = resume_overrides(args, run_dir, fixed={**_FLAGS, **_CHOSEN})
    result, generator = train_lm(
        cfg,
        run_dir,
        resume=args.resume,
        progress=progress_wanted(args),
        train_overrides=overrides,
        init_from=args.init_from,
    )
    if not dist.is_main():
        return 0
    print(
        f"run: {run_dir}  ({result.steps} steps, {result.epochs_done} epochs, "
        f"{result.seconds:.0f} s, {result.tokens_per_second:.0f} tokens/s, "
        f"stopped: {result.stopped_because})"
    )
    if interrupted(result, "train-lm", run_dir):
        return 130
    m = result.last_metrics
    if m:
        print(f"validation: loss={m['loss']:.4f}  ppl={m['ppl']:.3f}  bpc={m['bpc']:.4f}")
    if args.sample_tokens > 0:
        sample = generator.complete("", max_new_tokens=args.sample_tokens, seed=0)
        print(f"sample (final weights, temperature 1, seed 0):\n{sample}")
    return 0


def _read_prompt(args: argparse.Namespace) -> str:
    if args.prompt is not None:
        return args.prompt
    if sys.stdin is None or sys.stdin.isatty():
        return ""
    binary = getattr(sys.stdin, "buffer", None)
    if binary is None:
        return sys.stdin.read()
    raw = binary.read()
    lines = input_lines(io.BytesIO(raw))  # not UTF-8: "stdin line N: ...", as translate says
    return "\n".join(lines) + ("\n" if raw.endswith((b"\n", b"\r")) else "")


def cmd_generate(args: argparse.Namespace) -> int:
    from attnkit.lm.generator import Generator

    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {args.num_samples}")
    if "" in args.stop:
        raise ValueError(
            "--stop '': an empty stop string; give the text to stop at, e.g. --stop '\\n\\n'"
        )
    generator = Generator.load(args.run, checkpoint=args.checkpoint, device=args.device)
    prompt = _read_prompt(args)
    stops = [s.replace("\\n", "\n").replace("\\t", "\t") for s in args.stop]
    for i in range(args.num_samples):
        if i:
            print("\n---", flush=True)
        seed = None if args.seed is None else args.seed + i
        pieces = generator.generate(
            prompt, args.max_new_tokens, args.temperature, args.top_k, args.top_p, seed, stops
        )
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
    print(flush=True)
    return 0


def evaluate_lm(args: argparse.Namespace) -> int:
    """``attnkit evaluate --run LMRUN --data FILE``: loss, perplexity and bits per character."""
    from attnkit.lm.data import read_text
    from attnkit.lm.generator import Generator

    text = read_text(args.data)
    generator = Generator.load(args.run, checkpoint=args.checkpoint, device=args.device)
    m = generator.evaluate_text(text, what=str(args.data))
    print(
        f"loss = {m['loss']:.4f} nats/token   perplexity = {m['ppl']:.3f}   "
        f"bpc = {m['bpc']:.4f}   ({len(text)} characters of {args.data})"
    )
    print(
        json.dumps({"loss": m["loss"], "ppl": m["ppl"], "bpc": m["bpc"], "characters": len(text)})
    )
    return 0


def attention_lm(args: argparse.Namespace, out: Path) -> int:
    """``attnkit attention --run LMRUN "text" --out x.png``: every layer and head."""
    from attnkit.cli.viz import save_self_attention
    from attnkit.lm.generator import Generator

    generator = Generator.load(args.run, checkpoint=args.checkpoint, device=args.device)
    tokens, per_layer = generator.attention(args.sentence)
    return save_self_attention(tokens, per_layer, out, args.dpi, " (causal self-attention)")


def report_lm(args: argparse.Namespace) -> int:
    """``attnkit report --run LMRUN``: curves, metrics, sampled continuations and attention."""
    from attnkit.lm.report import lm_report

    path = lm_report(
        args.run,
        args.out,
        prompts=args.sentences or None,
        num_samples=args.samples,
        checkpoint=args.checkpoint,
        device=args.device,
    )
    print(f"report: {path}")
    return 0

"""``attnkit attention``, ``attnkit figures`` and ``attnkit report``: look inside the models."""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from attnkit.cli.options import (
    add_checkpoint_option,
    add_device_option,
    nonnegative_int,
    positive_int,
    refuse_run_kind,
)

__all__ = ["register", "demo_run_config", "DEMO_SENTENCE"]

log = logging.getLogger(__name__)

#: The sentence whose attention ``attnkit figures`` draws (a format of the bundled dates corpus).
DEMO_SENTENCE = "saturday 14 july 1990"

# Tiny models for ``attnkit figures``: well under a minute each on two idle CPU cores, enough to
# translate dates; small batches (many updates) matter more than model size here. The time budget
# caps a run on a busy machine (training then stops early and the figures are drawn anyway).
_DEMO_COMMON = [
    "data.valid_limit=40",
    'train.device="cpu"',
    "train.amp=false",
    "train.keep_best=1",
    "train.log_every=10",
    "train.max_tokens=300",
]
_DEMO_MODELS = {
    "transformer": [
        "model.d_model=64",
        "model.num_heads=4",
        "model.ffn_hidden=128",
        "model.num_encoder_layers=2",
        "model.num_decoder_layers=2",
        "model.dropout=0.0",
        "train.lr=0.003",
        "train.warmup_steps=50",
    ],
    "bahdanau": [
        "model.embed_size=32",
        "model.num_hiddens=64",
        "model.num_layers=1",
        "model.dropout=0.0",
        "train.lr=0.005",
        "train.warmup_steps=20",
    ],
}
_DEMO_SIZE = {
    False: ["data.num_examples=6000", "train.epochs=4", "train.time_budget=120"],
    True: ["data.num_examples=1000", "train.epochs=2", "train.time_budget=20"],
}


def register(sub: Any) -> None:
    p = sub.add_parser(
        "attention",
        help="draw the attention of a translator, language model or text classifier for one text",
        description="Translate one sentence and draw the attention weights of every layer and "
        "head (rows: layers, columns: heads) with the sub-word pieces as tick labels. For a "
        "language-model run: the causal self-attention over the text (--kind self); for a "
        "fine-tuned text classifier or a pretrained encoder (--model): the encoder's "
        "self-attention (--kind encoder). ViT runs: attnkit attention-map.",
    )
    p.add_argument("sentence", help="the source sentence (language models: the text)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--run",
        help="run folder of a trained translator, language model or fine-tuned text classifier",
    )
    source.add_argument(
        "--model",
        help="a pretrained encoder instead: minilm, or a folder with config.json, "
        "model.safetensors and tokenizer.json (draws its self-attention)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output .png/.svg/.pdf; with --kind all (and a "
        "model with several kinds) one file per kind: NAME-encoder.png, ...",
    )
    p.add_argument("--beam", type=positive_int, help="beam size (1 = greedy; default from the run)")
    p.add_argument(
        "--kind",
        default="all",
        choices=("encoder", "self", "cross", "all"),
        help="encoder self-attention, decoder self-attention, cross-attention, or all",
    )
    add_checkpoint_option(p)
    add_device_option(p)
    p.add_argument("--dpi", type=float, default=100)
    p.set_defaults(func=cmd_attention)

    p = sub.add_parser(
        "figures",
        help="regenerate the course's figures (CPU, a few minutes)",
        description="Nadaraya–Watson regression, masked softmax and scoring functions, the "
        "sinusoidal encoding, Bahdanau and Transformer attention on a date translation, and "
        "training curves, as PNGs with an index.md/index.html of captions.",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smaller training runs (seconds, the attention is less crisp)",
    )
    p.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="DIR",
        help="use this trained run for (4) and (5) instead of training demo models "
        "(repeatable: e.g. one Transformer and one Bahdanau run)",
    )
    p.add_argument("--sentence", default=DEMO_SENTENCE, help="sentence for the attention figures")
    p.add_argument("--dpi", type=float, default=100)
    p.set_defaults(func=cmd_figures)

    p = sub.add_parser(
        "report",
        help="self-contained HTML report of a translation or language-model run",
        description="One HTML file (no network, no server): training curves, metrics, an "
        "interactive attention view, and sample translations (translation runs) or sampled "
        "continuations (language-model runs).",
    )
    p.add_argument(
        "sentences",
        nargs="*",
        help="sentences to translate, or prompts to continue (default: the first --samples "
        "validation sources; language models: --samples continuations of an empty prompt)",
    )
    p.add_argument("--run", required=True, help="a translation or language-model run folder")
    p.add_argument("--out", required=True, help="output .html file")
    p.add_argument(
        "--samples",
        type=nonnegative_int,
        default=4,
        help="samples to show when no sentences are given (default 4)",
    )
    p.add_argument("--beam", type=positive_int, help="beam size (default from the run)")
    add_checkpoint_option(p)
    add_device_option(p)
    p.set_defaults(func=cmd_report)


#: What each run kind has to draw besides ``--kind all``, and how to say it.
_ONE_KIND = {
    "lm": ("self", "a language-model run has only causal self-attention"),
    "textclass": ("encoder", "a text-classification run has only encoder self-attention"),
    "model": ("encoder", "a pretrained encoder has only encoder self-attention"),
}


def _check_attention_kind(wanted: str, kind: str) -> None:
    """``--kind`` against the attention a model of ``kind`` (a run kind, or "model") has."""
    from attnkit.config import ConfigError

    has, why = _ONE_KIND.get(kind, (None, ""))
    if has is not None and wanted not in ("all", has):
        raise ConfigError(f"--kind {wanted}: {why}; use --kind {has} or all")


def _translate_one(translator: Any, sentence: str, beam: int | None) -> Any:
    from attnkit.viz.samples import translation_sample

    (result,) = translator.translate([sentence], beam_size=beam, need_weights=True)
    return translation_sample(translator, result)


def cmd_attention(args: argparse.Namespace) -> int:
    from attnkit.training.runfolder import run_kind
    from attnkit.translation.translator import Translator
    from attnkit.viz.figures import attention_figures
    from attnkit.viz.heatmaps import save_figure

    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise ValueError(f"--out must end in .png, .svg or .pdf, got {str(out)!r}")
    if not args.sentence.strip():
        raise ValueError("the sentence is empty: give one to draw its attention")
    kind = "model" if args.model else run_kind(args.run)
    _check_attention_kind(args.kind, kind)
    if args.model:
        return _pretrained_attention(args, out)
    if kind == "lm":
        from attnkit.cli.lm import attention_lm

        return attention_lm(args, out)
    if kind == "textclass":
        from attnkit.cli.textclass import attention_textclass

        return attention_textclass(args, out)
    if kind != "translation":
        refuse_run_kind(
            args.run,
            kind,
            "attention",
            "translation, language-model and text-classification runs (ViT runs: attnkit "
            "attention-map)",
        )
    translator = Translator.load(args.run, checkpoint=args.checkpoint, device=args.device)
    sample = _translate_one(translator, args.sentence, args.beam)
    figures = attention_figures(sample, None if args.kind == "all" else [args.kind], args.dpi)
    print(f"{sample.source}  =>  {sample.translation}")
    for fig in figures:
        kind = fig.name.rsplit("_", 1)[-1]
        path = out if len(figures) == 1 else out.with_name(f"{out.stem}-{kind}{out.suffix}")
        save_figure(fig.figure, path, dpi=args.dpi)
        print(f"{kind}: {path}")
    return 0


def _pretrained_attention(args: argparse.Namespace, out: Path) -> int:
    """Self-attention of every layer and head of a pretrained encoder for one text."""
    import torch

    from attnkit.pretrained import load_pretrained

    device = "cpu" if args.device == "auto" else args.device
    model, tokenizer, _ = load_pretrained(args.model, device=device)
    batch = tokenizer([args.sentence])
    with torch.inference_mode():
        _, weights = model(
            batch.input_ids.to(device),
            batch.attention_mask.to(device),
            batch.token_type_ids.to(device),
            need_weights=True,
        )
    tokens = tokenizer.tokens(args.sentence)
    per_layer = [w[0].cpu() for w in weights]  # (H, S, S) per layer
    return save_self_attention(tokens, per_layer, out, args.dpi)


def save_self_attention(
    tokens: list[str], per_layer: list[Any], out: Path, dpi: float, note: str = ""
) -> int:
    """Draw every layer's and head's self-attention over ``tokens`` into ``out`` and say so.

    Shapes: per_layer: one (H, S, S) tensor per layer; tokens: S labels.
    """
    from attnkit.viz.heatmaps import attention_grid

    attention_grid(
        per_layer,
        src_tokens=tokens,
        tgt_tokens=tokens,
        xlabel="Keys",
        ylabel="Queries",
        path=out,
        dpi=dpi,
    )
    heads = per_layer[0].shape[0]
    print(f"{len(per_layer)} layers x {heads} heads over {len(tokens)} tokens{note}: {out}")
    return 0


def demo_run_config(model_type: str, quick: bool = False) -> Any:
    """The tiny dates run ``attnkit figures`` trains (a translation ``RunConfig``)."""
    from attnkit.training.runs import resolve_config
    from attnkit.translation.config import preset_for, run_config_from_dict

    preset = preset_for("dates", model_type)
    preset["data"]["source"] = "dates"
    merged = resolve_config(
        preset, overrides=_DEMO_COMMON + _DEMO_MODELS[model_type] + _DEMO_SIZE[quick]
    )
    merged["model_type"] = model_type
    return run_config_from_dict(merged)


def _demo_runs(out: Path, quick: bool) -> list[Path]:
    import torch

    from attnkit.translation.run import train_translator

    runs = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models gain nothing from more, and lose much on a busy CPU
    try:
        for model_type in ("transformer", "bahdanau"):
            run_dir = out / "runs" / f"dates-{model_type}"
            if (run_dir / "config.json").is_file():
                shutil.rmtree(run_dir)  # a demo run of an earlier `attnkit figures`: retrain
            start = time.perf_counter()
            result, _ = train_translator(demo_run_config(model_type, quick), run_dir)
            scores = ", ".join(f"{k} {v:.3g}" for k, v in (result.last_metrics or {}).items())
            print(f"trained {model_type} in {time.perf_counter() - start:.0f} s ({scores})")
            runs.append(run_dir)
    finally:
        torch.set_num_threads(threads)
    return runs


def cmd_figures(args: argparse.Namespace) -> int:
    from attnkit.translation.config import load_run_config
    from attnkit.translation.translator import Translator
    from attnkit.viz.curves import plot_curves
    from attnkit.viz.figures import (
        CourseFigure,
        attention_figures,
        kernel_regression_figures,
        positional_figures,
        scoring_figures,
        write_figures,
    )

    out = Path(args.out)
    figures = kernel_regression_figures(dpi=args.dpi) + scoring_figures(dpi=args.dpi)
    figures += positional_figures(dpi=args.dpi)
    used: set[str] = set()
    for run_dir in [Path(r) for r in args.run] or _demo_runs(out, args.quick):
        cfg = load_run_config(run_dir)
        prefix = (
            cfg.model_type if cfg.model_type not in used else f"{cfg.model_type}-{run_dir.name}"
        )
        used.add(prefix)
        translator = Translator.load(run_dir, device="cpu")
        sample = _translate_one(translator, args.sentence, 1)
        figures += attention_figures(sample, dpi=args.dpi, name=f"{prefix}_attention")
        metrics = run_dir / "metrics.jsonl"
        if metrics.is_file():
            corpus = Path(cfg.data.source).stem
            smoothing = cfg.train.label_smoothing
            note = f" (with label smoothing {smoothing:g})" if smoothing else ""
            curves = plot_curves(metrics, dpi=args.dpi, title=f"{cfg.model_type} on {corpus}")
            caption = (
                f"Training of the {cfg.model_type} run {run_dir.name} on {corpus}: training "
                f"loss{note} and validation loss (left axis), validation BLEU and chrF (right)."
            )
            figures.append(CourseFigure(f"{prefix}_curves", curves, caption))
    paths = write_figures(figures, out, dpi=args.dpi)
    print(f"{len(paths)} figures in {out} (index: {out / 'index.md'}, {out / 'index.html'})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from attnkit.training.runfolder import run_kind
    from attnkit.translation.report import run_report

    kind = run_kind(args.run)
    if kind == "lm":
        from attnkit.cli.lm import report_lm

        return report_lm(args)
    if kind != "translation":
        refuse_run_kind(args.run, kind, "report", "translation and language-model runs")

    path = run_report(
        args.run,
        args.out,
        sentences=args.sentences or None,
        num_samples=args.samples,
        beam_size=args.beam,
        checkpoint=args.checkpoint,
        device=args.device,
    )
    print(f"report: {path}")
    return 0

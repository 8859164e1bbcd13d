"""``attnkit train-vit``, ``attnkit classify`` and ``attnkit attention-map``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from attnkit.cli.options import (
    add_checkpoint_option,
    add_device_option,
    add_run_options,
    apply_threads,
    check_engine_options,
    interrupted,
    positive_int,
    progress_wanted,
    resume_overrides,
    run_flags,
)

__all__ = ["register", "resolve_vision_config"]

#: What a command line can do about an image with the wrong channel count.
_CONVERT = "convert the file or pass --convert"


#: Flags that set a config key (flag -> section.key), for the config and for --resume's check.
_FLAGS = {"batch_size": "data.batch_size"}
#: The flag that chooses the preset and data instead, and where config.json keeps it.
_CHOSEN = {"data": "data.source"}


def register(sub: Any) -> None:
    p = sub.add_parser(
        "train-vit",
        help="train a Vision Transformer (default: 8x8 digits, CPU-friendly)",
        description="Train a ViT image classifier into a run folder and print its test accuracy. "
        "--data digits needs no download; mnist and cifar10 are downloaded once; a folder holds "
        "one sub-folder of images per class.",
    )
    p.add_argument("--data", default="digits", help="digits (default), mnist, cifar10, or PATH")
    p.add_argument("--run", help="run folder (default: runs/<data>-vit)")
    add_run_options(p, set_example="model.num_layers=6 --set data.hflip=true", budget_example="5m")
    p.add_argument("--batch-size", type=positive_int, help="images per optimizer step")
    p.set_defaults(func=cmd_train_vit)

    p = sub.add_parser(
        "classify",
        help="classify image files with a trained ViT run",
        description="Print, per image, the most probable classes and their probabilities "
        "(tab-separated: path, then label and probability pairs). Runs trained on the 8x8 digits "
        "accept any picture of one digit (dark on light or light on dark): it is converted to "
        "the digits' format (grey, cropped to the ink, centred, averaged down to 8x8).",
    )
    p.add_argument("images", nargs="+", help="PNG/JPG files")
    p.add_argument("--run", required=True, help="run folder")
    p.add_argument(
        "--top-k", type=positive_int, default=1, help="print the K most probable classes"
    )
    p.add_argument(
        "--convert",
        action="store_true",
        help="convert images with another channel count instead of failing",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    add_checkpoint_option(p)
    add_device_option(p)
    p.add_argument(
        "--engine",
        default="attnkit",
        choices=("attnkit", "onnxruntime"),
        help="onnxruntime: the model exported by `attnkit export --run RUN --format onnx` "
        "(RUN/export/onnx)",
    )
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser(
        "attention-map",
        help="draw where a trained ViT looks in an image",
        description="Overlay the last layer's class-token attention (one panel per head) and "
        "the attention rollout over all layers on the image, and save the figure.",
    )
    p.add_argument("image", help="a PNG/JPG file")
    p.add_argument("--run", required=True, help="run folder")
    p.add_argument("--out", required=True, help="output .png/.svg/.pdf")
    p.add_argument(
        "--convert",
        action="store_true",
        help="convert an image with another channel count instead of failing",
    )
    add_checkpoint_option(p)
    add_device_option(p)
    p.add_argument("--dpi", type=float, default=100)
    p.set_defaults(func=cmd_attention_map)


def resolve_vision_config(args: argparse.Namespace) -> Any:
    """Preset for --data <- config file <- --set overrides <- explicit flags."""
    from attnkit.training.runs import naming_config_file, resolve_config
    from attnkit.vision.config import vision_config_from_dict, vision_preset

    flags = run_flags(args, **_FLAGS)
    merged = resolve_config(
        vision_preset(args.data),
        config_file=args.config,
        overrides=args.set,
        flags=flags,
    )
    with naming_config_file(args.config, args.set, flags):
        return vision_config_from_dict(merged)


def cmd_train_vit(args: argparse.Namespace) -> int:
    from attnkit.data.errors import advise
    from attnkit.data.images import ChannelCountError
    from attnkit.training.launch import relaunch_with_torchrun, under_torchrun

    name = Path(args.data).name if args.data not in ("digits", "mnist", "cifar10") else args.data
    run_dir = Path(args.run) if args.run else Path("runs") / f"{name}-vit"
    if args.nproc > 1 and not under_torchrun():
        return relaunch_with_torchrun(args.nproc, args.argv, run_dir=run_dir)

    from attnkit.training import distributed as dist
    from attnkit.vision.classifier import Classifier
    from attnkit.vision.data import load_image_data
    from attnkit.vision.run import train_classifier

    apply_threads(args)
    cfg = None if args.resume else resolve_vision_config(args)
    overrides = resume_overrides(args, run_dir, fixed={**_FLAGS, **_CHOSEN})
    with advise(ChannelCountError, "convert the file or pass --set data.convert=true"):
        result, classifier = train_classifier(
            cfg,
            run_dir,
            resume=args.resume,
            train_overrides=overrides,
            progress=progress_wanted(args),
        )
    if not dist.is_main():
        return 0
    print(
        f"run: {run_dir}  ({result.steps} steps, {result.epochs_done} epochs, "
        f"{result.seconds:.0f} s, {result.tokens_per_second:.0f} images/s, "
        f"stopped: {result.stopped_because})"
    )
    if interrupted(result, "train-vit", run_dir):
        return 130
    if result.last_metrics:
        print("validation: " + "  ".join(f"{k}={v:.4g}" for k, v in result.last_metrics.items()))
    test = load_image_data(classifier.config.data, download=False).test
    final = classifier.evaluate(test)
    print(f"test accuracy: {final['accuracy']:.2%} ({len(test)} images, final weights)")
    best = Classifier.load(run_dir, "best", device=str(classifier.device))
    best_acc = best.evaluate(test)["accuracy"]
    print(f"test accuracy: {best_acc:.2%} (best validation checkpoint, used by classify)")
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from attnkit.data.errors import advise
    from attnkit.data.images import ChannelCountError
    from attnkit.vision.classifier import Classifier

    check_engine_options(args.engine, checkpoint=args.checkpoint, device=args.device)
    if args.engine == "onnxruntime":
        from attnkit.export.onnx import OnnxClassifier

        classifier: Classifier = OnnxClassifier.load(args.run)
    else:
        classifier = Classifier.load(args.run, checkpoint=args.checkpoint, device=args.device)
    with advise(ChannelCountError, _CONVERT):
        predictions = classifier.classify(args.images, top_k=args.top_k, convert=args.convert)
    for p in predictions:
        if args.json:
            print(
                json.dumps(
                    {"image": p.source, "labels": p.labels, "probs": [round(x, 6) for x in p.probs]}
                )
            )
        else:
            pairs = "\t".join(
                f"{label}\t{prob:.4f}" for label, prob in zip(p.labels, p.probs, strict=True)
            )
            print(f"{p.source}\t{pairs}")
    return 0


def cmd_attention_map(args: argparse.Namespace) -> int:
    from attnkit.data.errors import advise
    from attnkit.data.images import ChannelCountError
    from attnkit.vision.classifier import Classifier
    from attnkit.viz.heatmaps import save_figure
    from attnkit.viz.image_attention import image_attention_figure

    if Path(args.out).suffix.lower() not in (".png", ".svg", ".pdf"):
        raise ValueError(f"--out must end in .png, .svg or .pdf, got {args.out!r}")
    classifier = Classifier.load(args.run, checkpoint=args.checkpoint, device=args.device)
    with advise(ChannelCountError, _CONVERT):
        (maps,) = classifier.attention_maps([args.image], convert=args.convert)
    pred = maps.prediction
    title = (
        f"{Path(pred.source).name}: {pred.labels[0]} ({pred.probs[0]:.0%}); "
        "last-layer class-token attention per head, and rollout"
    )
    fig = image_attention_figure(
        maps.image,
        maps.heads,
        maps.rollout,
        title=title,
        ink=classifier.digits_format,
        dpi=args.dpi,
    )
    path = save_figure(fig, args.out)
    print(f"{pred.source}\t{pred.labels[0]}\t{pred.probs[0]:.4f}\t-> {path}")
    return 0

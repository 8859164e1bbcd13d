"""``attnkit serve``: an HTTP server for a translation run, a ViT run or a pretrained encoder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from attnkit.cli.options import (
    add_checkpoint_option,
    add_device_option,
    add_threads_option,
    apply_threads,
    check_engine_options,
    nonnegative_float,
    port_number,
    positive_int,
)

__all__ = ["register", "load_backend"]

ENGINES = ("attnkit", "ctranslate2", "onnxruntime")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a run (translate, classify) or a pretrained encoder (embed) over HTTP",
        description="Serve a model over HTTP with dynamic batching: POST /v1/translate "
        "(translation runs), /v1/classify (ViT runs), /v1/embed (--model); GET /v1/models, "
        "/health, /openapi.json, and / (a page to translate and see the attention). Listens "
        "on 127.0.0.1 unless --host says otherwise; SIGTERM answers every accepted request, "
        "then exits.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="run folder (translation or ViT classification)")
    source.add_argument(
        "--model",
        help="pretrained sentence encoder: minilm or a folder (with --engine onnxruntime: a "
        "folder from `attnkit export --format onnx --model ...`)",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface (default: loopback only)")
    p.add_argument("--port", type=port_number, default=8000, help="default 8000")
    p.add_argument(
        "--api-key",
        help="require this key on /v1/ requests (header Authorization: Bearer KEY or "
        'X-API-Key: KEY); default: env ATTNKIT_API_KEY; --api-key "" turns it off',
    )
    p.add_argument(
        "--engine",
        default="attnkit",
        choices=ENGINES,
        help="attnkit (PyTorch), ctranslate2 (translation, after `attnkit export`), "
        "onnxruntime (ViT runs and encoders, after `attnkit export --format onnx`)",
    )
    p.add_argument("--quantize", choices=("int8",), help="dynamic int8 Linear layers (CPU)")
    add_checkpoint_option(p)
    add_device_option(p, "cpu", note="the attnkit engine")
    add_threads_option(p)
    p.add_argument("--max-chars", type=positive_int, default=1000, help="characters per text (413)")
    p.add_argument("--max-items", type=positive_int, default=64, help="texts per request (413)")
    p.add_argument("--max-queue", type=positive_int, default=256, help="waiting requests (429)")
    p.add_argument(
        "--max-wait-ms",
        type=nonnegative_float,
        default=5.0,
        help="how long a request waits to be batched",
    )
    p.add_argument(
        "--max-body",
        type=positive_int,
        help="bytes per request body (413, before it is parsed; default: what the other "
        "limits allow for the model kind)",
    )
    p.add_argument(
        "--max-batch-tokens",
        type=positive_int,
        default=4096,
        help="estimated source tokens per batch",
    )
    p.set_defaults(func=cmd_serve)


def load_backend(
    *,
    run: str | None = None,
    model: str | None = None,
    engine: str = "attnkit",
    quantize: str | None = None,
    checkpoint: str = "best",
    device: str = "cpu",
    threads: int | None = None,
) -> Any:
    """The serving backend of a run folder (dispatched on its kind) or a pretrained encoder;
    ``threads``: the ctranslate2 / onnxruntime engine's CPU threads (None: its default; the
    attnkit engine's are PyTorch's, set by the caller)."""
    from attnkit.serve.backends import ClassifyBackend, EmbedBackend, TranslateBackend

    check_engine_options(engine, checkpoint=checkpoint, quantize=quantize, device=device)
    if model is not None:
        name = Path(model).name if Path(model).exists() else model
        if engine == "onnxruntime":
            from attnkit.export.onnx import OnnxSentenceEncoder

            encoder: Any = OnnxSentenceEncoder.load(model, threads=threads or 0)
        elif engine == "attnkit":
            from attnkit.pretrained.embeddings import SentenceEncoder

            encoder = SentenceEncoder.from_pretrained(model, device, quantize=quantize)
        else:
            raise ValueError("--engine ctranslate2 serves translation runs; use --run")
        return EmbedBackend(encoder, name=name, engine=engine, quantize=quantize)
    assert run is not None
    from attnkit.training.runfolder import describe_kind, read_run_config, run_kind

    name = Path(run).name
    if engine != "attnkit" and (Path(run) / "attnkit.json").is_file():
        return _export_backend(run, engine, device, threads)  # an export folder on its own
    read_run_config(run)  # a clear error for a folder that is not a run
    kind = run_kind(run)
    if kind == "translation":
        if engine == "ctranslate2":
            from attnkit.export.ct2 import CTranslate2Translator

            translator: Any = CTranslate2Translator.load(
                run, device=device, intra_threads=threads or 0
            )
        elif engine == "attnkit":
            from attnkit.translation.translator import Translator

            translator = Translator.load(
                run, checkpoint=checkpoint, device=device, quantize=quantize
            )
        else:
            raise ValueError("--engine onnxruntime serves ViT runs and encoders; use attnkit")
        return TranslateBackend(translator, name=name, engine=engine, quantize=quantize)
    if kind == "classification":
        if engine == "onnxruntime":
            from attnkit.export.onnx import OnnxClassifier

            classifier: Any = OnnxClassifier.load(run, threads=threads or 0)
        elif engine == "attnkit":
            if quantize is not None:
                raise ValueError("--quantize is for translation runs and encoders")
            from attnkit.vision.classifier import Classifier

            classifier = Classifier.load(run, checkpoint=checkpoint, device=device)
        else:
            raise ValueError("--engine ctranslate2 serves translation runs only")
        return ClassifyBackend(classifier, name=name, engine=engine)
    raise ValueError(
        f"{run} is {describe_kind(kind)}; attnkit serve serves translation runs and "
        "image-classification (ViT) runs, and sentence encoders with --model"
    )


def _export_backend(folder: str, engine: str, device: str, threads: int | None) -> Any:
    """The backend of an export folder given as ``--run`` (``attnkit export --out DIR``): a
    CTranslate2 translator, an ONNX image classifier or an ONNX sentence encoder."""
    from attnkit.serve.backends import ClassifyBackend, EmbedBackend, TranslateBackend

    name = Path(folder).name
    if engine == "ctranslate2":
        from attnkit.export.ct2 import CTranslate2Translator

        translator = CTranslate2Translator.load(folder, device=device, intra_threads=threads or 0)
        return TranslateBackend(translator, name=name, engine=engine)
    from attnkit.export.onnx import OnnxClassifier, OnnxSentenceEncoder, export_kind

    if export_kind(folder) == "sentence-encoder":
        encoder = OnnxSentenceEncoder.load(folder, threads=threads or 0)
        return EmbedBackend(encoder, name=name, engine=engine)
    classifier = OnnxClassifier.load(folder, threads=threads or 0)
    return ClassifyBackend(classifier, name=name, engine=engine)


def cmd_serve(args: argparse.Namespace) -> int:
    from attnkit.serve.server import api_key_setting, check_address, run_server, url

    try:
        from attnkit.serve.app import Limits, create_app
    except ImportError as err:
        raise OSError(
            f"attnkit serve needs fastapi and uvicorn ({err}); "
            "install them with `pip install 'attnkit[serve]'`"
        ) from None
    check_address(args.host, args.port)
    apply_threads(args)
    limits = Limits(
        max_chars=args.max_chars,
        max_items=args.max_items,
        max_queue=args.max_queue,
        max_wait_ms=args.max_wait_ms,
        max_batch_tokens=args.max_batch_tokens,
        max_body_bytes=args.max_body,
    )
    backend = load_backend(
        run=args.run,
        model=args.model,
        engine=args.engine,
        quantize=args.quantize,
        checkpoint=args.checkpoint,
        device=args.device,
        threads=args.threads,
    )
    api_key = api_key_setting(args.api_key)
    app = create_app(backend, api_key=api_key, limits=limits)
    print(
        f"attnkit serve: {backend.kind} model {backend.name} ({backend.engine}"
        f"{', ' + args.quantize if args.quantize else ''}) on {url(args.host, args.port)}"
        f"{'  (API key required)' if api_key else ''}",
        flush=True,
    )
    run_server(app, host=args.host, port=args.port, log_level="warning", keyed=api_key is not None)
    return 0

"""ONNX export of encoder models (the pretrained sentence encoder, ViT classifiers), run with
onnxruntime.

* :func:`export_sentence_encoder`: ``(input_ids (B, S) int64, attention_mask (B, S) int64) ->
  embeddings (B, D)``, the whole of :meth:`SentenceEncoder.encode`'s model part (encoder, pooling,
  normalisation); tokenization stays attnkit's (the Hugging Face tokenizer of the checkpoint).
* :func:`export_classifier`: ``images (B, C, H, W) float32 -> logits (B, classes)``.

Both use ``torch.onnx.export`` with dynamic batch (and sequence) axes, then run the exported graph
and PyTorch on the same inputs and record the largest absolute difference in the folder's
``attnkit.json`` (:func:`check_onnx` raises when it exceeds the tolerance, 1e-4).
:class:`OnnxSentenceEncoder` and :class:`OnnxClassifier` are the attnkit inference classes with the
model replaced by an onnxruntime session.

An export is written beside its folder and swapped in when complete; an existing output folder
must be empty or an earlier ONNX export (see :func:`attnkit.export.folders.check_out_folder`).
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.config import ConfigError, from_dict
from attnkit.export.folders import ExportLayout, check_out_folder, staged_folder
from attnkit.pretrained.bert import MODEL_PACKAGES, resolve_model_path
from attnkit.pretrained.embeddings import SentenceEncoder
from attnkit.pretrained.tokenizer import PretrainedTokenizer
from attnkit.training.runfolder import describe_kind, is_run_folder, read_run_config, run_kind
from attnkit.version import __version__
from attnkit.vision.classifier import Classifier
from attnkit.vision.config import VisionRunConfig

__all__ = [
    "MODEL_FILE",
    "ONNX_LAYOUT",
    "TOLERANCE",
    "OnnxClassifier",
    "OnnxSentenceEncoder",
    "check_onnx",
    "export_classifier",
    "export_kind",
    "export_onnx",
    "export_run",
    "export_sentence_encoder",
    "import_onnx_export",
    "import_onnxruntime",
]

MODEL_FILE = "model.onnx"
META_FILE = "attnkit.json"
DEFAULT_SUBDIR = Path("export") / "onnx"
#: Largest accepted absolute difference between onnxruntime and PyTorch outputs.
TOLERANCE = 1e-4
OPSET = 17
#: Pretrained checkpoint files an export copies beside ``model.onnx`` (its tokenizer and config).
_ENCODER_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
#: An ONNX export folder: what it always holds and everything it may hold.
ONNX_LAYOUT = ExportLayout(
    "ONNX", (META_FILE, MODEL_FILE), (META_FILE, MODEL_FILE, *_ENCODER_FILES, "1_Pooling")
)


def import_onnxruntime() -> Any:
    """The ``onnxruntime`` module, or an ImportError that says how to install it."""
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError(
            "the onnxruntime engine needs the onnx and onnxruntime packages; install them "
            "with `pip install 'attnkit[export]'`"
        ) from err
    return onnxruntime


def import_onnx_export(check: bool = True) -> None:
    """Raise a one-line ImportError naming the extra to install unless the packages an ONNX
    export needs are there: ``onnx`` (``torch.onnx.export``) and, to ``check`` the result,
    ``onnxruntime``."""
    try:
        import onnx  # noqa: F401

        if check:
            import onnxruntime  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "the ONNX export needs the onnx and onnxruntime packages; install them with "
            "`pip install 'attnkit[export]'`"
        ) from err


def _session(path: Path, threads: int = 0) -> Any:
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class _PooledEncoder(nn.Module):
    """SentenceEncoder's model part as one module: ids and a 0/1 mask -> pooled embeddings."""

    def __init__(self, encoder: SentenceEncoder) -> None:
        super().__init__()
        self.model, self.pooling, self.normalize = encoder.model, encoder.pooling, encoder.normalize

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Shapes: (B, S) int64, (B, S) int64 -> (B, D)."""
        mask = attention_mask.bool()  # (B, S)
        hidden, _ = self.model(input_ids, mask)  # (B, S, D)
        if self.pooling == "mean":
            weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, S, 1)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)  # (B, D)
        else:
            pooled = hidden[:, 0]  # (B, D)
        return F.normalize(pooled, p=2.0, dim=-1) if self.normalize else pooled


class _Logits(nn.Module):
    """A ViT returning only its logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        """Shapes: (B, C, H, W) float -> (B, classes)."""
        return self.model(images)[0]


def _export(
    module: nn.Module,
    args: tuple[Tensor, ...],
    path: Path,
    *,
    input_names: list[str],
    output_name: str,
    dynamic_axes: dict[str, dict[int, str]],
) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python-side shape checks
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            input_names=input_names,
            output_names=[output_name],
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            dynamo=False,
        )


def check_onnx(
    module: nn.Module,
    path: str | Path,
    inputs: Sequence[dict[str, np.ndarray]],
    *,
    tolerance: float = TOLERANCE,
) -> float:
    """Largest absolute difference between onnxruntime and PyTorch over several input batches.

    Args:
        module: the exported PyTorch module (CPU).
        path: the ``.onnx`` file.
        inputs: batches as ``{input name: array}`` (also the module's keyword arguments).
        tolerance: raise ValueError when the difference is larger.

    Returns:
        the largest absolute difference (float).
    """
    session = _session(Path(path))
    worst = 0.0
    with torch.inference_mode():
        for feed in inputs:
            got = session.run(None, feed)[0]
            want = module(*(torch.from_numpy(v) for v in feed.values())).numpy()
            if got.shape != want.shape:
                raise ValueError(
                    f"{path}: onnxruntime gave shape {got.shape}, PyTorch {want.shape}"
                )
            worst = max(worst, float(np.abs(got - want).max()))
    if worst > tolerance:
        raise ValueError(
            f"{path}: onnxruntime and PyTorch differ by {worst:.3g} (> {tolerance}); the export "
            "is not faithful, report it with the model's config"
        )
    return worst


def _write_meta(folder: Path, meta: dict[str, Any]) -> None:
    meta = {"format": 1, "attnkit_version": __version__, "engine": "onnxruntime", **meta}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def export_sentence_encoder(
    model: str | Path = "minilm", out_dir: str | Path = "minilm-onnx", *, check: bool = True
) -> Path:
    """Export a pretrained sentence encoder (a short name or a checkpoint folder) to ONNX.

    The folder gets ``model.onnx``, the checkpoint's tokenizer and config files (so
    :class:`OnnxSentenceEncoder` needs nothing else) and ``attnkit.json`` with the measured
    difference to PyTorch (``max_abs_diff``) when ``check``.

    Returns:
        the written folder (an existing ``out_dir`` must be empty or an earlier ONNX export).
    """
    folder = resolve_model_path(model)
    import_onnx_export(check)
    out = Path(out_dir)
    check_out_folder(out, ONNX_LAYOUT, sources=[folder])
    with staged_folder(out, ONNX_LAYOUT, sources=[folder]) as tmp:
        _write_sentence_encoder(model, folder, tmp, check=check)
    return out


def _write_sentence_encoder(model: str | Path, folder: Path, out: Path, *, check: bool) -> None:
    """Write the export of the checkpoint ``folder`` (named ``model``) into the folder ``out``."""
    encoder = SentenceEncoder.from_pretrained(folder, "cpu")
    module = _PooledEncoder(encoder).eval()
    texts = ["a short one", "a somewhat longer sentence about cats sitting on mats"]
    batch = encoder.tokenizer(texts)
    args = (batch.input_ids, batch.attention_mask.long())
    _export(
        module,
        args,
        out / MODEL_FILE,
        input_names=["input_ids", "attention_mask"],
        output_name="embeddings",
        dynamic_axes={
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
            "embeddings": {0: "batch"},
        },
    )
    for name in _ENCODER_FILES:
        if (folder / name).is_file():
            shutil.copy(folder / name, out / name)
    if (folder / "1_Pooling").is_dir():
        shutil.copytree(folder / "1_Pooling", out / "1_Pooling", dirs_exist_ok=True)
    meta: dict[str, Any] = {
        "kind": "sentence-encoder",
        "model": str(model),
        "pooling": encoder.pooling,
        "normalize": encoder.normalize,
        "max_length": encoder.tokenizer.max_length,
        "pad_id": encoder.tokenizer.pad_id,
        "dim": encoder.dim,
    }
    if check:
        feeds = []
        for group in (texts, ["one", "two words", "", "a much longer text " * 8]):
            b = encoder.tokenizer(group)
            feeds.append(
                {
                    "input_ids": b.input_ids.numpy(),
                    "attention_mask": b.attention_mask.long().numpy(),
                }
            )
        meta["max_abs_diff"] = check_onnx(module, out / MODEL_FILE, feeds)
    _write_meta(out, meta)


def export_classifier(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    checkpoint: str = "best",
    check: bool = True,
) -> Path:
    """Export a ViT classification run to ONNX (default folder ``RUN/export/onnx``).

    Returns:
        the written folder (``model.onnx``, ``attnkit.json`` with the run's config, class names
        and, when ``check``, ``max_abs_diff``); an existing one must be empty or an earlier ONNX
        export.
    """
    run_dir = Path(run_dir)
    import_onnx_export(check)
    out = Path(out_dir) if out_dir is not None else run_dir / DEFAULT_SUBDIR
    check_out_folder(out, ONNX_LAYOUT, sources=[run_dir])
    classifier = Classifier.load(run_dir, checkpoint=checkpoint, device="cpu")
    with staged_folder(out, ONNX_LAYOUT, sources=[run_dir]) as tmp:
        _write_classifier(classifier, run_dir, tmp, check=check)
    return out


def _write_classifier(classifier: Classifier, run_dir: Path, out: Path, *, check: bool) -> None:
    """Write the export of the loaded ``classifier`` of ``run_dir`` into the folder ``out``."""
    module = _Logits(classifier.model).eval()
    m = classifier.model.config
    gen = torch.Generator().manual_seed(0)
    shape = (m.in_channels, m.image_size, m.image_size)
    example = torch.rand(2, *shape, generator=gen)
    _export(
        module,
        (example,),
        out / MODEL_FILE,
        input_names=["images"],
        output_name="logits",
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
    )
    meta: dict[str, Any] = {
        "kind": "classification",
        "run": str(run_dir),
        "config": read_run_config(run_dir, train_command="attnkit train-vit"),
    }
    if check:
        feeds = [{"images": torch.rand(n, *shape, generator=gen).numpy()} for n in (1, 2, 5)]
        meta["max_abs_diff"] = check_onnx(module, out / MODEL_FILE, feeds)
    _write_meta(out, meta)


def export_run(
    run_dir: str | Path, out_dir: str | Path | None = None, *, checkpoint: str = "best"
) -> Path:
    """``attnkit export --format onnx --run RUN``: export a ViT run (default ``RUN/export/onnx``).

    Other folders are refused in one line: a pretrained checkpoint (a pointer to ``--model``),
    and runs of other kinds (translation runs: a pointer to ``--format ctranslate2``).
    """
    path = Path(run_dir)
    if not is_run_folder(path):
        raise ConfigError(
            f"{path} is not a run folder (no config.json of a training run); a pretrained "
            "encoder is exported with --model"
        )
    kind = run_kind(path)
    if kind != "classification":
        advice = "; export it with --format ctranslate2" if kind == "translation" else ""
        raise ConfigError(
            f"{path} is {describe_kind(kind)}; --format onnx exports encoder models (ViT runs, "
            f"pretrained encoders){advice}"
        )
    return export_classifier(path, out_dir, checkpoint=checkpoint)


def export_onnx(
    source: str | Path, out_dir: str | Path | None = None, *, checkpoint: str = "best"
) -> Path:
    """A run folder (:func:`export_run`) or a pretrained encoder, a name or checkpoint folder
    (:func:`export_sentence_encoder`, default folder ``<name>-onnx``), to ONNX."""
    path = Path(source)
    if is_run_folder(path):
        return export_run(path, out_dir, checkpoint=checkpoint)
    out = Path(out_dir) if out_dir is not None else Path(f"{path.name}-onnx")
    return export_sentence_encoder(source, out)


def _find_export(folder: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The ONNX export in ``folder`` or ``folder/export/onnx`` and its ``attnkit.json``."""
    for candidate in (Path(folder), Path(folder) / DEFAULT_SUBDIR):
        file = candidate / META_FILE
        if file.is_file() and (candidate / MODEL_FILE).is_file():
            return candidate, json.loads(file.read_text(encoding="utf-8"))
    return None


def export_kind(folder: str | Path) -> str | None:
    """The ``kind`` of the ONNX export in ``folder`` (or ``folder/export/onnx``):
    ``classification`` or ``sentence-encoder``; None when there is none."""
    found = _find_export(folder)
    return None if found is None else found[1].get("kind")


def _meta(folder: Path, kind: str) -> dict[str, Any]:
    found = _find_export(folder)
    if found is None:
        raise _missing_export(folder, kind)
    candidate, meta = found
    if meta.get("kind") != kind:
        raise ConfigError(f"{candidate} holds an ONNX {meta.get('kind')} model, not a {kind} model")
    meta["folder"] = str(candidate)
    return meta


#: Per export kind: what it is made of, and what ``--engine onnxruntime`` does with it.
_ENGINE_TAKES = {
    "classification": ("a ViT run", "classifies with a ViT run's ONNX export"),
    "sentence-encoder": (
        "a sentence encoder",
        "embeds with a folder made by `attnkit export --format onnx --model minilm --out DIR` "
        "(or --model CHECKPOINT)",
    ),
}


def _run_advice(run: Path, kind: str) -> str:
    """What to do instead with a run of ``kind`` given to an onnxruntime engine ("" if nothing)."""
    if kind == "translation":
        return (
            ", and cannot be exported to ONNX (translate with it on the default engine: "
            f"`attnkit translate --run {run}`)"
        )
    if kind == "textclass":
        return f" (embed with its encoder on the default engine: `attnkit embed --run {run}`)"
    return ""


def _missing_export(folder: Path, kind: str) -> ConfigError:
    """The error for a folder holding no ONNX export of ``kind``: the command that makes one,
    or, for a run folder no such export can be made of, what the run is and what to do."""
    if is_run_folder(folder) and run_kind(folder) != kind:
        run = run_kind(folder)
        wanted, does = _ENGINE_TAKES[kind]
        return ConfigError(
            f"{folder} is {describe_kind(run)}, not {wanted}{_run_advice(folder, run)}; "
            f"--engine onnxruntime {does}"
        )
    if kind == "classification":  # exported into RUN/export/onnx, where it is looked for
        run = folder if is_run_folder(folder) else "RUN"
        how = f"`attnkit export --run {run} --format onnx`"
    else:  # a name or checkpoint folder is what the export reads, not what it writes
        given = str(folder) in MODEL_PACKAGES or (folder / "config.json").is_file()
        how = (
            f"`attnkit export --format onnx --model {folder if given else 'minilm'} --out DIR` "
            "and pass --model DIR"
        )
    return ConfigError(
        f"{folder}: no ONNX export found ({MODEL_FILE} and {META_FILE}); make one with {how}"
    )


class OnnxSentenceEncoder(SentenceEncoder):
    """:class:`SentenceEncoder` whose encoder, pooling and normalisation run in onnxruntime.

    Build one with :meth:`load` from a folder written by :func:`export_sentence_encoder`.
    """

    engine = "onnxruntime"

    def __init__(self, session: Any, tokenizer: PretrainedTokenizer, *, dim: int) -> None:
        self.session, self.tokenizer, self._dim = session, tokenizer, dim
        self.pooling, self.normalize = "onnx", True

    @classmethod
    def load(cls, folder: str | Path, threads: int = 0) -> OnnxSentenceEncoder:
        """Load an export folder (``threads``: onnxruntime intra-op threads, 0 = its default)."""
        meta = _meta(Path(folder), "sentence-encoder")
        where = Path(meta["folder"])
        tokenizer = PretrainedTokenizer.from_folder(
            where, int(meta["max_length"]), int(meta.get("pad_id", 0))
        )
        return cls(_session(where / MODEL_FILE, threads), tokenizer, dim=int(meta["dim"]))

    @property
    def dim(self) -> int:
        return self._dim

    def encode(
        self, texts: Sequence[str], batch_size: int = 32, progress: Any = None
    ) -> np.ndarray:
        """Embed texts: float32 (N, D), rows in the order of ``texts`` (as the base class)."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        ids = self.tokenizer.encode(texts)
        out = np.zeros((len(ids), self.dim), dtype=np.float32)  # (N, D)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            batch = self.tokenizer.pad([ids[i] for i in index])
            feed = {
                "input_ids": batch.input_ids.numpy(),
                "attention_mask": batch.attention_mask.long().numpy(),
            }
            out[index] = self.session.run(None, feed)[0]
            if progress is not None:
                progress(len(index))
        return out


class OnnxClassifier(Classifier):
    """:class:`~attnkit.vision.classifier.Classifier` whose ViT runs in onnxruntime (image
    reading, top-k and labels are attnkit's; attention maps need the PyTorch model)."""

    engine = "onnxruntime"

    def __init__(self, session: Any, config: Any, classes: Sequence[str]) -> None:
        self.session, self.config, self.classes = session, config, list(classes)
        self.model = _ConfigOnly(config.model)  # type: ignore[assignment]

    @classmethod
    def load(  # type: ignore[override]
        cls, path: str | Path, checkpoint: str = "best", device: str = "cpu", *, threads: int = 0
    ) -> OnnxClassifier:
        """Load an export folder, or a run folder holding ``export/onnx``."""
        meta = _meta(Path(path), "classification")
        raw = meta["config"]
        sections = {k: raw[k] for k in ("model", "data", "train") if k in raw}
        cfg = from_dict(VisionRunConfig, sections, "")
        return cls(_session(Path(meta["folder"]) / MODEL_FILE, threads), cfg, raw["classes"])

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def probabilities(self, images: Any, convert: bool = False) -> Tensor:
        """Class probabilities. Shapes: (B, C, H, W) or B files -> (B, classes)."""
        batch, _ = self._batch(images, convert)
        logits = self.session.run(None, {"images": batch.float().cpu().numpy()})[0]
        return torch.from_numpy(logits).softmax(-1)

    def attention_maps(self, images: Any, convert: bool = False) -> Any:
        raise ConfigError("attention maps need the PyTorch model; use --engine attnkit")


class _ConfigOnly:
    """Stands in for the model where only its config is read (image sizes)."""

    def __init__(self, config: Any) -> None:
        self.config = config

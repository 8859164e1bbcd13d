"""What the server runs: one backend per run kind, each turning a batch of requests into results.

A backend's :meth:`process` is called by the batcher's one worker thread with the payloads of
several concurrent requests; it decodes them together (one ``translate`` / ``encode`` /
``classify`` call per group of requests that share their options) and returns one result, or an
exception, per request, in order. A request that fails on its own (an input too long for the
model) does not fail the others: the group is then retried request by request.
"""

from __future__ import annotations

import base64
import binascii
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnkit.data.errors import DataError, advise
from attnkit.data.images import ChannelCountError
from attnkit.pretrained.embeddings import embed_keeping_blanks, embedding_rows
from attnkit.viz.report import samples_json
from attnkit.viz.samples import translation_sample

__all__ = [
    "Backend",
    "ClassifyBackend",
    "EmbedBackend",
    "RequestError",
    "TranslateBackend",
    "TranslateJob",
]


class RequestError(ValueError):
    """A request the server refuses: ``status`` is the HTTP code, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _groups(payloads: Sequence[Any], key: Any) -> dict[Any, list[int]]:
    groups: dict[Any, list[int]] = {}
    for i, p in enumerate(payloads):
        groups.setdefault(key(p), []).append(i)
    return groups


def _as_request_error(err: Exception) -> Exception:
    if isinstance(err, RequestError):
        return err
    if isinstance(err, DataError):  # e.g. a sentence with more tokens than the model takes
        return RequestError(413, str(err).splitlines()[0])
    if isinstance(err, ValueError):
        return RequestError(422, str(err).splitlines()[0])
    return err


class Backend:
    """Common part: name, kind, engine, and the run-group-then-retry-singly logic."""

    kind = ""

    def __init__(self, *, name: str, engine: str = "attnkit", quantize: str | None = None):
        self.name, self.engine, self.quantize = name, engine, quantize

    def describe(self) -> dict[str, Any]:
        """The ``/v1/models`` entry."""
        return {
            "id": self.name,
            "kind": self.kind,
            "engine": self.engine,
            "quantize": self.quantize,
        }

    def cost(self, payload: Any) -> int:
        """Estimated source tokens of one request (for the batch budget)."""
        return 1

    def run_group(self, payloads: Sequence[Any]) -> list[Any]:
        """Results of requests sharing their options (one model call)."""
        raise NotImplementedError

    def group_key(self, payload: Any) -> Any:
        return None

    def process(self, payloads: Sequence[Any]) -> list[Any]:
        """One result or exception per payload, in order (called in the worker thread)."""
        out: list[Any] = [None] * len(payloads)
        for _, index in _groups(payloads, self.group_key).items():
            group = [payloads[i] for i in index]
            try:
                results = self.run_group(group)
            except Exception:
                results = []
                for p in group:  # find the culprit; the others still get answers
                    try:
                        results.append(self.run_group([p])[0])
                    except Exception as err:
                        results.append(_as_request_error(err))
            for i, r in zip(index, results, strict=True):
                out[i] = r
        return out


@dataclass(frozen=True)
class TranslateJob:
    """One ``/v1/translate`` request: texts and decoding options."""

    texts: tuple[str, ...]
    beam: int | None = None
    n_best: int = 1
    attention: bool = False


class TranslateBackend(Backend):
    """Serves a :class:`~attnkit.translation.translator.Translator` (or an engine subclass)."""

    kind = "translation"

    def __init__(self, translator: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.translator = translator

    def cost(self, payload: TranslateJob) -> int:
        width = payload.beam or self.translator.config.decode.beam_size
        return sum(len(t) // 4 + 2 for t in payload.texts) * max(1, width)

    def group_key(self, payload: TranslateJob) -> Any:
        return (payload.beam, payload.n_best, payload.attention)

    def run_group(self, payloads: Sequence[TranslateJob]) -> list[Any]:
        first = payloads[0]
        beam = first.beam
        if first.n_best > 1:
            beam = max(beam or self.translator.config.decode.beam_size, first.n_best)
        flat = [t for p in payloads for t in p.texts]
        results = self.translator.translate(
            flat, beam_size=beam, n_best=first.n_best, need_weights=first.attention
        )
        out, k = [], 0
        for p in payloads:
            out.append([self._result(r, p) for r in results[k : k + len(p.texts)]])
            k += len(p.texts)
        return out

    def _result(self, r: Any, job: TranslateJob) -> dict[str, Any]:
        item: dict[str, Any] = {"source": r.source, "text": r.text, "score": r.score}
        if job.n_best > 1:
            item["alternatives"] = [
                {"text": text, "score": score} for text, score in (r.alternatives or [])
            ][: job.n_best]
        if job.attention:
            parts = r.parts or [r]
            item["attention"] = samples_json(
                [translation_sample(self.translator, p) for p in parts if p.weights]
            )
        return item


class EmbedBackend(Backend):
    """Serves a :class:`~attnkit.pretrained.embeddings.SentenceEncoder` (or the ONNX one)."""

    kind = "embedding"

    def __init__(self, encoder: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.encoder = encoder

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "dim": int(self.encoder.dim)}

    def cost(self, payload: tuple[str, ...]) -> int:
        return sum(len(t) // 4 + 2 for t in payload)

    def run_group(self, payloads: Sequence[tuple[str, ...]]) -> list[Any]:
        flat = [t for p in payloads for t in p]
        rows = embedding_rows(flat, embed_keeping_blanks(self.encoder.encode, flat))
        out, k = [], 0
        for p in payloads:
            out.append(rows[k : k + len(p)])
            k += len(p)
        return out


def decode_image(data: str, index: int) -> bytes:
    """The bytes of a base64 image (a ``data:image/...;base64,`` prefix is allowed); ``index``
    is its 1-based place in the request, for the error message."""
    if data.startswith("data:"):
        data = data.partition(",")[2]
    if not data.strip():
        raise RequestError(422, f"image {index} is empty; send the image's bytes in base64")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(422, f"image {index} is not valid base64") from None


def check_image(image: bytes, index: int, max_bytes: int, max_pixels: int) -> None:
    """413 for an image over ``max_bytes`` or ``max_pixels`` (width x height, read from its
    header without decoding it: a small file can hold a huge image); unreadable images are
    left to the classifier, which names them."""
    import io
    import warnings

    from PIL import Image

    if len(image) > max_bytes:
        raise RequestError(413, f"image {index} has {len(image):,} bytes (limit {max_bytes:,})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # judged below
            with Image.open(io.BytesIO(image)) as opened:
                width, height = opened.size
    except Image.DecompressionBombError:  # more pixels than PIL will open at all
        limit = min(max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or max_pixels))
        raise RequestError(
            413,
            f"image {index} has more than {limit:,} pixels (the limit); send it downscaled",
        ) from None
    except Exception:
        return
    if width * height > max_pixels:
        raise RequestError(
            413,
            f"image {index} is {width} x {height} pixels, more than the limit of "
            f"{max_pixels:,}; send it downscaled",
        )


def _upload_message(message: str, names: dict[str, str]) -> str:
    """A classifier's message about uploaded files, for the client: files named as the
    request's images, file-system advice dropped."""
    line = message.splitlines()[0].replace("; remove or replace the file", "")
    for path, name in names.items():
        line = line.replace(path, name)
    return line


class ClassifyBackend(Backend):
    """Serves a :class:`~attnkit.vision.classifier.Classifier` (or the ONNX one)."""

    kind = "classification"

    def __init__(self, classifier: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.classifier = classifier

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "classes": list(self.classifier.classes)}

    def cost(self, payload: tuple[tuple[bytes, ...], int]) -> int:
        return 16 * len(payload[0])

    def group_key(self, payload: tuple[tuple[bytes, ...], int]) -> Any:
        return payload[1]

    def run_group(self, payloads: Sequence[tuple[tuple[bytes, ...], int]]) -> list[Any]:
        top_k = payloads[0][1]
        with tempfile.TemporaryDirectory(prefix="attnkit-serve-") as tmp:
            paths, names = [], {}  # file -> "image N" (N: its place in its own request)
            for images, _ in payloads:
                for i, image in enumerate(images, 1):
                    path = Path(tmp) / f"{len(paths)}.img"
                    path.write_bytes(image)
                    paths.append(path)
                    names[str(path)] = f"image {i}"
            try:
                with advise(ChannelCountError, "convert the image before sending it"):
                    preds = self.classifier.classify(paths, top_k=top_k)
            except DataError as err:
                raise RequestError(422, _upload_message(str(err), names)) from None
        out, k = [], 0
        for images, _ in payloads:
            out.append(
                [
                    {"labels": p.labels, "probs": [round(x, 6) for x in p.probs]}
                    for p in preds[k : k + len(images)]
                ]
            )
            k += len(images)
        return out

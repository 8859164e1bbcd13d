"""The HTTP server: a FastAPI app over one backend, with dynamic batching, limits and an API key.

Endpoints (the OpenAPI schema is at ``/openapi.json``):

* ``GET /health``: ``{"status": "ok", ...}`` and the batcher's counters (no key needed);
* ``GET /v1/models``: the served model;
* ``POST /v1/translate`` (translation runs): ``{"text": str | [str], "beam": int?, "n_best": int?,
  "attention": bool?}``;
* ``POST /v1/embed`` (pretrained encoders): ``{"text": str | [str]}``;
* ``POST /v1/classify`` (ViT runs): ``{"image": base64 | [base64], "top_k": int?}``;
* ``GET /``: a page to type a sentence and see its translation and attention (translation runs).

Errors are JSON ``{"error": "<one line>"}`` with 401 (API key), 404 (endpoint of another kind),
413 (a text too long, too many texts), 422 (malformed request), 429 (queue full) or 500.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from attnkit.serve.backends import (
    Backend,
    ClassifyBackend,
    EmbedBackend,
    RequestError,
    TranslateBackend,
    TranslateJob,
    check_image,
    decode_image,
)
from attnkit.serve.batcher import Batcher, QueueFull
from attnkit.serve.gate import Gate, validation_message
from attnkit.serve.page import index_page
from attnkit.version import __version__

__all__ = ["ClassifyRequest", "EmbedRequest", "Limits", "TranslateRequest", "create_app"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """Request limits and batching settings of the server.

    Attributes:
        max_chars: characters per text (sentence or paragraph) -> 413 beyond.
        max_items: texts (or images) per request -> 413 beyond.
        max_queue: requests waiting for the model -> 429 beyond.
        max_wait_ms: how long a request waits for others to batch with.
        max_batch_tokens: estimated source tokens per batch.
        max_image_bytes: bytes per decoded image -> 413 beyond.
        max_image_pixels: width x height per image -> 413 beyond (checked from the header,
            before the image is decoded).
        max_body_bytes: bytes per request body -> 413 before it is parsed (None: what the
            other limits allow for the served kind, see :meth:`body_limit`).
    """

    max_chars: int = 1000
    max_items: int = 64
    max_queue: int = 256
    max_wait_ms: float = 5.0
    max_batch_tokens: int = 4096
    max_image_bytes: int = 4 << 20
    max_image_pixels: int = 4096 * 4096
    max_body_bytes: int | None = None

    def __post_init__(self) -> None:
        for name in (
            "max_chars",
            "max_items",
            "max_queue",
            "max_batch_tokens",
            "max_image_bytes",
            "max_image_pixels",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"Limits.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ValueError(f"Limits.max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.max_body_bytes is not None and self.max_body_bytes < 1:
            raise ValueError(f"Limits.max_body_bytes must be >= 1, got {self.max_body_bytes}")

    def body_limit(self, kind: str) -> int:
        """Bytes a request body may have: :attr:`max_body_bytes`, or the largest body the other
        limits let through for a ``kind`` model, plus 64 KiB for the rest of the JSON: per text,
        12 bytes a character (a character beyond the BMP counts one but may be written as two
        JSON escapes, ``\\ud83d\\ude00``) and 8 for quotes and commas; per image, its base64
        (4 bytes for 3) with every ``/`` escaped as ``\\/`` (+1/64 at most on average, +128)."""
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        if kind == "classification":
            base64_len = -(-self.max_image_bytes // 3) * 4
            return self.max_items * (base64_len * 65 // 64 + 128) + (64 << 10)
        return self.max_items * (self.max_chars * 12 + 8) + (64 << 10)


#: Request bodies take JSON types as they are ("4" is not a number, true not 1) and refuse
#: fields they do not have (a misspelt "nbest" is an error, not silently ignored).
_STRICT = ConfigDict(extra="forbid", strict=True)


def _whole_number(value: Any) -> Any:
    """4.0 is the JSON number 4 (some clients write every number as a float); 4.5 stays a
    float, and strict mode refuses it, as it refuses "4" and true."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: A JSON integer (a whole-number float included).
Count = Annotated[int, BeforeValidator(_whole_number)]


class TranslateRequest(BaseModel):
    """Body of ``POST /v1/translate``."""

    model_config = _STRICT

    text: str | list[str] = Field(description="one text or a list of texts")
    beam: Count | None = Field(None, ge=1, le=16, description="beam size (1 = greedy)")
    n_best: Count = Field(1, ge=1, le=16, description="alternatives to return per text")
    attention: bool = Field(False, description="return attention weights per sentence")


class EmbedRequest(BaseModel):
    """Body of ``POST /v1/embed``."""

    model_config = _STRICT

    text: str | list[str] = Field(description="one text or a list of texts (blank: null)")


class ClassifyRequest(BaseModel):
    """Body of ``POST /v1/classify``."""

    model_config = _STRICT

    image: str | list[str] = Field(description="base64 image(s) (PNG, JPEG, ...)")
    top_k: Count = Field(1, ge=1, le=100)


def _texts(value: Any, limits: Limits, what: str = "text") -> tuple[str, ...]:
    texts = [value] if isinstance(value, str) else value
    if not texts:
        raise RequestError(422, f"'{what}' is empty; send a string or a non-empty list")
    if len(texts) > limits.max_items:
        raise RequestError(
            413, f"{len(texts)} {what}s in one request, more than the limit of {limits.max_items}"
        )
    for i, t in enumerate(texts, 1):  # numbered from 1 in messages
        if len(t) > limits.max_chars:
            raise RequestError(
                413,
                f"{what} {i} has {len(t)} characters, more than the limit of {limits.max_chars}; "
                "split it",
            )
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as err:  # JSON lets "\ud800" through; it is not text
            raise RequestError(
                422,
                f"{what} {i} has a lone surrogate ({t[err.start]!r}) at character "
                f"{err.start + 1}; send valid Unicode",
            ) from None
    return tuple(texts)


def create_app(
    backend: Backend,
    *,
    api_key: str | None = None,
    limits: Limits | None = None,
) -> Any:
    """The FastAPI app serving ``backend``.

    Args:
        backend: a :class:`TranslateBackend`, :class:`EmbedBackend` or :class:`ClassifyBackend`.
        api_key: when set, every ``/v1/`` request needs ``Authorization: Bearer KEY`` or
            ``X-API-Key: KEY`` (else 401).
        limits: :class:`Limits` (defaults otherwise).

    Returns:
        the app; ``app.state.batcher`` is its :class:`Batcher` (started with the app).
    """
    limits = limits or Limits()
    batcher = Batcher(
        backend.process,
        max_wait_ms=limits.max_wait_ms,
        max_batch_tokens=limits.max_batch_tokens,
        max_queue=limits.max_queue,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        batcher.start()
        yield
        await batcher.stop()  # every accepted request is answered before the process exits
        print(json.dumps({"attnkit_serve": "stopped", **batcher.stats.as_dict()}), file=sys.stderr)

    app = FastAPI(
        title="attnkit",
        version=__version__,
        description=f"attnkit serving a {backend.kind} model ({backend.name}).",
        lifespan=lifespan,
    )
    app.state.batcher, app.state.backend = batcher, backend

    def error(status: int, message: str, headers: dict[str, str] | None = None) -> Any:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, err: RequestError) -> Any:
        return error(err.status, str(err))

    @app.exception_handler(QueueFull)
    async def _queue_full(request: Request, err: QueueFull) -> Any:
        return error(429, f"server busy: {err}; retry later", {"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: Any) -> Any:
        return error(422, validation_message(err.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: Any) -> Any:
        return error(err.status_code, str(err.detail), getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def _crash(request: Request, err: Exception) -> Any:
        # (the server logs the traceback once: Starlette re-raises after this reply)
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return error(500, f"internal error: {message}")

    app.add_middleware(Gate, api_key=api_key, max_body=limits.body_limit(backend.kind))

    def need(kind: type) -> Any:
        if not isinstance(backend, kind):
            article = "an" if backend.kind[:1] in "aeiou" else "a"
            raise RequestError(
                404,
                f"this server runs {article} {backend.kind} model; that endpoint is not served",
            )
        return backend

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness, the model kind and the batcher's counters."""
        return {
            "status": "ok",
            "kind": backend.kind,
            "waiting": batcher.waiting,
            **batcher.stats.as_dict(),
        }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        """The served model."""
        return {"models": [backend.describe()]}

    @app.post("/v1/translate")
    async def translate(body: TranslateRequest) -> dict[str, Any]:
        """Translate one text or a list of texts (batched with concurrent requests)."""
        b = need(TranslateBackend)
        job = TranslateJob(_texts(body.text, limits), body.beam, body.n_best, body.attention)
        if body.attention and b.engine != "attnkit":
            raise RequestError(422, f"attention weights are not available from {b.engine}")
        results = await batcher.submit(job, b.cost(job))
        return {"model": b.name, "translations": results}

    @app.post("/v1/embed")
    async def embed(body: EmbedRequest) -> dict[str, Any]:
        """Unit-length sentence embeddings."""
        b = need(EmbedBackend)
        texts = _texts(body.text, limits)
        vectors = await batcher.submit(texts, b.cost(texts))
        return {"model": b.name, "dim": b.describe()["dim"], "embeddings": vectors}

    @app.post("/v1/classify")
    async def classify(body: ClassifyRequest) -> dict[str, Any]:
        """Classify base64-encoded images."""
        b = need(ClassifyBackend)
        raw = [body.image] if isinstance(body.image, str) else body.image
        if not raw:
            raise RequestError(422, "'image' is empty; send a base64 string or a list")
        if len(raw) > limits.max_items:
            raise RequestError(413, f"{len(raw)} images, more than the limit of {limits.max_items}")
        images = tuple(decode_image(x, i) for i, x in enumerate(raw, 1))
        for i, image in enumerate(images, 1):
            check_image(image, i, limits.max_image_bytes, limits.max_image_pixels)
        payload = (images, body.top_k)
        return {"model": b.name, "predictions": await batcher.submit(payload, b.cost(payload))}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> Any:
        return HTMLResponse(index_page(backend.describe(), need_key=api_key is not None))

    return app

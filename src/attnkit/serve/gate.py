"""What is checked before a request's body is parsed, and how a malformed body is named.

:class:`Gate` is ASGI middleware in front of the ``/v1/`` endpoints: the API key (401), a JSON
content type (415) and the body's size (413) are checked before any of the body is parsed, so a
client without the key, or with an oversized body, costs the server no JSON parsing and at most
``max_body`` bytes of memory. :func:`validation_message` turns pydantic's errors into one line.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from starlette.routing import get_route_path

__all__ = ["Gate", "validation_message"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: pydantic's names of the branches of ``str | list[str]``: not part of a field's path.
_UNION_BRANCHES = {"str", "list[str]", "int", "bool", "none"}


async def _reply(send: Send, status: int, message: str, headers: dict[str, str] | None = None):
    body = json.dumps({"error": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _key_matches(headers: dict[str, str], api_key: str) -> bool:
    """``X-API-Key: KEY`` or ``Authorization: Bearer KEY`` (compared in constant time)."""
    given = headers.get("x-api-key")
    auth = headers.get("authorization", "")
    if given is None and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    return given is not None and hmac.compare_digest(given.encode(), api_key.encode())


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


class Gate:
    """ASGI middleware: API key, content type and body size of ``/v1/`` requests.

    Args:
        app: the ASGI app behind it.
        api_key: the key every ``/v1/`` request must carry (None: no key).
        max_body: bytes a request body may have (413 beyond, before it is parsed).

    A POST body is read here, at most ``max_body`` bytes of it, and handed on whole; a body
    without a content type is taken as JSON, another type than JSON is a 415.
    """

    def __init__(self, app: Any, *, api_key: str | None, max_body: int) -> None:
        self.app, self.api_key, self.max_body = app, api_key, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # (the path within the app: behind a proxy's root_path, or mounted, scope["path"] has
        # the prefix in front)
        if scope["type"] != "http" or not get_route_path(scope).startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.api_key is not None and not _key_matches(headers, self.api_key):
            await _reply(
                send,
                401,
                "missing or wrong API key (send Authorization: Bearer KEY or X-API-Key: KEY)",
                {"WWW-Authenticate": "Bearer"},
            )
            return
        if scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        content_type = headers.get("content-type", "")
        if not content_type:  # taken as JSON (FastAPI would read such a body as bytes)
            scope = {
                **scope,
                "headers": [*scope["headers"], (b"content-type", b"application/json")],
            }
        elif not _is_json(content_type):
            await _reply(
                send,
                415,
                f"the body must be JSON (content-type: application/json), got {content_type}",
            )
            return
        length = headers.get("content-length", "")
        if length.isascii() and length.isdigit() and int(length) > self.max_body:
            await _reply(send, 413, self._too_large(int(length)))
            return
        body = await self._read(receive)
        if body is None:  # the client went away
            return
        if len(body) > self.max_body:
            await _reply(send, 413, self._too_large(len(body), at_least=True))  # (streamed)
            return
        await self.app(scope, _replay(body, receive), send)

    def _too_large(self, size: int, at_least: bool = False) -> str:
        return (
            f"the request body has {'at least ' if at_least else ''}{size:,} bytes, more than "
            f"the limit of {self.max_body:,}; send fewer or shorter texts/images per request"
        )

    async def _read(self, receive: Receive) -> bytes | None:
        """The body, or its first ``max_body + 1`` bytes when it is longer; None on a
        disconnect."""
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            more = message.get("more_body", False)
            if size > self.max_body:
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the app the already-read body, then the connection's events."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def validation_message(errors: Sequence[dict[str, Any]]) -> str:
    """One line for a request that does not fit its schema (pydantic's ``errors()``).

    Invalid JSON names the character where it fails; otherwise the most specific error is
    named by its path in the body (``text[1]: Input should be a valid string``), without
    pydantic's union-branch names.
    """
    if not errors:
        return "invalid request"
    for e in errors:
        if e.get("type") == "json_invalid":  # loc is ("body", character position from 0)
            at = e.get("loc", ("body", "?"))[-1]
            why = (e.get("ctx") or {}).get("error", "not JSON")
            where = f"character {at + 1}" if isinstance(at, int) else f"character {at}"
            return f"the body is not valid JSON: {why} ({where})"
    if any(e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",) for e in errors):
        return 'the body is empty; send a JSON object, e.g. {"text": "..."}'
    first = max(errors, key=lambda e: len(_path(e.get("loc", ()))))
    if first.get("type") == "model_attributes_type":  # the body is not an object
        return 'the body must be a JSON object, e.g. {"text": "..."}'
    where = _name(_path(first.get("loc", ()))) or "body"
    message = first.get("msg", "invalid")
    if first.get("type") == "extra_forbidden":
        message = "not a field of this request (check its spelling; see /openapi.json)"
    return f"{where}: {message}"


def _path(loc: Sequence[Any]) -> list[Any]:
    """A field's path without "body" and without pydantic's union-branch names (which follow
    the field's name: ``("body", "text", "list[str]", 0)``)."""
    parts = [x for x in loc if x != "body"]
    return parts[:1] + [x for x in parts[1:] if x not in _UNION_BRANCHES]


def _name(path: list[Any]) -> str:
    """``text item 2`` (list items counted from 1, as the other messages count texts)."""
    text = ""
    for part in path:
        text += f" item {part + 1}" if isinstance(part, int) else (f".{part}" if text else part)
    return text

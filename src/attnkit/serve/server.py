"""Run the app with uvicorn: loopback by default, graceful SIGTERM (every accepted request is
answered, then the process exits with status 0)."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import signal
import socket
from collections.abc import Iterator
from typing import Any

__all__ = [
    "api_key_setting",
    "is_loopback",
    "free_port",
    "check_address",
    "run_server",
    "url",
]

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names a loopback address (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_key_setting(flag: str | None) -> str | None:
    """The key the server requires: ``--api-key`` when given (``""``: none, even when the
    environment sets one), else ``ATTNKIT_API_KEY``, else None."""
    key = os.environ.get("ATTNKIT_API_KEY") if flag is None else flag
    return key or None


def url(host: str, port: int) -> str:
    """The server's address as a URL (an IPv6 address in brackets: ``http://[::1]:8000/``)."""
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def check_address(host: str, port: int) -> None:
    """Fail early, with one line naming ``--host``/``--port``, when the server could not listen
    there (an unknown host name, or a port another program holds): checked by binding a socket
    as uvicorn will (``SO_REUSEADDR``), before the model is loaded."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise ValueError(
            f"--host {host}: {err.strerror}; use an address of this machine (e.g. 127.0.0.1)"
        ) from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRNOTAVAIL:  # not an address of this machine
                raise ValueError(
                    f"--host {host}: cannot listen there ({err.strerror}); use an address of "
                    "this machine (e.g. 127.0.0.1)"
                ) from None
            raise ValueError(
                f"--port {port}: cannot listen on {host}:{port} ({err.strerror}); choose another "
                "--port or stop the program that uses it"
            ) from None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (for tests and benchmarks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def run_server(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    keyed: bool = True,
) -> None:
    """Serve ``app`` until SIGINT/SIGTERM; uvicorn then stops accepting connections, waits for
    the requests in flight, and the app's shutdown drains the batcher.

    Args:
        app: from :func:`attnkit.serve.app.create_app`.
        host: interface to bind (default loopback only).
        port: TCP port.
        log_level: uvicorn's log level.
        keyed: whether the app asks for an API key (the warning for a non-loopback ``host``
            suggests one otherwise).
    """
    try:
        import uvicorn
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "attnkit serve needs uvicorn; install it with `pip install 'attnkit[serve]'`"
        ) from err
    if not is_loopback(host):
        advice = "" if keyed else "; set --api-key (or ATTNKIT_API_KEY) to require a key"
        log.warning("serving on %s: reachable from other machines%s", host, advice)

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                # uvicorn re-raises the signal after its graceful shutdown; after SIGTERM the
                # queue is drained, so that is a clean exit (status 0), not a death by signal.
                captured = getattr(self, "_captured_signals", None)
                if captured is not None:
                    captured[:] = [s for s in captured if s != signal.SIGTERM]

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False)
    _Server(config).run()

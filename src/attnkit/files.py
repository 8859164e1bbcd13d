"""Small file helpers every layer may use: crash-safe JSON writes, JSON-lines appends and reads,
and scratch folders removed at exit.

A JSON-lines log (``metrics.jsonl``) is appended one whole line at a time, flushed to disk
(:func:`append_json_line`); a process killed in the middle of an append can leave at most one
incomplete last line (no final newline), which :func:`read_json_lines` skips and the next append
or :func:`rewrite_json_lines` removes. A full disk (``ENOSPC``) is reported by
:func:`is_disk_full`.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "fsync_path",
    "write_bytes_synced",
    "write_json_atomic",
    "append_json_line",
    "read_json_lines",
    "rewrite_json_lines",
    "is_disk_full",
    "scratch_dir",
]

log = logging.getLogger(__name__)


def fsync_path(path: str | Path) -> None:
    """Flush a file or directory to disk (directories: best effort, not on every OS)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.close(fd)


def write_bytes_synced(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and flush it to disk before returning."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as JSON to a temporary sibling, flush it, then rename it into place: a
    reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write_bytes_synced(tmp, json.dumps(obj, indent=2).encode("utf-8"))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_path(path.parent)


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` says the disk (or the user's quota) is full."""
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a write may be short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _torn_tail(fd: int, size: int) -> int:
    """The length of the incomplete last line of the open file ``fd`` of ``size`` bytes (0 when
    the file is empty or ends with a newline)."""
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return 0
    start = max(0, size - (1 << 16))
    while True:
        block = os.pread(fd, size - start, start)
        cut = block.rfind(b"\n")
        if cut >= 0:
            return size - (start + cut + 1)
        if start == 0:
            return size
        start = max(0, start - (1 << 16))


def append_json_line(path: str | Path, obj: Any) -> None:
    """Append ``obj`` as one JSON line to ``path`` and flush it to disk before returning.

    The line is written whole with one ``O_APPEND`` write; an incomplete last line left by a
    process killed mid-append is cut off first (with a warning), so it never glues onto this one
    (a last line that lacks only its newline is kept and ended). If the write fails (a full
    disk), the file is cut back to its previous length so that no part of the line stays, and
    the error is raised with the file's name.
    """
    path = Path(path)
    data = (json.dumps(obj) + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        torn = _torn_tail(fd, size) if size else 0
        if torn:
            try:
                json.loads(os.pread(fd, torn, size - torn))
                data = b"\n" + data  # a whole row without its newline: end it
            except ValueError:
                log.warning("%s: dropping an incomplete last line (%d bytes)", path, torn)
                size -= torn
                os.ftruncate(fd, size)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)  # no half line stays behind
            if err.filename is None:
                raise OSError(err.errno, err.strerror or str(err), str(path)) from err
            raise
    finally:
        os.close(fd)


def _decoded_lines(path: Path) -> tuple[list[str], bool]:
    """The lines of ``path`` and whether the last one is complete (ends with a newline)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ValueError(f"{path}:{line}: bytes that are not UTF-8 ({err.reason})") from None
    return text.split("\n"), text.endswith("\n") or not text


def read_json_lines(path: str | Path) -> list[Any]:
    """The JSON values of a JSON-lines file (blank lines skipped), in order.

    An incomplete last line (no final newline, not valid JSON: what a process killed in the middle
    of an append leaves) is skipped with a warning; a last line without a newline that is valid
    JSON is kept.

    Raises:
        ValueError: the file is missing, or a complete line is not JSON (naming the file and the
            line).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{str(path)!r} does not exist")
    lines, complete = _decoded_lines(path)
    rows = []
    for lineno, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                if lineno == len(lines) and not complete:
                    log.warning("%s:%d: skipping an incomplete last line", path, lineno)
                    break
                raise ValueError(f"{path}:{lineno}: not a JSON object ({err.msg})") from None
    return rows


def rewrite_json_lines(path: str | Path, keep: Callable[[Any], bool]) -> int:
    """Keep only the rows of the JSON-lines file ``path`` for which ``keep(row)`` is true,
    rewriting it atomically (an incomplete last line is dropped too).

    Returns:
        How many rows were dropped (0: the file is left untouched).
    """
    path = Path(path)
    if not path.is_file():
        return 0
    lines, complete = _decoded_lines(path)
    kept: list[str] = []
    dropped = 0
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if lineno == len(lines) and not complete:
                dropped += 1
                continue
            raise ValueError(f"{path}:{lineno}: not a JSON object ({err.msg})") from None
        if keep(row):
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            write_bytes_synced(tmp, "".join(line + "\n" for line in kept).encode("utf-8"))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fsync_path(path.parent)
    return dropped


def scratch_dir(prefix: str = "attnkit-") -> Path:
    """A new temporary folder, removed with everything in it when the process exits (runs that
    tutorials and examples train only to show them)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path

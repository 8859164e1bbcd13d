"""Small file helpers every layer may use: crash-safe JSON writes and JSON-lines reads."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["fsync_path", "write_bytes_synced", "write_json_atomic", "read_json_lines"]


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


def read_json_lines(path: str | Path) -> list[Any]:
    """The JSON values of a JSON-lines file (blank lines skipped), in order.

    Raises:
        ValueError: the file is missing, or a line is not JSON (naming the file and the line).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{str(path)!r} does not exist")
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not a JSON object ({err.msg})") from None
    return rows

"""One writer per run folder: ``RUN/.lock``.

Everything that writes a run folder (training and resuming through
:func:`attnkit.training.runs.train_run`, ``attnkit average``) holds the folder's lock while it
writes; a second writer fails at once with one line naming the process that holds it. Readers
(``translate``, ``evaluate``, ``report``, ...) never take it: checkpoints are replaced atomically,
so a reader sees the old one or the new one.

The lock is an ``fcntl.flock`` on ``RUN/.lock``, a small JSON file naming the holder (PID, host,
start time, command). The kernel drops a ``flock`` when its process dies however it dies, so a
lock file left by a killed process is free: the next writer takes it over with a warning naming
the dead holder. The file is deleted when its holder releases it. Where ``flock`` is not supported
(some network file systems) the PID decides: a lock whose PID is alive on this host is held; one
whose PID is gone is taken over.

Under torchrun only rank 0 takes the lock (the other ranks write nothing in the folder).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["LOCK_FILE", "RunLock", "RunLockedError", "run_lock"]

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class RunLockedError(RuntimeError):
    """Another live process is writing the run folder; the message names it."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    except OSError:
        return False
    return True


def _describe(info: dict[str, Any]) -> str:
    pid, host = info.get("pid", "?"), info.get("host", "?")
    started = info.get("started", "?")
    command = info.get("command")
    return f"process {pid} on {host} (started {started}" + (f": `{command}`)" if command else ")")


class RunLock:
    """The write lock of one run folder; use as a context manager.

    Args:
        run_dir: the run folder (created if missing).
        command: what is writing, stored in the lock file and quoted to a second writer.
    """

    def __init__(self, run_dir: str | Path, command: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.command = command or " ".join(["attnkit", *sys.argv[1:]])[:300]
        self._fd: int | None = None

    def _info(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": self.command,
        }

    def _read(self, fd: int | None = None) -> dict[str, Any]:
        """The holder recorded in the lock file ({} when empty or unreadable)."""
        try:
            if fd is None:
                raw = self.path.read_bytes()
            else:
                raw = os.pread(fd, 1 << 16, 0)
            info = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def _holder(self) -> dict[str, Any]:
        """The live holder's record (it may be about to write it: retry briefly)."""
        for _ in range(20):
            info = self._read()
            if info.get("pid"):
                return info
            time.sleep(0.05)
        return {}

    def _refuse(self, info: dict[str, Any]) -> RunLockedError:
        who = _describe(info) if info else "another process"
        return RunLockedError(
            f"{self.run_dir} is being written by {who}; wait for it to finish or stop it "
            f"(two writers would corrupt the run; the lock is {self.path})"
        )

    def acquire(self) -> RunLock:
        """Take the lock, or raise :class:`RunLockedError` at once if a live process holds it."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this RunLock")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        import fcntl

        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._refuse(self._holder()) from None
            except OSError as err:
                if err.errno not in _UNSUPPORTED:
                    os.close(fd)
                    raise
                self._check_pid(fd)  # no flock here: the recorded PID decides
            try:  # the file we locked must still be the one at the path (not one just deleted)
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:  # pragma: no cover - only under a storm of competing writers
            raise self._refuse({})
        previous = self._read(fd)
        if previous.get("pid") and previous.get("pid") != os.getpid():
            log.warning(
                "%s: taking over the lock left by %s, which is no longer running",
                self.run_dir,
                _describe(previous),
            )
        data = json.dumps(self._info()).encode("utf-8")
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def _check_pid(self, fd: int) -> None:
        info = self._read(fd)
        pid = info.get("pid")
        if (
            isinstance(pid, int)
            and pid != os.getpid()
            and info.get("host") == socket.gethostname()
            and _pid_alive(pid)
        ):
            os.close(fd)
            raise self._refuse(info)

    def release(self) -> None:
        """Delete the lock file and drop the lock (nothing when not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                os.unlink(self.path)  # while still locked: a waiter re-checks the inode
        os.close(fd)  # closing drops the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


@contextlib.contextmanager
def run_lock(run_dir: str | Path, command: str | None = None) -> Iterator[RunLock | None]:
    """Hold ``run_dir``'s write lock for the ``with`` block; under torchrun only on rank 0 (the
    other ranks get None)."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield None
        return
    with RunLock(run_dir, command) as lock:
        yield lock

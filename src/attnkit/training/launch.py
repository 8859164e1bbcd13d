"""Relaunch an ``attnkit`` command under torchrun for N local processes (``--nproc N``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

__all__ = ["under_torchrun", "relaunch_with_torchrun", "strip_nproc"]


def under_torchrun() -> bool:
    """True inside a torchrun worker (torchrun sets LOCAL_RANK and WORLD_SIZE)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """Remove ``--nproc N`` / ``--nproc=N`` from a command line."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            out.append(item)
    return out


def relaunch_with_torchrun(nproc: int, argv: Sequence[str], timeout_s: int = 300) -> int:
    """Run ``python -m torch.distributed.run --standalone --nproc-per-node N -m attnkit.cli ...``.

    torchrun ends every worker when one fails, so a crash on one rank ends the job with that
    rank's error; collectives also time out after ``timeout_s`` (see ``distributed.init_from_env``).
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "--max-restarts=0", "-m", "attnkit.cli",
           *strip_nproc(argv)]
    env = {**os.environ, "ATTNKIT_DIST_TIMEOUT": str(timeout_s),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS",
                                             str(max(1, (os.cpu_count() or 1) // nproc)))}
    status = subprocess.call(cmd, env=env)
    if status != 0:
        print(f"attnkit: a worker failed (exit {status}); see the messages above", file=sys.stderr)
    return status

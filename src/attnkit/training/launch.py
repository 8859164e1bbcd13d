"""Relaunch an ``attnkit`` command under torchrun for N local processes (``--nproc N``).

``attnkit train ... --nproc 2`` becomes::

    python -m attnkit.training.torchrun --standalone --nproc-per-node=2 --max-restarts=0 \\
        -m -- attnkit.cli train ...

(:mod:`attnkit.training.torchrun` is torchrun, ``torch.distributed.run``, ending on Ctrl-C or a
failed worker without a traceback of torchrun's internals.)

Each worker then finds RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* in its environment and joins the
process group (:func:`attnkit.training.distributed.init_from_env`). Under an external
``torchrun`` (several machines) the command runs as it is, without ``--nproc``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from attnkit.training.distributed import TIMEOUT_ENV

__all__ = ["under_torchrun", "relaunch_with_torchrun", "strip_nproc", "torchrun_command"]


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


def torchrun_command(nproc: int, argv: Sequence[str], module: str = "attnkit.cli") -> list[str]:
    """The torchrun command line that runs ``python -m module *argv`` in ``nproc`` processes.

    ``--standalone`` picks a free local rendezvous port; ``--max-restarts=0`` makes the first
    failing worker end the job (torchrun then stops the others and names the failed rank). The
    ``--`` before the module ends torchrun's own options: without it torchrun's parser reads
    the command's options too and rejects ``--run`` as an ambiguous abbreviation of its
    ``--run-path``.
    """
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    return [
        sys.executable,
        "-m",
        "attnkit.training.torchrun",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "--max-restarts=0",
        "-m",
        "--",
        module,
        *strip_nproc(argv),
    ]


def _remove_unstarted(run_dir: Path) -> bool:
    """Remove a run folder this job made if training never started in it (no config.json):
    emptied under the run's lock, which no live process may hold (another job that took over
    the folder keeps it), then removed once the lock is released. True when it is gone."""
    from attnkit.training.runlock import RunLock, RunLockedError
    from attnkit.training.runs import empty_except_lock

    if not run_dir.is_dir() or run_dir.is_symlink() or (run_dir / "config.json").exists():
        return False
    try:
        with RunLock(run_dir, "attnkit (removing a failed start)"):
            if (run_dir / "config.json").exists():
                return False
            empty_except_lock(run_dir)
    except RunLockedError:
        return False
    with contextlib.suppress(OSError):
        run_dir.rmdir()
    return not run_dir.exists()


def relaunch_with_torchrun(
    nproc: int,
    argv: Sequence[str],
    timeout_s: float | None = None,
    *,
    run_dir: str | Path | None = None,
) -> int:
    """Run ``argv`` (an ``attnkit`` command line) in ``nproc`` local processes; return the status.

    Args:
        nproc: number of processes (one per GPU, or CPU processes sharing the cores).
        argv: the command line as given, ``--nproc`` included (it is removed).
        timeout_s: collective timeout for the workers (default: ``$ATTNKIT_DIST_TIMEOUT`` or
            300 s): a rank that stalls longer ends the job with an error.
        run_dir: the run folder the command trains. When this job made it and failed (or was
            interrupted) before its ``config.json`` was written, the folder is removed, as a
            single-process start does (torchrun may kill rank 0 before it can clean up).

    Returns:
        0 on success; 130 after Ctrl-C (the workers save a checkpoint first); torchrun's
        non-zero status if a worker failed (its error and torchrun's "Root Cause" summary,
        naming the rank, are printed above a one-line note).
    """
    env = dict(os.environ)
    if timeout_s is not None:
        env[TIMEOUT_ENV] = str(timeout_s)
    # share the cores: without this every worker starts one thread per core
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    new_folder = run_dir is not None and not os.path.lexists(run_dir)
    proc = subprocess.Popen(torchrun_command(nproc, argv), env=env)
    interrupted = False
    try:
        status = proc.wait()
    except KeyboardInterrupt:
        # Ctrl-C reached the workers too: they save a checkpoint and stop; wait for that.
        interrupted = True
        try:
            status = proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            status = proc.wait()
    removed = new_folder and status != 0 and _remove_unstarted(Path(run_dir))  # type: ignore[arg-type]
    if interrupted and status != 0:  # (130, or torchrun's 1 if it was not our wrapper's status)
        if removed:
            print(
                f"attnkit: interrupted before training started; nothing was saved and {run_dir} "
                "was removed: run the same command again",
                file=sys.stderr,
            )
        else:
            print(
                f"attnkit: interrupted; the {nproc} workers saved a checkpoint: continue with "
                "the same command and --resume",
                file=sys.stderr,
            )
        return 130
    if removed:
        print(
            f"attnkit: removed {run_dir}: the job failed before training started", file=sys.stderr
        )
    if status != 0:
        print(
            f"attnkit: {nproc}-process job failed (torchrun exit status {status}); the failing "
            "rank's error and torchrun's 'Root Cause' summary are above",
            file=sys.stderr,
        )
    return status

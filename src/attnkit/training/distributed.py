"""PyTorch DDP glue: process-group set-up from torchrun's environment, and small helpers.

Single-process runs go through the same functions, which then do nothing (or return their input).

Gradient convention: the trainer's loss is a *sum* over each rank's items and the trainer divides
the gradients by the item count of the whole global batch (summed over ranks). DDP's default
all-reduce would *average* the gradients over ranks, which would shrink them by the world size;
:func:`wrap_model` therefore installs a comm hook that *sums* them, so one step of N processes
is the step one process takes on the same global batch.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

import torch
import torch.distributed as tdist
from torch import nn

__all__ = [
    "TIMEOUT_ENV",
    "DEFAULT_TIMEOUT_S",
    "init_from_env",
    "is_distributed",
    "rank",
    "world_size",
    "local_rank",
    "is_main",
    "wrap_model",
    "unwrap_model",
    "all_reduce_sum",
    "all_reduce_sums",
    "any_rank",
    "all_gather_objects",
    "no_sync_unless",
    "barrier",
    "shutdown",
    "exit_worker",
]

#: Environment variable holding the collective timeout in seconds (set by ``--nproc`` launches).
TIMEOUT_ENV = "ATTNKIT_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0


def _timeout_from_env() -> float:
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(
            f"{TIMEOUT_ENV}={raw!r} is not a number; set it to seconds, e.g. 300"
        ) from None
    if value <= 0:
        raise ValueError(f"{TIMEOUT_ENV} must be > 0 seconds, got {raw}")
    return value


def init_from_env(device_type: str = "cpu", timeout_s: float | None = None) -> bool:
    """Join the process group described by torchrun's RANK/WORLD_SIZE/MASTER_* variables.

    Backend: nccl on CUDA, gloo on CPU. ``timeout_s`` (default: ``$ATTNKIT_DIST_TIMEOUT``, else
    300 s) bounds every collective, so that a rank that stalls ends the job with an error instead
    of a hang; a rank that dies is noticed by torchrun, which stops the others at once.

    Args:
        device_type: ``"cuda"`` or ``"cpu"`` (the device the model trains on).
        timeout_s: collective timeout in seconds.

    Returns:
        True when running distributed (WORLD_SIZE > 1), False for a single process.
    """
    if tdist.is_available() and tdist.is_initialized():
        return True
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return False
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={world} but {', '.join(missing)} not set; launch with "
            "`attnkit ... --nproc N` or `torchrun`, not by setting WORLD_SIZE alone"
        )
    timeout = _timeout_from_env() if timeout_s is None else float(timeout_s)
    if timeout <= 0:
        raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s}")
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        if local_rank() >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={local_rank()} but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s); lower --nproc / "
                "--nproc-per-node to the number of GPUs"
            )
        torch.cuda.set_device(local_rank())
    tdist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout))
    atexit.register(shutdown)  # leave the group while Python is alive (see exit_worker)
    return True


def is_distributed() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    return tdist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return tdist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def _sum_hook(process_group, bucket):  # type: ignore[no-untyped-def]
    """DDP comm hook: all-reduce a gradient bucket as a *sum* (DDP's default divides by N).

    Unannotated on purpose: DDP rejects annotations other than the real classes, and this
    module's postponed annotations would be strings.
    """
    group = process_group if process_group is not None else tdist.group.WORLD
    work = tdist.all_reduce(bucket.buffer(), group=group, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``model`` when distributed; the model itself otherwise.

    The gradients are *summed* over ranks (see the module docstring): the caller divides them by
    the global item count.
    """
    if not is_distributed():
        return model
    ids = [device.index] if device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    ddp.register_comm_hook(None, _sum_hook)
    return ddp


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DDP and torch.compile wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model


def all_reduce_sums(values: Sequence[float], device: torch.device) -> list[float]:
    """Sum several Python numbers over all ranks in one collective (float64)."""
    if not is_distributed():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    tdist.all_reduce(t)
    return t.tolist()


def all_reduce_sum(value: float, device: torch.device) -> float:
    """Sum a Python number over all ranks."""
    return all_reduce_sums([value], device)[0]


def any_rank(flags: Sequence[bool], device: torch.device) -> list[bool]:
    """For each flag, whether it is True on at least one rank (so that every rank stops at the
    same step when one of them runs out of time or is interrupted)."""
    return [total > 0 for total in all_reduce_sums([float(bool(f)) for f in flags], device)]


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` for a single process."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    tdist.all_gather_object(out, obj)
    return out


@contextlib.contextmanager
def no_sync_unless(model: nn.Module, sync: bool) -> Iterator[None]:
    """Skip DDP's gradient all-reduce on accumulation micro-steps (``sync=False``)."""
    inner = getattr(model, "_orig_mod", model)  # DDP under torch.compile
    if not sync and isinstance(inner, nn.parallel.DistributedDataParallel):
        with inner.no_sync():
            yield
    else:
        yield


def barrier() -> None:
    if is_distributed():
        tdist.barrier()


def exit_worker(status: int) -> NoReturn:
    """End a torchrun worker with ``status``: the exit handlers run, interpreter teardown doesn't.

    Why: a gloo thread drops its last finished collective (for example the tensors
    ``all_gather_object`` made in Python) a moment after the caller has its result. When that
    moment falls in the interpreter's teardown, the thread cannot take the GIL to free them and
    the whole rank aborts ("terminate called without an active exception", SIGABRT): the job is
    reported failed after its work was done and saved. Leaving the process group does not stop
    those threads while a DDP model's reducer still holds the group. Seen in 6 of 60 runs of
    the 2-process test on 2 CPU cores (a core dump showed the gloo thread freeing an all-gather's
    tensors inside ``Py_FinalizeEx``), 0 of 40 since: the threads end with the process instead.

    Everything that exit normally does before teardown still happens: other (non-daemon)
    threads are waited for, ``atexit`` handlers run (logging flushed, the group left, temporary
    folders removed) and stdout/stderr are flushed. Files are written with ``with`` blocks, so
    none is left open with buffered data.
    """
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def shutdown() -> None:
    """Leave the process group (a no-op when not distributed or already left)."""
    if is_distributed():
        tdist.destroy_process_group()

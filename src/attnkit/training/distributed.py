"""PyTorch DDP glue: process-group set-up from torchrun's environment, and small helpers.

Single-process runs go through the same functions, which then do nothing.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator

import torch
import torch.distributed as tdist
from torch import nn

__all__ = [
    "init_from_env",
    "is_distributed",
    "rank",
    "world_size",
    "local_rank",
    "is_main",
    "wrap_model",
    "unwrap_model",
    "all_reduce_sum",
    "no_sync_unless",
    "barrier",
    "shutdown",
]


def init_from_env(device_type: str = "cpu", timeout_s: float = 300.0) -> bool:
    """Join the process group described by torchrun's RANK/WORLD_SIZE/MASTER_* variables.

    Backend: nccl on CUDA, gloo on CPU. ``timeout_s`` bounds every collective so that a dead
    rank ends the job with an error instead of a hang. Returns True when running distributed.
    """
    if tdist.is_available() and tdist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank())
    tdist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
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


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``model`` when distributed; the model itself otherwise."""
    if not is_distributed():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DDP and torch.compile wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model


def all_reduce_sum(value: float, device: torch.device) -> float:
    """Sum a Python number over all ranks."""
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    tdist.all_reduce(t)
    return float(t.item())


@contextlib.contextmanager
def no_sync_unless(model: nn.Module, sync: bool) -> Iterator[None]:
    """Skip DDP's gradient all-reduce on accumulation micro-steps (``sync=False``)."""
    if not sync and isinstance(model, nn.parallel.DistributedDataParallel):
        with model.no_sync():
            yield
    else:
        yield


def barrier() -> None:
    if is_distributed():
        tdist.barrier()


def shutdown() -> None:
    if is_distributed():
        tdist.destroy_process_group()

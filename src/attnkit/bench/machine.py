"""What a benchmark ran on: CPU, usable cores, threads, torch, GPU, load average, peak memory.

Every benchmark prints these in its header line, so a recorded figure says what produced it.
"""

from __future__ import annotations

import os
import platform
import resource
from typing import Any

import torch

__all__ = ["cpu_name", "describe_machine", "load_average", "processor", "usable_cores"]


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def processor() -> str:
    """The short processor name Python knows (``platform.processor()``, else the machine)."""
    return platform.processor() or platform.machine()


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one, else :func:`processor`."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            return next(
                line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")
            )
    except (OSError, StopIteration):
        return processor()


def load_average() -> str:
    """The 1, 5 and 15-minute load averages as ``"0.52 0.61 0.70"``, or ``"n/a"``."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except (OSError, AttributeError):  # pragma: no cover - not on every platform
        return "n/a"


def describe_machine(device: str = "cpu") -> dict[str, Any]:
    """CPU model, usable cores, threads, torch version, GPU name, load average, peak RSS.

    Returns:
        dict with ``cpu``, ``cores``, ``threads``, ``torch``, ``device``, ``load`` (formatted
        by :func:`load_average`), ``peak_rss_mib`` and, on CUDA, ``gpu`` and ``gpu_peak_mib``.
    """
    info: dict[str, Any] = {
        "cpu": cpu_name(),
        "cores": usable_cores(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": device,
        "load": load_average(),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return info

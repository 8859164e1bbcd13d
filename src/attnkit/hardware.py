"""What the CPU can do, for choices that depend on it (int8 kernels, bfloat16 autocast)."""

from __future__ import annotations

import functools

__all__ = ["cpu_flags", "has_amx_bf16"]


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (``/proc/cpuinfo``); empty elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_amx_bf16() -> bool:
    """Whether the CPU multiplies bfloat16 matrices in hardware (Intel AMX)."""
    return "amx_bf16" in cpu_flags()

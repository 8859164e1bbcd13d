"""A fingerprint of a task's data, kept in checkpoints so that a resume notices changed data.

A run resumes "exactly": the same batches in the same order. That holds only for the data the
run started with; a resume over an edited or replaced file would go on training on other
examples (and pick its best checkpoint across two validation sets) without a word. Tasks store
:func:`fingerprint` of their encoded data in their checkpoint state and compare it on resume
with :func:`check_same_data`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from attnkit.config import ConfigError

__all__ = ["DataChangedError", "fingerprint", "check_same_data"]


class DataChangedError(ConfigError):
    """The data differs from the data a checkpoint was trained on."""


def fingerprint(*parts: Tensor | Sequence[Any]) -> str:
    """SHA-256 (hex, first 16 digits) of encoded data: tensors by dtype, shape and values,
    nests of lists holding tensors item by item, anything else (lists of token ids, labels)
    by its ``repr``.

    Args:
        parts: the data, e.g. the training and validation token streams, shapes (N,) and (M,),
            or a list of encoded texts and their targets.
    """
    digest = hashlib.sha256()
    for part in parts:
        _update(digest, part)
    return digest.hexdigest()[:16]


def _holds_tensors(part: Sequence[Any]) -> bool:
    """Whether a (homogeneous) nest of lists holds tensors: its first leaf is one. Without
    tensors the whole nest's ``repr`` is complete and faster than a walk."""
    first: Any = part
    while isinstance(first, (list, tuple)) and first:
        first = first[0]
    return isinstance(first, Tensor)


def _update(digest: Any, part: Any) -> None:
    if isinstance(part, Tensor):
        array = part.detach().to("cpu").contiguous()
        digest.update(f"T{array.dtype}{tuple(array.shape)}".encode())
        digest.update(array.view(torch.uint8).numpy().tobytes() if array.numel() else b"")
    elif isinstance(part, (list, tuple)) and _holds_tensors(part):
        digest.update(f"L{len(part)}[".encode())
        for item in part:
            _update(digest, item)
        digest.update(b"]")
    else:
        digest.update(repr(part).encode())
    digest.update(b"\0")


def check_same_data(saved: str | None, now: str, size_then: Any, size_now: Any, fix: str) -> None:
    """Refuse to resume over changed data (``saved`` None: a checkpoint older than this check).

    Args:
        saved: the checkpoint's fingerprint.
        now: the fingerprint of the data read now.
        size_then: the data's size when saved, for the message (e.g. "402,150 tokens").
        size_now: its size now.
        fix: what the user should do, ending the message.

    Raises:
        DataChangedError: one line with both sizes and ``fix``.
    """
    if saved is not None and saved != now:
        same = " (same size, other content)" if size_then == size_now else ""
        raise DataChangedError(
            f"the data changed since this checkpoint was saved: {size_then} then, {size_now} "
            f"now{same}; {fix}"
        )

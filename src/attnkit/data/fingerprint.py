"""A fingerprint of a task's data, kept in checkpoints so that a resume notices changed data.

A run resumes "exactly": the same batches in the same order. That holds only for the data the
run started with; a resume over an edited or replaced file would go on training on other
examples (and pick its best checkpoint across two validation sets) without a word. Tasks store
:func:`fingerprint` of their encoded data in their checkpoint state and compare it on resume
(:class:`DataIdentity`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from attnkit.config import ConfigError

__all__ = ["DataChangedError", "DataIdentity", "fingerprint"]


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


@dataclass(frozen=True)
class DataIdentity:
    """What a task's data was: its :func:`fingerprint` and its size in words for messages
    ("6,920 tokens"). A task keeps one, adds :meth:`state` to its checkpoint state and calls
    :meth:`check` on resume."""

    fingerprint: str
    size: str

    @classmethod
    def of(cls, size: str, *parts: Tensor | Sequence[Any]) -> DataIdentity:
        """The identity of the data ``parts`` (see :func:`fingerprint`), described as ``size``."""
        return cls(fingerprint(*parts), size)

    def state(self) -> dict[str, str]:
        """The entries a task adds to its checkpoint state."""
        return {"data": self.fingerprint, "data_size": self.size}

    def check(self, state: dict[str, Any], fix: str) -> None:
        """Refuse to resume from ``state`` over other data (a state without a fingerprint, from
        a checkpoint older than this check, is accepted).

        Args:
            state: the task's checkpoint state.
            fix: what the user should do, ending the message.

        Raises:
            DataChangedError: one line with both sizes and ``fix``.
        """
        saved, then = state.get("data"), state.get("data_size")
        if saved is not None and saved != self.fingerprint:
            same = " (same size, other content)" if then == self.size else ""
            raise DataChangedError(
                f"the data changed since this checkpoint was saved: {then} then, {self.size} "
                f"now{same}; {fix}"
            )

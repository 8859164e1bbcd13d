"""Checkpoints that survive crashes: atomic directory swaps and strict loading.

The best-N bookkeeping and averaging live in :mod:`attnkit.training.manager`.

A checkpoint is a directory holding

* ``model.safetensors``: the weights (tied/shared tensors stored once, restored tied);
* ``state.pt``: ``torch.save`` of the trainer's dict -- optimizer, scheduler, scaler, RNG states
  (:func:`capture_rng_state`), data order, step, epoch... It is read back with
  ``torch.load(weights_only=True)``, so it must hold only tensors, numbers, strings, None and
  lists/tuples/dicts of them (every state_dict in torch does);
* ``meta.json``: attnkit and format versions, step, epoch, metrics, timestamp, and whatever else
  the caller adds (the run config); small and readable without torch.

:func:`save_checkpoint` writes everything into the sibling ``<name>.tmp``, fsyncs it, then
renames ``<name>`` to ``<name>.old``, ``<name>.tmp`` to ``<name>`` and deletes ``<name>.old``. At
every instant a complete checkpoint exists under one of those names; a run stopped between the
two renames is read from the complete sibling by :func:`load_checkpoint` and tidied up by the
next save. ``meta.json`` is written last, so a directory without a readable one is never taken
for a checkpoint.

``meta.json`` also records the SHA-256 of ``model.safetensors`` and ``state.pt``
(``checksums``); :func:`load_checkpoint` checks them before anything is loaded, so a file damaged
on disk (truncated, bit-flipped) is refused with one line naming it, and ``state.pt`` is only
ever read with ``torch.load(weights_only=True)``: a pickle that would run code is refused, never
executed. Nothing is loaded into the model unless every file of the checkpoint has been read and
checked. Checkpoints written before checksums existed load without that check.

A save that fails for lack of disk space removes its partial copy (freeing the space) and raises
an ``OSError`` naming the checkpoint; the previous checkpoint is untouched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import random
import re
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_model
from torch import Tensor, nn

from attnkit.files import fsync_path, write_bytes_synced
from attnkit.training.distributed import unwrap_model
from attnkit.version import __version__

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "capture_rng_state",
    "load_checkpoint",
    "load_tensors",
    "load_weights",
    "read_meta",
    "restore_rng_state",
    "save_checkpoint",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MODEL_FILE, STATE_FILE, META_FILE = "model.safetensors", "state.pt", "meta.json"
_FILES = (MODEL_FILE, STATE_FILE, META_FILE)
#: Tests set it to a number of seconds to make each step of a save that slow, so that a kill can
#: land inside a save (tests/training/test_kill_anywhere.py); never set in normal use.
SLOW_SAVE_ENV = "ATTNKIT_TEST_SLOW_CHECKPOINT"


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete, incompatible or does not fit the model."""


# -- files -----------------------------------------------------------------------------------
def _pause_for_tests() -> None:
    """Sleep ``$ATTNKIT_TEST_SLOW_CHECKPOINT`` seconds (tests only; unset: nothing)."""
    delay = os.environ.get(SLOW_SAVE_ENV)
    if delay:
        time.sleep(float(delay))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def _siblings(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")


def _is_complete(path: Path) -> bool:
    if not all((path / name).is_file() for name in _FILES):
        return False
    try:
        return "format_version" in json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def _resolve(path: Path) -> Path:
    """``path``, or its complete ``.tmp``/``.old`` sibling when a swap was interrupted."""
    if path.exists():
        return path
    for candidate in _siblings(path):  # the newer copy first
        if _is_complete(candidate):
            log.warning("%s was being replaced when a run stopped; reading %s", path, candidate)
            return candidate
    return path


def _recover(path: Path) -> None:
    """Finish or undo an interrupted swap, then remove the leftovers (writers only)."""
    tmp, old = _siblings(path)
    if not path.exists():
        for candidate in (tmp, old):
            if _is_complete(candidate):
                os.rename(candidate, path)
                log.warning("recovered checkpoint %s from %s", path, candidate.name)
                break
    for leftover in (tmp, old):
        if leftover.exists():
            shutil.rmtree(leftover)


# -- save / load -----------------------------------------------------------------------------
def save_checkpoint(
    path: str | Path, model: nn.Module, state: dict[str, Any], meta: dict[str, Any]
) -> Path:
    """Write ``model``, ``state`` and ``meta`` as the checkpoint directory ``path``, atomically.

    Args:
        path: the checkpoint directory; its parent is created if needed.
        model: DDP and ``torch.compile`` wrappers are removed before saving.
        state: anything ``torch.load(weights_only=True)`` can read back (see the module doc).
        meta: JSON-ready dict; ``format_version``, ``attnkit_version``, ``timestamp`` are added,
            and ``step``/``epoch`` from ``state`` when meta lacks them.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    meta = {
        **meta,
        "format_version": FORMAT_VERSION,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    meta.setdefault("attnkit_version", __version__)
    for key in ("step", "epoch"):
        meta.setdefault(key, state.get(key))
    meta.setdefault("metrics", {})
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"meta for {path} is not JSON-ready ({err}); pass numbers, strings, lists and dicts"
        ) from err
    path.parent.mkdir(parents=True, exist_ok=True)
    _recover(path)
    tmp, old = _siblings(path)
    try:
        tmp.mkdir()
        save_model(unwrap_model(model), str(tmp / MODEL_FILE), force_contiguous=True)
        fsync_path(tmp / MODEL_FILE)
        _pause_for_tests()
        with open(tmp / STATE_FILE, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        _pause_for_tests()
        meta["checksums"] = {name: _sha256(tmp / name) for name in (MODEL_FILE, STATE_FILE)}
        meta_text = json.dumps(meta, indent=2)
        write_bytes_synced(tmp / META_FILE, meta_text.encode())  # last: marks the copy complete
        fsync_path(tmp)
    except OSError as err:  # e.g. a full disk: free what was written, keep the old checkpoint
        shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err
    _pause_for_tests()
    if path.exists():
        os.rename(path, old)
    _pause_for_tests()
    os.rename(tmp, path)
    fsync_path(path.parent)
    _pause_for_tests()
    if old.exists():
        shutil.rmtree(old)
    return path


def read_meta(path: str | Path) -> dict[str, Any]:
    """``meta.json`` of a checkpoint, after checking that it is complete and readable here.

    Raises:
        CheckpointError: one line naming the path, what is wrong and what to do.
    """
    return _checked_meta(_resolve(Path(path)))


def _checked_meta(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise CheckpointError(
            f"no checkpoint at {path}; check the path (a checkpoint is a "
            "directory holding model.safetensors, state.pt and meta.json)"
        )
    missing = [name for name in _FILES if not (path / name).is_file()]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} is incomplete (missing {', '.join(missing)}); "
            "it was damaged or not written by attnkit -- use another one"
        )
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except ValueError as err:
        raise CheckpointError(
            f"checkpoint {path}: meta.json is not valid JSON ({err}); use another checkpoint"
        ) from err
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if not isinstance(version, int):
        raise CheckpointError(
            f"checkpoint {path}: meta.json has no format_version; it was not "
            "written by attnkit's save_checkpoint"
        )
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version} (attnkit "
            f"{meta.get('attnkit_version', '?')}) but attnkit {__version__} reads up to "
            f"{FORMAT_VERSION}; upgrade attnkit to load it"
        )
    return meta


def _short(items: list[str], limit: int = 5) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _alias_groups(state: dict[str, Tensor]) -> dict[str, set[str]]:
    """For each key, the other keys naming the very same tensor (tied weights)."""
    by_view: dict[Any, set[str]] = {}
    for key, t in state.items():
        shared = t.numel() and t.device.type != "meta"
        view = (
            (t.untyped_storage().data_ptr(), t.storage_offset(), t.shape, t.stride())
            if shared
            else key
        )
        by_view.setdefault(view, set()).add(key)
    return {key: group - {key} for group in by_view.values() for key in group}


def load_weights(model: nn.Module, tensors: dict[str, Tensor], source: str = "state") -> None:
    """Copy ``tensors`` into ``model`` strictly; a tied weight may be present under one name.

    Raises:
        CheckpointError: listing missing and unexpected keys and shape mismatches.
    """
    model = unwrap_model(model)
    expected = model.state_dict()
    aliases = _alias_groups(expected)
    problems = {
        "missing keys": [
            k for k in expected if k not in tensors and aliases[k].isdisjoint(tensors)
        ],
        "unexpected keys": [k for k in tensors if k not in expected],
        "shape mismatches": [
            f"{k} {tuple(t.shape)} vs model {tuple(expected[k].shape)}"
            for k, t in tensors.items()
            if k in expected and t.shape != expected[k].shape
        ],
    }
    if any(problems.values()):
        found = "; ".join(f"{what}: {_short(keys)}" for what, keys in problems.items() if keys)
        raise CheckpointError(
            f"{source} does not fit {type(model).__name__} ({found}): it is a checkpoint of "
            "another model (load it with the run it came from), or the run's config.json was "
            "changed after training (its meta.json has the config it was trained with)"
        )
    model.load_state_dict(tensors, strict=False)


_USE_ANOTHER = "use another checkpoint (--checkpoint last, best or a best-* folder) or retrain"


def _verify(path: Path, name: str, meta: dict[str, Any]) -> None:
    """Check ``path/name`` against the checksum in ``meta`` (when the checkpoint has one)."""
    checksums = meta.get("checksums")
    expected = checksums.get(name) if isinstance(checksums, dict) else None
    if expected is None:
        return  # written before checksums were recorded
    if _sha256(path / name) != expected:
        raise CheckpointError(
            f"{path / name} is damaged (its SHA-256 differs from the one in meta.json: "
            f"truncated, overwritten or corrupted on disk); {_USE_ANOTHER}"
        )


def load_tensors(path: str | Path, meta: dict[str, Any] | None = None) -> dict[str, Tensor]:
    """The tensors of ``path/model.safetensors``, checked against ``meta``'s checksum.

    Raises:
        CheckpointError: one line naming the file when it is damaged or not safetensors.
    """
    path = Path(path)
    file = path / MODEL_FILE
    if meta is not None:
        _verify(path, MODEL_FILE, meta)
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{file} is not a readable safetensors file ({reason}); {_USE_ANOTHER}"
        ) from None


def _load_state(path: Path, meta: dict[str, Any], map_location: Any) -> dict[str, Any]:
    file = path / STATE_FILE
    _verify(path, STATE_FILE, meta)
    try:
        state = torch.load(file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        wanted = re.search(r"unsupported GLOBAL (\S+)", str(err))
        raise CheckpointError(
            f"{file} holds objects other than tensors, numbers, strings and containers"
            + (f" (it would call {wanted.group(1)})" if wanted else "")
            + f", so it was refused unread (loading it could run code); {_USE_ANOTHER}"
        ) from None
    except Exception as err:  # torch raises many kinds for a damaged file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{file} is damaged and cannot be read ({reason[:200]}); {_USE_ANOTHER}"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{file} does not hold a dict; {_USE_ANOTHER}")
    return state


def load_checkpoint(
    path: str | Path,
    model: nn.Module | None = None,
    map_location: str | torch.device = "cpu",
    with_state: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a checkpoint directory, loading its weights into ``model`` strictly.

    Every file is read and checked (checksums, safetensors header, weights-only pickle, keys and
    shapes) before the model is touched: after an error the model holds its old weights. A
    checkpoint replaced by a writer while it is being read is read again.

    Args:
        path: the directory (an interrupted save's complete sibling is used if it is missing).
        model: receives the weights (in place, on whatever device it lives); None: not loaded.
        map_location: where the tensors of ``state.pt`` go.
        with_state: False skips ``state.pt`` (inference) and returns an empty state.

    Returns:
        ``(state, meta)``.

    Raises:
        CheckpointError: missing/incomplete/damaged/newer-format checkpoint, a ``state.pt``
            that is not weights-only, or weights that do not fit.
    """
    for attempt in range(3):
        resolved = _resolve(Path(path))
        inode = _inode(resolved)
        try:
            meta = _checked_meta(resolved)
            tensors = load_tensors(resolved, meta) if model is not None else None
            state = _load_state(resolved, meta, map_location) if with_state else {}
            break
        except (CheckpointError, OSError):
            if attempt == 2 or _inode(_resolve(Path(path))) == inode:
                raise  # the checkpoint itself is bad, not replaced by a writer as we read it
    if tensors is not None:
        load_weights(model, tensors, source=str(resolved / MODEL_FILE))  # type: ignore[arg-type]
    return state, meta


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


# -- RNG -------------------------------------------------------------------------------------
def capture_rng_state() -> dict[str, Any]:
    """The states of Python's ``random``, NumPy's global generator, torch CPU and every CUDA
    device, as tensors and plain values (safe for ``weights_only`` loading)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    numpy = (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), gauss)
    state = {"python": random.getstate(), "numpy": numpy, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Undo :func:`capture_rng_state`: the next random numbers repeat those drawn after it.

    CUDA states are restored for the devices present (with a warning if they differ in number).
    """
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda") or []
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if len(cuda_states) != available:
        log.warning(
            "RNG state holds %d CUDA device(s), this machine has %d; restoring the common ones",
            len(cuda_states),
            available,
        )
    for index, cuda_state in enumerate(cuda_states[:available]):
        torch.cuda.set_rng_state(cuda_state.cpu(), index)


# -- best-N management -----------------------------------------------------------------------

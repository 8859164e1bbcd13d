"""Checkpoints that survive crashes: atomic directory swaps, strict loading, best-N, averaging.

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
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pickle
import random
import re
import shutil
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_model
from torch import Tensor, nn

from attnkit import __version__
from attnkit.training.distributed import unwrap_model

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "CheckpointManager",
    "average_checkpoints",
    "capture_rng_state",
    "load_checkpoint",
    "load_weights",
    "read_meta",
    "restore_rng_state",
    "save_averaged",
    "save_checkpoint",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MODEL_FILE, STATE_FILE, META_FILE = "model.safetensors", "state.pt", "meta.json"
_FILES = (MODEL_FILE, STATE_FILE, META_FILE)


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete, incompatible or does not fit the model."""


# -- files -----------------------------------------------------------------------------------
def _fsync(path: Path) -> None:
    """Flush a file or directory to disk (directories: best effort, not on every OS)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.close(fd)


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    _write(tmp, json.dumps(obj, indent=2).encode())
    os.replace(tmp, path)
    _fsync(path.parent)


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
        meta_text = json.dumps(meta, indent=2)
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"meta for {path} is not JSON-ready ({err}); pass numbers, strings, lists and dicts"
        ) from err
    path.parent.mkdir(parents=True, exist_ok=True)
    _recover(path)
    tmp, old = _siblings(path)
    tmp.mkdir()
    save_model(unwrap_model(model), str(tmp / MODEL_FILE), force_contiguous=True)
    _fsync(tmp / MODEL_FILE)
    with open(tmp / STATE_FILE, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    _write(tmp / META_FILE, meta_text.encode())  # last: it marks the copy complete
    _fsync(tmp)
    if path.exists():
        os.rename(path, old)
    os.rename(tmp, path)
    _fsync(path.parent)
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
            f"{source} does not fit {type(model).__name__} ({found}); build the "
            "model with the config it was trained with (see its meta.json)"
        )
    model.load_state_dict(tensors, strict=False)


def load_checkpoint(
    path: str | Path,
    model: nn.Module | None = None,
    map_location: str | torch.device = "cpu",
    with_state: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a checkpoint directory, loading its weights into ``model`` strictly.

    Args:
        path: the directory (an interrupted save's complete sibling is used if it is missing).
        model: receives the weights (in place, on whatever device it lives); None: not loaded.
        map_location: where the tensors of ``state.pt`` go.
        with_state: False skips ``state.pt`` (inference) and returns an empty state.

    Returns:
        ``(state, meta)``.

    Raises:
        CheckpointError: missing/incomplete/newer-format checkpoint, or weights that do not fit.
    """
    path = _resolve(Path(path))
    meta = _checked_meta(path)
    if model is not None:
        load_weights(model, load_file(str(path / MODEL_FILE)), source=str(path / MODEL_FILE))
    if not with_state:
        return {}, meta
    try:
        state = torch.load(path / STATE_FILE, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path / STATE_FILE} holds objects other than tensors, numbers, "
            "strings and containers; keep only those in the trainer state"
        ) from err
    return state, meta


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
_BEST = re.compile(r"best-\d+(\.tmp|\.old)?")


class CheckpointManager:
    """``run_dir/checkpoints/``: ``last/``, the best N as ``best-<step>/``, and ``best.json``.

    ``best.json`` (written atomically) lists the kept best checkpoints, best first, with their
    scores; a best checkpoint is saved before the index names it and deleted only after the
    index stops naming it, so the index never points at a missing or partial directory.

    Args:
        run_dir: the run folder.
        keep_best: N, how many best checkpoints to keep.
        metric: the name of the score (stored in the index and in each best meta.json).
        mode: ``"max"`` (higher is better, BLEU) or ``"min"`` (loss).
    """

    def __init__(
        self, run_dir: str | Path, keep_best: int = 3, metric: str = "bleu", mode: str = "max"
    ) -> None:
        if keep_best < 1:
            raise ValueError(f"CheckpointManager: keep_best must be >= 1, got {keep_best}")
        if mode not in ("max", "min"):
            raise ValueError(f"CheckpointManager: mode must be 'max' or 'min', got {mode!r}")
        self.dir = Path(run_dir) / "checkpoints"
        self.keep_best, self.metric, self.mode = keep_best, metric, mode
        self.index_path = self.dir / "best.json"

    def _index(self) -> dict[str, Any]:
        if not self.index_path.is_file():
            return {"metric": self.metric, "mode": self.mode, "best": []}
        try:
            index = json.loads(self.index_path.read_text(encoding="utf-8"))
            if not isinstance(index["best"], list):
                raise TypeError("'best' is not a list")
            return index
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(
                f"{self.index_path} is unreadable ({err}); delete it and the "
                "best-* folders, or pick checkpoints by path"
            ) from err

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b

    def _rank(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Best first; among equal scores the earlier step first."""
        sign = -1.0 if self.mode == "max" else 1.0
        return sorted(entries, key=lambda e: (sign * e["score"], e["step"]))

    def save_last(self, model: nn.Module, state: dict[str, Any], meta: dict[str, Any]) -> Path:
        """Overwrite ``checkpoints/last`` atomically."""
        return save_checkpoint(self.dir / "last", model, state, meta)

    def save_if_best(
        self, model: nn.Module, state: dict[str, Any], meta: dict[str, Any], score: float
    ) -> Path | None:
        """Save as ``best-<step>`` if ``score`` is among the best N so far, and delete the one
        that falls out. A tie with the worst kept score does not enter; a non-finite score never
        does. Returns the new checkpoint's path, or None."""
        if not math.isfinite(score):
            log.warning("score %s=%s is not finite; no best checkpoint saved", self.metric, score)
            return None
        step = meta.get("step", state.get("step"))
        if not isinstance(step, int):
            raise ValueError("save_if_best: meta or state must hold an integer 'step'")
        index = self._index()
        if (index["metric"], index["mode"]) != (self.metric, self.mode):
            raise CheckpointError(
                f"{self.index_path} ranks by {index['metric']!r} "
                f"({index['mode']}), not {self.metric!r} ({self.mode}); use a "
                "new run folder"
            )
        ranked = self._rank([e for e in index["best"] if e["step"] != step])
        if len(ranked) >= self.keep_best and not self._better(score, ranked[-1]["score"]):
            return None
        name = f"best-{step}"
        selection = {"metric": self.metric, "mode": self.mode, "score": score}
        path = save_checkpoint(self.dir / name, model, state, {**meta, "selection": selection})
        kept = self._rank([*ranked, {"name": name, "step": step, "score": score}])
        kept = kept[: self.keep_best]
        _write_json_atomic(self.index_path, {**index, "best": kept})
        self._delete_unlisted({e["name"] for e in kept})
        return path

    def _delete_unlisted(self, keep: set[str]) -> None:
        for child in self.dir.iterdir():
            if _BEST.fullmatch(child.name) and child.name not in keep and child.is_dir():
                shutil.rmtree(child)

    def best_path(self) -> Path | None:
        """The best checkpoint, or None."""
        found = self.paths("best", 1)
        return found[0] if found else None

    def last_path(self) -> Path | None:
        """``checkpoints/last`` (or its complete sibling after an interrupted save), or None."""
        found = self.paths("last", 1)
        return found[0] if found else None

    def paths(self, kind: str = "best", n: int | None = None) -> list[Path]:
        """Up to ``n`` checkpoint directories (all when None).

        ``"best"``: best first. ``"last"``: the most recent first -- ``last`` then the best-*
        ones by step, skipping a best-* saved at the same step as ``last`` (same weights), e.g.
        for :func:`average_checkpoints`.
        """
        if kind not in ("best", "last"):
            raise ValueError(f"paths: kind must be 'best' or 'last', got {kind!r}")
        entries = self._index()["best"]
        if kind == "best":
            found = [self.dir / e["name"] for e in self._rank(entries)]
        else:
            last = _resolve(self.dir / "last")
            found, last_step = [], None
            if _is_complete(last):
                found.append(last)
                last_step = read_meta(last).get("step")
            found += [
                self.dir / e["name"]
                for e in sorted(entries, key=lambda e: -e["step"])
                if e["step"] != last_step
            ]
        found = [_resolve(p) for p in found]
        found = [p for p in found if _is_complete(p)]
        return found if n is None else found[:n]


# -- averaging -------------------------------------------------------------------------------
def average_checkpoints(paths: Sequence[str | Path]) -> dict[str, Tensor]:
    """The element-wise mean of the weights of several checkpoints (computed in float64).

    Floating-point tensors are averaged and cast back to their dtype; other tensors (integer
    buffers) are taken from the first checkpoint.

    Raises:
        CheckpointError: no paths, or checkpoints whose keys or shapes differ.
    """
    if not paths:
        raise CheckpointError("average_checkpoints: no checkpoint paths given")
    first = Path(paths[0])
    total: dict[str, Tensor] = {}
    reference: dict[str, Tensor] = {}
    for raw in paths:
        path = _resolve(Path(raw))
        _checked_meta(path)
        tensors = load_file(str(path / MODEL_FILE))
        if not reference:
            reference = tensors
            total = {k: t.double() for k, t in tensors.items() if t.is_floating_point()}
            continue
        if tensors.keys() != reference.keys():
            diff = sorted(tensors.keys() ^ reference.keys())
            raise CheckpointError(
                f"cannot average {path} with {first}: their keys differ "
                f"({_short(diff)}); average checkpoints of one model"
            )
        for key, t in tensors.items():
            if t.shape != reference[key].shape:
                raise CheckpointError(
                    f"cannot average {path} with {first}: {key} has shape "
                    f"{tuple(t.shape)} vs {tuple(reference[key].shape)}"
                )
            if key in total:
                total[key] += t.double()
    return {
        k: (total[k] / len(paths)).to(t.dtype) if k in total else t for k, t in reference.items()
    }


def save_averaged(paths: Sequence[str | Path], out_path: str | Path, model: nn.Module) -> Path:
    """Average ``paths`` into ``model`` (strict fit) and save it as checkpoint ``out_path``.

    The new checkpoint's state is empty (it is for evaluation, not resuming); its meta is the
    last source's, with ``averaged_from``, the largest step and no metrics.
    """
    averaged = average_checkpoints(paths)
    load_weights(model, averaged, source=f"the average of {len(paths)} checkpoints")
    metas = [read_meta(p) for p in paths]
    steps = [m["step"] for m in metas if isinstance(m.get("step"), int)]
    meta = {k: v for k, v in metas[-1].items() if k not in ("selection", "attnkit_version")}
    meta.update(step=max(steps, default=None), metrics={}, averaged_from=[str(p) for p in paths])
    return save_checkpoint(out_path, model, {}, meta)

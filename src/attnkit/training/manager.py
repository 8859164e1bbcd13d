"""Keep the best N checkpoints of a run by a validation metric, and average checkpoints.

Builds on :mod:`attnkit.training.checkpoint` (atomic saves, strict loads). The run's
``checkpoints/`` folder holds ``last/``, ``best-<step>/`` folders and ``best.json``, the index of
the best ones (written atomically).
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from attnkit.files import write_json_atomic
from attnkit.training.checkpoint import (
    CheckpointError,
    _checked_meta,
    _is_complete,
    _resolve,
    _short,
    load_tensors,
    load_weights,
    read_meta,
    save_checkpoint,
)

__all__ = ["CheckpointManager", "average_checkpoints", "save_averaged"]

log = logging.getLogger(__name__)

_BEST = re.compile(r"best-\d+(\.tmp|\.old)?")
_RECENT = re.compile(r"recent-(\d+)")


class CheckpointManager:
    """``run_dir/checkpoints/``: ``last/``, the best N as ``best-<step>/``, ``best.json``, and
    (``keep_recent`` > 0) the weights of the newest validations as ``recent-<step>/``.

    ``best.json`` (written atomically) lists the kept best checkpoints, best first, with their
    scores; a best checkpoint is saved before the index names it and deleted only after the
    index stops naming it, so the index never points at a missing or partial directory.

    Args:
        run_dir: the run folder.
        keep_best: N, how many best checkpoints to keep.
        metric: the name of the score (stored in the index and in each best meta.json).
        mode: ``"max"`` (higher is better, BLEU) or ``"min"`` (loss).
        keep_recent: how many ``recent-<step>`` weight snapshots to keep (0: none).
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        keep_best: int = 3,
        metric: str = "bleu",
        mode: str = "max",
        keep_recent: int = 0,
    ) -> None:
        if keep_best < 1:
            raise ValueError(f"CheckpointManager: keep_best must be >= 1, got {keep_best}")
        if keep_recent < 0:
            raise ValueError(f"CheckpointManager: keep_recent must be >= 0, got {keep_recent}")
        self.keep_recent = keep_recent
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

    def save_recent(self, model: nn.Module, meta: dict[str, Any]) -> Path | None:
        """Keep the weights of this validation as ``recent-<step>`` (no optimizer state: for
        averaging, not resuming) and delete all but the ``keep_recent`` newest. None when
        ``keep_recent`` is 0."""
        if self.keep_recent == 0:
            return None
        step = meta.get("step")
        if not isinstance(step, int):
            raise ValueError("save_recent: meta must hold an integer 'step'")
        path = save_checkpoint(self.dir / f"recent-{step}", model, {}, meta)
        for old in self._recent()[self.keep_recent :]:
            shutil.rmtree(old)
        return path

    def _recent(self) -> list[Path]:
        """The ``recent-<step>`` folders, newest first."""
        if not self.dir.is_dir():
            return []
        found = [
            (int(m.group(1)), c)
            for c in self.dir.iterdir()
            if (m := _RECENT.fullmatch(c.name)) and c.is_dir()
        ]
        return [c for _, c in sorted(found, key=lambda sc: -sc[0])]

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
        write_json_atomic(self.index_path, {**index, "best": kept})
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
        """``checkpoints/last`` (or its complete sibling after an interrupted save), or None;
        never a ``recent-*`` or ``best-*`` one (a resume needs the full state of ``last``)."""
        last = _resolve(self.dir / "last")
        return last if _is_complete(last) else None

    def paths(self, kind: str = "best", n: int | None = None) -> list[Path]:
        """Up to ``n`` checkpoint directories (all when None).

        ``"best"``: best first. ``"last"``: the most recent first -- ``last``, then the
        ``recent-*`` (``train.keep_last``) and best-* ones by step, each step once (a checkpoint
        saved at the step of one already listed has the same weights), e.g. for
        :func:`average_checkpoints`.
        """
        if kind not in ("best", "last"):
            raise ValueError(f"paths: kind must be 'best' or 'last', got {kind!r}")
        entries = self._index()["best"]
        if kind == "best":
            found = [self.dir / e["name"] for e in self._rank(entries)]
        else:
            last = _resolve(self.dir / "last")
            found, steps = [], set()
            if _is_complete(last):
                found.append(last)
                steps.add(read_meta(last).get("step"))
            by_step = [(int(p.name.split("-")[1]), p) for p in self._recent()]
            by_step += [(e["step"], self.dir / e["name"]) for e in entries]
            for step, path in sorted(by_step, key=lambda sp: -sp[0]):
                if step not in steps:
                    found.append(path)
                    steps.add(step)
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
        tensors = load_tensors(path, _checked_meta(path))
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

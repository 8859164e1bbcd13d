"""nanoGPT as a peer to measure attnkit's language model against, run unchanged.

nanoGPT (karpathy/nanoGPT, MIT) is provided for measurement in ``../shared/peers/nanogpt``; this
module never copies its code. :func:`run_nanogpt` copies the peer folder to a scratch directory,
prepares the character-level data with the peer's own ``prepare.py`` and runs the peer's
``train.py`` with its README's CPU recipe, parsing what it prints. :func:`nanogpt_val_loss` loads
the checkpoint it wrote with the peer's own ``model.py`` and measures it on the validation windows
attnkit uses, so both models are judged by one estimator (nanoGPT's own printed number averages
20 random batches).
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "NANOGPT_RECIPE",
    "NanoGPTRun",
    "run_nanogpt",
    "parse_nanogpt_log",
    "training_rate",
    "nanogpt_val_loss",
    "val_windows",
]

#: nanoGPT README's CPU recipe for shakespeare_char (4 layers, 4 heads, 128 wide, context 64,
#: batch 12, 2000 iterations, no dropout), as command-line overrides of its config file.
NANOGPT_RECIPE = {
    "device": "cpu",
    "compile": "False",
    "eval_iters": "20",
    "log_interval": "1",
    "block_size": "64",
    "batch_size": "12",
    "n_layer": "4",
    "n_head": "4",
    "n_embd": "128",
    "max_iters": "2000",
    "lr_decay_iters": "2000",
    "dropout": "0.0",
}


@dataclass
class NanoGPTRun:
    """What one nanoGPT training run did.

    Attributes:
        wall_s: wall time of ``train.py`` (start-up, training and its evaluations).
        train_s: the sum of its per-iteration times after the first (training and the
            estimates it makes every ``eval_interval`` iterations: an iteration's printed time
            includes the estimate made at its start).
        iters: iterations done.
        tokens_per_s: training tokens (batch x context per iteration) over the times of the
            iterations without an estimate (training steps alone).
        reported_val_loss: the last validation loss it printed (20 random batches).
        workdir: the scratch copy (its ``out-shakespeare-char/ckpt.pt``, ``data/``).
    """

    wall_s: float
    train_s: float
    iters: int
    tokens_per_s: float
    reported_val_loss: float
    workdir: Path


def run_nanogpt(
    peer: str | Path,
    text: str | Path,
    workdir: str | Path,
    *,
    overrides: dict[str, str] | None = None,
    threads: int | None = None,
    timeout: float = 1800,
) -> NanoGPTRun:
    """Train nanoGPT unchanged on ``text`` with its CPU recipe (plus ``overrides``).

    Args:
        peer: the peer folder (``../shared/peers/nanogpt``).
        text: the corpus (tinyshakespeare's ``input.txt``).
        workdir: scratch folder for the copy (replaced).
        overrides: more ``--key=value`` settings for its ``train.py``.
        threads: ``OMP_NUM_THREADS`` / torch threads for the subprocess (default: inherited).
        timeout: seconds before the run is abandoned.
    """
    peer, workdir = Path(peer), Path(workdir)
    if not (peer / "train.py").is_file():
        raise FileNotFoundError(f"{peer}: no nanoGPT train.py; see ../shared/peers/nanogpt/PEER.md")
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.copytree(peer, workdir)
    data_dir = workdir / "data" / "shakespeare_char"
    shutil.copy(text, data_dir / "input.txt")
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    subprocess.run(
        [sys.executable, "prepare.py"],
        cwd=data_dir,
        check=True,
        env=env,
        capture_output=True,
        timeout=timeout,
    )
    settings = {**NANOGPT_RECIPE, **(overrides or {})}
    cmd = [sys.executable, "train.py", "config/train_shakespeare_char.py"]
    cmd += [f"--{k}={v}" for k, v in settings.items()]
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"nanoGPT failed ({proc.returncode}): {proc.stderr[-2000:]}")
    tokens = int(settings["batch_size"]) * int(settings["block_size"])
    train_s, iters, tokens_per_s, val = parse_nanogpt_log(proc.stdout, tokens)
    return NanoGPTRun(
        wall_s=wall,
        train_s=train_s,
        iters=iters,
        tokens_per_s=tokens_per_s,
        reported_val_loss=val,
        workdir=workdir,
    )


def parse_nanogpt_log(stdout: str, tokens_per_iter: int) -> tuple[float, int, float, float]:
    """``(train_s, iters, tokens_per_s, last val loss)`` from the output of nanoGPT's
    ``train.py`` (see :class:`NanoGPTRun`): ``iter N: loss L, time Tms`` lines give the
    iteration times, ``step N: train loss .., val loss V`` lines the estimates made at the start
    of iteration N (whose printed time includes them)."""
    times = {
        int(i): float(t) / 1000
        for i, t in re.findall(r"^iter (\d+): loss [\d.]+, time ([\d.]+)ms", stdout, re.M)
    }
    estimates = dict(re.findall(r"^step (\d+): train loss [\d.]+, val loss ([\d.]+)", stdout, re.M))
    later = {i: t for i, t in times.items() if i > 0}  # iteration 0's time includes set-up
    steps = [t for i, t in later.items() if str(i) not in estimates]
    val = float(list(estimates.values())[-1]) if estimates else math.nan
    return (
        sum(later.values()),
        len(times),
        tokens_per_iter * len(steps) / max(sum(steps), 1e-9),
        val,
    )


def training_rate(rows: Sequence[dict[str, Any]], tokens_per_step: int) -> float:
    """Tokens/s of the training steps alone, from the trainer's own log: every ``train`` row
    gives the rate of the steps since the row before; a window that held a validation (and its
    checkpoint write) is left out, as nanoGPT's iteration times leave out its estimates."""
    tokens = seconds = 0.0
    last_step, validated = 0, False
    for row in rows:
        if row.get("split") == "valid":
            validated = True
            continue
        if row.get("split") != "train":
            continue
        n = (row["step"] - last_step) * tokens_per_step
        if not validated:
            tokens, seconds = tokens + n, seconds + n / row["tokens_per_s"]
        last_step, validated = row["step"], False
    return tokens / seconds


def val_windows(ids: np.ndarray, block: int, limit: int | None = None) -> torch.Tensor:
    """Non-overlapping windows of ``block + 1`` ids covering ``ids`` (the last partial one
    dropped), at most ``limit``. Shapes: (N,) -> (W, block + 1)."""
    n = (len(ids) - 1) // block
    if limit is not None:
        n = min(n, limit)
    idx = np.arange(n)[:, None] * block + np.arange(block + 1)[None, :]  # (W, block + 1)
    return torch.from_numpy(ids[idx].astype(np.int64))


@torch.no_grad()
def nanogpt_val_loss(workdir: str | Path, *, batch: int = 64, limit: int | None = None) -> float:
    """Mean next-character cross-entropy of nanoGPT's saved checkpoint on its validation split,
    over non-overlapping windows of its context (the estimator attnkit's evaluation uses)."""
    workdir = Path(workdir)
    ckpt = torch.load(
        workdir / "out-shakespeare-char" / "ckpt.pt", map_location="cpu", weights_only=False
    )  # the peer's own checkpoint, written by this run
    spec = importlib.util.spec_from_file_location("nanogpt_model", workdir / "model.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    model = module.GPT(module.GPTConfig(**ckpt["model_args"]))
    state = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    model.load_state_dict(state)
    model.eval()
    block = ckpt["model_args"]["block_size"]
    ids = np.fromfile(workdir / "data" / "shakespeare_char" / "val.bin", dtype=np.uint16)
    windows = val_windows(ids, block, limit)
    total, count = 0.0, 0
    for start in range(0, len(windows), batch):
        w = windows[start : start + batch]
        x, y = w[:, :-1].contiguous(), w[:, 1:].contiguous()
        # its forward returns last-position logits without targets: pass targets for all
        logits, _ = model(x, y)  # (b, block, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum")
        total, count = total + float(loss), count + y.numel()
    return total / count

"""A full disk (ENOSPC) while writing a checkpoint or a metrics row: training stops with one clear
line, the previous checkpoint is intact and loadable, and `--resume` (once there is space again)
ends the run exactly as if nothing had happened."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import attnkit.files
import attnkit.training.checkpoint
from attnkit.cli import main
from attnkit.training.checkpoint import load_checkpoint
from attnkit.training.runfolder import read_metric_rows
from tests.translation.tiny import TINY_TRANSFORMER

SETS = [
    *TINY_TRANSFORMER,
    "data.num_examples=600",
    "data.vocab_size=100",
    "data.valid_limit=8",
    "train.max_tokens=300",
    "train.log_every=3",
    "train.device=cpu",
]


QUIET = ["--no-progress", "--samples", "0"]


def new(run: Path) -> list[str]:
    sets = [a for s in SETS for a in ("--set", s)]
    return ["train", "--run", str(run), "--epochs", "1", "--eval-every", "7", *sets, *QUIET]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("full") / "reference"
    assert main(new(run)) == 0
    return run


def same_end(run: Path, reference: Path) -> None:
    a = load_file(str(run / "checkpoints" / "last" / "model.safetensors"))
    b = load_file(str(reference / "checkpoints" / "last" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def rows(r: Path) -> list[dict]:
        return [
            {k: v for k, v in row.items() if k != "tokens_per_s"}
            for row in read_metric_rows(r / "metrics.jsonl")
        ]

    assert rows(run) == rows(reference)


def test_full_disk_while_writing_a_checkpoint(tmp_path: Path, reference: Path, monkeypatch, capsys):
    run = tmp_path / "run"
    real = attnkit.training.checkpoint.save_model
    calls = {"n": 0}

    def save_model(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # recent-7, best-7, last at step 7 done; recent-14 fails
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(attnkit.training.checkpoint, "save_model", save_model)
    assert main(new(run)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "no space left on the disk of" in err and "last checkpoint (step 7) is intact" in err
    assert f"attnkit train --run {run} --resume" in err
    monkeypatch.undo()
    checkpoints = run / "checkpoints"
    assert not list(checkpoints.glob("*.tmp")), "the partial copy was not removed"
    state, meta = load_checkpoint(checkpoints / "last")
    assert state["step"] == meta["step"] == 7
    assert not (run / ".lock").exists()
    # space is back: resume ends where an uninterrupted run ends
    assert main(["train", "--run", str(run), "--resume", *QUIET]) == 0
    same_end(run, reference)


def test_full_disk_while_logging_metrics(tmp_path: Path, reference: Path, monkeypatch, capsys):
    run = tmp_path / "run"
    real = attnkit.files._write_all
    calls = {"n": 0}

    def write_all(fd: int, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] == 5:  # half a row reaches the disk, then it is full
            real(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(attnkit.files, "_write_all", write_all)
    assert main(new(run)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no space left" in err and "metrics.jsonl" in err, err
    assert "--resume" in err
    monkeypatch.undo()
    text = (run / "metrics.jsonl").read_text()
    assert text.endswith("\n") and all(json.loads(line) for line in text.splitlines())
    assert len(text.splitlines()) == 4  # the failed row left nothing behind
    assert main(["train", "--run", str(run), "--resume", *QUIET]) == 0
    same_end(run, reference)


def test_curves_are_drawn_quietly_or_not_at_all(tmp_path, caplog) -> None:
    """No metrics logged yet (Ctrl-C at the first step): nothing drawn and nothing said (was:
    "could not draw training curves: metrics log ... does not exist; has the run trained?");
    a broken log is still reported, never raised."""
    from attnkit.training.runfolder import write_curves

    with caplog.at_level("WARNING"):
        write_curves(tmp_path)
    assert caplog.text == "" and not (tmp_path / "curves.png").exists()
    (tmp_path / "metrics.jsonl").write_text("{not json\n")
    with caplog.at_level("WARNING"):
        write_curves(tmp_path)
    assert "could not draw training curves" in caplog.text
    assert not list(tmp_path.glob("*.png"))

"""One writer per run folder: RUN/.lock (attnkit.training.runlock), taken by training, resuming
and averaging; readers never need it."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attnkit.cli import main
from attnkit.training import runlock
from attnkit.training.runlock import LOCK_FILE, RunLock, RunLockedError, run_lock
from tests.translation.tiny import TINY_TRANSFORMER

RUNLOCK_SOURCE = Path(runlock.__file__)
# A process that takes the lock and holds it until killed (runlock.py imports only the standard
# library: loaded by path, without importing attnkit and torch).
HOLDER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("runlock", sys.argv[1])
runlock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runlock)
lock = runlock.RunLock(sys.argv[2], "holder --run R").acquire()
print("held", flush=True)
time.sleep(600)
"""


def hold(run: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(RUNLOCK_SOURCE), str(run)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_second_writer_fails_at_once_naming_the_holder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    holder = hold(run)
    try:
        info = json.loads((run / LOCK_FILE).read_text())
        assert info["pid"] == holder.pid and info["command"] == "holder --run R"
        started = time.monotonic()
        with pytest.raises(RunLockedError, match=rf"process {holder.pid} on ") as err:
            RunLock(run).acquire()
        assert time.monotonic() - started < 5 and len(str(err.value).splitlines()) == 1
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: its lock is free, taken over with a warning
    with RunLock(run, "me") as lock:
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
        assert lock.path == run / LOCK_FILE
    assert not (run / LOCK_FILE).exists()  # released: deleted


def test_stale_lock_is_taken_over_with_a_warning(tmp_path: Path, caplog) -> None:
    run = tmp_path / "run"
    run.mkdir()
    pid = dead_pid()
    stale = {"pid": pid, "host": "x", "started": "2020-01-01T00:00:00+00:00", "command": "c"}
    (run / LOCK_FILE).write_text(json.dumps(stale))
    with caplog.at_level(logging.WARNING), RunLock(run):
        pass
    assert f"process {pid} on x" in caplog.text and "no longer running" in caplog.text


def test_without_flock_the_recorded_pid_decides(tmp_path: Path, monkeypatch, caplog) -> None:
    import fcntl

    def no_flock(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    run = tmp_path / "run"
    run.mkdir()
    import socket

    alive = {"pid": os.getppid(), "host": socket.gethostname(), "started": "t"}
    (run / LOCK_FILE).write_text(json.dumps(alive))
    with pytest.raises(RunLockedError, match=f"process {os.getppid()} "):
        RunLock(run).acquire()
    (run / LOCK_FILE).write_text(json.dumps({**alive, "pid": dead_pid()}))
    with caplog.at_level(logging.WARNING), RunLock(run):
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert "no longer running" in caplog.text


def test_only_rank_zero_takes_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RANK", "1")
    with run_lock(tmp_path / "run") as lock:
        assert lock is None and not (tmp_path / "run").exists()
    monkeypatch.setenv("RANK", "0")
    with run_lock(tmp_path / "run") as lock:
        assert lock is not None and (tmp_path / "run" / LOCK_FILE).is_file()


SETS = [
    *TINY_TRANSFORMER,
    "data.num_examples=600",
    "data.vocab_size=100",
    "data.valid_limit=8",
    "train.max_tokens=300",
    "train.device=cpu",
]


def train_argv(run: Path, *more: str) -> list[str]:
    return ["train", "--run", str(run), "--threads", "1", "--no-progress", "--samples", "0", *more]


@pytest.mark.slow
def test_two_trainings_of_one_run(tmp_path: Path, capsys, caplog) -> None:
    """A second `attnkit train --run R` (new, resume or average) exits 2 naming the live PID; a
    reader (translate) works meanwhile; after the first is killed, a resume takes over its lock
    with a warning."""
    run = tmp_path / "run"
    sets = [a for s in SETS for a in ("--set", s)]
    first = subprocess.Popen(
        [sys.executable, "-m", "attnkit.cli", *train_argv(run, "--epochs", "50", "--eval-every")]
        + ["5", *sets],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoints" / "last" / "meta.json").is_file():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.1)
        for argv in (
            train_argv(run, *sets),
            train_argv(run, "--resume"),
            ["average", "--run", str(run), "--last", "1"],
        ):
            assert main(argv) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and f"process {first.pid} " in err, err
            assert "being written by" in err
        # readers never need the lock
        assert main(["translate", "--run", str(run), "--checkpoint", "last", "1 may 2001"]) == 0
        assert capsys.readouterr().out.strip()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert (run / LOCK_FILE).is_file()  # left behind by the killed process
    with caplog.at_level(logging.WARNING):
        assert main(train_argv(run, "--resume", "--epochs", "1")) == 0
    assert f"lock left by process {first.pid} " in caplog.text
    assert not (run / LOCK_FILE).exists()


def test_a_failed_start_removes_only_a_folder_it_made_and_only_before_config_json(
    tmp_path, monkeypatch, capsys
) -> None:
    """Before config.json the folder a start made is removed (nothing to resume); after it,
    everything stays; a folder that existed before is never removed."""
    import attnkit.training.runs as runs
    from attnkit.cli import main

    def boom(self):
        raise RuntimeError("training failed")

    monkeypatch.setattr(runs.Trainer, "fit", boom)
    argv = ["train", "--data", "dates", "--epochs", "1", "--no-progress", "--run"]
    assert main([*argv, str(tmp_path / "late")]) == 2  # failed after config.json was written
    assert "training failed" in capsys.readouterr().err
    assert (tmp_path / "late" / "config.json").is_file()

    def refuse(*args, **kwargs):
        raise runs.ConfigError("refused before config.json")

    monkeypatch.setattr(runs, "check_warmup", refuse)
    assert main([*argv, str(tmp_path / "deep" / "early")]) == 2
    assert "refused before config.json" in capsys.readouterr().err
    assert not (tmp_path / "deep" / "early").exists() and (tmp_path / "deep").is_dir()
    mine = tmp_path / "mine"
    mine.mkdir()
    assert main([*argv, str(mine)]) == 2
    capsys.readouterr()
    assert mine.is_dir() and not (mine / "config.json").exists()  # not made by it: kept

"""JSON-lines logs that survive being killed mid-append (attnkit.files)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import attnkit.files
from attnkit.files import append_json_line, read_json_lines, rewrite_json_lines
from attnkit.training.runfolder import read_metric_rows, trim_metrics


def test_a_torn_last_line_is_never_read_back(tmp_path: Path, caplog) -> None:
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')  # killed mid-append
    assert read_json_lines(log) == [{"step": 1}, {"step": 2}]
    assert read_metric_rows(log) == [{"step": 1}, {"step": 2}]
    assert "incomplete last line" in caplog.text
    log.write_text('{"step": 1}\n{"step": 2}')  # whole, only its newline missing: kept
    assert read_json_lines(log) == [{"step": 1}, {"step": 2}]
    log.write_text('{"step": 1}\n{oops\n{"step": 3}\n')  # damage inside the file: an error
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2"):
        read_json_lines(log)
    log.write_bytes(b'{"step": 1}\n{"s": "\xff"}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2: bytes that are not UTF-8"):
        read_json_lines(log)


def test_appends_are_whole_lines_flushed_to_disk(tmp_path: Path, monkeypatch) -> None:
    log = tmp_path / "metrics.jsonl"
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    append_json_line(log, {"step": 1})
    assert synced, "the row was not flushed to disk"
    log.write_bytes(log.read_bytes() + b'{"step": 2, "lo')  # a torn row from a killed writer
    append_json_line(log, {"step": 2})
    assert log.read_text() == '{"step": 1}\n{"step": 2}\n'
    log.write_bytes(log.read_bytes() + b'{"step": 3}')  # a whole row without its newline
    append_json_line(log, {"step": 4})
    assert read_json_lines(log) == [{"step": i} for i in (1, 2, 3, 4)]


def test_a_failed_append_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    log = tmp_path / "metrics.jsonl"
    append_json_line(log, {"step": 1})
    real = attnkit.files._write_all

    def half_then_full(fd: int, data: bytes) -> None:
        real(fd, data[:5])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(attnkit.files, "_write_all", half_then_full)
    with pytest.raises(OSError, match="metrics.jsonl") as err:
        append_json_line(log, {"step": 2, "loss": 1.5})
    assert attnkit.files.is_disk_full(err.value)
    assert log.read_text() == '{"step": 1}\n'


def test_rows_logged_after_the_checkpoint_are_dropped_on_resume(tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    rows = [{"split": "train", "step": s} for s in (3, 6, 9)] + [{"note": "no step"}]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"split": "tr')
    assert trim_metrics(tmp_path, 6) == 2  # step 9 and the torn line
    assert read_json_lines(log) == [rows[0], rows[1], rows[3]]
    before = log.stat().st_mtime_ns
    assert rewrite_json_lines(log, lambda row: True) == 0 and log.stat().st_mtime_ns == before


def test_scratch_dir_is_removed_when_the_process_exits(tmp_path) -> None:
    import subprocess
    import sys

    script = (
        "from attnkit.files import scratch_dir\n"
        "d = scratch_dir('attnkit-test-')\n"
        "(d / 'run').mkdir(); (d / 'run' / 'x.pt').write_bytes(b'0' * 100)\n"
        "print(d)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out and "attnkit-test-" in out
    assert not Path(out).exists()

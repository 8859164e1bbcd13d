"""`attnkit translate` streams: 200,000 lines on stdin go through in bounded memory, each line
gets its output line (blank lines stay blank), and a reader that goes away (`| head`) ends it
quietly."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from attnkit.cli import main
from tests.translation.tiny import TINY_TRANSFORMER

LINES, CHUNK = 200_000, 256  # input_chunks answers 256 lines at a time
SETS = [
    *TINY_TRANSFORMER,
    "data.num_examples=300",
    "data.vocab_size=100",
    "data.valid_limit=4",
    "train.max_tokens=600",
    "train.device=cpu",
    "decode.max_len_a=0",  # at most 2 output tokens: decoding stays cheap
    "decode.max_len_b=2",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("stream") / "run"
    sets = [a for s in SETS for a in ("--set", s)]
    argv = ["train", "--run", str(run), "--epochs", "1", "--no-progress", "--samples", "0"]
    assert main([*argv, *sets]) == 0
    return run


def translate(run: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "attnkit.cli", "translate", "--run", str(run), "--beam", "1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def peak_rss_kib(pid: int) -> int:
    """VmHWM: the most resident memory the process has had so far."""
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))


@pytest.mark.slow
def test_200k_lines_stream_through_in_bounded_memory(run: Path) -> None:
    lines = ["" if i % 50 == 7 else f"{i % 28 + 1} may" for i in range(LINES)]
    proc = translate(run)
    assert proc.stdin is not None and proc.stdout is not None
    close_input = threading.Event()

    def feed() -> None:
        data = "".join(line + "\n" for line in lines).encode()
        for start in range(0, len(data), 1 << 16):
            proc.stdin.write(data[start : start + (1 << 16)])
        proc.stdin.flush()
        close_input.wait()  # stdin stays open until the measurements are taken
        proc.stdin.close()

    outputs: list[bytes] = []

    def read() -> None:
        for line in proc.stdout:
            outputs.append(line)

    threads = [threading.Thread(target=feed, daemon=True), threading.Thread(target=read)]
    for thread in threads:
        thread.start()

    def wait_for(count: int, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while len(outputs) < count:
            if time.monotonic() > deadline or proc.poll() is not None:
                close_input.set()
                proc.kill()
                pytest.fail(
                    f"{len(outputs)} output lines before the end of the input, expected "
                    f"{count}: the input is not answered as it is read"
                )
            time.sleep(0.01)

    wait_for(20 * CHUNK, 60)
    baseline = peak_rss_kib(proc.pid)
    full_chunks = LINES // CHUNK * CHUNK
    wait_for(full_chunks, 120)
    peak = peak_rss_kib(proc.pid)  # every full chunk answered, the input not yet closed
    close_input.set()
    threads[1].join(timeout=60)
    assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    assert len(outputs) == LINES
    for line, out in zip(lines, outputs, strict=True):
        assert (out.strip() == b"") == (line == ""), (line, out)
    growth_mib = (peak - baseline) / 1024
    assert growth_mib < 32, f"peak RSS grew by {growth_mib:.1f} MiB over 195k lines"


def test_a_reader_that_goes_away_ends_it_quietly(run: Path) -> None:
    proc = translate(run)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(b"".join(b"%d may\n" % (i % 28 + 1) for i in range(20_000)))
        proc.stdin.close()
    except BrokenPipeError:  # it may already be gone
        pass
    assert proc.stdout.readline().strip()
    proc.stdout.close()  # `| head -1`
    assert proc.wait(timeout=120) == 141
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert "Traceback" not in err and "Error" not in err, err


def test_input_that_is_not_utf8_names_the_line(run: Path, monkeypatch, capsys) -> None:
    import io

    stdin = io.TextIOWrapper(io.BytesIO(b"1 may\n2 may\n3 \xff may\n"), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    assert main(["translate", "--run", str(run), "--beam", "1"]) == 2
    captured = capsys.readouterr()
    assert "stdin line 3: bytes that are not UTF-8" in captured.err
    assert len(captured.err.strip().splitlines()) == 1

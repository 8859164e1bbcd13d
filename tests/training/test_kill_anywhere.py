"""Kill at any instant: real `attnkit train` and `attnkit average` processes are SIGKILLed at
twenty-odd moments of their life (starting up, preparing data, between a checkpoint's files,
between its two renames, between the two saves of an epoch end, drawing the curves, ...); every
resume starts from a complete checkpoint, and the run ends bit for bit as an uninterrupted one.

To keep this affordable, the processes are forked from one server process that has already
imported torch and attnkit (a fork costs milliseconds, a fresh interpreter seconds): each child
runs ``attnkit.cli.main(argv)`` exactly as the ``attnkit`` command does, with its own PID, lock,
stdout and stderr. The uninterrupted reference is a genuinely fresh ``python -m attnkit.cli``
process. ``ATTNKIT_TEST_SLOW_CHECKPOINT`` widens each step of a save so that a kill can be aimed
inside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from attnkit.training.checkpoint import SLOW_SAVE_ENV, load_checkpoint, read_meta
from attnkit.training.manager import CheckpointManager, average_checkpoints
from attnkit.training.runfolder import find_checkpoint, read_metric_rows
from tests.translation.tiny import TINY_TRANSFORMER

SETS = [
    *TINY_TRANSFORMER,
    "data.num_examples=600",  # 28 batches per epoch: eval_every 7 meets both epoch ends
    "data.vocab_size=100",
    "data.valid_limit=8",
    "train.max_tokens=300",
    "train.log_every=3",
    "train.warmup_steps=20",
    "train.keep_last=2",
    "train.device=cpu",
]
COMMON = ["--threads", "1", "--no-progress", "--samples", "0"]
STEPS_PER_EPOCH, EPOCHS = 28, 3


def new_run(run: Path) -> list[str]:
    sets = [a for s in SETS for a in ("--set", s)]
    return [
        "train",
        "--run",
        str(run),
        "--epochs",
        str(EPOCHS),
        "--eval-every",
        "7",
        *COMMON,
        *sets,
    ]


def resume_run(run: Path) -> list[str]:
    return ["train", "--run", str(run), "--resume", *COMMON]


SERVER = textwrap.dedent(
    """
    import json, os, sys, traceback
    import torch, matplotlib
    matplotlib.use("Agg")
    import attnkit.cli, attnkit.cli.translate, attnkit.translation.run, attnkit.viz.curves
    from attnkit.cli import main
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "run":
            pid = os.fork()
            if pid == 0:
                rc = 99
                try:
                    os.environ.update(cmd["env"])
                    null = os.open(os.devnull, os.O_RDONLY)
                    out = os.open(cmd["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                    err = os.open(cmd["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                    os.dup2(null, 0); os.dup2(out, 1); os.dup2(err, 2)
                    sys.stdin = open(os.devnull)
                    rc = main(cmd["argv"])
                except BaseException:
                    traceback.print_exc()
                finally:
                    sys.stdout.flush(); sys.stderr.flush()
                    os._exit(rc)
            print(json.dumps({"pid": pid}), flush=True)
        elif cmd["op"] == "wait":
            _, status = os.waitpid(cmd["pid"], 0)
            print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), flush=True)
    """
)


class ForkServer:
    """Runs ``attnkit.cli.main(argv)`` in processes forked from one warm interpreter."""

    def __init__(self, cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=cwd,
        )
        self.lives = 0
        self.logs = cwd

    def _ask(self, cmd: dict) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def ready(self) -> None:
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> tuple[int, Path]:
        self.lives += 1
        err = self.logs / f"life-{self.lives}.err"
        out = self.logs / f"life-{self.lives}.out"
        pid = self._ask(
            {"op": "run", "argv": argv, "env": env or {}, "out": str(out), "err": str(err)}
        )["pid"]
        return pid, err

    def wait(self, pid: int) -> int:
        return self._ask({"op": "wait", "pid": pid})["rc"]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def exited(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def meta_of(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None


def last_step(run: Path) -> int:
    meta = meta_of(run / "checkpoints" / "last")
    return meta["step"] if meta else -1


def rows(run: Path) -> int:
    try:
        return (run / "metrics.jsonl").read_bytes().count(b"\n")
    except OSError:
        return 0


Trigger = Callable[[Path, float, int, int], bool]  # (run, seconds alive, start step, start rows)


def after(seconds: float) -> Trigger:
    return lambda run, alive, step, n: alive >= seconds


def exists(pattern: str, progress: bool = False) -> Trigger:
    """A path matching ``pattern`` exists (and, with ``progress``, ``last`` has moved on since
    the life began, so that the run advances from one life to the next)."""

    def fire(run: Path, alive: float, step: int, n: int) -> bool:
        if progress and last_step(run) <= step:
            return False
        return any(run.glob(pattern))

    return fire


def new_rows(k: int) -> Trigger:
    return lambda run, alive, step, n: rows(run) >= n + k


def last_is(step: int, epoch: int) -> Trigger:
    def fire(run: Path, alive: float, s: int, n: int) -> bool:
        meta = meta_of(run / "checkpoints" / "last")
        return bool(meta) and (meta["step"], meta["epoch"]) == (step, epoch)

    return fire


def moved_on(steps: int = 21) -> Trigger:
    """``last`` is ``steps`` past the life's start: the default fallback, three checkpoints."""
    return lambda run, alive, start, n: last_step(run) >= max(start, 0) + steps


def past(step: int, epoch: int) -> Trigger:
    """``last`` is beyond (step, epoch)."""

    def fire(run: Path, alive: float, s: int, n: int) -> bool:
        meta = meta_of(run / "checkpoints" / "last")
        return bool(meta) and (meta["step"], meta["epoch"]) > (step, epoch)

    return fire


E = STEPS_PER_EPOCH
# Where each life is killed, in order, what the run is doing then, and (third) when to kill it
# anyway if that moment passed unseen (default: three checkpoints on), so that no life runs away
# with the rest of the run. ``exists(..., True)``: only once the life has written a checkpoint,
# so that the run advances from life to life.
TRAIN_KILLS: list[tuple[str, Trigger] | tuple[str, Trigger, Trigger]] = [
    ("parsing the command line", after(0.0)),
    ("generating the corpus, training tokenizers", after(0.25)),
    ("writing the tokenizers", exists("tokenizer.tmp/*/*"), exists("config.json")),
    ("config.json written, training starting", exists("config.json")),
    ("training before the first checkpoint", new_rows(1)),
    ("writing the first recent-* weights", exists("checkpoints/recent-*.tmp/model.safetensors")),
    ("writing the first best-* checkpoint", exists("checkpoints/best-*.tmp/state.pt")),
    ("writing last/model.safetensors", exists("checkpoints/last.tmp/model.safetensors")),
    ("last.tmp complete, not yet renamed", exists("checkpoints/last.tmp/meta.json")),
    ("training between two checkpoints", new_rows(2)),
    ("between the two renames of last", exists("checkpoints/last.old")),
    ("between the two saves of the first epoch end", last_is(E, 0), past(E, 0)),
    ("writing last/state.pt", exists("checkpoints/last.tmp/state.pt", True)),
    ("an instant 1.1 s into a resume", after(1.1)),
    ("writing recent-* weights", exists("checkpoints/recent-*.tmp/model.safetensors", True)),
    ("an instant 0.7 s into a resume", after(0.7)),
    ("between the two renames of last, again", exists("checkpoints/last.old")),
    ("training, one row after resuming", new_rows(1)),
    ("between the two saves of the second epoch end", last_is(2 * E, 1), past(2 * E, 1)),
    ("writing a best-* checkpoint", exists("checkpoints/best-*.tmp/model.safetensors", True)),
    ("an instant 1.5 s into a resume", after(1.5)),
    (
        "between the two saves of the last epoch end",
        last_is(EPOCHS * E, EPOCHS - 1),
        past(EPOCHS * E, EPOCHS - 1),
    ),
    ("drawing curves.png after the last checkpoint", exists(".curves.tmp.png")),
    ("resuming a finished run", after(0.3)),
    ("an instant 0.05 s into a resume", after(0.05)),
]


def tensors_equal(a: Path, b: Path) -> None:
    ta, tb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), f"{a.name}: {key} differs"


def comparable(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "tokens_per_s"}


def digests(folder: Path, skip: str) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.relative_to(folder).parts[0].startswith(skip)
    }


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory: pytest.TempPathFactory):
    """The run killed at every moment of TRAIN_KILLS and resumed, its reference, the server."""
    root = tmp_path_factory.mktemp("kill")
    ref, run = root / "reference", root / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop(SLOW_SAVE_ENV, None)
    reference = subprocess.Popen(  # a fresh process, uninterrupted, running alongside
        [sys.executable, "-m", "attnkit.cli", *new_run(ref)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=root,
    )
    server = ForkServer(root)
    server.ready()
    slow = {SLOW_SAVE_ENV: "0.03"}
    report = []
    torn_injected = False
    for what, trigger, *late in TRAIN_KILLS:
        fallback = late[0] if late else moved_on()
        resuming = (run / "config.json").is_file()
        start = -1
        found = CheckpointManager(run).last_path() if resuming else None
        if found is not None:  # every resume starts from a complete, loadable checkpoint
            state, meta = load_checkpoint(found)
            start = state["step"]
            assert meta["step"] == start
        if resuming and not torn_injected and start > 0:  # as if killed mid-append
            with open(run / "metrics.jsonl", "ab") as fh:
                fh.write(b'{"split": "train", "step": 99')
            torn_injected = True
        n = rows(run)
        pid, err = server.start(resume_run(run) if resuming else new_run(run), slow)
        born = time.monotonic()
        fired = None
        while time.monotonic() - born < 60:
            alive = time.monotonic() - born
            if trigger(run, alive, start, n):
                fired = "aimed"
                break
            if fallback(run, alive, start, n):  # the aimed moment did not come in this life
                fired = "fallback"
                break
            if exited(pid):
                break
            time.sleep(0.002)
        killed = fired is not None and not exited(pid)
        if killed:
            os.kill(pid, signal.SIGKILL)
        rc = server.wait(pid)
        log = err.read_text() if err.exists() else ""  # killed before it opened its stderr
        assert killed or rc == 0, f"{what}: exit {rc}\n{log}"
        resumed = re.search(r"resumed from \S+ at step (\d+)", log)
        if resumed:
            assert int(resumed.group(1)) == start, (what, log)
        # nothing lost: the log reads back (a torn last line is skipped), a checkpoint written
        # before is still there and complete
        if (run / "metrics.jsonl").exists():
            read_metric_rows(run / "metrics.jsonl")
        if start >= 0:
            last = CheckpointManager(run).last_path()
            assert last is not None and read_meta(last)["step"] >= start, what
        seconds = round(time.monotonic() - born, 2)
        report.append((what, killed and fired, start, "taking over the lock" in log, seconds))
    pid, err = server.start(resume_run(run))
    assert server.wait(pid) == 0, err.read_text()
    out, ref_err = reference.communicate(timeout=300)
    assert reference.returncode == 0, ref_err
    yield ref, run, server, report
    server.close()


@pytest.mark.slow
def test_train_killed_at_any_instant_ends_bit_for_bit_as_uninterrupted(killed_run) -> None:
    ref, run, _, report = killed_run
    # the final weights, optimizer and data position equal the uninterrupted run's, bit for bit
    tensors_equal(ref / "checkpoints" / "last", run / "checkpoints" / "last")
    a, _ = load_checkpoint(ref / "checkpoints" / "last")
    b, _ = load_checkpoint(run / "checkpoints" / "last")
    for key in ("step", "epoch", "best", "bad_epochs", "task", "validated_at"):
        assert a[key] == b[key], key
    for (_, x), (_, y) in zip(
        sorted(a["optimizer"]["state"].items()),
        sorted(b["optimizer"]["state"].items()),
        strict=True,
    ):
        assert all(torch.equal(x[k], y[k]) for k in x)
    # the same checkpoints kept (best N, recent N), with the same weights; no leftovers
    names = sorted(p.name for p in (ref / "checkpoints").iterdir())
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == names
    for name in names:
        if (ref / "checkpoints" / name).is_dir():
            tensors_equal(ref / "checkpoints" / name, run / "checkpoints" / name)
    assert json.loads((ref / "checkpoints" / "best.json").read_text()) == json.loads(
        (run / "checkpoints" / "best.json").read_text()
    )
    # the metrics log has every row exactly once, as the uninterrupted run's (no torn line)
    assert (run / "metrics.jsonl").read_bytes().endswith(b"\n")
    expected = [comparable(r) for r in read_metric_rows(ref / "metrics.jsonl")]
    assert [comparable(r) for r in read_metric_rows(run / "metrics.jsonl")] == expected
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert not (run / ".lock").exists() and not list(run.glob("tokenizer.tmp"))
    # ... after being killed at 20+ moments, most of them the aimed ones, many mid-run
    kills = [r for r in report if r[1]]
    assert len(kills) >= 20, report
    assert sum(1 for r in report if r[1] == "aimed") >= 12, report
    assert sum(1 for r in report if r[2] > 0) >= 10, report
    assert any(r[3] for r in report), "no life took over a killed one's lock"


@pytest.mark.slow
def test_average_killed_at_any_instant_keeps_every_checkpoint(killed_run) -> None:
    _, run, server, _ = killed_run
    checkpoints = run / "checkpoints"
    pid, err = server.start(["average", "--run", str(run), "--best", "2"])
    assert server.wait(pid) == 0, err.read_text()
    earlier = load_file(str(checkpoints / "averaged" / "model.safetensors"))
    sources = CheckpointManager(run, keep_best=3, keep_recent=2).paths("last")[:3]
    new = average_checkpoints(sources)
    before = digests(checkpoints, skip="averaged")
    kills = [
        after(0.0),
        after(0.1),
        exists("checkpoints/averaged.tmp/model.safetensors"),
        exists("checkpoints/averaged.tmp/meta.json"),
        exists("checkpoints/averaged.old"),
    ]
    killed = 0
    for trigger in kills:
        pid, err = server.start(
            ["average", "--run", str(run), "--last", "3"], {SLOW_SAVE_ENV: "0.05"}
        )
        born = time.monotonic()
        while not exited(pid) and time.monotonic() - born < 30:
            if trigger(run, time.monotonic() - born, 0, 0):
                os.kill(pid, signal.SIGKILL)
                killed += 1
                break
            time.sleep(0.002)
        server.wait(pid)
        # every other checkpoint is untouched; the averaged one reads as the earlier or the new
        assert digests(checkpoints, skip="averaged") == before
        path = find_checkpoint(run, "averaged")
        got = load_file(str(path / "model.safetensors"))
        load_checkpoint(path, with_state=False)
        assert all(torch.equal(got[k], earlier[k]) for k in got) or all(
            torch.equal(got[k], new[k]) for k in got
        )
    assert killed == len(kills)
    pid, err = server.start(["average", "--run", str(run), "--last", "3"])
    assert server.wait(pid) == 0, err.read_text()
    got = load_file(str(checkpoints / "averaged" / "model.safetensors"))
    assert all(torch.equal(got[k], new[k]) for k in got)
    assert sorted(p.name for p in checkpoints.iterdir() if p.name.startswith("averaged")) == [
        "averaged"
    ]


def test_tokenizers_of_a_run_killed_while_writing_them_are_rebuilt(tmp_path: Path, monkeypatch):
    """Killed after writing tokenizer/src but not tokenizer/tgt: the next start must not take
    the half-written folder for the run's tokenizers."""
    from attnkit.data.tokenizers import Tokenizer
    from attnkit.translation.config import DataConfig
    from attnkit.translation.task import prepare_data

    cfg = DataConfig(num_examples=300, vocab_size=100, shared_vocab=False, valid_limit=4)
    clean = prepare_data(cfg, tmp_path / "clean", cfg.max_len)
    real_save = Tokenizer.save

    def killed_at_the_second(self, directory):
        if Path(directory).name == "tgt":
            raise KeyboardInterrupt  # stands for SIGKILL: nothing after this line runs
        return real_save(self, directory)

    monkeypatch.setattr(Tokenizer, "save", killed_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        prepare_data(cfg, tmp_path / "run", cfg.max_len)
    monkeypatch.undo()
    again = prepare_data(cfg, tmp_path / "run", cfg.max_len)
    assert again.train == clean.train and again.valid == clean.valid
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["tokenizer"]


def test_a_tokenizer_file_is_there_whole_or_not_at_all(tmp_path: Path, monkeypatch) -> None:
    """tokenizer.json is written last and renamed into place: a tokenizer folder holding it is
    complete (what language-model runs check before re-using their tokenizer)."""
    from attnkit.data.tokenizers import CharTokenizer, load_tokenizer

    tokenizer = CharTokenizer.build(["to be or not to be"])
    real = Path.write_text

    def killed_half_way(self: Path, data: str, *args, **kwargs):
        real(self, data[: len(data) // 2], *args, **kwargs)
        raise KeyboardInterrupt  # stands for SIGKILL in the middle of the write

    monkeypatch.setattr(Path, "write_text", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        tokenizer.save(tmp_path / "tokenizer")
    monkeypatch.undo()
    assert not (tmp_path / "tokenizer" / "tokenizer.json").exists()
    tokenizer.save(tmp_path / "tokenizer")
    assert load_tokenizer(tmp_path / "tokenizer").chars == tokenizer.chars

"""Multi-process training (DDP over gloo, 2 CPU processes launched by torchrun).

The reference is always a single-process run of the same configuration in this pytest process:

* after k steps, and after resumes, the 2-process parameters equal the 1-process ones to 1e-6
  (about 1e-12 is seen), and so do the logged training loss and gradient norm of every step
  (the norm would be off by the world size if DDP's averaging were not undone: AdamW itself is
  blind to a constant factor, clipping and the logged norm are not);
* a checkpoint of the 2-process run resumes in 1 process and one of the 1-process run in 2, both
  mid-epoch, and they finish where the single-process run finishes;
* the sharded and gathered validation gives exactly the numbers and hypotheses of one process;
* killing a rank, or a rank that stalls past the collective timeout, ends the job with an error.

Why float64: the two runs sum the gradient contributions in a different order. In float32 that
is ~1e-7 relative, but the key bias of attention has an exactly zero true gradient (softmax
ignores a shift shared by all scores), so its computed gradient is rounding noise, which AdamW
normalises into steps of about lr: float32 runs drift apart by ~3e-4 there after a few steps.

This file is also the torchrun worker: ``python tests/test_distributed.py worker SPEC.json``.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 120  # hard limit on each launched job (the tests below expect far less)

# A run small enough that one phase takes a second or two; dropout 0 (dropout masks depend on
# the batch split, so only a dropout-free run can match bit for bit); accumulation 2 exercises
# DDP's no_sync on the first micro-batch of each step.
TINY: dict[str, Any] = {
    "model_type": "transformer",
    "model": {
        "d_model": 32,
        "num_heads": 2,
        "ffn_hidden": 64,
        "num_encoder_layers": 1,
        "num_decoder_layers": 1,
        "dropout": 0.0,
        "norm_first": True,
    },
    "data": {
        "source": "dates",
        "vocab_size": 120,
        "max_len": 40,
        "num_examples": 600,
        "valid_fraction": 0.1,
        "valid_limit": 40,
    },
    "train": {
        "epochs": 1,
        "max_tokens": 500,
        "lr": 5e-3,
        "warmup_steps": 4,
        "accum_steps": 2,
        "log_every": 1,
        "device": "cpu",
        "amp": False,
        "keep_best": 1,
    },
    "decode": {"beam_size": 1},
}
#: Resume phases: stop one optimizer step into epoch 2 (the time budget is already spent, so
#: training stops after the first step), then finish epoch 2.
MID = {"epochs": 2, "time_budget": 1e-6}
FINISH = {"epochs": 2, "time_budget": None}


def _run_config() -> Any:
    from attnkit.translation.config import preset_for, run_config_from_dict

    cfg = preset_for("dates", "transformer")
    for section in ("model", "data", "train", "decode"):
        cfg[section].update(TINY[section])
    cfg["model_type"] = TINY["model_type"]
    return run_config_from_dict(cfg)


def _phase(run: Path, overrides: dict[str, Any] | None, snapshot: Path | None) -> None:
    """Train from scratch (``overrides`` None) or resume ``run``; copy it to ``snapshot``."""
    from attnkit.training import distributed as dist
    from attnkit.translation.run import train_translator

    if overrides is None:
        train_translator(_run_config(), run)
    else:
        train_translator(None, run, resume=True, train_overrides=overrides)
    if snapshot is not None and dist.is_main():
        shutil.copytree(run, snapshot)
    dist.barrier()


def _worker(spec_path: str) -> None:
    """torchrun worker: the phases listed in the spec, in float64."""
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    spec = json.loads(Path(spec_path).read_text())
    if spec.get("exit_report"):  # registered first, so it runs last at exit (atexit is LIFO)
        atexit.register(_report_exit, Path(spec["exit_report"]) / f"rank{os.environ['RANK']}")
    if spec.get("stall_rank") is not None:
        _stall(int(spec["stall_rank"]))
        return
    for run, overrides, snapshot in spec["phases"]:
        _phase(Path(run), overrides, Path(snapshot) if snapshot else None)
    if spec.get("evaluate"):
        from attnkit.training import distributed as dist

        found = _evaluate(Path(spec["evaluate"]))
        if dist.is_main():
            Path(spec["evaluate_out"]).write_text(json.dumps(found))


def _report_exit(path: Path) -> None:
    """Whether the process group was left before interpreter teardown (see ``init_from_env``)."""
    import torch.distributed as tdist

    path.write_text("left" if not tdist.is_initialized() else "still in the group")


def _stall(stall_rank: int) -> None:
    """One rank never reaches the collective; the others must time out."""
    from attnkit.training import distributed as dist

    dist.init_from_env("cpu")
    if dist.rank() == stall_rank:
        time.sleep(TIMEOUT_S)
    dist.barrier()


def _launch(spec: dict[str, Any], tmp_path: Path, **env: str) -> tuple[int, str]:
    """Run this file's worker in 2 processes under torchrun; return (status, stderr)."""
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "--max-restarts=0",
        str(Path(__file__).resolve()),
        "worker",
        str(spec_path),
    ]
    proc = _start(cmd, tmp_path, **env)
    return _finish(proc, tmp_path, TIMEOUT_S)


def _start(cmd: list[str], tmp_path: Path, **env: str) -> subprocess.Popen:
    """Start ``cmd`` in its own session (so that a failed test can end all of its processes),
    its output going to files in ``tmp_path``."""
    with open(tmp_path / "stdout.txt", "w") as out, open(tmp_path / "stderr.txt", "w") as err:
        return subprocess.Popen(
            cmd, env=_child_env(**env), stdout=out, stderr=err, cwd=tmp_path, start_new_session=True
        )


def _finish(proc: subprocess.Popen, tmp_path: Path, timeout: float) -> tuple[int, str]:
    """Wait for ``proc``; on timeout end its whole process group (torchrun and workers)."""
    try:
        status = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return status, (tmp_path / "stderr.txt").read_text()


def _child_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return env


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "checkpoints" / "last" / "model.safetensors"))


def _rows(run: Path, split: str) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == split]


def _assert_same_weights(a: Path, b: Path, tol: float = 1e-6) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert wa[key].dtype == torch.float64
        diff = (wa[key] - wb[key]).abs().max().item()
        assert diff <= tol, f"{key}: {a.name} and {b.name} differ by {diff:.3g}"


def _assert_same_history(a: Path, b: Path) -> None:
    """Per-step training loss and gradient norm, and the validation numbers, of two runs."""
    ta, tb = _rows(a, "train"), _rows(b, "train")
    assert [r["step"] for r in ta] == [r["step"] for r in tb]
    for ra, rb in zip(ta, tb, strict=True):
        for key in ("loss", "grad_norm", "lr"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-9, abs=1e-12), (key, ra, rb)
    va, vb = _rows(a, "valid"), _rows(b, "valid")
    assert len(va) == len(vb) > 0
    for ra, rb in zip(va, vb, strict=True):
        assert ra["bleu"] == rb["bleu"] and ra["accuracy"] == rb["accuracy"]
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-9)


@pytest.fixture
def float64() -> Any:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def test_two_processes_match_one_and_resume_across_world_sizes(
    tmp_path: Path, float64: Any
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    # the single-process reference: epoch 1, one step into epoch 2, the rest of epoch 2
    _phase(one, None, tmp_path / "one@1")
    _phase(one, MID, tmp_path / "one@mid")
    _phase(one, FINISH, None)
    shutil.copytree(tmp_path / "one@mid", tmp_path / "one-to-two")

    spec = {
        "phases": [
            [str(two), None, str(tmp_path / "two@1")],
            [str(two), MID, str(tmp_path / "two@mid")],
            [str(two), FINISH, None],
            [str(tmp_path / "one-to-two"), FINISH, None],
        ],
        "evaluate": str(one),
        "evaluate_out": str(tmp_path / "evaluated.json"),
        "exit_report": str(tmp_path),
    }
    status, stderr = _launch(spec, tmp_path)
    assert status == 0, stderr[-3000:]
    # each rank left the group itself before exiting: gloo torn down with the interpreter
    # can abort a finished rank ("terminate called without an active exception")
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["left", "left"]

    shutil.copytree(tmp_path / "two@mid", tmp_path / "two-to-one")
    _phase(tmp_path / "two-to-one", FINISH, None)

    state = torch.load(
        tmp_path / "two@mid" / "checkpoints" / "last" / "state.pt", weights_only=True
    )
    reference = torch.load(
        tmp_path / "one@mid" / "checkpoints" / "last" / "state.pt", weights_only=True
    )
    assert state["task"]["sampler"] == reference["task"]["sampler"]
    assert state["task"]["sampler"]["epoch"] == 1 and state["task"]["sampler"]["position"] > 0
    assert state["step"] == reference["step"]

    _assert_same_weights(tmp_path / "two@1", tmp_path / "one@1")  # after k steps
    _assert_same_weights(tmp_path / "two@mid", tmp_path / "one@mid")
    _assert_same_weights(two, one)
    _assert_same_weights(tmp_path / "one-to-two", one)  # 1-process checkpoint, 2 processes
    _assert_same_weights(tmp_path / "two-to-one", one)  # 2-process checkpoint, 1 process
    _assert_same_history(two, one)
    _assert_same_history(tmp_path / "one-to-two", one)
    _assert_same_history(tmp_path / "two-to-one", one)
    # sharded and gathered validation: the numbers and hypotheses of one process, exactly
    gathered = json.loads((tmp_path / "evaluated.json").read_text())
    single = _evaluate(one)
    assert len(set(single["hyps"])) > len(single["hyps"]) // 2  # the order matters
    assert gathered == single


def _evaluate(run: Path) -> dict[str, Any]:
    """Validation numbers, and the hypotheses they score, of the last checkpoint of ``run``
    with seeded noise added to the weights (a half-trained model answers every date the same
    way; a noisy one says something different for most sentences, so the order counts)."""
    from attnkit.translation import task as translation
    from attnkit.translation.translator import Translator

    translator = Translator.load(run, "last", device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in translator.model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    cfg = translator.config
    data = translation.prepare_data(cfg.data, run, cfg.data.max_len)
    # a small token budget: several validation batches for each rank
    task = translation.TranslationTask(
        data,
        max_tokens=120,
        seed=cfg.train.seed,
        label_smoothing=0.0,
        decode=cfg.decode,
        device=torch.device("cpu"),
    )
    seen: list[list[str]] = []
    score = translation.corpus_bleu

    def recording_bleu(hyps: list[str], refs: Any, **kwargs: Any) -> Any:
        seen.append(list(hyps))
        return score(hyps, refs, **kwargs)

    translation.corpus_bleu = recording_bleu  # type: ignore[assignment]
    try:
        with torch.inference_mode():
            metrics = task.evaluate(translator.model)
    finally:
        translation.corpus_bleu = score  # type: ignore[assignment]
    return {"metrics": metrics, "hyps": seen[0]}


def _pid_of_rank(launcher: int, rank: int) -> int | None:
    """The pid of the worker of ``rank`` among the descendants of ``launcher`` (Linux /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:  # "pid (name) state ppid ..."; the name may hold spaces
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    family, grew = {launcher}, True
    while grew:
        children = {pid for pid, ppid in parents.items() if ppid in family} - family
        family, grew = family | children, bool(children)
    for pid in family - {launcher}:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ and b"LOCAL_RANK" in b" ".join(environ):
            return pid
    return None


def _start_training(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """``attnkit train --nproc 2`` of the tiny run for ever; return once training has started."""
    run = tmp_path / "run"
    argv = [
        sys.executable,
        "-m",
        "attnkit.cli",
        "train",
        "--data",
        "dates",
        "--run",
        str(run),
        "--nproc",
        "2",
        "--epochs",
        "1000",
        "--samples",
        "0",
        "--no-progress",
    ]
    for section in ("model", "data", "train"):
        for key, value in TINY[section].items():
            if key != "source":
                argv += ["--set", f"{section}.{key}={value}"]
    launcher = _start(argv, tmp_path, ATTNKIT_DIST_TIMEOUT="60")
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not (run / "metrics.jsonl").exists():  # rank 0 logs once training runs
            assert launcher.poll() is None, (tmp_path / "stderr.txt").read_text()[-3000:]
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.2)
    except BaseException:
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()
        raise
    return launcher, run


#: A frame of torchrun's own code in a traceback: the launcher ends without one.
TORCHRUN_FRAME = "torch/distributed/run.py"


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_killing_one_rank_ends_the_job_with_a_clear_error(tmp_path: Path) -> None:
    launcher, _ = _start_training(tmp_path)
    try:
        victim = _pid_of_rank(launcher.pid, 1)
        assert victim is not None, "no process with RANK=1 under the launcher"
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
    except BaseException:  # end torchrun and the workers too
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()
        raise
    status, stderr = _finish(launcher, tmp_path, 60)
    took = time.monotonic() - killed
    assert status != 0
    assert took < 30, f"the job took {took:.0f} s to end after rank 1 died"
    assert "2-process job failed" in stderr, stderr[-3000:]  # the launcher's line
    assert "rank      : 1" in stderr and "SIGKILL" in stderr, stderr[-3000:]  # torchrun's
    assert TORCHRUN_FRAME not in stderr, stderr[-3000:]


def test_ctrl_c_of_a_real_multi_process_job_saves_and_ends_in_a_line(tmp_path: Path) -> None:
    """Ctrl-C at a terminal (SIGINT to the whole process group): every rank stops at the same
    step and rank 0 saves; the launcher exits 130 with the resume hint, and torchrun adds no
    traceback of its own (it raised SignalException out of its main)."""
    launcher, run = _start_training(tmp_path)
    os.killpg(launcher.pid, signal.SIGINT)
    status, stderr = _finish(launcher, tmp_path, 60)
    assert status == 130, stderr[-3000:]
    assert "interrupted; the 2 workers saved a checkpoint" in stderr, stderr[-3000:]
    assert TORCHRUN_FRAME not in stderr and "SignalException" not in stderr, stderr[-3000:]
    assert (run / "checkpoints" / "last" / "model.safetensors").exists()


def test_torchrun_command_keeps_the_command_options_away_from_torchrun() -> None:
    from torch.distributed.run import get_args_parser

    from attnkit.training.launch import strip_nproc, torchrun_command

    argv = ["train", "--run", "runs/x", "--nproc", "2", "--set", "train.epochs=3", "--nproc=4"]
    assert strip_nproc(argv) == ["train", "--run", "runs/x", "--set", "train.epochs=3"]
    cmd = torchrun_command(2, argv)
    assert cmd[:3] == [sys.executable, "-m", "attnkit.training.torchrun"]
    # torchrun's own parser: without the "--", "--run" is an ambiguous abbreviation of its
    # "--run-path" and the launch fails before any worker starts
    args = get_args_parser().parse_args(cmd[3:])
    assert (args.module, args.nproc_per_node, args.max_restarts) == (True, "2", 0)
    assert args.training_script == "attnkit.cli"
    assert args.training_script_args == strip_nproc(argv)
    with pytest.raises(ValueError, match="--nproc"):
        torchrun_command(0, argv)


def test_a_stalled_rank_times_out_instead_of_hanging(tmp_path: Path) -> None:
    start = time.monotonic()
    status, stderr = _launch({"stall_rank": 1}, tmp_path, ATTNKIT_DIST_TIMEOUT="3")
    took = time.monotonic() - start
    assert status != 0
    assert took < 60, f"took {took:.0f} s"  # rank 1 sleeps for TIMEOUT_S
    assert "Timed out waiting 3000ms" in stderr, stderr[-3000:]  # gloo, with our timeout


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    from attnkit.training.distributed import exit_worker

    _worker(sys.argv[2])
    exit_worker(0)  # as attnkit's own workers end


def test_ctrl_c_of_a_multi_process_job_is_status_130_with_the_resume_hint(
    monkeypatch, capsys
) -> None:
    """Ctrl-C reaches torchrun and the workers (which save a checkpoint); torchrun exits 1 on
    SIGINT, but the job was interrupted, not failed (was: "2-process job failed")."""
    from attnkit.training import launch

    class Torchrun:  # stands in for the torchrun process: Ctrl-C arrives while waiting
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.waits = 0

        def wait(self) -> int:
            self.waits += 1
            if self.waits == 1:
                raise KeyboardInterrupt
            return 1  # torchrun's status after SIGINT

    monkeypatch.setattr(launch.subprocess, "Popen", Torchrun)
    assert launch.relaunch_with_torchrun(2, ["train", "--nproc", "2"]) == 130
    err = capsys.readouterr().err
    assert "interrupted; the 2 workers saved a checkpoint" in err and "failed" not in err


def test_a_multi_process_start_that_fails_removes_the_folder_it_made(
    monkeypatch, tmp_path: Path, capsys
) -> None:
    """As a single-process start does: a new run folder without config.json is removed when
    the job fails (torchrun kills rank 0 before it can clean up); a run that had started, or a
    folder that was there before, is kept."""
    from attnkit.training import launch

    def job(makes_config: bool):
        class Torchrun:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                (tmp_path / "new" / "tokenizer").mkdir(parents=True, exist_ok=True)
                if makes_config:
                    (tmp_path / "new" / "config.json").write_text("{}")

            def wait(self) -> int:
                return 1  # a rank failed

        return Torchrun

    monkeypatch.setattr(launch.subprocess, "Popen", job(False))
    assert launch.relaunch_with_torchrun(2, ["train"], run_dir=tmp_path / "new") == 1
    assert not (tmp_path / "new").exists()
    assert "removed" in capsys.readouterr().err
    monkeypatch.setattr(launch.subprocess, "Popen", job(True))
    assert launch.relaunch_with_torchrun(2, ["train"], run_dir=tmp_path / "new") == 1
    assert (tmp_path / "new" / "config.json").is_file()  # training had started: kept
    (tmp_path / "new" / "config.json").unlink()
    assert launch.relaunch_with_torchrun(2, ["train"], run_dir=tmp_path / "new") == 1
    assert (tmp_path / "new").is_dir()  # it was there before this job: not this job's to remove
    # another live job took the new folder over (it holds the run's lock): it is left alone
    from attnkit.training.runlock import RunLock

    other = tmp_path / "other"

    class Racing:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.lock = RunLock(other, "another job").acquire()  # made and locked by it

        def wait(self) -> int:
            return 1

    monkeypatch.setattr(launch.subprocess, "Popen", Racing)
    assert launch.relaunch_with_torchrun(2, ["train"], run_dir=other) == 1
    assert other.is_dir() and (other / ".lock").exists()
    # Ctrl-C before training started: nothing to resume, and the message says so
    capsys.readouterr()

    class Interrupted:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            (tmp_path / "early" / "tokenizer").mkdir(parents=True)
            self.waits = 0

        def wait(self) -> int:
            self.waits += 1
            if self.waits == 1:
                raise KeyboardInterrupt
            return 1

    monkeypatch.setattr(launch.subprocess, "Popen", Interrupted)
    assert launch.relaunch_with_torchrun(2, ["train"], run_dir=tmp_path / "early") == 130
    err = capsys.readouterr().err
    assert "nothing was saved" in err and "--resume" not in err
    assert not (tmp_path / "early").exists()


def test_the_torchrun_wrapper_turns_its_two_ordinary_endings_into_statuses(
    monkeypatch, capsys
) -> None:
    """SIGINT/SIGTERM -> 128 + signal, a failed worker -> 1 with torchrun's summary only; any
    other error keeps its traceback (the real endings are the two tests above)."""
    import torch.distributed.run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from attnkit.training.torchrun import main

    def ends_with(exc: BaseException):
        def fake_main(args: Any = None) -> None:
            raise exc

        return fake_main

    monkeypatch.setattr(torchrun, "main", ends_with(SignalException("x", signal.SIGINT)))
    assert main([]) == 130
    monkeypatch.setattr(torchrun, "main", ends_with(SignalException("x", signal.SIGTERM)))
    assert main([]) == 143
    failure = ProcessFailure(local_rank=1, pid=7, exitcode=-9, error_file="/nonexistent")
    monkeypatch.setattr(torchrun, "main", ends_with(ChildFailedError("job.py", {1: failure})))
    capsys.readouterr()
    assert main([]) == 1
    err = capsys.readouterr().err
    assert "job.py FAILED" in err and "rank      : 1" in err and "Traceback" not in err
    monkeypatch.setattr(torchrun, "main", ends_with(ValueError("a bad option")))
    with pytest.raises(ValueError, match="a bad option"):
        main([])
    monkeypatch.setattr(torchrun, "main", lambda args=None: None)
    assert main(["--standalone"]) == 0


def test_exit_worker_ends_like_a_normal_exit_but_without_teardown(tmp_path: Path) -> None:
    """What a normal exit does before interpreter teardown still happens: the status, other
    threads finished, atexit handlers run, buffered output flushed."""
    script = f"""
import atexit, sys, threading, time
from pathlib import Path
from attnkit.training.distributed import exit_worker
out = Path({str(tmp_path)!r})
atexit.register(lambda: (out / "atexit").write_text("ran"))
def late():
    time.sleep(0.3)
    (out / "thread").write_text("finished")
threading.Thread(target=late).start()
sys.stdout.write("buffered, no newline")
exit_worker(3)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], env=_child_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 3, done.stderr[-2000:]
    assert done.stdout == "buffered, no newline"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "thread").read_text() == "finished"

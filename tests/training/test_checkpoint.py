"""Tests for attnkit.training.checkpoint: round trips, crashes, best-N, tied weights, averaging."""

from __future__ import annotations

import json
import os
import random
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from attnkit.training import checkpoint as ckpt
from attnkit.training.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    read_meta,
    restore_rng_state,
    save_checkpoint,
)
from attnkit.training.manager import CheckpointManager, average_checkpoints, save_averaged


class TiedLM(nn.Module):
    """Embedding -> linear -> output layer sharing the embedding matrix; an integer buffer."""

    def __init__(self, vocab: int = 11, dim: int = 6, tie: bool = True) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.hidden = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, vocab, bias=False)
        if tie:
            self.out.weight = self.embed.weight
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(self.embed(x))))


class FakeCompiled(nn.Module):
    """Stands in for torch.compile's wrapper: the real model under ``_orig_mod``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._orig_mod = model


def trained(seed: int = 0) -> tuple[TiedLM, torch.optim.Optimizer]:
    """A model with seeded weights and an AdamW whose per-parameter state is filled in (as a few
    steps would; set by hand because a first optimizer step costs seconds of lazy imports)."""
    torch.manual_seed(seed)
    model = TiedLM()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for p in model.parameters():
        opt.state[p] = {
            "step": torch.tensor(2.0),
            "exp_avg": torch.randn_like(p),
            "exp_avg_sq": torch.rand_like(p),
        }
    model.seen.fill_(seed + 5)
    return model, opt


def draws() -> tuple:
    """One number from each generator; NumPy's Gaussian comes from its cached second value."""
    return random.random(), float(np.random.rand()), float(np.random.randn()), torch.rand(3)


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_round_trip_weights_optimizer_rng(tmp_path) -> None:
    model, opt = trained()
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leaves a cached Gaussian in NumPy's legacy state
    state = {
        "optimizer": opt.state_dict(),
        "rng": capture_rng_state(),
        "step": 7,
        "epoch": 2,
        "task": {"sampler": {"epoch": 2, "position": 5}},
    }
    expected_draws = draws()
    save_checkpoint(tmp_path / "c", FakeCompiled(model), state, {"metrics": {"bleu": 1.5}})
    assert sorted(os.listdir(tmp_path)) == ["c"]
    assert sorted(os.listdir(tmp_path / "c")) == ["meta.json", "model.safetensors", "state.pt"]

    fresh, _ = trained(seed=9)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    draws()  # move every generator on
    loaded, meta = load_checkpoint(tmp_path / "c", fresh)
    assert_same_weights(fresh, model)
    fresh_opt.load_state_dict(loaded["optimizer"])
    for p, q in zip(fresh.parameters(), model.parameters(), strict=True):
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(fresh_opt.state[p][key], opt.state[q][key])
    restore_rng_state(loaded["rng"])
    got = draws()
    assert got[:3] == expected_draws[:3] and torch.equal(got[3], expected_draws[3])
    assert loaded["task"] == state["task"] and loaded["step"] == 7
    assert meta["step"] == 7 and meta["epoch"] == 2 and meta["metrics"] == {"bleu": 1.5}
    assert meta["format_version"] == ckpt.FORMAT_VERSION and meta["attnkit_version"]
    assert "timestamp" in meta and read_meta(tmp_path / "c") == meta


def test_tied_weights_saved_once_and_restored_tied(tmp_path) -> None:
    model, _ = trained()
    save_checkpoint(tmp_path / "c", model, {}, {})
    stored = load_file(str(tmp_path / "c" / "model.safetensors"))
    assert len([k for k in stored if k in ("embed.weight", "out.weight")]) == 1
    fresh = TiedLM()
    load_checkpoint(tmp_path / "c", fresh)
    assert fresh.out.weight is fresh.embed.weight
    assert_same_weights(fresh, model)
    with pytest.raises(CheckpointError, match="missing keys: (embed|out).weight"):
        load_checkpoint(tmp_path / "c", TiedLM(tie=False))


def test_weights_that_do_not_fit(tmp_path) -> None:
    save_checkpoint(tmp_path / "c", TiedLM(), {}, {})
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "c", TiedLM(vocab=12))
    assert "shape mismatches: " in str(err.value) and "\n" not in str(err.value)
    assert "a checkpoint of another model (load it with the run it came from)" in str(err.value)
    other = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(CheckpointError, match="missing keys: 0.weight.*unexpected keys"):
        load_checkpoint(tmp_path / "c", other)


def test_missing_file_newer_format_and_absent_checkpoint(tmp_path) -> None:
    save_checkpoint(tmp_path / "c", TiedLM(), {"step": 1}, {})
    meta_path = tmp_path / "c" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "format_version": ckpt.FORMAT_VERSION + 1}))
    with pytest.raises(CheckpointError, match=r"format version \d+ .*upgrade attnkit") as err:
        load_checkpoint(tmp_path / "c")
    assert str(tmp_path / "c") in str(err.value) and "\n" not in str(err.value)
    meta_path.write_text(json.dumps(meta))
    (tmp_path / "c" / "state.pt").unlink()
    with pytest.raises(CheckpointError, match=r"incomplete \(missing state.pt\)"):
        load_checkpoint(tmp_path / "c")
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nothing")


def test_state_and_meta_validation(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not JSON-ready"):
        save_checkpoint(tmp_path / "c", TiedLM(), {}, {"bad": object()})
    assert not (tmp_path / "c").exists()
    save_checkpoint(tmp_path / "c", TiedLM(), {"obj": random.Random(0)}, {})
    with pytest.raises(CheckpointError, match="objects other than tensors"):
        load_checkpoint(tmp_path / "c")
    state, meta = load_checkpoint(tmp_path / "c", TiedLM(), with_state=False)
    assert state == {} and meta["format_version"] == ckpt.FORMAT_VERSION


class Crash(RuntimeError):
    """A simulated power cut."""


def count_and_crash(monkeypatch, crash_at: int | None) -> list[str]:
    """Count the file-system operations of a save; raise Crash at the crash_at-th one."""
    calls: list[str] = []

    def wrap(owner, name):
        real = getattr(owner, name)

        def hooked(*args, **kwargs):
            calls.append(name)
            if crash_at is not None and len(calls) == crash_at:
                if name == "rmtree":  # die half-way through a deletion
                    os.remove(sorted(args[0].iterdir())[0])
                raise Crash(name)
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, hooked)

    for owner, name in ((os, "fsync"), (os, "rename"), (shutil, "rmtree"), (ckpt, "save_model")):
        wrap(owner, name)
    return calls


def test_crash_at_every_point_of_a_save_keeps_a_complete_checkpoint(tmp_path, monkeypatch) -> None:
    old, new = TiedLM(), TiedLM()
    path = tmp_path / "last"
    save_checkpoint(path, old, {"step": 1}, {})
    with monkeypatch.context() as m:
        calls = count_and_crash(m, None)
        save_checkpoint(path, new, {"step": 2}, {})
    assert {"rename", "fsync", "rmtree", "save_model"} <= set(calls)
    for crash_at in range(1, len(calls) + 1):
        save_checkpoint(path, old, {"step": 1}, {})
        with monkeypatch.context() as m:
            count_and_crash(m, crash_at)
            with pytest.raises(Crash):
                save_checkpoint(path, new, {"step": 2}, {})
        model = TiedLM()
        state, meta = load_checkpoint(path, model)  # old or new, never a mix or an error
        assert state["step"] == meta["step"] in (1, 2)
        assert_same_weights(model, old if state["step"] == 1 else new)
        ckpt._recover(path)  # what the next save does first: keeps the checkpoint just read
        assert sorted(os.listdir(tmp_path)) == ["last"], crash_at
        assert load_checkpoint(path)[0]["step"] == state["step"]
        save_checkpoint(path, new, {"step": 3}, {})  # the next save recovers and tidies up
        assert sorted(os.listdir(tmp_path)) == ["last"], crash_at
        assert load_checkpoint(path)[0]["step"] == 3


def test_crash_while_writing_state_leaves_previous_checkpoint(tmp_path, monkeypatch) -> None:
    run = tmp_path / "run"
    manager = CheckpointManager(run)
    model = TiedLM()
    manager.save_last(model, {"step": 1}, {})

    def half_written(obj, fh, *args, **kwargs):
        fh.write(b"\x80\x02partial")
        raise Crash("disk full")

    monkeypatch.setattr(torch, "save", half_written)
    with pytest.raises(Crash):
        manager.save_last(TiedLM(), {"step": 2}, {})
    monkeypatch.undo()
    tmp = run / "checkpoints" / "last.tmp"
    assert tmp.is_dir() and not (tmp / "meta.json").exists()
    assert manager.paths("last") == [run / "checkpoints" / "last"]
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(tmp)
    fresh = TiedLM()
    assert load_checkpoint(manager.last_path(), fresh)[0]["step"] == 1
    assert_same_weights(fresh, model)


def test_interrupted_swap_is_read_from_the_complete_sibling(tmp_path) -> None:
    path = tmp_path / "last"
    save_checkpoint(path, TiedLM(), {"step": 1}, {})
    os.rename(path, tmp_path / "last.old")  # as if stopped between the two renames,
    save_checkpoint(tmp_path / "x", TiedLM(), {"step": 2}, {})  # with a complete new copy
    os.rename(tmp_path / "x", tmp_path / "last.tmp")
    assert load_checkpoint(path)[0]["step"] == 2
    assert CheckpointManager(tmp_path / "run").last_path() is None
    shutil.rmtree(tmp_path / "last.tmp")
    (tmp_path / "last.tmp").mkdir()  # an incomplete new copy: the old one is used
    assert load_checkpoint(path)[0]["step"] == 1


def best_scores(manager: CheckpointManager) -> list[float]:
    return [read_meta(p)["selection"]["score"] for p in manager.paths("best")]


@pytest.mark.parametrize("mode", ["max", "min"])
def test_keep_best_n(tmp_path, mode: str) -> None:
    manager = CheckpointManager(tmp_path, keep_best=3, metric="bleu", mode=mode)
    model = TiedLM()
    scores = [10.0, 30.0, 20.0, 5.0, 40.0, 20.0, 25.0, float("nan")]
    saved = []
    for step, score in enumerate(scores, start=1):
        manager.save_last(model, {"step": step}, {})
        saved.append(manager.save_if_best(model, {"step": step}, {}, score) is not None)
    finite = [s for s in scores if s == s]
    sign = -1 if mode == "max" else 1
    expected = sorted(finite, key=lambda s: sign * s)[:3]
    assert best_scores(manager) == expected
    if mode == "max":
        assert saved == [True, True, True, False, True, False, True, False]  # the tie stays out
        kept = {"best-2", "best-5", "best-7"}
    else:
        assert saved == [True, True, True, True, False, False, False, False]
        kept = {"best-1", "best-3", "best-4"}
    names = {p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir()}
    assert names == kept | {"last"}
    index = json.loads((tmp_path / "checkpoints" / "best.json").read_text())
    assert [e["score"] for e in index["best"]] == expected and index["mode"] == mode
    assert manager.best_path() == manager.paths("best")[0]
    assert manager.paths("best", 2) == manager.paths("best")[:2]
    recent = manager.paths("last")
    assert recent[0] == tmp_path / "checkpoints" / "last"
    steps = [read_meta(p)["step"] for p in recent]
    assert steps == sorted(set(steps), reverse=True)


def test_manager_edge_cases(tmp_path) -> None:
    manager = CheckpointManager(tmp_path, keep_best=1, metric="loss", mode="min")
    assert manager.best_path() is None and manager.last_path() is None
    manager.save_if_best(TiedLM(), {"step": 4}, {}, 2.0)
    manager.save_if_best(TiedLM(), {"step": 4}, {}, 3.0)  # same step again: replaced
    assert best_scores(manager) == [3.0]
    (tmp_path / "checkpoints" / "best-99").mkdir()  # an orphan, e.g. from a crash
    manager.save_if_best(TiedLM(), {"step": 5}, {}, 1.0)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["best-5", "best.json"]
    with pytest.raises(CheckpointError, match="ranks by 'loss'"):
        CheckpointManager(tmp_path, metric="bleu").save_if_best(TiedLM(), {"step": 6}, {}, 1.0)
    with pytest.raises(ValueError, match="integer 'step'"):
        manager.save_if_best(TiedLM(), {}, {}, 0.5)
    with pytest.raises(ValueError, match="keep_best"):
        CheckpointManager(tmp_path, keep_best=0)


def test_average_matches_manual_mean(tmp_path) -> None:
    models = [trained(seed)[0] for seed in range(3)]
    paths = [
        save_checkpoint(tmp_path / f"c{i}", m, {"step": 10 * i}, {}) for i, m in enumerate(models)
    ]
    averaged = average_checkpoints(paths)
    for key in ("embed.weight", "hidden.weight", "hidden.bias"):
        manual = sum(m.state_dict()[key].double() for m in models) / 3
        torch.testing.assert_close(averaged[key], manual.float(), rtol=0, atol=1e-7)
    assert averaged["seen"].item() == models[0].seen.item()

    out = save_averaged(paths, tmp_path / "avg", TiedLM())
    model = TiedLM()
    _, meta = load_checkpoint(out, model)
    assert meta["step"] == 20 and len(meta["averaged_from"]) == 3
    assert model.out.weight is model.embed.weight
    torch.testing.assert_close(model.hidden.weight, averaged["hidden.weight"])


def test_average_rejects_different_models(tmp_path) -> None:
    a = save_checkpoint(tmp_path / "a", TiedLM(), {}, {})
    b = save_checkpoint(tmp_path / "b", TiedLM(vocab=12), {}, {})
    c = save_checkpoint(tmp_path / "c", nn.Linear(2, 2), {}, {})
    with pytest.raises(CheckpointError, match="has shape"):
        average_checkpoints([a, b])
    with pytest.raises(CheckpointError, match="keys differ"):
        average_checkpoints([a, c])
    with pytest.raises(CheckpointError, match="no checkpoint paths"):
        average_checkpoints([])

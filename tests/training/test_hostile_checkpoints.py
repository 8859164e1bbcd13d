"""Damaged and hostile run files: each gives one line naming the file and what to do, runs no code
from the file, allocates nothing the file claims before checking it, and loads nothing partially
(the model keeps its weights after a failed load)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import struct
from pathlib import Path

import pytest
import torch

import attnkit.pretrained.bert
import attnkit.translation.translator
from attnkit.cli import main
from attnkit.config import ConfigError
from attnkit.models import build_seq2seq
from attnkit.training.checkpoint import CheckpointError, load_checkpoint
from attnkit.translation.config import load_run_config
from attnkit.translation.translator import Translator
from tests.translation.tiny import TINY_TRANSFORMER

SETS = [
    *TINY_TRANSFORMER,
    "data.num_examples=300",
    "data.vocab_size=100",
    "data.valid_limit=4",
    "train.max_tokens=600",
    "train.device=cpu",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("hostile") / "run"
    sets = [a for s in SETS for a in ("--set", s)]
    argv = ["train", "--run", str(run), "--epochs", "1", "--no-progress", "--samples", "0"]
    assert main([*argv, *sets]) == 0
    return run


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def model_of(run: Path) -> torch.nn.Module:
    cfg = load_run_config(run)
    torch.manual_seed(1)
    return build_seq2seq(cfg.model_type, cfg.model)


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def unchanged(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def one_line_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def reseal(ckpt: Path, name: str) -> None:
    """Make meta.json's checksum of ``name`` match the file again (what an attacker would do)."""
    meta = json.loads((ckpt / "meta.json").read_text())
    meta["checksums"][name] = "sha256:" + hashlib.sha256((ckpt / name).read_bytes()).hexdigest()
    (ckpt / "meta.json").write_text(json.dumps(meta))


def strip_checksums(ckpt: Path) -> None:
    """As a checkpoint written before checksums were recorded."""
    meta = json.loads((ckpt / "meta.json").read_text())
    del meta["checksums"]
    (ckpt / "meta.json").write_text(json.dumps(meta))


def truncate(data: bytes) -> bytes:
    return data[: len(data) - 100]


def flip_data_bit(data: bytes) -> bytes:
    return data[:-3] + bytes([data[-3] ^ 0x10]) + data[-2:]


def flip_header_bit(data: bytes) -> bytes:
    return data[:8] + bytes([data[8] ^ 0x01]) + data[9:]  # the header's opening brace


def header_claims_gigabytes(data: bytes) -> bytes:
    return struct.pack("<Q", 10 * 2**30) + data[8:]


def tensor_claims_gigabytes(data: bytes) -> bytes:
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    name = next(k for k in header if k != "__metadata__")
    header[name] = {"dtype": "F32", "shape": [2**20, 2**20], "data_offsets": [0, 4 * 2**40]}
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data[8 + n :]


DAMAGE = {
    "truncated": (truncate, True),
    "bit flip in the data": (flip_data_bit, False),  # only the checksum can see this one
    "bit flip in the header": (flip_header_bit, True),
    "header claims 10 GiB": (header_claims_gigabytes, True),
    "a tensor claims 4 TiB": (tensor_claims_gigabytes, True),
    "empty": (lambda data: b"", True),
}


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("checksums", [True, False], ids=["checksummed", "old-format"])
def test_damaged_weights(run: Path, damage: str, checksums: bool, capsys) -> None:
    damage_fn, visible_without_checksum = DAMAGE[damage]
    ckpt = run / "checkpoints" / "last"
    if not checksums:
        strip_checksums(ckpt)
        if not visible_without_checksum:
            pytest.skip("a bit flip inside a tensor is only seen through meta.json's checksum")
    weights = ckpt / "model.safetensors"
    weights.write_bytes(damage_fn(weights.read_bytes()))
    model = model_of(run)
    before = snapshot(model)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(ckpt, model)
    message = str(err.value)
    assert str(weights) in message and "use another checkpoint" in message
    assert len(message.splitlines()) == 1 and unchanged(model, before)
    err_line = one_line_error(["translate", "--run", str(run), "--checkpoint", "last", "x"], capsys)
    assert "model.safetensors" in err_line
    assert "model.safetensors" in one_line_error(["train", "--run", str(run), "--resume"], capsys)


class Payload:
    """Unpickling it would create a folder: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_state_that_would_run_code_is_refused_unread(
    run: Path, tmp_path: Path, legacy: bool, capsys
) -> None:
    ckpt = run / "checkpoints" / "last"
    marker = tmp_path / "code-ran"
    state = torch.load(ckpt / "state.pt", weights_only=True)
    state["task"] = Payload(marker)
    if legacy:
        (ckpt / "state.pt").write_bytes(pickle.dumps(state, protocol=2))
    else:
        torch.save(state, ckpt / "state.pt")
    reseal(ckpt, "state.pt")  # the checksum matches: only weights_only stands in the way
    model = model_of(run)
    before = snapshot(model)
    with pytest.raises(CheckpointError, match="so it was refused unread") as err:
        load_checkpoint(ckpt, model)
    assert legacy or "(it would call posix.mkdir)" in str(err.value)
    assert str(ckpt / "state.pt") in str(err.value) and len(str(err.value).splitlines()) == 1
    assert not marker.exists() and unchanged(model, before)
    assert "state.pt" in one_line_error(["train", "--run", str(run), "--resume"], capsys)
    assert not marker.exists()


def test_damaged_state_is_one_line(run: Path, capsys) -> None:
    ckpt = run / "checkpoints" / "last"
    (ckpt / "state.pt").write_bytes(b"PK\x03\x04" + bytes(296))  # a broken zip
    model = model_of(run)
    before = snapshot(model)
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(ckpt, model)  # the checksum
    assert unchanged(model, before)
    reseal(ckpt, "state.pt")
    with pytest.raises(CheckpointError, match="state.pt is damaged and cannot be read"):
        load_checkpoint(ckpt, model)  # torch itself
    assert unchanged(model, before)
    assert "state.pt" in one_line_error(["train", "--run", str(run), "--resume"], capsys)


def edit_config(run: Path, edit) -> None:
    path = run / "config.json"
    raw = json.loads(path.read_text())
    edit(raw["config"])
    path.write_text(json.dumps(raw))


CONFIGS = {
    "d_model is a string": lambda c: c["model"].update(d_model="big"),
    "model is a list": lambda c: c.update(model=[1, 2]),
    "epochs is a string": lambda c: c["train"].update(epochs="x"),
    "unknown key": lambda c: c["model"].update(d_modle=8),
    "d_model 10**9": lambda c: c["model"].update(d_model=10**9, num_heads=1),
    "a trillion-word vocabulary": lambda c: c["model"].update(src_vocab_size=10**12),
    "ten million layers": lambda c: c["model"].update(num_encoder_layers=10**7),
}


@pytest.mark.parametrize("text", ["[]", '"config"', "3"])
def test_a_config_json_that_is_not_an_object(run: Path, text: str, capsys) -> None:
    (run / "config.json").write_text(text)
    for argv in (["translate", "--run", str(run), "x"], ["generate", "--run", str(run), "x"]):
        err = one_line_error(argv, capsys)
        assert "config.json: expected a JSON object" in err and "retrain" in err, err


@pytest.mark.parametrize("edit", CONFIGS)
def test_hostile_config_json(run: Path, edit: str, monkeypatch, capsys) -> None:
    edit_config(run, CONFIGS[edit])

    def never(*args, **kwargs):
        raise AssertionError("a model was built from a config that should have been refused")

    monkeypatch.setattr(attnkit.translation.translator, "build_seq2seq", never)
    with pytest.raises(ConfigError) as err:
        Translator.load(run, "last")
    message = str(err.value)
    assert str(run / "config.json") in message and len(message.splitlines()) == 1, message
    assert "restore" in message or "retrain" in message
    if "10**" in edit or "trillion" in edit or "million" in edit:
        assert "parameters" in message and "GiB" in message and "memory" in message
    for argv in (
        ["translate", "--run", str(run), "x"],
        ["train", "--run", str(run), "--resume"],
        ["average", "--run", str(run)],
    ):
        assert "config.json" in one_line_error(argv, capsys)


def test_absurd_sizes_on_the_command_line_are_refused_before_building(tmp_path, capsys) -> None:
    err = one_line_error(
        ["train", "--run", str(tmp_path / "r"), "--set", "model.d_model=1000000000"]
        + ["--set", "model.num_heads=1", "--set", "data.num_examples=300"],
        capsys,
    )
    assert "parameters" in err and "choose smaller" in err


@pytest.mark.parametrize(
    ("damage", "file"),
    [
        ("delete", "tokenizer/src/spm.model"),
        ("delete", "tokenizer/tgt/tokenizer.json"),
        ("garbage", "tokenizer/src/spm.model"),
        ("empty", "tokenizer/src/spm.model"),
        ("wrong types", "tokenizer/tgt/tokenizer.json"),
    ],
)
def test_damaged_tokenizer(run: Path, damage: str, file: str, capsys) -> None:
    path = run / file
    if damage == "delete":
        path.unlink()
    elif damage == "garbage":
        path.write_bytes(os.urandom(500))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.write_text(json.dumps({"kind": "sentencepiece", "lowercase": [], "model_file": 3}))
    err = one_line_error(["translate", "--run", str(run), "x"], capsys)
    assert str(path) in err and "restore" in err, err


def test_pretrained_config_claiming_a_gigantic_model(tmp_path: Path, monkeypatch) -> None:
    from tests.pretrained.test_pretrained import hf_config, hf_tensors, write_checkpoint

    folder = write_checkpoint(tmp_path / "bert", hf_tensors(), hf_config(hidden_size=10**9))

    def never(*args, **kwargs):
        raise AssertionError("the encoder was built")

    monkeypatch.setattr(attnkit.pretrained.bert, "EncoderModel", never)
    with pytest.raises(attnkit.pretrained.bert.CheckpointError, match="parameters") as err:
        attnkit.pretrained.bert.load_encoder(folder)
    assert str(folder / "config.json") in str(err.value)


def test_vision_config_claiming_a_gigantic_model(tmp_path: Path) -> None:
    from attnkit.vision.config import load_vision_config

    run = tmp_path / "vit"
    run.mkdir()
    config = {
        "task": "classification",
        "model": {"d_model": 2**20, "num_heads": 1, "ffn_hidden": 2**20, "num_layers": 1000},
        "classes": ["a", "b"],
    }
    (run / "config.json").write_text(json.dumps({"run_format": 1, "config": config}))
    with pytest.raises(ConfigError, match="parameters") as err:
        load_vision_config(run)
    assert str(run / "config.json") in str(err.value)

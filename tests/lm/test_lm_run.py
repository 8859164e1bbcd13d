"""Training language models end to end: a tiny text is learned, validation numbers against a
plain computation, exact resume, continued pretraining (--init-from), config checks, DDP."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from attnkit.cli import main
from attnkit.config import ConfigError
from attnkit.data.text import EOS_ID
from attnkit.lm.config import lm_config_from_dict, lm_preset
from attnkit.lm.data import decode_ids, encode_text, split_text
from attnkit.lm.generator import Generator
from attnkit.lm.run import train_lm
from attnkit.training.checkpoint import load_checkpoint
from tests.lm.lm_tiny import TEXT, VERSE, tiny_argv, tiny_config

ROOT = Path(__file__).resolve().parents[2]


def _rows(run: Path, split: str) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == split]


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _plain_loss(model: torch.nn.Module, ids: list[int], block: int) -> float:
    """Mean next-token cross-entropy from the model's logits over non-overlapping windows,
    written out here without the library's evaluation code."""
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, block):
            chunk = torch.tensor(ids[start : start + block + 1])
            logits, _ = model(chunk[None, :-1])  # (1, L, V)
            total += float(F.cross_entropy(logits[0].double(), chunk[1:], reduction="sum"))
            count += len(chunk) - 1
    return total / count


def test_a_tiny_text_is_learned(lm_run: tuple[Path, Any]) -> None:
    run, result = lm_run
    valid = _rows(run, "valid")
    vocab = json.loads((run / "config.json").read_text())["config"]["model"]["vocab_size"]
    assert len(valid) == 8 and result.stopped_because == "epochs"
    assert valid[0]["loss"] < math.log(vocab)
    assert valid[-1]["loss"] < 0.25 * math.log(vocab)  # uniform guessing: ln V
    for row in valid:  # characters: bits per character = nats per token / ln 2
        assert row["bpc"] == pytest.approx(row["loss"] / math.log(2), rel=1e-12)
        assert row["ppl"] == pytest.approx(math.exp(row["loss"]), rel=1e-12)
    for name in ("config.json", "tokenizer/tokenizer.json", "checkpoints/last", "curves.png"):
        assert (run / name).exists(), name
    assert json.loads((run / "config.json").read_text())["config"]["task"] == "lm"


def _valid_stream(tokenizer: Any, text: str) -> list[int]:
    """The validation text's ids after the last training token (its context)."""
    train_text, valid_text = split_text(text, 0.1)
    return encode_text(tokenizer, train_text)[-1:] + encode_text(tokenizer, valid_text)


def test_validation_matches_a_plain_computation(lm_run: tuple[Path, Any]) -> None:
    run, _ = lm_run
    generator = Generator.load(run, "best", device="cpu")
    tok, model = generator.tokenizer, generator.model
    best = min(r["loss"] for r in _rows(run, "valid"))
    block = generator.config.data.block_size
    assert best == pytest.approx(_plain_loss(model, _valid_stream(tok, TEXT), block), rel=1e-5)
    # any text: every character scored, the first one after a line break
    _, valid_text = split_text(TEXT, 0.1)
    scored = generator.evaluate_text(valid_text)
    expected = _plain_loss(model, encode_text(tok, "\n" + valid_text), block)
    assert scored["loss"] == pytest.approx(expected, rel=1e-6)
    assert scored["bpc"] == pytest.approx(expected / math.log(2), rel=1e-6)


def test_bpe_bits_per_character_count_the_characters(tmp_path: Path, text_file: Path) -> None:
    cfg = tiny_config(text_file, data={"tokenizer": "bpe", "vocab_size": 80}, train={"epochs": 1})
    _, generator = train_lm(cfg, tmp_path / "bpe")
    text = VERSE * 2
    ids = encode_text(generator.tokenizer, text)
    assert len(ids) < 0.6 * len(text)  # sub-words: fewer tokens than characters
    assert decode_ids(generator.tokenizer, ids) == text
    scored = generator.evaluate_text(text)
    nats = _plain_loss(generator.model, [EOS_ID, *ids], 32) * len(ids)  # EOS: a line start
    assert scored["loss"] * len(ids) == pytest.approx(nats, rel=1e-5)
    assert scored["bpc"] == pytest.approx(nats / math.log(2) / len(text), rel=1e-5)
    row = _rows(tmp_path / "bpe", "valid")[-1]
    assert row["bpc"] < row["loss"] / math.log(2)  # a token covers more than one character


def test_resume_mid_epoch_equals_uninterrupted(tmp_path: Path, text_file: Path, capsys) -> None:
    train = {"epochs": 1}
    torch.manual_seed(0)
    _, full = train_lm(tiny_config(text_file, train=train), tmp_path / "full")
    torch.manual_seed(0)
    result, _ = train_lm(
        tiny_config(text_file, train={**train, "time_budget": 1e-9}), tmp_path / "cut"
    )
    assert result.stopped_because == "time budget" and result.steps == 1
    state, _ = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last")
    assert {k: state["task"][k] for k in ("epoch", "position")} == {"epoch": 0, "position": 1}
    # the text changed since: refused, naming both sizes (was: trained on the other text)
    changed = tmp_path / "changed"
    shutil.copytree(tmp_path / "cut", changed)
    original = text_file.read_text(encoding="utf-8")
    argv = ["train-lm", "--run", str(changed), "--resume", "--sample-tokens", "0"]
    for edited in (original[: len(original) // 2], original.replace("May", "Jun")):
        text_file.write_text(edited, encoding="utf-8")
        try:
            assert main([*argv, "--set", "train.time_budget=null", "--no-progress"]) == 2
        finally:
            text_file.write_text(original, encoding="utf-8")
        err = capsys.readouterr().err
        assert "the data changed since this checkpoint was saved: 6,920 tokens then" in err, err
        assert ("same size, other content" in err) == (len(edited) == len(original))
    # through the CLI, as a user would
    argv = ["train-lm", "--run", str(tmp_path / "cut"), "--resume", "--sample-tokens", "0"]
    assert main([*argv, "--set", "train.time_budget=null", "--no-progress"]) == 0
    resumed = Generator.load(tmp_path / "cut", "last", device="cpu")
    a, b = _params(full.model), _params(resumed.model)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert _rows(tmp_path / "cut", "valid")[-1] == pytest.approx(
        _rows(tmp_path / "full", "valid")[-1]
    )


def test_init_from_continues_from_the_source_weights(
    lm_run: tuple[Path, Any], tmp_path: Path
) -> None:
    source, _ = lm_run
    other = tmp_path / "other.txt"
    text = "Thou art more lovely, and the summer day is short.\n" * 30  # known characters only
    other.write_text(text)
    # an lr too small to move the weights: the first validation measures the source model
    cfg = tiny_config(other, train={"epochs": 1, "lr": 1e-12, "warmup_steps": 0})
    train_lm(cfg, tmp_path / "continued", init_from=source)
    first = _rows(tmp_path / "continued", "valid")[0]["loss"]
    model = Generator.load(source, "best", device="cpu")
    ids = _valid_stream(model.tokenizer, text)
    assert first == pytest.approx(_plain_loss(model.model, ids, 32), rel=1e-5)
    stored = json.loads((tmp_path / "continued" / "config.json").read_text())["config"]
    assert stored["init_from"] == str(source)
    assert stored["model"] == json.loads((source / "config.json").read_text())["config"]["model"]
    tok = (tmp_path / "continued" / "tokenizer" / "tokenizer.json").read_text()
    assert tok == (source / "tokenizer" / "tokenizer.json").read_text()


def test_init_from_with_unknown_characters_is_a_one_line_error(
    lm_run: tuple[Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, _ = lm_run
    other = tmp_path / "other.txt"
    other.write_text("Zebras quixotically jump!\n" * 40)
    argv = ["train-lm", "--data", str(other), "--run", str(tmp_path / "c")]
    assert main([*argv, "--init-from", str(source), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'Z'" in err and "'q'" in err and str(other) in err


@pytest.mark.parametrize(
    ("model", "needle"),
    [
        ({"vocab_size": 100}, "model.vocab_size is set by the tokenizer"),
        ({"max_len": 64}, "data.block_size"),
        ({"d_model": 30, "num_heads": 4}, "divisible"),
    ],
)
def test_model_config_is_checked_before_any_data_work(model: dict, needle: str) -> None:
    cfg = lm_preset("char-small")
    cfg["model"].update(model)
    cfg["data"]["source"] = "/no/such/file.txt"  # never read: the model section fails first
    with pytest.raises(ConfigError, match=needle):
        lm_config_from_dict(cfg)


def test_presets_are_valid() -> None:
    from attnkit.lm.config import LM_PRESETS

    for name in LM_PRESETS:
        cfg = lm_config_from_dict(lm_preset(name))
        assert cfg.model.max_len == cfg.data.block_size


def test_two_processes_train_like_one(tmp_path: Path, text_file: Path) -> None:
    """DDP over gloo: 2 CPU processes (launched by --nproc 2) share each step's windows and end
    with the weights of one process (float32; no attention biases, whose exactly-zero true
    gradient is pure rounding noise that AdamW would amplify)."""
    sets = ["--set", "model.bias=false", "--set", "train.epochs=1", "--threads", "1"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*tiny_argv(text_file, one), *sets]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "attnkit.cli", *tiny_argv(text_file, two), *sets, "--nproc", "2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = Generator.load(one, "last", device="cpu").model.state_dict()
    b = Generator.load(two, "last", device="cpu").model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-5, msg=key)
    va, vb = _rows(one, "valid"), _rows(two, "valid")
    assert va[-1]["loss"] == pytest.approx(vb[-1]["loss"], rel=1e-5)


def test_model_sizes_too_big_for_memory_are_refused_before_allocating(
    tmp_path: Path, text_file: Path, lm_run: tuple[Path, Any], capsys
) -> None:
    """A new run's sizes, and an edited config.json of a run, are checked against this
    machine's memory before any weight is allocated: one line with the estimated size (was:
    the allocator's "can't allocate memory", or a machine filled layer by layer)."""
    huge = ["--set", "model.d_model=100000", "--set", "model.num_layers=100"]
    assert main(tiny_argv(text_file, tmp_path / "new") + huge) == 2
    err = capsys.readouterr().err
    assert "the model section: this DecoderLMConfig would have about" in err, err
    assert "choose smaller model sizes" in err and "Traceback" not in err
    run = tmp_path / "edited"
    shutil.copytree(lm_run[0], run)
    stored = json.loads((run / "config.json").read_text())
    stored["config"]["model"].update(d_model=65536, num_layers=64)
    (run / "config.json").write_text(json.dumps(stored))
    assert main(["generate", "--run", str(run), "RO", "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'config.json'}: model: this DecoderLMConfig would have about" in err, err
    assert "restore it or retrain" in err


def test_a_prompt_longer_than_the_context_is_said_to_be_cut(
    lm_run: tuple[Path, Any], caplog
) -> None:
    """(was: the start of a long prompt was dropped without a word; `attention` warned)"""
    generator = Generator.load(lm_run[0], device="cpu")
    with caplog.at_level("WARNING"):
        "".join(generator.generate(VERSE[:20], max_new_tokens=3, temperature=0))
    assert "prompt" not in caplog.text
    with caplog.at_level("WARNING"):
        long = "".join(generator.generate("a" * 200 + VERSE[:20], max_new_tokens=3, temperature=0))
    assert "the prompt has 220 tokens; the model continues from the last 32" in caplog.text
    seen = ("a" * 200 + VERSE[:20])[-32:]  # one token a character
    assert long == "".join(generator.generate(seen, max_new_tokens=3, temperature=0))


def test_a_run_of_another_kind_is_named_with_the_command_that_continues_it(
    lm_run: tuple[Path, Any], capsys
) -> None:
    """(was: "... is a language-model run, not a translation run; train one with `attnkit
    train --run DIR`": a new run of the wrong kind)"""
    run = lm_run[0]
    for argv, wanted in (
        (
            ["train", "--run", str(run), "--resume"],
            "a translation run; train one with `attnkit train ",
        ),
        (["finetune", "--run", str(run), "--resume"], "a text-classification run; train one with"),
        (["predict", "--run", str(run), "hi"], "a text-classification run; train one with"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert (
            f"{run} is a language-model run (continue it with `attnkit train-lm --run {run} " in err
        ), err
        assert f"--resume`), not {wanted}" in err, err


def test_a_run_given_as_a_pretrained_model_folder_is_named_as_a_run(
    lm_run: tuple[Path, Any], capsys
) -> None:
    """(was: "model folder RUN lacks ['model.safetensors']", as if the run were damaged)"""
    assert main(["embed", "--model", str(lm_run[0]), "hi"]) == 2
    err = capsys.readouterr().err
    assert f"{lm_run[0]} is a language-model run of attnkit, not a pretrained model folder" in err
    assert "commands take a run with --run" in err


def test_evaluate_options_of_translation_runs_are_refused_for_a_language_model(
    lm_run: tuple[Path, Any], text_file: Path, capsys, tmp_path: Path
) -> None:
    """(was: --beam and --out ignored, exit 0, no file written)"""
    argv = ["evaluate", "--run", str(lm_run[0]), "--data", str(text_file)]
    assert main([*argv, "--beam", "5", "--out", str(tmp_path / "h.txt")]) == 2
    err = capsys.readouterr().err
    assert "--beam and --out apply to translation runs only" in err and "language-model run" in err
    assert not (tmp_path / "h.txt").exists()
    assert main(argv) == 0

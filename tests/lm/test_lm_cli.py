"""The language-model CLI through ``attnkit.cli.main``: one-line data errors, streaming and
reproducible generation, evaluate / attention / report on a language-model run."""

from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from attnkit.cli import main
from attnkit.lm.generator import Generator
from attnkit.training.runfolder import run_kind
from tests.lm.lm_tiny import VERSE, tiny_argv


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("empty.txt", b"", "empty"),
        ("binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00", "NUL byte at offset 8"),
        ("latin1.txt", b"fine\nna\xefve", "line 2: not UTF-8 text (byte 0xef at offset 7)"),
        ("short.txt", b"to be or not to be\n", "too short"),
        ("folder", None, "without .txt"),
        ("missing.txt", None, "no such file"),
    ],
)
def test_data_errors_are_one_line_naming_the_file(
    name: str,
    content: bytes | None,
    needle: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / name
    if name == "folder":
        path.mkdir()
        (path / "readme.md").write_text("no text here")
    elif content is not None:
        path.write_bytes(content)
    assert main([*tiny_argv(path, tmp_path / "run"), "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("attnkit train-lm: error:") and needle in err and str(path) in err


def test_train_prints_a_summary(
    text_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = tiny_argv(text_file, tmp_path / "run")[:-2]  # keep the sample
    assert main([*argv, "--set", "train.epochs=1", "--sample-tokens", "30"]) == 0
    out = capsys.readouterr().out
    assert "steps" in out and "tokens/s" in out and "bpc=" in out and "sample" in out


class _Recorder(io.StringIO):
    """stdout that remembers each write and whether it was flushed before the next one."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []
        self.flushed: list[bool] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        self.flushed.append(False)
        return super().write(text)

    def flush(self) -> None:
        if self.flushed:
            self.flushed[-1] = True


def _generate(monkeypatch: pytest.MonkeyPatch, argv: list[str], stdin: str = "") -> _Recorder:
    out = _Recorder()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert main(["generate", *argv]) == 0
    return out


def test_generate_streams_and_is_reproducible(
    lm_run: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    run, _ = lm_run
    args = ["--run", str(run), "Shall I", "--max-new-tokens", "40", "--device", "cpu"]
    first = _generate(monkeypatch, [*args, "--seed", "7"])
    assert len(first.writes) >= 30 and all(first.flushed)  # piece by piece, each flushed
    again = _generate(monkeypatch, [*args, "--seed", "7"])
    assert again.getvalue() == first.getvalue()
    generator = Generator.load(run, device="cpu")
    assert first.getvalue() == generator.complete("Shall I", 40, seed=7) + "\n"
    # the prompt from stdin, two samples with seeds 7 and 8
    piped = _generate(
        monkeypatch,
        [*args[:2], "--max-new-tokens", "40", "--seed", "7", "--num-samples", "2"],
        stdin="Shall I",
    )
    samples = piped.getvalue().rstrip("\n").split("\n---\n")
    assert samples == [generator.complete("Shall I", 40, seed=s) for s in (7, 8)]


def test_temperature_zero_is_greedy(lm_run: tuple[Path, Any], monkeypatch) -> None:
    run, _ = lm_run
    generator = Generator.load(run, device="cpu")
    ids = generator.encode("Rough winds")
    with torch.no_grad():  # argmax of the full-context logits, step by step, no cache
        for _ in range(25):
            logits, _ = generator.model(torch.tensor([ids[-generator.model.max_len :]]))
            ids.append(int(logits[0, -1].argmax()))
    expected = generator.tokenizer.decode(ids[len(generator.encode("Rough winds")) :])
    out = _generate(
        monkeypatch,
        ["--run", str(run), "Rough winds", "--temperature", "0", "--max-new-tokens", "25"],
    )
    assert out.getvalue() == expected + "\n"


def test_stop_strings_end_the_continuation(
    lm_run: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    generator = Generator.load(lm_run[0], device="cpu")
    full = generator.complete("Shall I", 120, temperature=0)
    assert "\n" in full
    stopped = generator.complete("Shall I", 120, temperature=0, stop=["\n"])
    assert stopped == full[: full.index("\n")]
    word = full.split()[2]
    assert (
        generator.complete("Shall I", 120, temperature=0, stop=[word]) == full[: full.index(word)]
    )
    argv = ["--run", str(lm_run[0]), "Shall I", "--temperature", "0", "--max-new-tokens", "120"]
    out = _generate(monkeypatch, [*argv, "--stop", "\\n"])  # typed as backslash-n
    assert out.getvalue() == stopped + "\n"


def test_unknown_characters_in_the_prompt(
    lm_run: tuple[Path, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate", "--run", str(lm_run[0]), "Zebra \u00e9t\u00e9"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'Z'" in err and "'\u00e9'" in err, err


def test_prompt_on_stdin_is_utf8_bytes(
    lm_run: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Piped bytes are read as translate reads them: not UTF-8 is a one-line error naming the
    stdin line; otherwise the prompt is the text, line ends (CRLF too) and the last one kept."""
    run, _ = lm_run
    argv = ["generate", "--run", str(run), "--temperature", "0", "--max-new-tokens", "20"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"Shall I\r\nna\xefve\n")))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("attnkit generate: error: stdin line 2: bytes that are not UTF-8"), err
    assert len(err.splitlines()) == 1
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"Shall I\r\ncompare\n")))
    assert main(argv) == 0
    expected = Generator.load(run, device="cpu").complete("Shall I\ncompare\n", 20, temperature=0)
    assert capsys.readouterr().out == expected + "\n"


def test_evaluate_a_text_file(
    lm_run: tuple[Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = lm_run
    path = tmp_path / "verse.txt"
    path.write_text(VERSE * 3)
    assert run_kind(run) == "lm" and run_kind(tmp_path) == "translation"
    assert main(["evaluate", "--run", str(run), "--data", str(path)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    expected = Generator.load(run, device="cpu").evaluate_text(VERSE * 3)
    assert printed["loss"] == pytest.approx(expected["loss"], rel=1e-9)
    assert printed["bpc"] == pytest.approx(printed["loss"] / math.log(2), rel=1e-9)
    assert printed["characters"] == len(VERSE) * 3
    odd = tmp_path / "odd.txt"
    odd.write_text(VERSE + "a line with \u2603 in it\n")  # a snowman the tokenizer never saw
    assert main(["evaluate", "--run", str(run), "--data", str(odd)]) == 2
    err = capsys.readouterr().err
    assert f"{odd} has characters the model's tokenizer does not know (the first on line" in err
    assert f"line {VERSE.count(chr(10)) + 1}): '\u2603'" in err and err.count("\n") == 1, err


def test_attention_and_report_of_an_lm_run(
    lm_run: tuple[Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = lm_run
    out = tmp_path / "attention.png"
    assert main(["attention", "--run", str(run), "Shall I compare", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "2 layers x 2 heads over 15 tokens" in capsys.readouterr().out
    tokens, weights = Generator.load(run, device="cpu").attention("Shall I compare")
    assert len(weights) == 2 and weights[0].shape == (2, 15, 15)
    assert torch.equal(weights[0].triu(1), torch.zeros(2, 15, 15))  # causal: no future keys
    torch.testing.assert_close(weights[1].sum(-1), torch.ones(2, 15))
    assert main(["attention", "--run", str(run), "x", "--kind", "cross", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        "attnkit attention: error: --kind cross: a language-model run has only causal "
        "self-attention; use --kind self or all"
    )
    assert main(["attention", "--run", str(run), "Shall", "--kind", "self", "--out", str(out)]) == 0
    assert "(causal self-attention)" in capsys.readouterr().out
    report = tmp_path / "report.html"
    assert main(["report", "--run", str(run), "Shall I", "--out", str(report)]) == 0
    html = report.read_text()
    assert "language model" in html and "Shall I" in html

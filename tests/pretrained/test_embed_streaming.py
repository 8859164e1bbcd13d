"""`attnkit embed` streams lines from stdin or --file: one JSON row per input line, in order,
written chunk by chunk as the lines are read; a blank line gives an empty row."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from attnkit.cli import main
from attnkit.pretrained import embed
from tests.pretrained.test_pretrained import (
    hf_config,
    hf_tensors,
    needs_tokenizers,
    write_checkpoint,
    write_tokenizer,
)

pytestmark = needs_tokenizers
WORDS = ["the cat sat", "a big red dog", "", "ran far away", "   ", "the mat"]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = write_checkpoint(tmp_path_factory.mktemp("bert") / "m", hf_tensors(), hf_config())
    write_tokenizer(folder)
    return folder


class WatchedStdin(io.TextIOBase):
    """Lines for stdin that check, when line ``check_at`` is asked for, that the rows of the
    first chunk (256 lines) were already written: the input is answered as it is read."""

    def __init__(self, lines: list[str], out: io.StringIO, check_at: int) -> None:
        self.lines, self.out, self.check_at = lines, out, check_at
        self.seen_early_rows = -1

    def isatty(self) -> bool:
        return False

    def __iter__(self):
        for number, line in enumerate(self.lines, 1):
            if number == self.check_at:
                self.seen_early_rows = self.out.getvalue().count("\n")
            yield line + "\n"


def test_embed_streams_json_lines_keeping_blank_lines(model: Path, monkeypatch) -> None:
    lines = [WORDS[i % len(WORDS)] for i in range(600)]
    out = io.StringIO()
    stdin = WatchedStdin(lines, out, check_at=400)
    monkeypatch.setattr(sys, "stdin", stdin)
    monkeypatch.setattr(sys, "stdout", out)
    assert main(["embed", "--model", str(model)]) == 0
    assert stdin.seen_early_rows == 256, "nothing was written before the input ended"
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["text"] for r in rows] == lines
    expected = embed([w for w in WORDS if w.strip()], model=str(model))
    by_text = dict(zip([w for w in WORDS if w.strip()], expected.tolist(), strict=True))
    for row in rows:
        if row["text"].strip():
            np.testing.assert_allclose(row["embedding"], by_text[row["text"]], atol=1e-6)
        else:
            assert row["embedding"] is None


def test_embed_file_formats_keep_one_row_per_line(model: Path, tmp_path: Path, capsys) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("\r\n".join(WORDS) + "\r\n", encoding="utf-8")
    assert main(["embed", "--model", str(model), "--file", str(texts)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == WORDS
    assert [r["embedding"] is None for r in rows] == [not w.strip() for w in WORDS]
    assert main(["embed", "--model", str(model), "--file", str(texts), "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["texts"] == WORDS and payload["embeddings"][2] is None
    out = tmp_path / "e.npy"
    argv = ["embed", "--model", str(model), "--file", str(texts), "--format", "npy"]
    assert main([*argv, "--output", str(out)]) == 0
    vectors = np.load(out)
    assert vectors.shape[0] == len(WORDS) and not vectors[2].any() and vectors[0].any()
    texts.write_bytes(b"the cat\n\xff\xfe\n")
    assert main(["embed", "--model", str(model), "--file", str(texts)]) == 2
    assert f"--file {texts} line 2: bytes that are not UTF-8" in capsys.readouterr().err

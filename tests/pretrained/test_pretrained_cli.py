"""The pretrained-encoder commands driven through ``main(argv)`` on the real MiniLM model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from attnkit.cli import main
from tests.pretrained.test_pretrained import needs_minilm, needs_tokenizers

pytestmark = [needs_minilm, needs_tokenizers]


def test_embed_json_and_npy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    texts = ["a cat sits on the mat", "stock markets fell sharply"]
    assert main(["embed", *texts]) == 0
    payload = json.loads(capsys.readouterr().out)
    vectors = np.array(payload["embeddings"])
    assert vectors.shape == (2, payload["dim"]) and payload["texts"] == texts
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    out = tmp_path / "e.npy"
    assert main(["embed", "--format", "npy", "--output", str(out), *texts]) == 0
    np.testing.assert_allclose(np.load(out), vectors, atol=1e-6)


def test_similar_ranks_the_paraphrase_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = tmp_path / "lines.txt"
    lines.write_text(  # blank lines do not shift the line numbers
        "the weather is cold today\n\n  \nhow do I bake bread at home\n\n"
        "football results from the weekend\n",
        encoding="utf-8",
    )
    assert main(["similar", "recipe for homemade bread", "--file", str(lines), "--top-k", "2"]) == 0
    rows = [r.split("\t") for r in capsys.readouterr().out.strip().splitlines()]
    assert len(rows) == 2 and rows[0][1:] == ["4", "how do I bake bread at home"]
    assert float(rows[0][0]) > float(rows[1][0])
    numbers = {"the weather is cold today": "1", "football results from the weekend": "6"}
    assert rows[1][1] == numbers[rows[1][2]]


def test_attention_of_the_pretrained_model(tmp_path: Path) -> None:
    out = tmp_path / "attn.png"
    assert main(["attention", "--model", "minilm", "the cat sat", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["similar", "q", "--file", str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt" in capsys.readouterr().err
    assert main(["embed", "--format", "npy", "x"]) == 2
    assert "--output" in capsys.readouterr().err
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"fine\ncaf\xe9\n")
    for argv, message in [
        (["similar", "q", "--file", str(tmp_path)], f"--file {tmp_path}: is a folder"),
        (["similar", "q", "--file", str(latin)], f"--file {latin} line 2: bytes that are not"),
        (["embed", "x", "--file", str(latin)], "both as arguments (1) and with --file"),
        (["embed", "x", "--run", "r", "--model", "minilm"], "--run and --model both given"),
        (["embed", "x", "--checkpoint", "last"], "--checkpoint chooses a checkpoint of --run"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (argv, err)

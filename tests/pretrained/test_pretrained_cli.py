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
    lines.write_text(
        "the weather is cold today\nhow do I bake bread at home\n"
        "football results from the weekend\n",
        encoding="utf-8",
    )
    assert main(["similar", "recipe for homemade bread", "--file", str(lines), "--top-k", "2"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 2 and rows[0].endswith("how do I bake bread at home")
    assert float(rows[0].split("\t")[0]) > float(rows[1].split("\t")[0])


def test_attention_of_the_pretrained_model(tmp_path: Path) -> None:
    out = tmp_path / "attn.png"
    assert main(["attention", "--model", "minilm", "the cat sat", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["similar", "q", "--file", str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt" in capsys.readouterr().err
    assert main(["embed", "--format", "npy", "x"]) == 2
    assert "--output" in capsys.readouterr().err

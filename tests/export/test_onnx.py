"""ONNX export of encoder models, run with onnxruntime: the pretrained sentence encoder (MiniLM)
and a ViT classifier agree with attnkit's PyTorch models to < 1e-4; the CLI engines.

Reference: attnkit's PyTorch models on the same inputs (themselves checked against Hugging Face
in tests/pretrained); onnxruntime is an independent implementation of the exported graph.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from attnkit.cli import main
from attnkit.config import ConfigError
from tests.pretrained.test_pretrained import needs_minilm, needs_tokenizers

pytest.importorskip("onnx", reason="onnx is not installed (pip install 'attnkit[export]')")
pytest.importorskip(
    "onnxruntime", reason="onnxruntime is not installed (pip install 'attnkit[export]')"
)

from attnkit.export.onnx import (  # noqa: E402
    META_FILE,
    OnnxClassifier,
    OnnxSentenceEncoder,
    export_onnx,
)

TEXTS = ["the cat sat on the mat", "", "Attention is all you need. " * 6, "ok"]


@needs_minilm
@needs_tokenizers
def test_sentence_encoder_matches_pytorch(tmp_path: Path, capsys) -> None:
    from attnkit.pretrained import embed

    out = tmp_path / "minilm-onnx"
    assert main(["export", "--model", "minilm", "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    meta = json.loads((out / META_FILE).read_text())
    assert meta["kind"] == "sentence-encoder" and meta["max_abs_diff"] < 1e-4
    assert "max abs difference" in printed
    encoder = OnnxSentenceEncoder.load(out, threads=1)
    got, want = encoder.encode(TEXTS, batch_size=3), embed(TEXTS, model="minilm", batch_size=3)
    diff = float(np.abs(got - want).max())
    assert got.shape == want.shape == (len(TEXTS), 384) and diff < 1e-4
    assert main(["embed", "--engine", "onnxruntime", "--model", str(out), TEXTS[0], TEXTS[3]]) == 0
    via_cli = np.array(json.loads(capsys.readouterr().out)["embeddings"])
    np.testing.assert_allclose(via_cli, want[[0, 3]], atol=1e-4)
    from attnkit.cli.serve import load_backend

    backend = load_backend(run=str(out), engine="onnxruntime")  # the export folder as --run
    assert backend.kind == "embedding"
    np.testing.assert_allclose(backend.process([(TEXTS[0],)])[0][0], want[0], atol=1e-4)
    with capsys.disabled():
        print(
            f"\nONNX MiniLM: onnxruntime vs PyTorch max abs difference {diff:.2e} "
            f"(export check {meta['max_abs_diff']:.2e})"
        )


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.vision.test_classification import TINY

    run = tmp_path_factory.mktemp("vit-onnx") / "digits"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sets = [a for s in TINY for a in ("--set", s)]
        args = ["train-vit", "--run", str(run), "--epochs", "2", "--device", "cpu"]
        assert main([*args, "--no-progress", *sets]) == 0
    finally:
        torch.set_num_threads(threads)
    return run


def test_vit_classifier_matches_pytorch(digits_run: Path, tmp_path: Path, capsys) -> None:
    from attnkit.vision.classifier import Classifier
    from tests.vision.test_classification import digit_png

    assert main(["export", "--run", str(digits_run), "--format", "onnx"]) == 0
    capsys.readouterr()
    meta = json.loads((digits_run / "export" / "onnx" / META_FILE).read_text())
    assert meta["kind"] == "classification" and meta["max_abs_diff"] < 1e-4
    images = torch.rand(7, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    engine, reference = OnnxClassifier.load(digits_run), Classifier.load(digits_run, device="cpu")
    diff = float((engine.probabilities(images) - reference.probabilities(images)).abs().max())
    assert diff < 1e-4
    files = [str(digit_png(tmp_path / f"{i}.png", images[i])) for i in range(3)]
    assert main(["classify", "--run", str(digits_run), "--top-k", "3", *files]) == 0
    want = capsys.readouterr().out
    assert main(["classify", "--run", str(digits_run), "--engine", "onnxruntime", "--top-k", "3",
                 *files]) == 0  # fmt: skip
    got = capsys.readouterr().out
    rows = [line.split("\t") for line in got.splitlines()]
    for a, b in zip(rows, [line.split("\t") for line in want.splitlines()], strict=True):
        assert a[0::2] == b[0::2]  # paths and labels
        np.testing.assert_allclose(
            [float(x) for x in a[2::2]], [float(x) for x in b[2::2]], atol=2e-4
        )
    with pytest.raises(ConfigError, match="PyTorch model"):
        engine.attention_maps(images[:1])
    with capsys.disabled():
        print(f"\nONNX ViT: onnxruntime vs PyTorch max abs difference (probabilities) {diff:.2e}")


def test_onnx_refuses_translation_runs_and_missing_exports(dates_run, tmp_path: Path) -> None:
    run, _, _ = dates_run
    with pytest.raises(ConfigError, match="is a translation run; .*export it with --format ct"):
        export_onnx(run)
    lm = tmp_path / "lm-run"  # another kind: named in words, no translation advice
    (lm / "checkpoints").mkdir(parents=True)
    (lm / "config.json").write_text(json.dumps({"config": {"task": "lm"}}))
    with pytest.raises(ConfigError, match=r"is a language-model run; .*pretrained encoders\)$"):
        export_onnx(lm)
    with pytest.raises(ConfigError, match="attnkit export --run RUN --format onnx"):
        OnnxClassifier.load(tmp_path)


def test_a_missing_export_names_the_export_command_that_makes_it(tmp_path: Path, capsys) -> None:
    run = tmp_path / "vit-run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"config": {"task": "classification"}}))
    with pytest.raises(
        ConfigError, match=r"make one with `attnkit export --run \S*vit-run --format onnx`$"
    ):
        OnnxClassifier.load(run)
    # embed with no --model: minilm, to be exported into a folder that --model then names
    assert main(["embed", "--engine", "onnxruntime", "a text"]) == 2
    assert capsys.readouterr().err.strip() == (
        "attnkit embed: error: minilm: no ONNX export found (model.onnx and attnkit.json); make "
        "one with `attnkit export --format onnx --model minilm --out DIR` and pass --model DIR"
    )
    checkpoint = tmp_path / "bert"  # a checkpoint folder given instead of its export
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    with pytest.raises(
        ConfigError, match=rf"--model {checkpoint} --out DIR` and pass --model DIR$"
    ):
        OnnxSentenceEncoder.load(checkpoint)


def test_a_failed_onnx_export_leaves_nothing_half_written(
    digits_run: Path, tmp_path: Path, monkeypatch
) -> None:
    import attnkit.export.onnx as onnx_export

    def no_onnxruntime(*args: object, **kwargs: object) -> None:
        raise ImportError("the onnxruntime engine needs the onnx and onnxruntime packages")

    out = tmp_path / "vit-onnx"
    with monkeypatch.context() as patch:  # fails at the check, after model.onnx is written
        patch.setattr(onnx_export, "_session", no_onnxruntime)
        with pytest.raises(ImportError, match="onnxruntime engine needs"):
            export_onnx(digits_run, out)
    assert list(tmp_path.iterdir()) == []  # no model.onnx without attnkit.json, no temp folder
    assert export_onnx(digits_run, out) == out
    written = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(written) == [META_FILE, "model.onnx"]
    with monkeypatch.context() as patch:  # a failed re-export keeps the earlier one whole
        patch.setattr(onnx_export, "_session", no_onnxruntime)
        with pytest.raises(ImportError):
            export_onnx(digits_run, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == written
    assert export_onnx(digits_run, out) == out  # replaced by a new export
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vit-onnx"]


def test_a_vit_run_without_checkpoints_is_treated_as_a_run(
    digits_run: Path, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "vit"
    run.mkdir()
    (run / "config.json").write_bytes((digits_run / "config.json").read_bytes())
    assert main(["export", "--run", str(run), "--format", "onnx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{run}: no best checkpoint found" in err[0], err
    assert "BERT" not in err[0] and sorted(p.name for p in run.iterdir()) == ["config.json"]

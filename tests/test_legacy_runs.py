"""Run folders written by attnkit 0.1.0, before the restructuring (tests/fixtures/runs_v0_1_0,
made by that release with its `attnkit train` and `attnkit train-vit`), still load and give the
outputs that release gave (recorded by it in expected.json)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from attnkit.cli import main
from attnkit.translation.translator import Translator
from attnkit.vision.classifier import Classifier

FIXTURE = Path(__file__).parent / "fixtures" / "runs_v0_1_0"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text(encoding="utf-8"))


def test_translation_run_of_0_1_0_translates_as_it_did(capsys) -> None:
    translator = Translator.load(FIXTURE / "tr", "last", "cpu")
    for source, text in EXPECTED["translate"].items():
        assert translator.translate([source], beam_size=1)[0].text == text
    assert (
        main(
            [
                "translate",
                "--run",
                str(FIXTURE / "tr"),
                "--checkpoint",
                "last",
                "--beam",
                "1",
                "3 may 2001",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == EXPECTED["translate"]["3 may 2001"]


def test_vision_run_of_0_1_0_loads_with_its_old_field_names() -> None:
    raw = json.loads((FIXTURE / "vit" / "config.json").read_text(encoding="utf-8"))
    assert {"dim", "depth", "heads", "mlp_dim"} <= set(raw["config"]["model"])  # the old names
    classifier = Classifier.load(FIXTURE / "vit", "last", "cpu")
    m = classifier.model.config
    assert (m.d_model, m.num_layers, m.num_heads, m.ffn_hidden) == (
        raw["config"]["model"]["dim"],
        raw["config"]["model"]["depth"],
        raw["config"]["model"]["heads"],
        raw["config"]["model"]["mlp_dim"],
    )
    img = (torch.arange(64, dtype=torch.float32).reshape(1, 1, 8, 8) % 7) / 6
    probs = classifier.probabilities(img)[0]
    assert torch.allclose(probs, torch.tensor(EXPECTED["classify_probs"]), atol=1e-6)


def test_resuming_a_0_1_0_vision_run_continues_it(tmp_path: Path) -> None:
    run = tmp_path / "vit"
    shutil.copytree(FIXTURE / "vit", run)
    assert (
        main(
            [
                "train-vit",
                "--run",
                str(run),
                "--resume",
                "--epochs",
                "4",
                "--no-progress",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r.get("epoch", 0) for r in rows) >= 4
    stored = json.loads((run / "config.json").read_text())["config"]["model"]
    assert stored["d_model"] == 16 and "dim" not in stored  # rewritten with today's names

"""The HTML report: self-contained, weights embedded exactly, and working in a real browser.

The browser test drives Debian's chromium (``apt-get install chromium``) with Playwright
(``pip install playwright``; no ``playwright install``: the system browser is used). It is
skipped, with the reason, when either is missing. Its screenshot is kept under ``tmp_path`` and,
when the environment variable ``ATTNKIT_ARTIFACTS`` is set, copied to that folder (``1`` means
``test-artifacts/``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from attnkit.models import build_seq2seq
from attnkit.training.runfolder import read_metric_rows
from attnkit.viz.report import build_report, samples_json, write_report
from attnkit.viz.samples import AttentionSample
from tests.browser import chromium_page

torch.set_num_threads(1)

SRC, TGT = ["▁le", "▁chat", "▁noir", "</s>"], ["▁the", "▁black", "▁cat", "</s>", "<&>"]


def tiny_sample(seed: int = 0) -> tuple[AttentionSample, dict[str, list[torch.Tensor]]]:
    """A real tiny Transformer's weights (2 encoder and 3 decoder layers, 2 heads)."""
    torch.manual_seed(seed)
    model = build_seq2seq(
        "transformer",
        {
            "src_vocab_size": 30,
            "tgt_vocab_size": 30,
            "d_model": 16,
            "num_heads": 2,
            "ffn_hidden": 32,
            "num_encoder_layers": 2,
            "num_decoder_layers": 3,
            "dropout": 0.0,
        },
    ).eval()
    src = torch.randint(4, 30, (1, len(SRC)))
    tgt = torch.randint(4, 30, (1, len(TGT)))
    with torch.no_grad():
        memory, enc = model.encode(src, need_weights=True)
        _, dec = model.decode(tgt, memory, need_weights=True)
    weights = {
        "encoder": [w[0] for w in enc],
        "self": [w[0] for w in dec["self"]],
        "cross": [w[0] for w in dec["cross"]],
    }
    sample = AttentionSample(
        "le chat noir", "the black cat", SRC, TGT, weights, reference="the black cat"
    )
    return sample, weights


ROWS = [
    *(
        {"split": "train", "step": 10 * i, "epoch": 0, "loss": 4.0 / i, "lr": 1e-3}
        for i in range(1, 21)
    ),
    {
        "split": "valid",
        "step": 100,
        "epoch": 1,
        "loss": 1.5,
        "bleu": 21.5,
        "chrf": 40.0,
        "accuracy": 0.25,
    },
    {
        "split": "valid",
        "step": 200,
        "epoch": 2,
        "loss": 0.9,
        "bleu": 48.25,
        "chrf": 70.0,
        "accuracy": 0.5,
    },
]


def embedded(page: str) -> dict:
    match = re.search(
        r'<script type="application/json" id="attnkit-data">(.*?)</script>', page, re.S
    )
    assert match, "no embedded data"
    return json.loads(match.group(1))


def test_report_is_one_self_contained_file(tmp_path: Path) -> None:
    sample, weights = tiny_sample()
    other = AttentionSample("x", "y", ["x"], ["y"], {"cross": [np.ones((1, 1, 1))]})
    path = write_report(tmp_path / "r.html", [sample, other], metric_rows=ROWS, info={"a": 1})
    page = path.read_text(encoding="utf-8")
    # Nothing is fetched: no external scripts, styles, images or links.
    assert not re.search(r'(src|href)\s*=\s*"(?!data:|#)', page)
    assert "http://" not in page and "https://" not in page
    assert page.count("<script") == 2 and "<style>" in page
    assert '<img class="curves" alt="training curves" src="data:image/png;base64,' in page
    # The weights are embedded exactly (to the stored 5 decimals), in [kind][layer][head] order.
    data = embedded(page)
    assert [s["source"] for s in data["samples"]] == ["le chat noir", "x"]
    got = data["samples"][0]
    assert got["src_tokens"] == SRC and got["tgt_tokens"] == TGT  # "<&>" survives escaping
    for kind, layers in weights.items():
        assert len(got["weights"][kind]) == len(layers)
        for layer, w in zip(got["weights"][kind], layers, strict=True):
            np.testing.assert_allclose(np.array(layer), w.double().numpy(), atol=5e-6)
    assert list(data["samples"][1]["weights"]) == ["cross"]
    # Metrics tables: both validation rows and the last 12 training rows.
    assert page.count("<td>48.25</td>") == 1 and page.count("<td>21.5</td>") == 1
    assert "training (last 12 logged steps)" in page
    assert "le chat noir" in page and "✓" in page


def test_report_inputs_and_errors(tmp_path: Path) -> None:
    page = build_report([])  # nothing yet: still a valid page
    assert "no metrics logged" in page and embedded(page)["samples"] == []
    page = build_report([], metric_rows=[{"split": "train", "note": "started"}])
    assert "no curves: nothing to plot" in page and "<td>started</td>" in page
    with pytest.raises(ValueError, match=r"must end in \.html"):
        write_report(tmp_path / "r.txt", [])
    log = tmp_path / "metrics.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    assert read_metric_rows(log) == ROWS
    log.write_text('{"step": 1}\n{oops\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2"):
        read_metric_rows(log)
    assert samples_json([]) == []


# ---------------------------------------------------------------- in a real browser


def cell(page, row: int, col: int) -> float:
    return float(
        page.get_attribute(f'#attn-matrix td[data-row="{row}"][data-col="{col}"]', "data-w")
    )


def shown_matrix(page) -> np.ndarray:
    values = page.eval_on_selector_all(
        "#attn-matrix tbody tr",
        "rows => rows.map(r => Array.from(r.querySelectorAll('td'), td => Number(td.dataset.w)))",
    )
    return np.array(values)


def row_labels(page) -> list[str]:
    return page.eval_on_selector_all("#attn-matrix tbody th", "n => n.map(x => x.textContent)")


def save_artifact(shot: Path) -> None:
    target = os.environ.get("ATTNKIT_ARTIFACTS")
    if target:
        folder = Path("test-artifacts" if target == "1" else target)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, folder / shot.name)


def test_attention_view_in_chromium(tmp_path: Path) -> None:
    sample, weights = tiny_sample()
    second, weights2 = tiny_sample(seed=1)
    second.source = "le chien"
    empty = AttentionSample("rien", "nothing", ["▁rien"], ["▁nothing"])  # no weights at all
    path = write_report(tmp_path / "report.html", [sample, second, empty], metric_rows=ROWS)
    with chromium_page(1000, 800) as (page, problems):
        page.goto(path.as_uri())
        page.wait_for_selector("#attn-matrix td")

        def expect(kind: str, layer: int, head: int, w=weights) -> None:
            table = page.locator("#attn-matrix")
            assert (
                table.get_attribute("data-kind"),
                table.get_attribute("data-layer"),
                table.get_attribute("data-head"),
            ) == (kind, str(layer), str(head))
            np.testing.assert_allclose(shown_matrix(page), w[kind][layer][head].double(), atol=5e-6)

        expect("encoder", 0, 0)  # the first matrix: encoder, layer 1, head 1
        before = cell(page, 1, 2)
        page.select_option("#attn-head", "1")
        expect("encoder", 0, 1)
        assert cell(page, 1, 2) != before
        page.select_option("#attn-layer", "1")
        expect("encoder", 1, 1)  # the head choice is kept across layers
        assert row_labels(page) == SRC
        page.select_option("#attn-kind", "self")
        expect("self", 1, 1)
        assert row_labels(page) == ["<s>", *TGT[:-1]]  # decoder self: the tokens read
        page.select_option("#attn-kind", "cross")
        assert page.locator("#attn-layer option").count() == 3
        page.select_option("#attn-layer", "2")
        page.select_option("#attn-head", "0")
        expect("cross", 2, 0)
        assert row_labels(page) == TGT  # cross-attention rows: the tokens emitted
        page.select_option("#attn-sentence", "1")
        expect("cross", 2, 0, weights2)  # kind, layer and head kept for the other sentence
        # Hovering a query token highlights its row and lists its weights over the keys.
        page.hover('#attn-matrix tbody th[data-row="2"]')
        assert page.locator('#attn-matrix td.hl[data-row="2"]').count() == len(SRC)
        assert page.locator("#attn-matrix td.hl").count() == len(SRC)
        strip = page.locator("#attn-strip span")
        assert strip.all_text_contents() == SRC
        assert page.locator("#attn-status").text_content().startswith("query ▁cat")
        page.hover('#attn-matrix thead th[data-col="1"]')
        assert page.locator("#attn-matrix td.hl").count() == len(TGT)
        page.hover('#attn-matrix td[data-row="0"][data-col="3"]')
        w03 = round(float(weights2["cross"][2][0][0, 3]), 5)  # the embedded value
        assert page.locator("#attn-status").text_content() == f"▁the → </s>: {w03:.4f}"
        page.select_option("#attn-sentence", "2")
        assert page.locator("#attn-caption").text_content() == (
            "no attention weights for this sentence"
        )
        assert page.locator("#attn-matrix td").count() == 0
        page.select_option("#attn-sentence", "1")
        expect("encoder", 0, 0, weights2)  # back to the first matrix
        shot = tmp_path / "artifacts" / "report.png"
        shot.parent.mkdir()
        page.screenshot(path=str(shot), full_page=True)
    assert problems == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    save_artifact(shot)


# ---------------------------------------------------------------- from a run folder
def test_report_command_on_a_tiny_run(tmp_path: Path, capsys) -> None:
    from attnkit.cli import main
    from attnkit.cli.viz import demo_run_config
    from attnkit.translation.config import RunConfig
    from attnkit.translation.run import train_translator

    cfg = demo_run_config("bahdanau", quick=True)
    data = cfg.data.__class__(**{**cfg.data.__dict__, "num_examples": 200, "valid_limit": 3})
    decode = cfg.decode.__class__(**{**cfg.decode.__dict__, "max_len_a": 0.5, "max_len_b": 2})
    train_translator(
        RunConfig(cfg.model_type, cfg.model, data, cfg.train, decode), tmp_path / "run"
    )
    out = tmp_path / "report.html"
    assert (
        main(["report", "--run", str(tmp_path / "run"), "--out", str(out), "--device", "cpu"]) == 0
    )
    assert str(out) in capsys.readouterr().out
    page = out.read_text(encoding="utf-8")
    data = embedded(page)
    assert len(data["samples"]) == 3 and all(s["reference"] for s in data["samples"])
    assert all(list(s["weights"]) == ["cross"] for s in data["samples"])
    assert "validation (after each epoch)" in page
    assert (
        main(
            [
                "report",
                "--run",
                str(tmp_path / "run"),
                "--out",
                str(out),
                "--device",
                "cpu",
                "3 may 1999",
            ]
        )
        == 0
    )
    assert [s["source"] for s in embedded(out.read_text())["samples"]] == ["3 may 1999"]
    assert main(["report", "--run", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "not a run folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("task", "command", "expected"),
    [
        (
            "classification",
            "report",
            "is an image-classification (ViT) run; attnkit report takes translation and "
            "language-model runs",
        ),
        (
            "textclass",
            "report",
            "is a text-classification run; attnkit report takes translation and "
            "language-model runs",
        ),
        (
            "classification",
            "attention",
            "is an image-classification (ViT) run; attnkit attention takes translation, "
            "language-model and text-classification runs (ViT runs: attnkit attention-map)",
        ),
        (  # the run is checked before --data is read as translation pairs
            "classification",
            "evaluate",
            "is an image-classification (ViT) run; attnkit evaluate takes translation, "
            "language-model and text-classification runs",
        ),
    ],
)
def test_commands_refuse_a_run_naming_what_they_take(
    tmp_path: Path, capsys, task: str, command: str, expected: str
) -> None:
    from attnkit.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"config": {"task": task}}))
    out = tmp_path / ("r.html" if command == "report" else "a.png")
    argv = [command, "--run", str(run), "--out", str(out)]
    if command == "evaluate":
        (tmp_path / "other.txt").write_text("one column only\n")
        argv += ["--data", str(tmp_path / "other.txt")]
    assert main([*argv, "a sentence"] if command == "attention" else argv) == 2
    assert capsys.readouterr().err.strip() == f"attnkit {command}: error: {run} {expected}"


def test_report_and_attention_help_name_the_runs_they_take(capsys) -> None:
    from attnkit.cli import main

    assert main(["--help"]) == 0
    listing = " ".join(capsys.readouterr().out.split())
    assert "attention draw the attention of a translator, language model or text classifier" in (
        listing
    )
    assert "report self-contained HTML report of a translation or language-model run" in listing
    assert main(["report", "--help"]) == 0
    assert "sampled continuations (language-model runs)" in " ".join(
        capsys.readouterr().out.split()
    )

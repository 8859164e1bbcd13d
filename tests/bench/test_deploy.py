"""``attnkit bench deploy`` runs end to end at the tiny sizes and prints its rows (no timing is
asserted: the figures mean nothing at these sizes)."""

from __future__ import annotations

import pytest

from attnkit.bench.deploy import DEPLOY_SIZES, deploy_rows
from attnkit.cli import main

pytest.importorskip(
    "ctranslate2", reason="ctranslate2 is not installed (pip install 'attnkit[export]')"
)
pytest.importorskip("fastapi", reason="fastapi is not installed (pip install 'attnkit[serve]')")


def test_deploy_rows_on_a_run(dates_run) -> None:
    run, _, _ = dates_run
    rows = deploy_rows(run=run, sizes="tiny")
    measures = [r.measure for r in rows]
    n = DEPLOY_SIZES["tiny"].sentences
    assert measures == [
        f"greedy float32, {n} sentences: attnkit vs CTranslate2 (speed)",
        f"beam 5 float32, {n} sentences: attnkit vs CTranslate2 (speed)",
        f"greedy, {n} sentences: attnkit int8 vs float32 (speed)",
        f"BLEU change, attnkit int8 vs float32 greedy ({n} held-out)",
        f"greedy, {min(n, 32)} sentences one per call: attnkit int8 vs float32 (speed)",
        f"greedy, {n} sentences: CTranslate2 int8 vs float32 (speed)",
        "server requests/s: 4 concurrent clients vs one at a time",
        "server latency ms: concurrent vs one at a time",
        "server memory over a 80-request soak: end vs first tenth (RSS)",
        f"greedy, {n} sentences x 3 steps, random weights, d_model 64, 1+1 layers, FFN 128, "
        "500 tokens: attnkit int8 vs float32 (speed)",
    ]
    assert rows[0].note == f"identical outputs {n}/{n}"  # float32 greedy: the same outputs
    assert [r.target for r in rows[:4]] == [">= 0.8", ">= 0.8", ">= 1.5", "|delta| <= 0.5"]
    assert rows[4].target == "" and rows[4].ratio > 0  # informative: no target
    assert rows[6].target == ">= 5" and rows[6].note.endswith("errors 0")
    soak = rows[8]  # RSS read from /proc after each tenth: ten positive figures, no errors
    assert soak.target == "<= 1.1" and soak.note.endswith("errors 0")
    sampled = soak.note.split("RSS per tenth ")[1].split(" MiB")[0].split()
    assert len(sampled) == 10 and all(float(x) > 10 for x in sampled)
    assert rows[9].target == "" and rows[9].ratio > 0  # the scaling row: informative


def test_bench_deploy_cli_trains_its_own_model(capsys) -> None:
    assert main(["bench", "deploy", "--sizes", "tiny", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "attnkit vs CTranslate2" in out and "server requests/s" in out
    assert "PASS" in out or "FAIL" in out

"""The benchmark suite runs end to end and prints its table; its measuring tools are right.

Nothing here times anything or asserts a speed: the suite runs at the ``tiny`` sizes only to
prove every code path works. The FLOP counter, the saved-bytes probe and the reference models
are checked against independent formulas and PyTorch's own modules.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnkit.bench.attention import build_candidates, check_agreement, saved_bytes
from attnkit.bench.machine import describe_machine, load_average, usable_cores
from attnkit.bench.mfu import count_flops, matmul_ceiling
from attnkit.bench.references import NaiveAttention, PlainSDPA, TorchTransformerSeq2Seq, TorchViT
from attnkit.bench.suite import SECTIONS, format_table, run_suite, summary
from attnkit.bench.vit import ViTSize, bench_vit_training, vit_candidates
from attnkit.cli import main
from attnkit.config import TransformerConfig, ViTConfig
from attnkit.models.transformer import Transformer
from attnkit.models.vit import VisionTransformer

EXPECTED = {
    "attention": [
        "fwd B=2 T=8 D=32 vs nn.MHA",
        "fwd+bwd B=2 T=8 D=32 vs plain SDPA",
        "saved activations B=2 T=8",
        "activation bytes/token",
    ],
    "train": [
        "tokens/s vs nn.Transformer",
        "saved activations, largest batch",
        "tokens/s, real pipeline vs in-memory",
        "data loading time / training time",
        "MFU: training",
        "MFU of nn.Transformer",
    ],
    "decode": ["greedy tokens/s, KV cache vs recompute", "beam 4 vs greedy"],
    "vit": ["training images/s", "inference images/s", "saved activations, one batch"],
}
TARGETS = {  # rows that carry one of the targets
    "fwd+bwd B=2 T=8 D=32 vs plain SDPA": "<= 1.05",
    "tokens/s vs nn.Transformer": ">= 1.2",
    "greedy tokens/s, KV cache vs recompute": ">= 5",
    "beam 4 vs greedy": "<= 3",
    "MFU: training": ">= 0.4",
    "data loading time / training time": "<= 0.05",
    "training images/s": ">= 1",
}


@pytest.fixture(scope="module")
def tiny_rows() -> list:
    emitted: list[list] = []
    rows = run_suite(SECTIONS, device="cpu", sizes="tiny", emit=emitted.append)
    assert [r for section in emitted for r in section] == rows
    assert [section[0].section for section in emitted] == list(SECTIONS)
    return rows


def test_suite_runs_every_section_with_expected_rows(tiny_rows: list) -> None:
    for section, prefixes in EXPECTED.items():
        measures = [r.measure for r in tiny_rows if r.section == section]
        for prefix in prefixes:
            assert any(m.startswith(prefix) for m in measures), (section, prefix, measures)
    for prefix, target in TARGETS.items():
        row = next(r for r in tiny_rows if r.measure.startswith(prefix))
        assert row.target == target
        assert row.verdict in ("PASS", "FAIL")
        op, bound = target.split()
        assert row.passed == (
            row.ratio <= float(bound) if op == "<=" else row.ratio >= float(bound)
        )
    for row in tiny_rows:
        assert row.ratio is None or (math.isfinite(row.ratio) and row.ratio > 0), row


def test_suite_rows_report_identical_sizes_and_exact_decoding(tiny_rows: list) -> None:
    by = {r.measure.split(" (")[0]: r for r in tiny_rows}
    params = by["tokens/s vs nn.Transformer"].note.removeprefix("params ").split(" = ")
    assert params[0] == params[1]
    kv = next(r for r in tiny_rows if r.measure.startswith("greedy tokens/s"))
    assert kv.note.endswith("same tokens: True")
    beam = next(r for r in tiny_rows if r.measure.startswith("beam 4"))
    assert "LENGTHS?" not in beam.note


def test_format_table_text_and_markdown(tiny_rows: list) -> None:
    text = format_table(tiny_rows)
    lines = text.splitlines()
    assert lines[0].split()[:7] == [
        "section",
        "measure",
        "attnkit",
        "reference",
        "ratio",
        "target",
        "verdict",
    ]
    assert len(lines) == len(tiny_rows) + 1
    md = format_table(tiny_rows, markdown=True).splitlines()
    assert md[1].count("---") == 8
    assert all(line.count(" | ") == 7 for line in md)
    counts = summary(tiny_rows)
    assert counts["pass"] + counts["fail"] == sum(r.target != "" for r in tiny_rows)


def test_cli_bench_attention_quick(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "attention", "--quick", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "# attnkit bench attention (quick)" in out
    for shape in ("B=4 T=64 D=128", "B=4 T=256 D=128"):
        for mode in ("fwd", "fwd+bwd"):
            for ref in ("nn.MHA", "nn.MHA(need_weights=False)", "plain SDPA"):
                assert f"{mode} {shape} vs {ref} " in out
    assert "fwd+bwd B=4 T=256 D=128 vs nn.MHA " in out
    target_lines = [line for line in out.splitlines() if "<= 0.9 " in line]
    assert len(target_lines) == 1  # fwd+bwd at T >= 256, against the default nn.MHA call
    assert "vs nn.MHA " in target_lines[0]
    assert all(("PASS" in line) != ("FAIL" in line) for line in target_lines)
    nw_lines = [line for line in out.splitlines() if "need_weights=False" in line]
    assert len(nw_lines) == 4 and all("same SDPA kernel" in line for line in nw_lines)
    assert not any("PASS" in line or "FAIL" in line for line in nw_lines)
    assert not any(line.startswith(("train", "decode", "vit")) for line in out.splitlines())
    assert out.rstrip().splitlines()[-1].startswith("# ")


def test_cli_bench_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "attention", "--threads", "0"]) == 2
    assert "argument --threads: must be >= 1, got 0" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["bench", "attention", "--sizes", "tiny", "--device", "cuda"]) == 2
        assert "no CUDA device" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown bench section"):
        run_suite(["speed"], sizes="tiny")


# -- the measuring tools ----------------------------------------------------------------------
def test_count_flops_matches_formulas() -> None:
    lin, x = nn.Linear(16, 24), torch.randn(5, 16)
    assert count_flops(lambda: lin(x)) == 2 * 5 * 16 * 24
    q, k, v = torch.randn(2, 3, 7, 8), torch.randn(2, 3, 9, 8), torch.randn(2, 3, 9, 8)
    # QK^T and (weights)V: two matmuls of 2 * L * S * Dh FLOPs per (batch, head).
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v)) == 2 * 3 * 2 * (
        2 * 7 * 9 * 8
    )
    qg = q.clone().requires_grad_()
    # Backward as PyTorch counts it on CUDA: five matmuls of the same size (the scores are
    # recomputed, then dV, dP, dQ, dK).
    fwd_bwd = count_flops(lambda: F.scaled_dot_product_attention(qg, k, v).sum().backward())
    assert fwd_bwd == (2 + 5) * 2 * 3 * (2 * 7 * 9 * 8)


def test_matmul_ceiling_is_a_rate() -> None:
    rate = matmul_ceiling("cpu", n=64, repeats=1)
    assert math.isfinite(rate) and rate > 0


def test_saved_bytes_counts_activations_not_parameters() -> None:
    lin, x = nn.Linear(8, 16), torch.randn(5, 8)
    assert saved_bytes(lin, lambda: lin(x)) == 5 * 8 * 4  # the input, for the weight gradient
    relu_lin = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
    # input of the Linear + the ReLU output (for its own backward)
    assert saved_bytes(relu_lin, lambda: relu_lin(x)) == 5 * 8 * 4 + 5 * 16 * 4


def test_attention_candidates_agree_with_torch() -> None:
    assert check_agreement(64, 8) < 1e-5
    built = build_candidates(32, 4)
    x = torch.randn(2, 5, 32)
    mha = built["mha"][0].eval()
    with torch.no_grad():
        expected = mha(x, x, x, need_weights=False)[0]
        for name, (module, call) in built.items():
            module.eval()
            torch.testing.assert_close(call(x), expected, rtol=1e-5, atol=1e-5, msg=name)


def test_reference_models_have_identical_sizes() -> None:
    cfg = TransformerConfig(
        src_vocab_size=50,
        tgt_vocab_size=50,
        d_model=32,
        num_heads=4,
        ffn_hidden=64,
        num_encoder_layers=2,
        num_decoder_layers=1,
        norm_first=True,
        tie_embeddings="all",
        max_len=16,
    )
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(Transformer(cfg)) == count(TorchTransformerSeq2Seq(cfg))
    vit = ViTConfig(
        image_size=8,
        patch_size=4,
        in_channels=3,
        d_model=32,
        num_layers=2,
        num_heads=4,
        ffn_hidden=64,
        num_classes=7,
    )
    ours, ref = VisionTransformer(vit), TorchViT(vit)
    assert count(ours) == count(ref)
    assert ref(torch.rand(3, 3, 8, 8)).shape == ours(torch.rand(3, 3, 8, 8))[0].shape == (3, 7)
    torch.manual_seed(0)
    attn = PlainSDPA(32, 4)
    naive = NaiveAttention(32, 4)
    naive.load_state_dict(attn.state_dict())
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(naive(x), attn(x), rtol=1e-5, atol=1e-5)


def test_vit_benchmark_pieces() -> None:
    sizes = dict(
        image_size=8,
        patch_size=4,
        in_channels=1,
        d_model=16,
        num_layers=1,
        num_heads=2,
        ffn_hidden=32,
    )
    built = vit_candidates(ViTConfig(num_classes=10, **sizes))
    images = torch.rand(3, 1, 8, 8)
    for module, call in built.values():
        module.eval()
        assert call(images).shape == (3, 10)
    result = bench_vit_training(ViTSize(model=sizes, batch_size=4, cpu_batches=1), repeats=1)
    assert result["batches"] == 1 and result["batch_size"] == 4
    assert math.isfinite(result["ratio"]) and result["ratio"] > 0


def test_machine_description() -> None:
    assert usable_cores() >= 1
    load = load_average()
    assert load == "n/a" or len(load.split()) == 3
    info = describe_machine("cpu")
    assert {"cpu", "cores", "threads", "torch", "load", "peak_rss_mib"} <= set(info)
    assert info["cores"] == usable_cores()

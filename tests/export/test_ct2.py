"""CTranslate2 export: the spec computes what attnkit computes, for every Transformer variant; a
trained model translates identically in float32 and closely in int8; the CLI; clear refusals.

Reference: attnkit's own PyTorch forward pass (teacher-forced log-probabilities and greedy
search) on the same weights; CTranslate2 is an independent implementation.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from attnkit.cli import main
from attnkit.config import ConfigError, TransformerConfig
from attnkit.evaluation.metrics import corpus_bleu
from attnkit.models.transformer import Transformer
from attnkit.translation.translator import Translator

ct2 = pytest.importorskip(
    "ctranslate2", reason="ctranslate2 is not installed (pip install 'attnkit[export]')"
)

from attnkit.export.ct2 import (  # noqa: E402
    CTranslate2Translator,
    check_exportable,
    export_ctranslate2,
    transformer_spec,
)

VARIANTS = [
    dict(norm_first=False, tie_embeddings="decoder", positional="sinusoidal"),
    dict(norm_first=True, tie_embeddings="decoder", positional="sinusoidal"),
    dict(norm_first=False, tie_embeddings="none", positional="learned"),
    dict(norm_first=True, tie_embeddings="none", positional="sinusoidal"),
    dict(norm_first=False, tie_embeddings="all", positional="learned"),
    dict(norm_first=True, tie_embeddings="all", positional="learned", activation="gelu"),
    dict(norm_first=False, tie_embeddings="decoder", positional="sinusoidal", layer_norm_eps=1e-6),
]


def random_model(seed: int, **changes: object) -> Transformer:
    torch.manual_seed(seed)
    cfg = TransformerConfig(
        src_vocab_size=40,
        tgt_vocab_size=40,
        d_model=32,
        num_heads=4,
        ffn_hidden=64,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dropout=0.0,
        max_len=24,
        **changes,
    )
    model = Transformer(cfg).eval()
    with torch.no_grad():  # LayerNorm gains and biases away from 1 and 0, so they matter
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.2 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(str(x) for x in v.values()))
def test_spec_log_probs_match_attnkit(variant: dict, tmp_path: Path) -> None:
    model = random_model(0, **variant)
    spec = transformer_spec(model)
    spec.validate()
    spec.optimize(quantization="float32")
    spec.save(str(tmp_path))
    translator = ct2.Translator(str(tmp_path), device="cpu", intra_threads=1)
    gen = torch.Generator().manual_seed(1)
    lengths = [(5, 7), (9, 3), (1, 12)]
    src_ids = [torch.randint(4, 40, (s,), generator=gen).tolist() for s, _ in lengths]
    tgt_ids = [torch.randint(4, 40, (t,), generator=gen).tolist() + [3] for _, t in lengths]
    scored = translator.score_batch(  # CTranslate2 appends EOS to the targets itself
        [[str(i) for i in s] for s in src_ids], [[str(i) for i in t[:-1]] for t in tgt_ids]
    )
    for s, t, result in zip(src_ids, tgt_ids, scored, strict=True):
        with torch.no_grad():
            logits = model(torch.tensor([s]), torch.tensor([[2] + t[:-1]]))  # (1, T, V)
            want = logits.log_softmax(-1)[0].gather(1, torch.tensor(t)[:, None])[:, 0]
        got = torch.tensor(result.log_probs)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_unsupported_models_are_refused(tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError, match="rotary"):
        transformer_spec(random_model(0, positional="rotary"))
    with pytest.raises(ConfigError, match="Transformer runs only"):
        check_exportable("bahdanau")
    run = tmp_path / "gru"
    run.mkdir()
    (run / "config.json").write_text(
        json.dumps({"run_format": 1, "config": {"model_type": "bahdanau", "model": {}}})
    )
    assert main(["export", "--run", str(run), "--format", "ctranslate2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Transformer runs only" in err[0] and "--engine attnkit" in err[0]


def test_trained_model_float32_identical_int8_close(dates_run, tmp_path: Path, capsys) -> None:
    run, sources, refs = dates_run
    reference = Translator.load(run, device="cpu")
    decode = reference.config.decode
    want = reference.translate(sources, beam_size=1)
    bleu = {"attnkit": corpus_bleu([t.text for t in want], refs).score}
    for quantization in ("float32", "int8"):
        out = tmp_path / quantization
        assert (
            main(
                [
                    "export",
                    "--run",
                    str(run),
                    "--format",
                    "ctranslate2",
                    "--out",
                    str(out),
                    "--quantization",
                    quantization,
                ]
            )  # fmt: skip
            == 0
        )
        engine = CTranslate2Translator.load(out, intra_threads=1)
        got = engine.translate(sources, beam_size=1)
        same = sum(g.tokens == w.tokens for g, w in zip(got, want, strict=True))
        bleu[quantization] = corpus_bleu([t.text for t in got], refs).score
        if quantization == "float32":
            assert same == len(sources)  # greedy: the same translations, every one
            # CTranslate2 renormalises after banning PAD and BOS, attnkit does not (it keeps
            # the model's log-probabilities), so its scores can only be a little higher.
            for g, w in zip(got, want, strict=True):
                assert w.score - 1e-3 <= g.score <= 0.0
        else:
            assert same >= 0.85 * len(sources)
            assert abs(bleu["int8"] - bleu["attnkit"]) < 5.0
        if quantization == "float32":  # outputs cut at the length limit agree too
            short = replace(reference.config.decode, max_len_a=0.3, max_len_b=1)
            for t in (reference, engine):
                t.config = replace(t.config, decode=short)
            cut_want = reference.translate(sources, beam_size=1)
            cut_got = engine.translate(sources, beam_size=1)
            assert [t.tokens for t in cut_got] == [t.tokens for t in cut_want]
            for g, w in zip(cut_got, cut_want, strict=True):
                assert w.score - 1e-3 <= g.score <= 0.0
            assert min(len(t.tokens) for t in cut_want) < max(len(t.tokens) for t in want)
            reference.config = engine.config = replace(reference.config, decode=decode)
        beams = engine.translate(sources[:20], beam_size=4, n_best=2)
        single = [b for b in beams if b.parts is None]  # texts of one sentence
        assert single and all(len(b.alternatives or []) == 2 for b in single)
    with capsys.disabled():
        print(
            f"\nCTranslate2 on {len(sources)} held-out dates: BLEU attnkit {bleu['attnkit']:.2f}, "
            f"ct2 float32 {bleu['float32']:.2f}, ct2 int8 {bleu['int8']:.2f} "
            f"(delta {bleu['int8'] - bleu['attnkit']:+.2f})"
        )


def test_translate_cli_with_the_ctranslate2_engine(dates_run, capsys) -> None:
    run, sources, _ = dates_run
    assert main(["export", "--run", str(run), "--format", "ctranslate2"]) == 0
    assert (run / "export" / "ctranslate2" / "model.bin").is_file()
    assert (run / "export" / "ctranslate2" / "tokenizer" / "src").is_dir()
    capsys.readouterr()
    assert main(["translate", "--run", str(run), "--beam", "1", *sources[:8]]) == 0
    want = capsys.readouterr().out
    args = ["translate", "--run", str(run), "--engine", "ctranslate2", "--beam", "1"]
    assert main([*args, *sources[:8]]) == 0
    assert capsys.readouterr().out == want
    # The export folder itself works as --run; need_weights is refused with the fix.
    assert main([*args[:2], str(run / "export" / "ctranslate2"), *args[3:], sources[0]]) == 0
    assert capsys.readouterr().out.splitlines() == want.splitlines()[:1]
    with pytest.raises(ConfigError, match="--engine attnkit"):
        CTranslate2Translator.load(run).translate([sources[0]], need_weights=True)
    assert main([*args, "--quantize", "int8", sources[0]]) == 2
    assert "--quantization int8" in capsys.readouterr().err
    assert main([*args, "--checkpoint", "last", sources[0]]) == 2  # not silently ignored
    assert "--checkpoint is for --engine attnkit" in capsys.readouterr().err


def test_beam_search_warns_when_the_run_uses_a_penalty_ctranslate2_lacks(dates_run, caplog):
    run, sources, _ = dates_run
    assert main(["export", "--run", str(run), "--format", "ctranslate2"]) == 0
    translator = CTranslate2Translator.load(run)
    assert translator.config.decode.length_penalty_kind == "gnmt"  # the dates preset's
    with caplog.at_level("WARNING"):
        translator.translate(sources[:2], beam_size=1)
        assert "GNMT" not in caplog.text  # greedy search has no length penalty
        translator.translate(sources[:2], beam_size=3)
        translator.translate(sources[:2], beam_size=3)
    assert caplog.text.count("GNMT length penalty") == 1


def test_export_elsewhere_prints_a_command_that_works(dates_run, tmp_path, capsys) -> None:
    run, sources, _ = dates_run
    out = tmp_path / "ct2"
    assert main(["export", "--run", str(run), "--format", "ctranslate2", "--out", str(out)]) == 0
    advice = capsys.readouterr().out.splitlines()[-1]
    assert advice == f"use it: attnkit translate --run {out} --engine ctranslate2 ..."
    assert main(["translate", "--run", str(out), "--engine", "ctranslate2", sources[0]]) == 0
    assert capsys.readouterr().out.strip()


def test_export_of_a_missing_export_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="attnkit export --run RUN --format ctranslate2"):
        CTranslate2Translator.load(tmp_path)
    with pytest.raises(ConfigError, match="--quantization must be one of"):
        export_ctranslate2(tmp_path, quantization="int4")


def test_reexport_replaces_an_earlier_export_and_a_failure_keeps_it(
    dates_run, tmp_path: Path, monkeypatch
) -> None:
    run, _, _ = dates_run
    out = tmp_path / "ct2"

    def quantization() -> str:
        return json.loads((out / "attnkit.json").read_text())["quantization"]

    assert export_ctranslate2(run, out, "float32") == out and quantization() == "float32"

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:  # fails half way: after model.bin, at the tokenizer
        patch.setattr(shutil, "copytree", full_disk)
        with pytest.raises(OSError, match="No space left"):
            export_ctranslate2(run, out, "int8")
    assert quantization() == "float32" and (out / "tokenizer").is_dir()
    assert export_ctranslate2(run, out, "int8") == out and quantization() == "int8"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct2"]  # no temporary folder left


def test_a_run_ctranslate2_cannot_express_is_named_not_sent_to_export(
    tmp_path: Path, capsys
) -> None:
    run = tmp_path / "gru"
    run.mkdir()
    (run / "config.json").write_text(
        json.dumps({"run_format": 1, "config": {"model_type": "bahdanau", "model": {}}})
    )
    with pytest.raises(
        ConfigError, match=r"gru: the CTranslate2 engine cannot run this model; .*--engine attnkit$"
    ):
        CTranslate2Translator.load(run)
    assert main(["translate", "--run", str(run), "--engine", "ctranslate2", "a text"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot run this model" in err[0] and "attnkit export" not in err[0]


def test_an_export_older_than_its_runs_checkpoint_is_named_stale(dates_run, tmp_path, caplog):
    """Loading an export through its run warns when the run has moved on (re-export);
    a GPU CTranslate2 cannot use is one line naming --device cpu."""
    import os
    import shutil

    run = tmp_path / "run"
    shutil.copytree(dates_run[0], run, ignore=shutil.ignore_patterns("export"))
    assert main(["export", "--run", str(run), "--format", "ctranslate2"]) == 0
    with caplog.at_level("WARNING"):
        CTranslate2Translator.load(run)
    assert "re-export" not in caplog.text  # fresh
    meta = json.loads((run / "export" / "ctranslate2" / "attnkit.json").read_text())
    source = Path(meta["checkpoint"])
    later = (run / "export" / "ctranslate2" / "attnkit.json").stat().st_mtime + 60
    for f in source.iterdir():
        os.utime(f, (later, later))  # the run trained on and rewrote that checkpoint
    with caplog.at_level("WARNING"):
        CTranslate2Translator.load(run)
    assert f"{source} was written after this export was made; re-export it" in caplog.text
    caplog.clear()
    shutil.rmtree(source)  # ... or dropped it
    with caplog.at_level("WARNING"):
        CTranslate2Translator.load(run)
    assert "which the run no longer has" in caplog.text
    alone = tmp_path / "alone"  # a copy kept elsewhere, its run gone: nothing to compare
    shutil.copytree(run / "export" / "ctranslate2", alone)
    shutil.rmtree(run)
    caplog.clear()
    with caplog.at_level("WARNING"):
        CTranslate2Translator.load(alone)
    assert "re-export" not in caplog.text
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--device cuda: CTranslate2 cannot use a GPU here"):
            CTranslate2Translator.load(alone, device="cuda")

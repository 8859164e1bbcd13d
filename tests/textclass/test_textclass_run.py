"""Fine-tuning end to end: a tiny BERT folder learns a synthetic sentiment task through
``attnkit finetune``; predict, evaluate, attention and embed on the run; exact resume; regression;
the best checkpoint; fine-tuning an attnkit language-model run; config checks."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from attnkit.cli import main
from attnkit.config import ConfigError, DecoderLMConfig, apply_overrides
from attnkit.models.decoder_lm import DecoderLM
from attnkit.textclass.classifier import TextClassifier
from attnkit.textclass.config import textclass_config_from_dict, textclass_preset
from attnkit.textclass.data import read_labelled
from attnkit.textclass.run import train_textclass
from attnkit.training.checkpoint import load_checkpoint
from tests.textclass.conftest import run_cli
from tests.textclass.textclass_tiny import TINY_SETS, sentiment_rows, tiny_argv, write_sentiment

HAS_LM = importlib.util.find_spec("attnkit.lm") is not None


def tiny_config(model: Path, train: Path, valid: Path | None, *extra: str):
    preset = textclass_preset("bert")
    preset["backbone"] = {"source": str(model)}
    preset["data"].update(source=str(train), valid=str(valid) if valid else None)
    return textclass_config_from_dict(apply_overrides(preset, [*TINY_SETS, *extra]))


def test_finetune_learns_the_task_and_writes_a_run_folder(classifier_run, sentiment) -> None:
    run, out = classifier_run
    assert "train: " in out and "neg: " in out and "pos: " in out  # class counts printed
    best_line = next(line for line in out.splitlines() if line.startswith("best checkpoint"))
    best_path = Path(best_line.split(": ")[1].split(" (by validation")[0])  # where it is
    assert best_path.parent == run / "checkpoints" and best_path.name.startswith("best-")
    assert (best_path / "meta.json").is_file()
    accuracy = float(best_line.split("accuracy=")[1].split("%")[0]) / 100
    assert accuracy >= 0.85, out
    for name in ("config.json", "metrics.jsonl", "curves.png", "checkpoints/last", "tokenizer"):
        assert (run / name).exists(), name
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["task"] == "textclass" and config["labels"] == ["neg", "pos"]
    assert config["backbone"]["kind"] == "bert" and config["model"]["pooling"] == "mean"
    assert config["model"]["num_labels"] == 2 and config["model"]["problem"] == "classification"
    # the best checkpoint is the first one with the highest validation accuracy
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in rows if r["split"] == "valid"]
    top = max(r["accuracy"] for r in valid)
    _, meta = load_checkpoint(next((run / "checkpoints").glob("best-*")), with_state=False)
    assert meta["step"] == next(r["step"] for r in valid if r["accuracy"] == top)
    # the run is self-contained: it loads without the pretrained folder's files
    classifier = TextClassifier.load(run)
    assert classifier.evaluate(sentiment[1])["accuracy"] == pytest.approx(accuracy, abs=5e-5)


def test_evaluate_reports_accuracy_macro_f1_and_confusion_like_sklearn(
    classifier_run, sentiment, capsys
) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    run, _ = classifier_run
    assert main(["evaluate", "--run", str(run), "--data", str(sentiment[1])]) == 0
    out = capsys.readouterr().out
    scores = json.loads(out.strip().splitlines()[-1])
    assert "confusion matrix (rows: true label" in out
    classifier = TextClassifier.load(run)
    rows = read_labelled(sentiment[1])
    truth = [classifier.labels.index(y) for y in rows.labels]
    predicted = classifier.probabilities(rows.texts).argmax(-1).tolist()
    assert scores["accuracy"] == pytest.approx(metrics.accuracy_score(truth, predicted))
    assert scores["macro_f1"] == pytest.approx(metrics.f1_score(truth, predicted, average="macro"))
    assert scores["confusion"] == metrics.confusion_matrix(truth, predicted).tolist()
    assert scores["n"] == len(rows)


def test_evaluate_on_a_file_without_header_gives_advice_evaluate_can_follow(
    classifier_run, tmp_path, capsys
) -> None:
    run, _ = classifier_run
    headless = tmp_path / "headless.tsv"
    headless.write_text("a good film\tpos\na bad plot\tneg\n")
    assert main(["evaluate", "--run", str(run), "--data", str(headless)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"attnkit evaluate: error: {headless}: line 1: no label column 'label'; the columns are "
        "['a good film', 'pos']; the first line must be a header that names the columns, as in "
        "the run's training file"
    )  # not "--label-column", a flag of finetune that evaluate does not have


def test_predict_prints_labels_and_probabilities_in_order(classifier_run, capsys, monkeypatch):
    run, _ = classifier_run
    texts = ["a good great film", "", "the plot was awful and dull"]
    assert main(["predict", "--run", str(run), "--json", *texts]) == 0
    lines = capsys.readouterr().out.split("\n")[:-1]
    assert len(lines) == 3 and lines[1] == ""
    classifier = TextClassifier.load(run)
    probs = classifier.probabilities([texts[0], texts[2]])
    for line, p in zip([lines[0], lines[2]], probs, strict=True):
        row = json.loads(line)
        assert row["probs"] == pytest.approx(
            dict(zip(classifier.labels, p.tolist(), strict=True)), abs=1e-6
        )
        assert row["label"] == classifier.labels[int(p.argmax())]
    assert [json.loads(lines[i])["label"] for i in (0, 2)] == ["pos", "neg"]
    # stdin, plain output: label TAB probability, blank lines kept in place
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(texts) + "\n\n"))
    assert main(["predict", "--run", str(run)]) == 0
    lines = capsys.readouterr().out.split("\n")[:-1]
    assert [line.split("\t")[0] for line in lines] == ["pos", "", "neg", ""]
    assert float(lines[0].split("\t")[1]) == pytest.approx(float(probs[0].max()), abs=1e-4)


def test_predict_batch_size_does_not_change_the_outputs(classifier_run, sentiment, capsys):
    """Texts of different lengths padded into one batch give the probabilities each gets alone
    (the padding mask works); a bad --batch-size is a one-line error."""
    run, _ = classifier_run
    texts = read_labelled(sentiment[1], "sentence", "label").texts[:40]
    classifier = TextClassifier.load(run)
    classifier.batch_size = 1
    alone = classifier.probabilities(texts)
    classifier.batch_size = 32
    batched = classifier.probabilities(texts)
    assert torch.allclose(alone, batched, atol=1e-5)
    assert main(["predict", "--run", str(run), "--batch-size", "0", "x"]) == 2
    assert "argument --batch-size: must be >= 1, got 0" in capsys.readouterr().err


def test_attention_and_embed_use_the_fine_tuned_encoder(classifier_run, tmp_path, capsys):
    run, _ = classifier_run
    out = tmp_path / "att.png"
    assert main(["attention", "--run", str(run), "a good film", "--out", str(out)]) == 0
    assert out.stat().st_size > 0 and "2 layers x 2 heads over 5 tokens" in capsys.readouterr().out
    assert main(["attention", "--run", str(run), "a", "--kind", "cross", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        "attnkit attention: error: --kind cross: a text-classification run has only encoder "
        "self-attention; use --kind encoder or all"
    )
    texts = ["a good film", "a bad plot"]
    assert main(["embed", "--run", str(run), *texts]) == 0
    payload = json.loads(capsys.readouterr().out)
    vectors = np.array(payload["embeddings"])
    assert vectors.shape == (2, 16) and payload["run"] == str(run)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    classifier = TextClassifier.load(run)
    np.testing.assert_allclose(vectors, classifier.embed(texts), atol=1e-6)
    # the embedding is the vector the head reads
    logits = classifier.outputs(texts)
    pooled = torch.from_numpy(classifier.embed(texts, normalize=False))
    torch.testing.assert_close(classifier.model.head(pooled), logits, atol=1e-5, rtol=1e-5)


def test_resume_mid_epoch_equals_uninterrupted(tiny_bert, sentiment, tmp_path, capsys) -> None:
    extra = ("train.epochs=2", "model.dropout=0.2", 'train.schedule_horizon="steps"')
    torch.manual_seed(0)
    train_textclass(tiny_config(tiny_bert, *sentiment, *extra), tmp_path / "full")
    torch.manual_seed(0)
    result, _ = train_textclass(
        tiny_config(tiny_bert, *sentiment, *extra, "train.time_budget=1e-9"), tmp_path / "cut"
    )
    assert result.stopped_because == "time budget" and result.steps == 1
    # a training file edited since (one label flipped): refused (was: trained on it silently)
    import shutil

    shutil.copytree(tmp_path / "cut", tmp_path / "changed")
    original = sentiment[0].read_text(encoding="utf-8")
    header, first, rest = original.split("\n", 2)  # label<TAB>sentence rows
    label, text = first.split("\t", 1)
    flipped = {"neg": "pos", "pos": "neg"}[label]
    sentiment[0].write_text(f"{header}\n{flipped}\t{text}\n{rest}", encoding="utf-8")
    try:
        changed = ["finetune", "--run", str(tmp_path / "changed"), "--resume", "--no-progress"]
        capsys.readouterr()
        assert main([*changed, "--set", "train.time_budget=null"]) == 2
    finally:
        sentiment[0].write_text(original, encoding="utf-8")
    err = capsys.readouterr().err
    assert "the data changed since this checkpoint was saved" in err, err
    argv = ["finetune", "--run", str(tmp_path / "cut"), "--resume", "--no-progress"]
    status, _ = run_cli([*argv, "--set", "train.time_budget=null"])
    assert status == 0
    full = load_file(str(tmp_path / "full" / "checkpoints" / "last" / "model.safetensors"))
    cut = load_file(str(tmp_path / "cut" / "checkpoints" / "last" / "model.safetensors"))
    assert full.keys() == cut.keys()
    for name in full:
        torch.testing.assert_close(full[name], cut[name], rtol=0, atol=0, msg=name)
    assert main([*argv, "--lr", "0.1"]) == 2  # a resume cannot change the run
    # --regression maps to model.problem: compared too (this run is a classification one)
    capsys.readouterr()
    assert main([*argv, "--regression"]) == 2
    err = capsys.readouterr().err
    assert "cannot change --regression (the run has 'classification')" in err, err


def test_regression_reports_pearson_and_spearman_like_scipy(tiny_bert, tmp_path) -> None:
    stats = pytest.importorskip("scipy.stats")
    train = write_sentiment(tmp_path / "train.tsv", 300, seed=3, regression=True)
    valid = write_sentiment(tmp_path / "dev.tsv", 80, seed=4, regression=True)
    run = tmp_path / "run"
    argv = tiny_argv(tiny_bert, train, valid, run, "--epochs", "8", "--lr", "0.01")
    status, out = run_cli(argv)
    assert status == 0, out
    assert "regression" in out and "pearson=" in out
    classifier = TextClassifier.load(run)
    assert classifier.problem == "regression" and classifier.labels == []
    rows = read_labelled(valid)
    values = [p.value for p in classifier.predict(rows.texts)]
    truth = [float(y) for y in rows.labels]
    scores = classifier.evaluate(valid)
    assert scores["pearson"] == pytest.approx(stats.pearsonr(values, truth)[0], abs=1e-6)
    assert scores["spearman"] == pytest.approx(stats.spearmanr(values, truth)[0], abs=1e-6)
    assert scores["loss"] == pytest.approx(np.mean((np.array(values) - truth) ** 2), rel=1e-5)
    assert scores["pearson"] > 0.6  # learned (the untrained model scores about 0)
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    assert (best["metric"], best["mode"]) == ("pearson", "max")


@pytest.mark.skipif(not HAS_LM, reason="the language-model task (attnkit.lm) is not installed")
def test_finetune_an_attnkit_language_model_run(tmp_path, capsys, caplog) -> None:
    """Two stages inside attnkit: pretrain a tiny character LM, then fine-tune it (here with the
    whole backbone frozen, so its weights must stay those of the LM's best checkpoint)."""
    from attnkit.lm.config import lm_config_from_dict
    from attnkit.lm.run import train_lm

    text = "\n".join(t for t, _ in sentiment_rows(300, seed=5))
    (tmp_path / "corpus.txt").write_text(text + "\n", encoding="utf-8")
    lm_cfg = lm_config_from_dict(
        {
            "model": {"d_model": 16, "num_heads": 2, "ffn_hidden": 32, "num_layers": 2},
            "data": {"source": str(tmp_path / "corpus.txt"), "block_size": 32, "batch_size": 8},
            "train": {"epochs": 1, "lr": 0.003, "warmup_steps": 2, "device": "cpu"},
        }
    )
    torch.manual_seed(0)
    train_lm(lm_cfg, tmp_path / "lm")
    train = write_sentiment(tmp_path / "train.tsv", 200, seed=6)
    valid = write_sentiment(tmp_path / "dev.tsv", 60, seed=7)
    argv = tiny_argv(tmp_path / "lm", train, valid, tmp_path / "run", "--epochs", "2")
    argv += ["--set", "finetune.freeze_layers=2", "--set", "train.lr=0.01"]
    with caplog.at_level("WARNING"):
        status, out = run_cli(argv)
    assert status == 0, out
    assert "<unk>" not in caplog.text  # the LM was pretrained on these words
    assert "backbone: lm" in out and "pooling: last" in out
    config = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert config["backbone"]["kind"] == "lm" and config["model"]["pooling"] == "last"
    assert (tmp_path / "run" / "tokenizer" / "tokenizer.json").is_file()
    lm_best = next((tmp_path / "lm" / "checkpoints").glob("best-*"))
    lm_weights = load_file(str(lm_best / "model.safetensors"))
    tuned = load_file(str(tmp_path / "run" / "checkpoints" / "last" / "model.safetensors"))
    for name, value in lm_weights.items():
        torch.testing.assert_close(tuned[f"backbone.lm.{name}"], value, rtol=0, atol=0)
    assert not torch.equal(tuned["head.weight"], torch.zeros_like(tuned["head.weight"]))
    assert main(["predict", "--run", str(tmp_path / "run"), "good film", ""]) == 0
    lines = capsys.readouterr().out.split("\n")[:-1]
    assert lines[0].split("\t")[0] in ("neg", "pos") and lines[1] == ""
    # its causal self-attention, and sentence embeddings from its last token
    classifier = TextClassifier.load(tmp_path / "run")
    tokens, weights = classifier.attention("good film")
    assert len(tokens) == len("good film") + 1 and tokens[-1] == "\u21b5"  # the line end
    assert len(weights) == 2 and weights[0].shape == (2, 10, 10)
    # from scratch: the same architecture and tokenizer, but freshly initialised weights; a
    # text with characters the LM never saw: said (was: silently <unk>)
    train = write_sentiment(tmp_path / "train.tsv", 200, seed=6)
    with open(train, "a", encoding="utf-8") as f:
        f.write("pos\ta caf\u00e9 (good) film\n")
    argv = tiny_argv(tmp_path / "lm", train, valid, tmp_path / "scratch", "--epochs", "1")
    argv += ["--set", "finetune.freeze_layers=2", "--set", "finetune.init=random"]
    caplog.clear()
    with caplog.at_level("WARNING"):
        status, out = run_cli(argv)
    assert status == 0, out
    assert "3 distinct characters of the texts are not in the language model's vocabulary" in (
        caplog.text
    ), caplog.text
    assert re.search(r"\(in 1 of \d+ texts\): 'é' '\(' '\)'", caplog.text)
    scratch = load_file(str(tmp_path / "scratch" / "checkpoints" / "last" / "model.safetensors"))
    torch.manual_seed(0)  # the seed the run builds its model with (train.seed)
    fresh = DecoderLM(DecoderLMConfig(**config["backbone"]["config"])).state_dict()
    for name, value in lm_weights.items():
        if name == "embed.weight" or "norm" in name or name.endswith("bias"):
            continue  # trained (the embedding is tied to the output) or constant at init
        assert not torch.equal(scratch[f"backbone.lm.{name}"], value), name
        torch.testing.assert_close(scratch[f"backbone.lm.{name}"], fresh[name], rtol=0, atol=0)
    assert torch.equal(weights[0].triu(1), torch.zeros(2, 10, 10))  # no look-ahead
    out = tmp_path / "att.png"
    assert main(["attention", "--run", str(tmp_path / "run"), "good film", "--out", str(out)]) == 0
    assert out.stat().st_size > 0
    vectors = classifier.embed(["good film", "a bad plot"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_config_checks_come_before_any_data_work(tiny_bert, sentiment, tmp_path) -> None:
    cfg = tiny_config(tiny_bert, *sentiment, "train.time_budget=60")
    assert cfg.train.schedule == "linear" and cfg.train.schedule_horizon == "time"
    assert cfg.train.epochs == 100  # the budget ends the run
    plain = tiny_config(tiny_bert, *sentiment)
    assert (plain.train.schedule_horizon, plain.train.epochs) == ("steps", 3)
    with pytest.raises(ConfigError, match="num_labels is set by the data"):
        tiny_config(tiny_bert, *sentiment, "model.num_labels=3")
    with pytest.raises(ConfigError, match="select_by='pearson' is not a classification"):
        tiny_config(
            tiny_bert, *sentiment, "model.problem=classification", "finetune.select_by=pearson"
        )
    with pytest.raises(ConfigError, match="backbone.kind is read from"):
        tiny_config(tiny_bert, *sentiment, "backbone.kind=bert")
    with pytest.raises(ConfigError, match="layer_lr_decay"):
        tiny_config(tiny_bert, *sentiment, "finetune.layer_lr_decay=0")
    with pytest.raises(ConfigError, match="warmup_steps=500 is not below the .* updates of this"):
        train_textclass(
            tiny_config(tiny_bert, *sentiment, "train.warmup_steps=500"), tmp_path / "r"
        )


def test_an_edited_backbone_too_big_for_memory_is_refused_naming_the_file(
    tmp_path: Path, classifier_run: tuple[Path, str], capsys
) -> None:
    import shutil

    run = tmp_path / "edited"
    shutil.copytree(classifier_run[0], run)
    stored = json.loads((run / "config.json").read_text())
    stored["config"]["backbone"]["config"].update(d_model=65536, num_layers=64)
    (run / "config.json").write_text(json.dumps(stored))
    assert main(["predict", "--run", str(run), "a fine film"]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'config.json'}: backbone: this EncoderConfig would have about" in err, err

"""End to end: training on the dates corpus, resume, the CLI, evaluation parity, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sacrebleu
import torch

from attnkit.cli import main
from attnkit.config import ConfigError
from attnkit.training.checkpoint import load_checkpoint
from attnkit.translation.config import preset_for, run_config_from_dict
from attnkit.translation.run import train_translator
from attnkit.translation.translator import Translator
from tests.translation.tiny import TINY_TRANSFORMER

TINY = {
    "model": {
        "d_model": 64,
        "num_heads": 4,
        "ffn_hidden": 128,
        "num_encoder_layers": 1,
        "num_decoder_layers": 1,
        "dropout": 0.0,
    },
    "data": {"num_examples": 3000, "vocab_size": 120, "valid_limit": 60},
    "train": {
        "epochs": 2,
        "max_tokens": 1200,
        "lr": 3e-3,
        "warmup_steps": 30,
        "log_every": 5,
        "device": "cpu",
    },
}


def tiny_config(**train: object) -> object:
    cfg = preset_for("dates", "transformer")
    for section, values in TINY.items():
        cfg[section].update(values)
    cfg["train"].update(train)
    cfg["data"]["source"] = "dates"
    cfg["model_type"] = "transformer"
    return run_config_from_dict(cfg)


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    run = tmp_path_factory.mktemp("runs") / "dates"
    torch.manual_seed(0)
    result, translator = train_translator(tiny_config(epochs=12), run)
    return run, result


def test_training_learns_dates(trained_run: tuple[Path, object]) -> None:
    run, result = trained_run
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_losses = [r["loss"] for r in rows if r["split"] == "train"]
    valid = [r for r in rows if r["split"] == "valid"]
    assert len(valid) == 12
    assert train_losses[-1] < 0.5 * train_losses[0]
    assert valid[-1]["loss"] < 0.5
    assert valid[-1]["bleu"] > 40.0
    for name in ("config.json", "metrics.jsonl", "tokenizer/src", "checkpoints/last"):
        assert (run / name).exists(), name


def test_resume_equals_uninterrupted(tmp_path: Path) -> None:
    torch.manual_seed(0)
    _, full = train_translator(tiny_config(epochs=2), tmp_path / "full")
    torch.manual_seed(0)
    train_translator(tiny_config(epochs=1), tmp_path / "split")
    # Resume from the last checkpoint with a larger epoch budget, through the CLI.
    assert (
        main(
            [
                "train",
                "--run",
                str(tmp_path / "split"),
                "--resume",
                "--epochs",
                "2",
                "--samples",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    resumed = Translator.load(tmp_path / "split", checkpoint="last")
    a, b = _params(full.model), _params(resumed.model)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_resume_mid_epoch_by_time_budget(tmp_path: Path) -> None:
    torch.manual_seed(0)
    _, full = train_translator(tiny_config(epochs=1), tmp_path / "full")
    torch.manual_seed(0)
    result, _ = train_translator(tiny_config(epochs=1, time_budget=1e-9), tmp_path / "cut")
    assert result.stopped_because == "time budget" and result.steps == 1
    _, resumed = train_translator(
        None, tmp_path / "cut", resume=True, train_overrides={"time_budget": None}
    )
    state, _ = load_checkpoint(tmp_path / "full" / "checkpoints" / "last")
    state2, _ = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last")
    assert state["step"] == state2["step"]
    for key, value in _params(full.model).items():
        torch.testing.assert_close(value, _params(resumed.model)[key], rtol=0, atol=0)


def test_translate_cli_and_beam(
    trained_run: tuple[Path, object], capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = trained_run
    assert (
        main(
            [
                "translate",
                "--run",
                str(run),
                "--beam",
                "1",
                "tuesday 10 march 1987",
                "le 3 août 1990",
            ]
        )
        == 0
    )
    greedy = capsys.readouterr().out.splitlines()
    assert len(greedy) == 2
    assert (
        main(
            [
                "translate",
                "--run",
                str(run),
                "--beam",
                "3",
                "--n-best",
                "2",
                "tuesday 10 march 1987",
            ]
        )
        == 0
    )
    lines = [x for x in capsys.readouterr().out.splitlines() if x]
    assert len(lines) == 2 and all("\t" in x for x in lines)


def test_evaluate_matches_sacrebleu(
    trained_run: tuple[Path, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = trained_run
    from attnkit.data.dates import generate_dates

    pairs = generate_dates(40, seed=123)
    pairs += [(pairs[0][0], "an alternative reference")]  # one source with two references
    tsv = tmp_path / "test.tsv"
    tsv.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    out = tmp_path / "hyps.txt"
    assert (
        main(["evaluate", "--run", str(run), "--data", str(tsv), "--beam", "1", "--out", str(out)])
        == 0
    )
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    hyps = out.read_text(encoding="utf-8").splitlines()
    sources = list(dict.fromkeys(s for s, _ in pairs))
    assert len(hyps) == len(sources)
    refs = {s: [t for s2, t in pairs if s2 == s] for s in sources}
    streams = [[refs[s][k] if k < len(refs[s]) else None for s in sources] for k in range(2)]
    expected = sacrebleu.corpus_bleu(hyps, streams).score  # cased first, then case-insensitive
    assert printed["bleu"] == pytest.approx(expected, abs=1e-9)
    lowercased = sacrebleu.corpus_bleu(hyps, streams, lowercase=True).score
    assert printed["bleu_lc"] == pytest.approx(lowercased, abs=1e-9)
    assert (printed["checkpoint"], printed["beam"]) == ("best", 1)  # what produced them
    argv = ["evaluate", "--run", str(run), "--data", str(tsv), "--beam", "1"]
    assert main(argv) == 0 and main([*argv, "--checkpoint", "last"]) == 0
    best_file, last_file = run / "hyps-test.txt", run / "hyps-test-last.txt"
    assert best_file.read_text(encoding="utf-8") == out.read_text(encoding="utf-8")  # kept
    assert last_file.is_file()  # another checkpoint: its own file
    # the hypotheses are what the library produces for those sources
    again = Translator.load(run).translate(sources, beam_size=1)
    assert [t.text for t in again] == hyps


def test_cached_translation_equals_recomputation(trained_run: tuple[Path, object]) -> None:
    from attnkit.decoding import greedy_decode

    run, _ = trained_run
    tr = Translator.load(run)
    ids = tr.encode_sources(["march 10 , 1987", "10 / 03 / 1987", "le 1er mai 2001"])
    width = max(map(len, ids))
    src = torch.tensor([s + [0] * (width - len(s)) for s in ids])
    mask = src != 0
    fast = greedy_decode(tr.model, src, mask, use_cache=True)
    slow = greedy_decode(tr.model, src, mask, use_cache=False)
    assert fast.tokens == slow.tokens


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "--data", "/nonexistent/pairs.tsv", "--run", "{tmp}/r"], "nonexistent"),
        (["train", "--data", "{tmp}/notab.tsv", "--run", "{tmp}/r"], "notab.tsv:2"),
        (["train", "--data", "{tmp}/badbytes.tsv", "--run", "{tmp}/r"], "badbytes.tsv:1"),
        (["train", "--data", "{tmp}/empty.tsv", "--run", "{tmp}/r"], "empty"),
        (["train", "--set", "model.nonsense=3", "--run", "{tmp}/r"], "nonsense"),
        (["translate", "--run", "{tmp}/missing", "hello"], "not a run folder"),
    ],
)
def test_bad_input_is_one_line_error(
    argv: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notab.tsv").write_text("go .\tva !\nno tab here\n", encoding="utf-8")
    (tmp_path / "badbytes.tsv").write_bytes(b"go .\tva \xff\xfe !\n")
    (tmp_path / "empty.tsv").write_text("\n\n", encoding="utf-8")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_too_long_sentence_and_incompatible_run(
    trained_run: tuple[Path, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = trained_run
    assert main(["translate", "--run", str(run), " ".join(["1987"] * 200)]) == 2
    assert "limit" in capsys.readouterr().err
    fake = tmp_path / "old"
    fake.mkdir()
    (fake / "config.json").write_text(json.dumps({"run_format": 99, "config": {}}))
    with pytest.raises(ConfigError, match="format"):
        Translator.load(fake)


def test_bahdanau_trains(tmp_path: Path) -> None:
    cfg = preset_for("dates", "bahdanau")
    cfg["data"].update(TINY["data"])
    cfg["train"].update({"epochs": 2, "max_tokens": 2000, "device": "cpu", "log_every": 5})
    cfg["model"].update({"embed_size": 32, "num_hiddens": 64})
    cfg["data"]["source"] = "dates"
    cfg["model_type"] = "bahdanau"
    result, translator = train_translator(run_config_from_dict(cfg), tmp_path / "b")
    rows = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["split"] == "train"]
    assert losses[-1] < 0.8 * losses[0]
    assert len(translator.translate(["10 march 1987"], beam_size=2)) == 1


def test_average_cli_writes_the_mean_of_the_best_checkpoints(
    trained_run: tuple[Path, object], capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import load_file

    run, _ = trained_run
    index = json.loads((run / "checkpoints" / "best.json").read_text())
    best_two = [run / "checkpoints" / e["name"] for e in index["best"][:2]]
    assert main(["average", "--run", str(run), "--best", "2"]) == 0
    assert "averaged 2 checkpoints" in capsys.readouterr().out
    averaged = load_file(str(run / "checkpoints" / "averaged" / "model.safetensors"))
    sources = [load_file(str(p / "model.safetensors")) for p in best_two]
    for key, value in averaged.items():
        expected = ((sources[0][key].double() + sources[1][key].double()) / 2).to(value.dtype)
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-7, msg=key)
    assert (
        main(
            [
                "translate",
                "--run",
                str(run),
                "--checkpoint",
                "averaged",
                "--beam",
                "1",
                "tuesday 10 march 1987",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip()
    assert main(["average", "--run", str(run), "--last", "2", "--name", "avg-last"]) == 0
    assert (run / "checkpoints" / "avg-last" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--best", "9"], "fewer than the 9 asked for"),
        (["--best", "0"], "must be >= 1"),
        (["--name", "last"], "would clash"),
        (["--name", "../x"], "is not a checkpoint name"),
        (["--name", "averaged.tmp"], "is not a checkpoint name"),
    ],
)
def test_average_cli_bad_input(
    trained_run: tuple[Path, object],
    argv: list[str],
    needle: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run, _ = trained_run
    assert main(["average", "--run", str(run), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_unknown_checkpoint_name_is_one_line_error(
    trained_run: tuple[Path, object], capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = trained_run
    assert main(["translate", "--run", str(run), "--checkpoint", "nosuch", "go ."]) == 2
    err = capsys.readouterr().err.strip()
    assert "attnkit average" in err and len(err.splitlines()) == 1


def test_threads_flag_is_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--run", str(tmp_path / "r"), "--threads", "0"]) == 2
    assert "argument --threads: must be >= 1, got 0" in capsys.readouterr().err


def test_ctrl_c_saves_a_checkpoint_and_resume_continues(tmp_path: Path) -> None:
    """SIGINT to a real `attnkit train` process: exit 130, a message, a complete checkpoint at
    the step reached; `--resume` then continues from that step."""
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    sets = [
        *TINY_TRANSFORMER,
        "data.num_examples=2000",
        "data.vocab_size=100",
        "data.valid_limit=20",
        "train.max_tokens=300",
        "train.log_every=1",
        "train.device=cpu",
    ]
    argv = [
        sys.executable,
        "-m",
        "attnkit.cli",
        "train",
        "--run",
        str(run),
        "--epochs",
        "50",
        "--samples",
        "0",
        "--no-progress",
        "--threads",
        "1",
    ]
    for s in sets:
        argv += ["--set", s]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "--resume" in err
    state, meta = load_checkpoint(run / "checkpoints" / "last")
    steps = [json.loads(r)["step"] for r in metrics.read_text().splitlines()]
    assert state["step"] == meta["step"] >= max(steps) >= 3
    # resume: continues from the saved step (a short budget of one more epoch)
    assert (
        main(
            [
                "train",
                "--run",
                str(run),
                "--resume",
                "--epochs",
                str(state["epoch"] + 1),
                "--samples",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    state2, _ = load_checkpoint(run / "checkpoints" / "last")
    assert state2["step"] > state["step"] and state2["epoch"] == state["epoch"] + 1


def test_course_style_spacing_reads_like_ordinary_text(trained_run: tuple[Path, object]) -> None:
    """With data.tidy_source_punctuation (the default), 'x .' and 'x.' are the same input;
    without it the sub-word model sees two different token sequences."""
    import dataclasses

    run, _ = trained_run
    translator = Translator.load(run)
    spaced, plain = "tuesday 10 march 1987 .", "tuesday 10 march 1987."
    a, b = translator.encode_sources([spaced, plain])
    assert a == b
    raw = dataclasses.replace(
        translator.config,
        data=dataclasses.replace(translator.config.data, tidy_source_punctuation=False),
    )
    untidy = Translator(translator.model, translator.src_tok, translator.tgt_tok, config=raw)
    c, d = untidy.encode_sources([spaced, plain])
    assert c != d and d == b


def test_attention_labels_follow_the_tidied_source(trained_run: tuple[Path, object]) -> None:
    """The heatmap labels come from the same encoding the model saw, also for course-style
    input whose spacing is tidied."""
    from attnkit.viz.samples import translation_sample

    run, _ = trained_run
    translator = Translator.load(run)
    (result,) = translator.translate(["tuesday 10 march 1987 ."], beam_size=1, need_weights=True)
    sample = translation_sample(translator, result)
    plain = translator.encode_sources(["tuesday 10 march 1987."])[0]
    assert sample.src_tokens[: len(plain)] == translator.src_tok.pieces(plain)


def test_model_config_is_checked_before_any_data_work(tmp_path, capsys) -> None:
    missing = tmp_path / "no-such-corpus.tsv"  # never read: the config fails first
    for bad, words in (
        ("model.num_encoder_layer=2", "unknown key"),
        ("model.d_model=oops", "model.d_model"),
        ("model.src_vocab_size=100", "set by the tokenizer"),
    ):
        code = main(["train", "--data", str(missing), "--run", str(tmp_path / "r"), "--set", bad])
        err = capsys.readouterr().err
        assert code == 2 and words in err and "no-such-corpus" not in err, err
    assert not (tmp_path / "r").exists()


def test_joint_alternatives_are_the_best_combinations() -> None:
    """Pruning after each sentence keeps exactly the n best sums (brute force over all)."""
    import itertools
    import random

    from attnkit.translation.translator import joint_alternatives

    rng = random.Random(0)
    for _ in range(50):
        lists = [
            [(f"s{i}a{j}", rng.uniform(-5, 0)) for j in range(rng.randint(1, 4))]
            for i in range(rng.randint(1, 4))
        ]
        lists = [sorted(alts, key=lambda a: -a[1]) for alts in lists]
        every = sorted(
            ((" ".join(t for t, _ in combo), sum(s for _, s in combo)))
            for combo in itertools.product(*lists)
        )
        every.sort(key=lambda a: -a[1])
        got = joint_alternatives(lists)
        limit = max(len(alts) for alts in lists)
        assert [round(s, 9) for _, s in got] == [round(s, 9) for _, s in every[:limit]]
        assert got[0][0] == " ".join(alts[0][0] for alts in lists)
    assert joint_alternatives([[("a", -1.0)], None]) is None  # greedy: no lists
    # a sentence with no output keeps the text's list (as its Translation: "", -inf)
    assert joint_alternatives([[("a", -1.0)], []]) == [("a ", float("-inf"))]


def test_n_best_of_a_text_of_several_sentences(
    trained_run: tuple[Path, object], capsys: pytest.CaptureFixture[str]
) -> None:
    """A line of two sentences keeps the n-best layout: its alternatives combine the
    sentences' own n-best lists (was: one line without a score)."""
    from attnkit.translation.translator import Translator

    run, _ = trained_run
    first, second = "Tuesday 10 march 1987.", "Le 3 août 1990."
    translator = Translator.load(run, device="cpu")
    alone = translator.translate([first, second], beam_size=3, n_best=2)
    (both,) = translator.translate([f"{first} {second}"], beam_size=3, n_best=2)
    assert len(both.parts) == 2 and len(both.alternatives) == 2
    assert both.alternatives[0][0] == both.text == f"{alone[0].text} {alone[1].text}"
    assert both.alternatives[0][1] == pytest.approx(alone[0].score + alone[1].score)
    argv = ["translate", "--run", str(run), "--beam", "3", "--n-best", "2"]
    assert main([*argv, f"{first} {second}", first]) == 0
    blocks = capsys.readouterr().out.split("\n\n")
    assert [len(b.strip().splitlines()) for b in blocks if b.strip()] == [2, 2]
    assert all("\t" in line for b in blocks for line in b.strip().splitlines())


def test_a_shared_vocabulary_run_on_a_tsv_resumes(tmp_path: Path, capsys) -> None:
    """The text preset (one BPE vocabulary, all embeddings tied) on the user's own TSV: its
    tokenizers come back as one (was: two equal copies, and every resume - and every rank
    but the first under --nproc - failed with "tie_embeddings='all' needs shared_vocab")."""
    from attnkit.data.dates import generate_dates
    from attnkit.translation.task import load_tokenizers
    from tests.translation.tiny import TINY_TRANSFORMER

    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("".join(f"{s}\t{t}\n" for s, t in generate_dates(300, seed=5)), "utf-8")
    run = tmp_path / "run"
    sets = [*TINY_TRANSFORMER, "data.vocab_size=120", "train.warmup_steps=1"]
    sets += ["train.time_budget=1e-9"]
    argv = ["train", "--data", str(tsv), "--run", str(run), "--no-progress"]
    assert main([*argv, *(x for item in sets for x in ("--set", item))]) == 0
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["data"]["shared_vocab"] and config["model"]["tie_embeddings"] == "all"
    src, tgt = load_tokenizers(run / "tokenizer")
    assert src is tgt
    capsys.readouterr()
    resume = ["train", "--run", str(run), "--resume", "--no-progress", "--epochs", "1"]
    # the TSV edited since (one pair's target changed): refused, not trained on silently
    original = tsv.read_text("utf-8")
    source, target = original.split("\n", 1)[0].split("\t")
    tsv.write_text(original.replace(f"{source}\t{target}", f"{source}\t{target[::-1]}", 1), "utf-8")
    assert main([*resume, "--set", "train.time_budget=null"]) == 2
    err = capsys.readouterr().err
    assert "the data changed since this checkpoint was saved" in err, err
    assert "training and" in err and "same size, other content" in err
    tsv.write_text(original, "utf-8")
    assert main([*resume, "--set", "train.time_budget=null"]) == 0, capsys.readouterr().err


def test_resuming_a_run_whose_time_budget_is_spent_says_so(tmp_path: Path, capsys, caplog) -> None:
    """(was: one more step and one more validation row on every such resume)"""
    from tests.translation.tiny import TINY_TRANSFORMER

    run = tmp_path / "run"
    sets = [*TINY_TRANSFORMER, "train.warmup_steps=1", "train.time_budget=1e-9"]
    argv = ["train", "--data", "dates", "--run", str(run), "--no-progress", "--samples", "0"]
    assert main([*argv, *(x for item in sets for x in ("--set", item))]) == 0
    rows = (run / "metrics.jsonl").read_text()
    capsys.readouterr()
    with caplog.at_level("INFO"):
        assert main(["train", "--run", str(run), "--resume", "--no-progress"]) == 2
    assert "resumed from" not in caplog.text  # refused before it says it resumed
    err = capsys.readouterr().err
    assert "nothing is left to train; resume with a larger --time-budget" in err, err
    assert err.count("\n") == 1 and (run / "metrics.jsonl").read_text() == rows

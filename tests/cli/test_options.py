"""Options shared by the subcommands: one definition, checked when the command line is parsed."""

from __future__ import annotations

import argparse
import sys

import pytest

from attnkit.cli import build_parser
from tests.pretrained.test_pretrained import needs_minilm, needs_tokenizers


def _commands_with(option: str) -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {
        name: p
        for name, p in sub.choices.items()
        if any(option in action.option_strings for action in p._actions)
    }


def test_every_device_option_is_the_shared_one() -> None:
    commands = _commands_with("--device")
    # training, inference, serving and figure commands all take --device
    assert {"train", "translate", "generate", "embed", "serve", "classify"} <= set(commands)
    for name, parser in commands.items():
        if name == "bench":  # the benchmark suite runs on cpu or cuda only (its own choices)
            continue
        action = next(a for a in parser._actions if "--device" in a.option_strings)
        assert "cuda:N" in action.help, name
        for good in ("auto", "cpu", "cuda", "cuda:1"):
            assert action.type(good) == good


@pytest.mark.parametrize("command", ["translate", "embed", "train", "generate"])
def test_a_bad_device_is_a_one_line_error_at_parse_time(command: str, capsys) -> None:
    parser = build_parser()
    argv = [command, "--device", "gpu"]
    if command in ("translate", "generate"):
        argv += ["--run", "somewhere"]
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(argv)
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "invalid device 'gpu'; use auto, cpu, cuda or cuda:N" in last


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--nproc", "0"], "argument --nproc: must be >= 1, got 0"),
        (["translate", "--run", "r", "--n-best", "0", "x"], "argument --n-best: must be >= 1"),
        (["generate", "--run", "r", "--top-p", "1.5"], "argument --top-p: must be in (0, 1]"),
        (["generate", "--run", "r", "--temperature", "-1"], "argument --temperature: must be >="),
        (["serve", "--run", "r", "--max-wait-ms", "-5"], "argument --max-wait-ms: must be >= 0"),
        (["serve", "--run", "r", "--port", "70000"], "argument --port: must be a port in 1-65535"),
        (["similar", "q", "--file", "f", "--top-k", "zero"], "expected a whole number >= 1"),
        (["train", "--lr", "1e-3"], "attnkit train: error: unrecognized arguments: --lr 1e-3"),
        (["train", "--time-budget", "0m"], "argument --time-budget: must be longer than 0"),
        (["train", "--eval-every", "0"], "argument --eval-every: must be >= 1, got 0"),
        (["finetune", "--lr", "-1"], "argument --lr: must be > 0, got -1"),
        (["train-lm", "--sample-tokens", "-3"], "argument --sample-tokens: must be >= 0"),
        (
            ["train", "--time-budget", "-10s"],
            "expected one argument (got '-10s': a value that starts with '-' is written "
            "--time-budget=-10s)",
        ),
        (["train", "--time-budget=-10s"], "argument --time-budget: invalid duration '-10s'"),
        (
            ["train", "--time-b", "-1m"],
            "(got '-1m': a value that starts with '-' is written --time-b=-1m)",
        ),
        (["train", "--time-budget"], "argument --time-budget: expected one argument (see"),
    ],
)
def test_bad_numbers_and_unknown_flags_are_one_line_errors_of_the_subcommand(
    argv: list[str], message: str, capsys
) -> None:
    from attnkit.cli import main

    assert main(argv) == 2  # the exit status, returned like any other error's
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "usage:" not in err  # one line, no usage block
    assert message in err and f"(see attnkit {argv[0]} --help)" in err


@needs_minilm
@needs_tokenizers
def test_os_errors_name_the_file_not_the_errno(tmp_path, capsys) -> None:
    from attnkit.cli import main

    a_file = tmp_path / "a-file.txt"
    a_file.write_text("not a folder\n")
    assert main(["embed", "hello", "--output", str(a_file / "out.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"attnkit embed: error: {a_file / 'out.json'}: Not a directory"


def test_help_and_version_return_status_zero(capsys) -> None:
    from attnkit.cli import main

    assert main(["--version"]) == 0
    assert main(["translate", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("attnkit ") and "--file FILE" in out


def _stored_run(folder) -> None:
    """A run folder whose config.json holds what the resume checks compare with."""
    from attnkit.training.runfolder import write_run_config

    folder.mkdir()
    write_run_config(
        folder,
        {
            "model_type": "transformer",
            "model": {"d_model": 32},
            "data": {"source": "dates", "batch_size": 64, "block_size": 128},
            "train": {"seed": 0, "max_tokens": 3000, "lr": 0.001},
        },
    )


@pytest.mark.parametrize(
    ("argv", "changed"),
    [
        (["train", "--data", "fra-eng"], "--data (the run has 'dates')"),
        (["train", "--model=bahdanau"], "--model (the run has 'transformer')"),
        (["train", "--max-tok", "100"], "--max-tokens (the run has 3000)"),  # abbreviated
        (["train-lm", "--block-size", "64"], "--block-size (the run has 128)"),
        (["train-vit", "--seed", "1"], "--seed (the run has 0)"),
        (["train", "--set", "model.d_model=64"], "--set model.d_model (the run has 32)"),
        (["train", "--set", "train.lr=0.1"], "--set train.lr (the run has 0.001)"),
        (["train", "--set", "train.lrr=0.1"], "--set train.lrr (the run has no such setting)"),
        (["train", "--valid", "v.tsv"], "--valid (the run has no such setting)"),
    ],
)
def test_resume_refuses_flags_that_would_change_the_run(
    argv: list[str], changed: str, tmp_path, capsys
) -> None:
    """Such a flag would be ignored: it is an error naming the run's value."""
    from attnkit.cli import main

    _stored_run(tmp_path / "run")
    assert main([*argv, "--run", str(tmp_path / "run"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"it cannot change {changed}; start a new run" in err and err.count("\n") == 1, err


def test_resume_takes_the_command_that_started_the_run(tmp_path, caplog) -> None:
    """`attnkit train --data dates --run R` + `--resume`: the run's own values pass, resumable
    settings change, and what cannot be compared (--config) is named in a warning."""
    from attnkit.cli import build_parser
    from attnkit.cli.options import resume_overrides

    run = tmp_path / "run"
    _stored_run(run)
    argv = ["train", "--data", "dates", "--model", "transformer", "--seed", "0", "--set"]
    argv += ["model.d_model=32", "--set", "train.lr=0.001", "--epochs", "9", "--config", "c.toml"]
    args = build_parser().parse_args([*argv, "--run", str(run), "--resume"])
    args.argv = argv
    fixed = {"data": "data.source", "model": "model_type"}
    with caplog.at_level("WARNING"):
        assert resume_overrides(args, run, fixed=fixed) == {"epochs": 9}
    assert "--config: not read again on --resume" in caplog.text
    # no stored run to compare with: nothing is refused here (the resume fails on its own)
    assert resume_overrides(args, tmp_path / "none", fixed=fixed)["epochs"] == 9


def test_a_resume_of_nothing_leaves_no_folder(tmp_path, capsys) -> None:
    from attnkit.cli import main

    assert main(["train", "--run", str(tmp_path / "run"), "--resume", "--epochs", "2"]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--data", "dates", "--set", "train.lr=-1"], "train.lr must be > 0, got -1"),
        (["train", "--data", "dates", "--set", "data.tokenizer=x"], "data.tokenizer must be one"),
        (["train-vit", "--set", "data.image_size=16"], "data.image_size applies to image folders"),
        (["generate", "--run", "r", "--stop", "", "x"], "--stop '': an empty stop string"),
    ],
)
def test_settings_are_named_as_the_user_writes_them(
    argv: list[str], message: str, tmp_path, capsys
) -> None:
    """``train.lr``, as in --set and config files, not the dataclass (``TrainConfig.lr``)."""
    from attnkit.cli import main

    if argv[0] != "generate":
        argv = [*argv, "--run", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Config." not in err and err.count("\n") == 1, err


@pytest.mark.parametrize("command", ["train", "train-lm", "train-vit"])
def test_a_run_folder_that_is_a_file_is_named(command: str, tmp_path, capsys) -> None:
    from attnkit.cli import main

    a_file = tmp_path / "a-file"
    a_file.write_text("not a run\n")
    argv = [command, "--run", str(a_file)] + (["--data", "x.txt"] if command == "train-lm" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"--run {a_file}: is a file; the run folder must be a folder" in err, err
    assert a_file.read_text() == "not a run\n"


def test_a_missing_optional_package_is_one_line_naming_the_extra(monkeypatch, capsys) -> None:
    """An ImportError from a command (an optional package not installed) is one line that
    names the extra to install, not a traceback."""
    import attnkit.cli.translate as translate_cli
    from attnkit.cli import main

    def needs_ctranslate2(args) -> int:
        import ctranslate2  # noqa: F401

        return 0

    monkeypatch.setitem(sys.modules, "ctranslate2", None)
    monkeypatch.setattr(translate_cli, "cmd_translate", needs_ctranslate2)
    assert main(["translate", "--run", "r", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("attnkit translate: error: ")
    assert "install it with pip install 'attnkit[export]'" in err

    def explained(args) -> int:  # attnkit's own message already says what to install
        raise ImportError("the ONNX export needs onnx; install it with pip install 'attnkit[x]'")

    monkeypatch.setattr(translate_cli, "cmd_translate", explained)
    assert main(["translate", "--run", "r", "x"]) == 2
    assert capsys.readouterr().err.count("pip install") == 1

    def broken(args) -> int:  # an import error inside attnkit is a bug: its traceback stays
        from attnkit.config import no_such_name  # type: ignore[attr-defined]  # noqa: F401

        return 0

    monkeypatch.setattr(translate_cli, "cmd_translate", broken)
    with pytest.raises(ImportError, match="no_such_name"):
        main(["translate", "--run", "r", "x"])

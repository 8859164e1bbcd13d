"""Options shared by the subcommands: one definition, checked when the command line is parsed."""

from __future__ import annotations

import argparse

import pytest

from attnkit.cli import build_parser


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

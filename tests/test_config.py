"""Config loading: unknown keys, overrides, config files, and --config through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnkit.config import (
    ConfigError,
    TrainConfig,
    TransformerConfig,
    apply_overrides,
    from_dict,
    merge_config_file,
    section,
)


def test_unknown_keys_and_bad_values_are_errors() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(TrainConfig, {"epochz": 3})
    with pytest.raises(ConfigError, match="num_heads"):
        TransformerConfig(src_vocab_size=10, tgt_vocab_size=10, d_model=30, num_heads=4)
    assert from_dict(TrainConfig, {"betas": [0.9, 0.99]}).betas == (0.9, 0.99)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("train.compile=maybe", r"train\.compile: expected true or false, got 'maybe'"),
        ("train.epochs=2.5", r"train\.epochs: expected int, got 2\.5"),
        ("train.lr=true", r"train\.lr: expected float, got True"),
        ("train.patience=three", r"train\.patience: expected int \| None, got 'three'"),
        ("data.lowercase=1", r"data\.lowercase: expected true or false, got 1"),
    ],
)
def test_values_of_the_wrong_type_are_errors(override: str, match: str) -> None:
    from attnkit.translation.config import RunConfig

    with pytest.raises(ConfigError, match=match):
        from_dict(RunConfig, apply_overrides({}, [override]))


def test_values_of_the_right_type_are_taken() -> None:
    from attnkit.translation.config import RunConfig

    cfg = from_dict(
        RunConfig,
        apply_overrides(
            {}, ["train.lr=1", "train.time_budget=none", "train.patience=2", "train.compile=true"]
        ),
    )
    assert (cfg.train.lr, cfg.train.time_budget, cfg.train.patience, cfg.train.compile) == (
        1,
        None,
        2,
        True,
    )


def test_overrides_parse_values() -> None:
    out = apply_overrides(
        {"train": {"lr": 1.0}},
        ["train.lr=0.5", "train.amp=false", "model.norm_first=true", "data.valid=none"],
    )
    assert out == {
        "train": {"lr": 0.5, "amp": False},
        "model": {"norm_first": True},
        "data": {"valid": None},
    }
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides({}, ["nonsense"])


def test_merge_config_file_toml_and_json(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('model_type = "bahdanau"\n[train]\nlr = 0.25\n', encoding="utf-8")
    base = {"train": {"lr": 1.0, "epochs": 3}}
    assert merge_config_file(base, toml) == {
        "train": {"lr": 0.25, "epochs": 3},
        "model_type": "bahdanau",
    }
    bad = tmp_path / "c.yaml"
    bad.write_text("x: 1", encoding="utf-8")
    with pytest.raises(ConfigError, match=".toml or .json"):
        merge_config_file({}, bad)
    with pytest.raises(ConfigError, match="not found"):
        merge_config_file({}, tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("list.json", "[1, 2]", "list.json: expected sections such as"),
        ("value.json", '{"model": [1, 2]}', "value.json: 'model' must be a table of settings"),
        ("value.toml", "model = 3\n", "value.toml: 'model' must be a table of settings"),
        ("table.toml", "[model_type]\na = 1\n", "table.toml: 'model_type' is a setting, not a"),
        ("latin1.toml", "x = 'caf\xe9'\n", "latin1.toml: not UTF-8 text"),
    ],
)
def test_config_files_of_the_wrong_shape_are_one_line_errors(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1"))
    base = {"model_type": "transformer", "model": {"d_model": 8}, "train": {"lr": 1.0}}
    with pytest.raises(ConfigError, match="^" + str(tmp_path)) as err:
        merge_config_file(base, path)
    assert message in str(err.value) and len(str(err.value).splitlines()) == 1


def test_a_section_is_a_table_whatever_its_source() -> None:
    with pytest.raises(ConfigError, match="'model' is a section; set one of its keys"):
        apply_overrides({"model": {"d_model": 8}}, ["model=3"])
    assert section({"model": {"d_model": 8}}, "model") == {"d_model": 8}
    assert section({}, "train") == {}
    with pytest.raises(ConfigError, match="section 'train' must be a table.*got int 3"):
        section({"train": 3}, "train")


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--data", "dates", "--set", "model=3"],
        ["train-lm", "--data", "x.txt", "--set", "train=[1]"],
        ["train-vit", "--set", "data=null"],
        ["train", "--data", "dates", "--set", "model_type=bahdanau"],
    ],
)
def test_sections_given_as_values_on_the_command_line_are_refused(
    argv: list[str], tmp_path: Path, capsys
) -> None:
    from attnkit.cli import main

    assert main([*argv, "--run", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "section" in err or "--model" in err, err
    assert not (tmp_path / "run" / "config.json").exists()


def test_cli_reads_config_file(tmp_path: Path) -> None:
    import argparse

    from attnkit.cli.translate import resolve_run_config

    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text("[model]\nnum_encoder_layers = 1\n[train]\nlr = 0.004\n", encoding="utf-8")
    args = argparse.Namespace(
        data="dates",
        model="transformer",
        valid=None,
        config=str(cfg_file),
        set=["train.epochs=2"],
        epochs=None,
        time_budget=None,
        max_tokens=None,
        device=None,
        seed=None,
    )
    cfg = resolve_run_config(args)
    assert cfg.model["num_encoder_layers"] == 1 and cfg.train.lr == 0.004
    assert cfg.train.epochs == 2


@pytest.mark.parametrize(
    ("command", "text", "extra", "named"),
    [
        ("train", "[train]\nlr = -1\n", [], True),
        ("train-lm", "[train]\nlr = -1\n", ["--data", "x.txt"], True),
        ("train-vit", "[data]\nbatch_size = 0\n", [], True),
        ("train", "[train]\nlrr = 1\n", [], True),  # the section's unknown key
        ("train", "[train]\nlr = 0.5\n", ["--set", "train.lr=-2"], False),  # --set's value
    ],
)
def test_config_file_values_are_refused_naming_the_file(
    tmp_path: Path, capsys, command: str, text: str, extra: list[str], named: bool
) -> None:
    from attnkit.cli import main

    cfg = tmp_path / "run.toml"
    cfg.write_text(text, encoding="utf-8")
    argv = [command, "--run", str(tmp_path / "run"), "--config", str(cfg), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and (f"error: {cfg}: " in err) == named, err

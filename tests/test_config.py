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

"""A tiny character-level language model shared by the tests of tests/lm (trained once)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.lm.lm_tiny import TEXT, tiny_config


@pytest.fixture(scope="session")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text") / "sonnet.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def lm_run(tmp_path_factory: pytest.TempPathFactory, text_file: Path) -> tuple[Path, Any]:
    """A trained tiny run folder and its :class:`TrainResult`."""
    from attnkit.lm.run import train_lm

    run = tmp_path_factory.mktemp("runs") / "sonnet"
    torch.manual_seed(0)
    result, _ = train_lm(tiny_config(text_file, train={"epochs": 8}), run)
    return run, result

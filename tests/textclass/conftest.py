"""A tiny BERT checkpoint folder, a synthetic sentiment task and runs fine-tuned on it, shared by
the tests of tests/textclass (built once per session)."""

from __future__ import annotations

import importlib.util
import io
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch

from tests.textclass.textclass_tiny import tiny_argv, write_sentiment, write_tiny_bert

if importlib.util.find_spec("tokenizers") is None:  # pragma: no cover
    pytest.skip("`tokenizers` not installed (pip install tokenizers)", allow_module_level=True)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert", sentence_encoder=True)


@pytest.fixture(scope="session")
def sentiment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("sentiment")
    return (
        write_sentiment(folder / "train.tsv", 400, seed=1),
        write_sentiment(folder / "dev.tsv", 120, seed=2),
    )


def run_cli(argv: list[str]) -> tuple[int, str]:
    from attnkit.cli import main

    out = io.StringIO()
    with redirect_stdout(out):
        status = main(argv)
    return status, out.getvalue()


@pytest.fixture(scope="session")
def classifier_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path, sentiment: tuple[Path, Path]
) -> tuple[Path, str]:
    """A tiny BERT fine-tuned on the sentiment task through ``attnkit finetune``."""
    run = tmp_path_factory.mktemp("runs") / "sentiment"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        status, out = run_cli(tiny_argv(tiny_bert, *sentiment, run, "--epochs", "6"))
    finally:
        torch.set_num_threads(threads)
    assert status == 0, out
    return run, out

"""Test-wide settings.

Tests run with one intra-op thread: the models are tiny, so threads buy little, and when several
processes share the CPU (pytest-xdist workers, a busy CI box) OpenMP's spinning threads can slow
each other down many times over.
"""

from dataclasses import replace

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def dates_run(tmp_path_factory: pytest.TempPathFactory):
    """A tiny Transformer trained on the dates corpus (about 20 s on one core), shared by the
    export, quantization, serving and deployment-benchmark tests.

    Returns ``(run folder, held-out sources, their references)``: the run's 200 distinct
    validation sources, never trained on.
    """
    from attnkit.translation.run import train_translator
    from attnkit.translation.task import prepare_data
    from tests.translation.test_translation import tiny_config

    run = tmp_path_factory.mktemp("deploy") / "dates"
    cfg = tiny_config(epochs=12)
    cfg = replace(cfg, data=replace(cfg.data, valid_limit=200))
    torch.manual_seed(0)
    train_translator(cfg, run)
    data = prepare_data(cfg.data, run, cfg.data.max_len)
    return run, [s for s, _ in data.valid_refs], [r for _, r in data.valid_refs]

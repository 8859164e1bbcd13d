"""The tiny text and run configuration of the tests of tests/lm."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VERSE = (
    "Shall I compare thee to a summer's day?\n"
    "Thou art more lovely and more temperate:\n"
    "Rough winds do shake the darling buds of May,\n"
    "And summer's lease hath all too short a date.\n"
)
#: A text that repeats, so that a tiny model learns it in seconds.
TEXT = VERSE * 40

#: Sections of a tiny run (merged over the char-small preset by ``tiny_config``).
TINY: dict[str, dict[str, Any]] = {
    "model": {"d_model": 32, "num_heads": 2, "ffn_hidden": 64, "num_layers": 2, "dropout": 0.0},
    "data": {"block_size": 32, "batch_size": 8},
    "train": {
        "epochs": 3,
        "time_budget": None,
        "schedule": "cosine",
        "schedule_horizon": "steps",
        "lr": 1e-2,
        "warmup_steps": 5,
        "log_every": 5,
        "device": "cpu",
        "amp": False,
    },
}


def tiny_config(source: str | Path, **sections: dict[str, Any]) -> Any:
    """The char-small preset made tiny (``TINY``), reading ``source``, with ``sections`` merged."""
    from attnkit.lm.config import lm_config_from_dict, lm_preset

    cfg = lm_preset("char-small")
    for name, values in TINY.items():
        cfg[name].update(values)
    for name, values in sections.items():
        cfg[name].update(values)
    cfg["data"]["source"] = str(source)
    return lm_config_from_dict(cfg)


def tiny_argv(data: str | Path, run: str | Path) -> list[str]:
    """``attnkit train-lm`` options of the same tiny run."""
    argv = ["train-lm", "--data", str(data), "--run", str(run), "--no-progress"]
    for section, values in TINY.items():
        for key, value in values.items():
            shown = "null" if value is None else json.dumps(value)
            argv += ["--set", f"{section}.{key}={shown}"]
    return argv + ["--sample-tokens", "0"]

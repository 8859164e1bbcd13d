"""The throughput figures of the language-model benchmark: nanoGPT's log and attnkit's metrics
rows are read the same way (training steps alone, estimates and validations left out)."""

from __future__ import annotations

import math

import pytest

from attnkit.bench.nanogpt import parse_nanogpt_log, training_rate

LOG = """\
step 0: train loss 4.2000, val loss 4.1900
iter 0: loss 4.2100, time 900.00ms, mfu -100.00%
iter 1: loss 4.0000, time 30.00ms, mfu 1.00%
iter 2: loss 3.9000, time 30.00ms, mfu 1.00%
step 3: train loss 3.5000, val loss 3.6000
iter 3: loss 3.4000, time 530.00ms, mfu 1.00%
iter 4: loss 3.3000, time 10.00ms, mfu 1.00%
"""


def test_nanogpt_log_leaves_out_set_up_and_estimates() -> None:
    train_s, iters, tokens_per_s, val = parse_nanogpt_log(LOG, tokens_per_iter=768)
    assert iters == 5
    assert train_s == pytest.approx(0.030 + 0.030 + 0.530 + 0.010)  # iteration 0 left out
    # iterations 1, 2 and 4 are training steps alone; 3 carried an estimate
    assert tokens_per_s == pytest.approx(3 * 768 / 0.070)
    assert val == 3.6
    assert math.isnan(parse_nanogpt_log("", 768)[3])


def test_training_rate_skips_the_window_that_held_a_validation() -> None:
    rows = [
        {"split": "train", "step": 25, "tokens_per_s": 1000.0},  # 25 steps in 19.2 s
        {"split": "train", "step": 50, "tokens_per_s": 2000.0},  # 25 steps in 9.6 s
        {"split": "valid", "step": 50, "loss": 2.0},
        {"split": "train", "step": 75, "tokens_per_s": 10.0},  # held the validation: left out
        {"split": "train", "step": 90, "tokens_per_s": 1500.0},  # 15 steps in 7.68 s
    ]
    tokens = (25 + 25 + 15) * 768
    assert training_rate(rows, 768) == pytest.approx(tokens / (19.2 + 9.6 + 7.68))

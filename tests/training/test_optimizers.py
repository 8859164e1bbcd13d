"""training.optimizers.adamw: the fused kernel where it exists, the same updates as PyTorch's
default (for-each) AdamW."""

from __future__ import annotations

import torch
from torch import nn

from attnkit.training.optimizers import adamw


def _run(make_opt, steps: int = 4) -> torch.Tensor:  # noqa: ANN001
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.Linear(5, 3))
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    rest = [p for n, p in model.named_parameters() if not n.endswith("weight")]
    opt = make_opt([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}])
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_fused_on_cpu_and_same_updates_as_default_adamw() -> None:
    ours = _run(lambda groups: adamw(groups, "cpu", lr=1e-2, betas=(0.8, 0.99)))
    ref = _run(lambda groups: torch.optim.AdamW(groups, lr=1e-2, betas=(0.8, 0.99), foreach=False))
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    opt = adamw(nn.Linear(2, 2).parameters(), torch.device("cpu"), lr=1e-3)
    assert opt.defaults["fused"] is True


def test_falls_back_where_no_fused_kernel() -> None:
    assert adamw(nn.Linear(2, 2).parameters(), "meta", lr=1e-3).defaults["fused"] is None
    ints = [nn.Parameter(torch.zeros(2, dtype=torch.float64)), torch.zeros(2, dtype=torch.long)]
    assert adamw(ints[:1], "cpu", lr=1e-3).defaults["fused"] is True
    assert adamw(ints[1:], "cpu", lr=1e-3).defaults["fused"] is None


def test_trainer_builds_the_fused_optimizer() -> None:
    from attnkit.training.trainer import Trainer
    from tests.training.test_trainer import Regression, _config

    trainer = Trainer(nn.Linear(3, 1), Regression(n=4), _config(epochs=1))
    assert trainer.optimizer.defaults["fused"] is True
    assert [g["weight_decay"] for g in trainer.optimizer.param_groups] == [0.01, 0.0]

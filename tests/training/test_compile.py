"""``TrainConfig.compile``: the trainer wraps the model with ``torch.compile`` and training gives
the same losses as eager mode.

The fast test swaps the backend for ``eager`` (graph capture by TorchDynamo, graphs run by
PyTorch as they are, no code generation): it checks the flag's plumbing and that the model traces
without changing the numbers, in a few seconds. The full Inductor test generates and compiles
C++ and is marked ``slow``: it runs with ``pytest -m slow`` or ATTNKIT_RUN_SLOW=1 (and is skipped
without a C++ compiler).
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from attnkit.config import TrainConfig, TransformerConfig
from attnkit.models.transformer import Transformer
from attnkit.training.losses import masked_cross_entropy
from attnkit.training.trainer import Trainer

PAD = 0


class FixedBatches:
    """A task with two fixed padded batches per epoch (the trainer's Task protocol)."""

    metric, mode = "loss", "min"

    def __init__(self, vocab: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.batches = []
        for b, s, t in ((4, 7, 6), (4, 7, 6)):  # one shape: a single compilation
            src = torch.randint(4, vocab, (b, s), generator=g)
            tgt = torch.randint(4, vocab, (b, t + 1), generator=g)
            src[0, -2:] = PAD
            tgt[1, -3:] = PAD
            self.batches.append((src, src != PAD, tgt[:, :-1], tgt[:, 1:]))

    def train_batches(self, epoch: int) -> Any:
        return iter(self.batches)

    def batches_per_epoch(self) -> int:
        return len(self.batches)

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, int]:
        src, src_mask, tgt_in, tgt_out = batch
        return masked_cross_entropy(
            model(src, tgt_in, src_mask), tgt_out, pad_id=PAD, label_smoothing=0.1
        )

    def tokens(self, batch: Any) -> int:
        return int((batch[3] != PAD).sum())

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        total, count = 0.0, 0
        for batch in self.batches:
            loss, n = self.loss(model, batch)
            total, count = total + float(loss), count + n
        return {"loss": total / count}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def train_losses(compile: bool) -> tuple[list[float], Trainer]:
    cfg = TransformerConfig(
        src_vocab_size=40,
        tgt_vocab_size=40,
        d_model=32,
        num_heads=4,
        ffn_hidden=64,
        num_encoder_layers=1,
        num_decoder_layers=1,
        dropout=0.0,
        norm_first=True,
        max_len=16,
    )
    torch.manual_seed(0)
    model = Transformer(cfg)
    train = TrainConfig(
        epochs=2,
        lr=1e-2,
        warmup_steps=0,
        schedule="constant",
        log_every=1,
        device="cpu",
        amp=False,
        compile=compile,
    )
    trainer = Trainer(model, FixedBatches(40), train)
    trainer.fit()
    return [row["loss"] for row in trainer.history if row["split"] == "train"], trainer


def test_compile_flag_wraps_model_and_matches_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    real_compile = torch.compile
    calls: list[Any] = []

    def compile_eager(model: nn.Module, **kwargs: Any) -> Any:
        calls.append(model)
        return real_compile(model, backend="eager", **kwargs)

    monkeypatch.setattr(torch, "compile", compile_eager)
    torch._dynamo.reset()
    eager, eager_trainer = train_losses(compile=False)
    assert not calls and eager_trainer.train_model is eager_trainer.model
    compiled, trainer = train_losses(compile=True)
    assert len(calls) == 1 and calls[0] is trainer.model
    assert isinstance(trainer.train_model, torch._dynamo.eval_frame.OptimizedModule)
    assert len(compiled) == len(eager) == 4
    assert eager[-1] < eager[0]  # it trains, so later losses depend on every earlier step
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)


def _slow_requested(config: pytest.Config) -> bool:
    return "slow" in (config.getoption("-m") or "") or os.environ.get("ATTNKIT_RUN_SLOW") == "1"


@pytest.mark.slow
def test_inductor_compile_matches_eager(request: pytest.FixtureRequest) -> None:
    if not _slow_requested(request.config):
        pytest.skip(
            "Inductor compilation takes about a minute on CPU; run with -m slow or "
            "ATTNKIT_RUN_SLOW=1"
        )
    if shutil.which(os.environ.get("CXX", "g++")) is None and shutil.which("c++") is None:
        pytest.skip("torch.compile (Inductor) needs a C++ compiler on CPU; none found")
    torch._dynamo.reset()
    eager, _ = train_losses(compile=False)
    compiled, trainer = train_losses(compile=True)
    assert isinstance(trainer.train_model, torch._dynamo.eval_frame.OptimizedModule)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)


class FixedBatchesWithObjective(FixedBatches):
    """The same task differentiated through the fused objective, as TranslationTask is."""

    def objective(self, model: nn.Module) -> nn.Module:
        from attnkit.training.losses import Seq2SeqObjective

        return Seq2SeqObjective(model, pad_id=PAD, label_smoothing=0.1)

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, int]:
        src, src_mask, tgt_in, tgt_out = batch
        if hasattr(model, "fused") or hasattr(model, "_orig_mod"):
            return model(src, tgt_in, src_mask, tgt_out)
        return super().loss(model, batch)


def test_compiled_objective_matches_eager_logits_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.compile of the fused loss objective (Dynamo capture) gives the losses of the
    plain logits path run eagerly."""
    real_compile = torch.compile
    monkeypatch.setattr(
        torch, "compile", lambda model, **kw: real_compile(model, backend="eager", **kw)
    )
    torch._dynamo.reset()
    eager, _ = train_losses(compile=False)
    cfg = TransformerConfig(
        src_vocab_size=40,
        tgt_vocab_size=40,
        d_model=32,
        num_heads=4,
        ffn_hidden=64,
        num_encoder_layers=1,
        num_decoder_layers=1,
        dropout=0.0,
        norm_first=True,
        max_len=16,
    )
    torch.manual_seed(0)
    train = TrainConfig(
        epochs=2,
        lr=1e-2,
        warmup_steps=0,
        schedule="constant",
        log_every=1,
        device="cpu",
        amp=False,
        compile=True,
    )
    trainer = Trainer(Transformer(cfg), FixedBatchesWithObjective(40), train)
    trainer.fit()
    fused = [row["loss"] for row in trainer.history if row["split"] == "train"]
    assert isinstance(trainer.train_model, torch._dynamo.eval_frame.OptimizedModule)
    assert fused == pytest.approx(eager, rel=1e-5)

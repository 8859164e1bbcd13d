"""The fine-tuned model: pooling against hand computations, padding invariance, layer-wise
learning rates and frozen layers as the optimizer sees them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnkit.config import DecoderLMConfig, EncoderConfig, TrainConfig
from attnkit.models.decoder_lm import DecoderLM
from attnkit.models.encoder import EncoderModel
from attnkit.textclass.data import pad_batch
from attnkit.textclass.model import (
    BertBackbone,
    LMBackbone,
    TextClassificationModel,
    pool_hidden,
)
from attnkit.textclass.task import TextClassTask, depth_param_groups, freeze_lower_layers
from attnkit.training.trainer import Trainer

LENGTHS = [5, 2, 3]


def bert_model(layers: int = 3, pooling: str = "mean") -> TextClassificationModel:
    torch.manual_seed(0)
    config = EncoderConfig(
        vocab_size=30, d_model=8, num_heads=2, ffn_hidden=16, num_layers=layers, max_len=16
    )
    return TextClassificationModel(BertBackbone(EncoderModel(config)), 3, pooling=pooling)


def lm_model(pooling: str = "last") -> TextClassificationModel:
    torch.manual_seed(0)
    config = DecoderLMConfig(
        vocab_size=30, d_model=8, num_heads=2, ffn_hidden=16, num_layers=2, max_len=16
    )
    return TextClassificationModel(LMBackbone(DecoderLM(config)), 2, pooling=pooling)


def test_pooling_modes_match_hand_computations() -> None:
    torch.manual_seed(1)
    hidden = torch.randn(3, 5, 4, dtype=torch.float64)
    mask = torch.tensor([[i < n for i in range(5)] for n in LENGTHS])
    for b, n in enumerate(LENGTHS):
        mean = sum(hidden[b, i] for i in range(n)) / n
        torch.testing.assert_close(pool_hidden(hidden, mask, "mean")[b], mean)
        torch.testing.assert_close(pool_hidden(hidden, mask, "cls")[b], hidden[b, 0])
        torch.testing.assert_close(pool_hidden(hidden, mask, "last")[b], hidden[b, n - 1])
    with pytest.raises(ValueError, match="pooling"):
        pool_hidden(hidden, mask, "max")


@pytest.mark.parametrize(
    ("make", "pooling"),
    [(bert_model, "mean"), (bert_model, "cls"), (lm_model, "last"), (lm_model, "mean")],
)
def test_pooled_vector_does_not_depend_on_padding(make, pooling) -> None:
    """A padded batch pools each text as the text alone (the BERT backbone masks padded keys;
    the causal LM never reads a later pad)."""
    model = make(pooling=pooling).eval()
    seqs = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    ids, mask = pad_batch(seqs, pad_id=0)
    with torch.no_grad():
        batched = model.pooled(ids, mask)
        for b, seq in enumerate(seqs):
            alone = model.pooled(torch.tensor([seq]), torch.ones(1, len(seq), dtype=torch.bool))
            torch.testing.assert_close(batched[b], alone[0], atol=1e-6, rtol=1e-5)
            hidden, _ = model.backbone(
                torch.tensor([seq]), torch.ones(1, len(seq), dtype=torch.bool)
            )
            by_hand = {"mean": hidden[0].mean(0), "cls": hidden[0, 0], "last": hidden[0, -1]}
            torch.testing.assert_close(batched[b], by_hand[pooling], atol=1e-6, rtol=1e-5)
        logits = model(ids, mask)
        torch.testing.assert_close(logits, model.head(batched))  # dropout is off in eval


def expected_rate(name: str, lr: float, decay: float, layers: int) -> float:
    """The lr of a parameter of the BERT model by its name: embeddings at depth 0, layer i at
    i + 1, the head at layers + 1; rate = lr * decay ** (layers + 1 - depth)."""
    if name.startswith("head."):
        depth = layers + 1
    elif name.startswith("backbone.encoder.embeddings."):
        depth = 0
    else:
        depth = int(name.split(".")[3]) + 1  # backbone.encoder.layers.<i>.
    return lr * decay ** (layers + 1 - depth)


def group_of(groups: list[dict], param: torch.Tensor) -> dict | None:
    found = [g for g in groups if any(p is param for p in g["params"])]
    assert len(found) <= 1
    return found[0] if found else None


def test_layer_wise_learning_rates_and_weight_decay() -> None:
    model = bert_model(layers=3)
    linear_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    groups = depth_param_groups(model, lr=1.0, weight_decay=0.1, layer_lr_decay=0.5)
    assert groups[0]["lr"] == 1.0  # the head's group comes first (its lr is the one logged)
    for name, param in model.named_parameters():
        group = group_of(groups, param)
        assert group is not None, name
        assert group["lr"] == pytest.approx(expected_rate(name, 1.0, 0.5, 3)), name
        assert group["weight_decay"] == (0.1 if id(param) in linear_weights else 0.0), name
    rates = sorted({g["lr"] for g in groups})
    assert rates == pytest.approx([0.5**k for k in range(4, -1, -1)])


def test_trainer_builds_the_optimizer_from_the_task_groups() -> None:
    model = bert_model(layers=2)
    freeze_lower_layers(model, 1)
    seqs = [[5, 6, 7], [8, 9], [10, 11, 12, 13]] * 4
    targets = torch.tensor([0, 1, 2] * 4)
    task = TextClassTask(
        seqs,
        targets,
        seqs,
        targets,
        problem="classification",
        pad_id=0,
        batch_size=4,
        lr=0.01,
        layer_lr_decay=0.8,
    )
    config = TrainConfig(lr=0.01, schedule="constant", warmup_steps=0, device="cpu", epochs=1)
    trainer = Trainer(model, task, config)
    groups = trainer.optimizer.param_groups
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(".embeddings." in n or ".layers.0." in n for n in trainable)
    in_groups = {id(p) for g in groups for p in g["params"]}
    for name, param in model.named_parameters():
        assert (id(param) in in_groups) == (name in trainable), name
        if name in trainable:
            group = group_of(groups, param)
            assert group["lr"] == pytest.approx(expected_rate(name, 0.01, 0.8, 2)), name
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.fit()
    for name, param in model.named_parameters():
        changed = not torch.equal(before[name], param.detach())
        assert changed == (name in trainable), name


def test_freezing_checks_the_layer_count_and_freezes_from_the_bottom() -> None:
    model = bert_model(layers=3)
    with pytest.raises(ValueError, match="freeze_layers"):
        freeze_lower_layers(model, 4)
    freeze_lower_layers(model, 3)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.named_parameters() if n.startswith("backbone.")}
    lm = lm_model()
    freeze_lower_layers(lm, 1)
    trainable = {n for n, p in lm.named_parameters() if p.requires_grad}
    assert trainable == {
        n
        for n, _ in lm.named_parameters()
        if n.startswith(("head.", "backbone.lm.blocks.1.", "backbone.lm.final_norm."))
    }

"""Vision Transformer: shapes, patch/position order, a PyTorch-built reference, interpolation, the
published ViT-B/16 parameter count, input errors, attention rollout, and learning the digits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnkit.config import TrainConfig, ViTConfig
from attnkit.data.images import load_digits_dataset
from attnkit.models.vit import VisionTransformer, ViT, attention_rollout
from attnkit.training.trainer import Trainer
from attnkit.vision.task import ClassificationTask

KINDS = ("learned1d", "learned2d", "sincos2d")


def small(**overrides) -> ViTConfig:
    base = dict(
        image_size=8,
        patch_size=2,
        in_channels=3,
        num_classes=5,
        d_model=16,
        num_layers=2,
        num_heads=2,
        ffn_hidden=24,
        dropout=0.0,
    )
    base.update(overrides)
    return ViTConfig(**base)


def tokens_after_positions(model: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """The (B, 1 + N, D) sequence entering the first block (captured with a hook)."""
    seen = {}
    handle = model.pos_drop.register_forward_hook(lambda m, i, o: seen.setdefault("x", o))
    model(images)
    handle.remove()
    return seen["x"]


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_shapes_for_every_position_kind_and_pool(kind, pool):
    torch.manual_seed(0)
    model = ViT(small(pos_embedding=kind, pool=pool)).eval()
    images = torch.rand(3, 3, 8, 8)
    logits, weights = model(images)
    assert logits.shape == (3, 5) and weights is None
    logits_w, weights = model(images, need_weights=True)
    assert len(weights) == 2
    assert all(w.shape == (3, 2, 17, 17) for w in weights)
    # the math path (weights requested) and the fused path agree
    torch.testing.assert_close(logits_w, logits, atol=1e-5, rtol=1e-5)
    for w in weights:
        torch.testing.assert_close(w.sum(-1), torch.ones(3, 2, 17))


def test_mean_pool_averages_patch_tokens_and_cls_pool_takes_token_zero():
    torch.manual_seed(0)
    tokens = torch.randn(2, 5, 16)
    assert torch.equal(ViT(small(pool="cls")).pool(tokens), tokens[:, 0])
    torch.testing.assert_close(ViT(small(pool="mean")).pool(tokens), tokens[:, 1:].sum(1) / 4)


# ---------------------------------------------------------------- patch and position order


@pytest.mark.parametrize("kind", ["learned2d", "sincos2d"])
def test_2d_embedding_at_row_col_is_added_to_patch_at_row_col(kind):
    torch.manual_seed(0)
    cfg = small(image_size=12, patch_size=3, d_model=8, pos_embedding=kind)  # 4 x 4 grid
    model = ViT(cfg).eval()
    gh = gw = 4
    with torch.no_grad():
        model.patch_embed.proj.weight.zero_()
        model.patch_embed.proj.bias.zero_()
        if kind == "learned2d":  # a distinct, recognisable vector per (row, col)
            rows = torch.arange(gh, dtype=torch.float32)[:, None, None]
            cols = torch.arange(gw, dtype=torch.float32)[None, :, None]
            model.pos_grid.weight.copy_(100 * rows + cols + torch.arange(8) / 10)
        cls_token, cls_pos = model.cls_token[0, 0].clone(), model.cls_pos.clone()
    x = tokens_after_positions(model, torch.rand(2, 3, 12, 12))  # (2, 17, 8)
    torch.testing.assert_close(x[:, 0], (cls_token + cls_pos).expand(2, 8))
    quarter = 2  # dim / 4
    omega = [10000.0 ** (-k / quarter) for k in range(quarter)]
    for r in range(gh):
        for c in range(gw):
            if kind == "learned2d":
                expected = 100 * r + c + torch.arange(8) / 10
            else:  # MAE layout: [sin(c w), cos(c w), sin(r w), cos(r w)], written out here
                expected = torch.tensor(
                    [math.sin(c * w) for w in omega]
                    + [math.cos(c * w) for w in omega]
                    + [math.sin(r * w) for w in omega]
                    + [math.cos(r * w) for w in omega]
                )
            torch.testing.assert_close(x[:, 1 + r * gw + c], expected.float().expand(2, 8))


def test_patch_at_row_col_becomes_token_one_plus_row_times_width_plus_col():
    cfg = small(image_size=8, patch_size=2, in_channels=1, d_model=4)  # 4 x 4 grid
    model = ViT(cfg).eval()
    with torch.no_grad():
        model.patch_embed.proj.weight.fill_(1.0)  # every feature = sum of the patch's pixels
        model.patch_embed.proj.bias.zero_()
        model.pos_embed.zero_()
    image = torch.zeros(1, 1, 8, 8)
    for r in range(4):
        for c in range(4):
            image[0, 0, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2] = 10 * r + c  # patch value
    x = tokens_after_positions(model, image)
    for r in range(4):
        for c in range(4):
            torch.testing.assert_close(x[0, 1 + r * 4 + c], torch.full((4,), 4.0 * (10 * r + c)))


# ---------------------------------------------------------------- reference built from PyTorch


def test_matches_reference_built_from_pytorch_modules():
    """Patches cut by reshaping (no convolution), nn.TransformerEncoderLayer blocks."""
    torch.manual_seed(0)
    cfg = small(
        image_size=8,
        patch_size=4,
        in_channels=3,
        d_model=16,
        num_layers=2,
        num_heads=4,
        ffn_hidden=32,
        num_classes=7,
    )
    model = ViT(cfg).double().eval()
    layers = []
    for block in model.blocks:
        layer = nn.TransformerEncoderLayer(
            16,
            4,
            32,
            dropout=0.0,
            activation="gelu",
            layer_norm_eps=1e-6,
            batch_first=True,
            norm_first=True,
        ).double()
        with torch.no_grad():
            layer.self_attn.in_proj_weight.copy_(block.self_attn.in_proj.weight)
            layer.self_attn.in_proj_bias.copy_(block.self_attn.in_proj.bias)
            layer.self_attn.out_proj.weight.copy_(block.self_attn.out_proj.weight)
            layer.self_attn.out_proj.bias.copy_(block.self_attn.out_proj.bias)
            for mine, theirs in (
                (block.ffn.dense1, layer.linear1),
                (block.ffn.dense2, layer.linear2),
                (block.attn_res.norm, layer.norm1),
                (block.ffn_res.norm, layer.norm2),
            ):
                theirs.weight.copy_(mine.weight)
                theirs.bias.copy_(mine.bias)
        layers.append(layer.eval())
    images = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    b, p = 2, 4
    patches = images.reshape(b, 3, 2, p, 2, p).permute(0, 2, 4, 1, 3, 5).reshape(b, 4, 3 * p * p)
    w = model.patch_embed.proj.weight.reshape(16, -1)
    x = patches @ w.T + model.patch_embed.proj.bias
    x = torch.cat([model.cls_token.expand(b, 1, 16), x], dim=1) + model.pos_embed
    for layer in layers:
        x = layer(x)
    x = F.layer_norm(x, (16,), model.norm.weight, model.norm.bias, eps=1e-6)
    expected = x[:, 0] @ model.head.weight.T + model.head.bias
    with torch.no_grad():
        logits, _ = model(images)
    torch.testing.assert_close(logits, expected.detach(), atol=1e-10, rtol=1e-10)


# ---------------------------------------------------------------- parameter count


def test_vit_b16_parameter_count_matches_timm():
    cfg = ViTConfig(
        image_size=224,
        patch_size=16,
        in_channels=3,
        num_classes=1000,
        d_model=768,
        num_layers=12,
        num_heads=12,
        ffn_hidden=3072,
        pos_embedding="learned1d",
        pool="cls",
    )
    with torch.device("meta"):
        model = ViT(cfg)
    assert sum(p.numel() for p in model.parameters()) == 86_567_656
    with torch.device("meta"):  # the fixed table is no parameter: 196 rows of 768 fewer
        fixed = ViT(ViTConfig(**{**cfg.__dict__, "pos_embedding": "sincos2d"}))
    assert sum(p.numel() for p in fixed.parameters()) == 86_567_656 - 196 * 768


# ---------------------------------------------------------------- resizing positions


@pytest.mark.parametrize("kind", KINDS)
def test_resize_to_same_size_is_identity(kind):
    torch.manual_seed(0)
    model = ViT(small(pos_embedding=kind)).eval()
    images = torch.rand(2, 3, 8, 8)
    before_table = model.position_embeddings().detach().clone()
    before, _ = model(images)
    model.resize_positions(8)
    assert torch.equal(model.position_embeddings(), before_table)
    assert torch.equal(model(images)[0], before)


@pytest.mark.parametrize("kind", KINDS)
def test_resize_to_new_size_gives_new_token_count_and_forward_works(kind):
    torch.manual_seed(0)
    model = ViT(small(pos_embedding=kind))
    model.resize_positions(12)  # grid 4x4 -> 6x6
    assert model.config.image_size == 12 and model.grid_size == (6, 6)
    assert model.position_embeddings().shape == (37, 16)
    logits, weights = model(torch.rand(2, 3, 12, 12), need_weights=True)
    assert logits.shape == (2, 5) and weights[0].shape == (2, 2, 37, 37)
    logits.sum().backward()  # the resized table is trainable (learned kinds)
    with pytest.raises(ValueError, match="resize_positions"):
        model(torch.rand(2, 3, 8, 8))


def test_learned1d_resize_treats_patch_rows_as_a_grid_and_keeps_class_row():
    model = ViT(small(pos_embedding="learned1d"))  # 4 x 4 grid
    with torch.no_grad():
        col_only = torch.arange(4.0).repeat(4)[:, None] * torch.ones(16)  # (16, D): depends on col
        model.pos_embed[1:] = col_only
    cls_row = model.pos_embed[0].detach().clone()
    model.resize_positions(16)  # 8 x 8 grid
    table = model.position_embeddings().detach()
    assert torch.equal(table[0], cls_row)
    grid = table[1:].reshape(8, 8, 16)
    # a grid-wise resize keeps "depends on the column only"; a 1-D resize of the flat rows would not
    torch.testing.assert_close(grid, grid[:1].expand(8, 8, 16))
    assert grid[0, 0, 0] < grid[0, 7, 0]


def test_learned1d_and_learned2d_resize_the_same_grid_identically():
    torch.manual_seed(0)
    one, two = ViT(small(pos_embedding="learned1d")), ViT(small(pos_embedding="learned2d"))
    with torch.no_grad():
        two.pos_grid.weight.copy_(one.pos_embed[1:].reshape(4, 4, 16))
    one.resize_positions(6)
    two.resize_positions(6)
    torch.testing.assert_close(one.position_embeddings()[1:], two.position_embeddings()[1:])


def test_sincos_resize_rebuilds_the_table_of_the_new_grid():
    model = ViT(small(pos_embedding="sincos2d"))
    model.resize_positions(12)
    fresh = ViT(small(pos_embedding="sincos2d", image_size=12))
    torch.testing.assert_close(model.position_embeddings()[1:], fresh.position_embeddings()[1:])


def test_resize_rejects_sizes_that_are_not_patch_multiples():
    with pytest.raises(ValueError, match="multiple of patch_size=2"):
        ViT(small()).resize_positions(9)


# ---------------------------------------------------------------- errors


def test_wrong_channels_size_or_dtype_raise_clear_errors():
    model = ViT(small(in_channels=3))
    with pytest.raises(ValueError, match=r"\(B, 3, 8, 8\).*channel"):
        model(torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="8x8 pixels, got 16x16"):
        model(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="float"):
        model(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="ViTConfig"):
        VisionTransformer({"d_model": 16})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(image_size=10, patch_size=4), "not divisible by patch_size"),
        (dict(d_model=18, num_heads=4), "not divisible by num_heads"),
        (dict(pos_embedding="rope"), "pos_embedding"),
        (dict(pool="max"), "pool"),
        (dict(d_model=18, num_heads=2, pos_embedding="sincos2d"), "divisible by 4"),
        (dict(dropout=1.0), "dropout"),
    ],
)
def test_config_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        small(**bad)


# ---------------------------------------------------------------- attention rollout


def test_attention_rollout_matches_naive_float64_computation():
    torch.manual_seed(0)
    weights = [torch.softmax(torch.randn(2, 3, 5, 5), dim=-1) for _ in range(3)]
    result = attention_rollout(weights)
    for b in range(2):
        expected = torch.eye(5, dtype=torch.float64)
        for w in weights:
            a = w[b].double().mean(0) + torch.eye(5, dtype=torch.float64)
            a = a / a.sum(-1, keepdim=True)
            expected = a @ expected
        torch.testing.assert_close(result[b].double(), expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(result.sum(-1), torch.ones(2, 5))
    with pytest.raises(ValueError, match="need_weights"):
        attention_rollout([])


# ---------------------------------------------------------------- learning


def test_short_training_run_on_digits_beats_threshold():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train, test = load_digits_dataset(seed=0)
        model = ViT(
            ViTConfig(
                image_size=8,
                patch_size=2,
                in_channels=1,
                num_classes=10,
                d_model=32,
                num_layers=2,
                num_heads=4,
                ffn_hidden=64,
                dropout=0.0,
            )
        )
        config = TrainConfig(
            epochs=12,
            lr=3e-3,
            betas=(0.9, 0.999),
            weight_decay=0.01,
            schedule="cosine",
            warmup_steps=20,
            clip_norm=1.0,
            device="cpu",
            amp=False,
            log_every=1000,
        )
        result = Trainer(model, ClassificationTask(train, test, batch_size=64), config).fit()
    finally:
        torch.set_num_threads(threads)
    assert result.last_metrics["accuracy"] >= 0.93, result.last_metrics

"""The size estimate of a model config (attnkit.models.size) against the built models' own counts,
and the refusal of configs that cannot fit in memory."""

from __future__ import annotations

import pytest
import torch

from attnkit.config import (
    BahdanauConfig,
    ConfigError,
    DecoderLMConfig,
    EncoderConfig,
    TransformerConfig,
    ViTConfig,
)
from attnkit.models import BahdanauSeq2Seq, DecoderLM, Transformer
from attnkit.models.encoder import EncoderModel
from attnkit.models.size import check_model_size, estimate_parameters, memory_bytes
from attnkit.models.vit import VisionTransformer

CONFIGS = [
    (TransformerConfig(120, 120, d_model=64, ffn_hidden=128, num_encoder_layers=1), Transformer),
    (TransformerConfig(900, 900, tie_embeddings="all", norm_first=True), Transformer),
    (TransformerConfig(300, 500, tie_embeddings="none", positional="learned"), Transformer),
    (BahdanauConfig(120, 150, embed_size=64, num_hiddens=128, num_layers=1), BahdanauSeq2Seq),
    (BahdanauConfig(400, 400, num_layers=2), BahdanauSeq2Seq),
    (EncoderConfig(3000, d_model=96, num_heads=4, ffn_hidden=256, num_layers=2), EncoderModel),
    (ViTConfig(image_size=32, patch_size=4, in_channels=3, d_model=96), VisionTransformer),
    (DecoderLMConfig(65, positional="rotary"), DecoderLM),
]


def weights(model: torch.nn.Module) -> int:
    """Distinct parameters and buffers (tied ones once)."""
    seen, total = set(), 0
    for tensor in [*model.parameters(), *model.buffers()]:
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tensor.shape)
        if key not in seen:
            seen.add(key)
            total += tensor.numel()
    return total


@pytest.mark.parametrize(("config", "model"), CONFIGS, ids=lambda c: type(c).__name__)
def test_estimate_is_within_a_fifth_of_the_real_count(config, model) -> None:
    assert estimate_parameters(config) == pytest.approx(weights(model(config)), rel=0.2)


def test_configs_too_big_for_memory_are_refused_with_their_size() -> None:
    small = TransformerConfig(100, 100)
    assert check_model_size(small, "x") == estimate_parameters(small)
    huge = TransformerConfig(100, 100, d_model=10**9, num_heads=1)
    assert 4 * estimate_parameters(huge) > memory_bytes()
    with pytest.raises(ConfigError, match=r"run/config.json: .* parameters \(.* GiB in float32\)"):
        check_model_size(huge, "run/config.json")
    with pytest.raises(TypeError):
        estimate_parameters(object())

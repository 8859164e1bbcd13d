"""EncoderModel (BERT-style encoder-only Transformer) against PyTorch's own TransformerEncoder."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnkit.config import ConfigError, EncoderConfig
from attnkit.models.encoder import EncoderModel

D, H, FF, LAYERS, V = 16, 4, 24, 2, 50


def make_model(norm_first: bool = False, activation: str = "gelu") -> EncoderModel:
    torch.manual_seed(0)
    config = EncoderConfig(
        vocab_size=V,
        d_model=D,
        num_heads=H,
        ffn_hidden=FF,
        num_layers=LAYERS,
        max_len=12,
        type_vocab_size=2,
        dropout=0.1,
        attention_dropout=0.1,
        activation=activation,
        norm_first=norm_first,
        layer_norm_eps=1e-12,
    )
    model = EncoderModel(config).eval()
    with torch.no_grad():  # non-trivial LayerNorm parameters, so a swapped norm would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    return model


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, V, (3, 7), generator=g)
    lengths = torch.tensor([7, 4, 1])
    mask = torch.arange(7)[None, :] < lengths[:, None]  # (B, S)
    ids = ids.masked_fill(~mask, 0)
    types = (torch.arange(7)[None, :] >= 3).long().expand(3, 7) * mask
    return ids, mask, types


def torch_reference(model: EncoderModel, activation: str) -> nn.TransformerEncoder:
    """nn.TransformerEncoder with the same weights (PyTorch's implementation of the blocks)."""
    c = model.config
    layer = nn.TransformerEncoderLayer(
        c.d_model,
        c.num_heads,
        c.ffn_hidden,
        dropout=0.0,
        activation=activation,
        layer_norm_eps=c.layer_norm_eps,
        batch_first=True,
        norm_first=c.norm_first,
    )
    final = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps) if c.norm_first else None
    ref = nn.TransformerEncoder(layer, c.num_layers, norm=final, enable_nested_tensor=False)
    with torch.no_grad():
        for ours, theirs in zip(model.layers, ref.layers, strict=True):
            theirs.self_attn.in_proj_weight.copy_(ours.self_attn.in_proj.weight)
            theirs.self_attn.in_proj_bias.copy_(ours.self_attn.in_proj.bias)
            theirs.self_attn.out_proj.load_state_dict(ours.self_attn.out_proj.state_dict())
            theirs.linear1.load_state_dict(ours.ffn.dense1.state_dict())
            theirs.linear2.load_state_dict(ours.ffn.dense2.state_dict())
            theirs.norm1.load_state_dict(ours.attn_res.norm.state_dict())
            theirs.norm2.load_state_dict(ours.ffn_res.norm.state_dict())
        if final is not None:
            final.load_state_dict(model.final_norm.state_dict())
    return ref.eval()


def reference_embeddings(model: EncoderModel, ids, types) -> torch.Tensor:
    e = model.embeddings
    x = e.word.weight[ids] + e.positions.weight[: ids.shape[1]] + e.token_type.weight[types]
    return F.layer_norm(x, (D,), e.norm.weight, e.norm.bias, model.config.layer_norm_eps)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_matches_torch_transformer_encoder(norm_first: bool, activation: str) -> None:
    model = make_model(norm_first, activation)
    ids, mask, types = batch()
    ref = torch_reference(model, activation)
    with torch.no_grad():
        ours, weights = model(ids, mask, types)
        expected = ref(reference_embeddings(model, ids, types), src_key_padding_mask=~mask)
    assert weights is None
    assert ours.shape == (3, 7, D)
    torch.testing.assert_close(ours[mask], expected[mask], atol=1e-5, rtol=1e-5)


def test_padding_invariance_and_default_token_types() -> None:
    model = make_model()
    ids, mask, _ = batch()
    with torch.no_grad():
        padded, _ = model(ids, mask)
        alone, _ = model(ids[1:2, :4], mask[1:2, :4])
        explicit, _ = model(ids, mask, torch.zeros_like(ids))
        no_mask, _ = model(ids[:1])
    torch.testing.assert_close(padded[1, :4], alone[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(padded, explicit)
    torch.testing.assert_close(padded[0], no_mask[0], atol=1e-6, rtol=1e-6)
    with torch.no_grad():  # the segment embedding is really used
        other, _ = model(ids, mask, torch.ones_like(ids))
    assert not torch.allclose(padded[0], other[0])


def test_weights_path_matches_fused_path() -> None:
    model = make_model(norm_first=True)
    ids, mask, types = batch()
    with torch.no_grad():
        fused, none = model(ids, mask, types)
        math, weights = model(ids, mask, types, need_weights=True)
    assert none is None
    torch.testing.assert_close(fused[mask], math[mask], atol=1e-5, rtol=1e-5)
    assert len(weights) == LAYERS
    for w in weights:
        assert w.shape == (3, H, 7, 7)
        torch.testing.assert_close(w.sum(-1), torch.ones(3, H, 7))
        assert (w.masked_select(~mask[:, None, None, :].expand_as(w)) == 0).all()


def test_minilm_parameter_count() -> None:
    # all-MiniLM-L6-v2 without its pooler: 22,713,216 (22.7M on its model card) - 384 * 385.
    config = EncoderConfig(
        vocab_size=30522, d_model=384, num_heads=12, ffn_hidden=1536, num_layers=6, max_len=512
    )
    model = EncoderModel(config)
    assert sum(p.numel() for p in model.parameters()) == 22_713_216 - 384 * 385


def test_input_validation() -> None:
    model = make_model()
    ids, mask, _ = batch()
    with pytest.raises(ValueError, match="bool"):
        model(ids, mask.long())
    with pytest.raises(ValueError, match="max_len=12"):
        model(torch.ones(1, 13, dtype=torch.long))
    with pytest.raises(ValueError, match="token_type_ids"):
        model(ids, mask, torch.zeros(3, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids"):
        model(torch.full((1, 3), V))
    with pytest.raises(ConfigError, match="num_heads"):
        EncoderConfig(vocab_size=10, d_model=10, num_heads=3)


def test_dropout_only_in_training() -> None:
    model = make_model()
    ids, mask, types = batch()
    model.train()
    a, _ = model(ids, mask, types)
    b, _ = model(ids, mask, types)
    assert not torch.allclose(a, b)
    model.eval()
    with torch.no_grad():
        c, _ = model(ids, mask, types)
        d, _ = model(ids, mask, types)
    torch.testing.assert_close(c, d, atol=0, rtol=0)

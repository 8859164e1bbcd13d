"""Models: encoder–decoder Transformer, GRU seq2seq with Bahdanau attention, decoder-only LM,
Vision Transformer."""

from __future__ import annotations

from typing import Any

from torch import nn

from attnkit.config import BahdanauConfig, TransformerConfig, from_dict
from attnkit.models.bahdanau import BahdanauSeq2Seq
from attnkit.models.decoder_lm import DecoderLM, LMCache
from attnkit.models.transformer import DecoderCache, Transformer
from attnkit.models.vit import VisionTransformer, ViT

__all__ = [
    "BahdanauSeq2Seq",
    "DecoderCache",
    "DecoderLM",
    "LMCache",
    "Transformer",
    "ViT",
    "VisionTransformer",
    "build_seq2seq",
    "MODEL_CONFIGS",
]

MODEL_CONFIGS = {"transformer": TransformerConfig, "bahdanau": BahdanauConfig}


def build_seq2seq(model_type: str, config: dict[str, Any]) -> nn.Module:
    """Build a seq2seq model from its type name and a config dict (validated)."""
    if model_type == "transformer":
        return Transformer(from_dict(TransformerConfig, config, "model"))
    if model_type == "bahdanau":
        return BahdanauSeq2Seq(from_dict(BahdanauConfig, config, "model"))
    raise ValueError(f"model type must be one of {sorted(MODEL_CONFIGS)}, got {model_type!r}")

"""Layers: positional encodings, feed-forward, Transformer blocks, embeddings."""

from attnkit.layers.blocks import AddNorm, DecoderBlock, EncoderBlock, LayerCache
from attnkit.layers.embedding import TokenEmbedding
from attnkit.layers.feedforward import PositionWiseFFN
from attnkit.layers.positional import (
    LearnedPositionalEmbedding,
    LearnedPositionalEmbedding2D,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    alibi_bias,
    alibi_slopes,
    resize_1d,
    resize_grid,
    sincos_2d_table,
    sinusoidal_table,
)

__all__ = [
    "AddNorm",
    "DecoderBlock",
    "EncoderBlock",
    "LayerCache",
    "LearnedPositionalEmbedding",
    "LearnedPositionalEmbedding2D",
    "PositionWiseFFN",
    "RotaryEmbedding",
    "SinusoidalPositionalEncoding",
    "TokenEmbedding",
    "alibi_bias",
    "alibi_slopes",
    "resize_1d",
    "resize_grid",
    "sincos_2d_table",
    "sinusoidal_table",
]

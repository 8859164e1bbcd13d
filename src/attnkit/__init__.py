"""attnkit: attention and the Transformer, complete, correct and fast.

Mask convention (the whole package): boolean masks, **True = may attend / real token**.
"""

from attnkit.attention import (
    AdditiveAttention,
    DotProductAttention,
    KVCache,
    MultiHeadAttention,
    NWKernelRegression,
    attention,
    attention_mask,
    causal_mask,
    from_key_padding_mask,
    masked_softmax,
    nadaraya_watson,
    padding_mask,
    to_key_padding_mask,
)
from attnkit.layers import (
    AddNorm,
    LearnedPositionalEmbedding,
    LearnedPositionalEmbedding2D,
    PositionWiseFFN,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    alibi_bias,
    alibi_slopes,
    sincos_2d_table,
)
from attnkit.version import __version__

__all__ = [
    "AddNorm",
    "AdditiveAttention",
    "LearnedPositionalEmbedding",
    "LearnedPositionalEmbedding2D",
    "NWKernelRegression",
    "PositionWiseFFN",
    "RotaryEmbedding",
    "SinusoidalPositionalEncoding",
    "alibi_bias",
    "alibi_slopes",
    "nadaraya_watson",
    "sincos_2d_table",
    "DotProductAttention",
    "KVCache",
    "MultiHeadAttention",
    "__version__",
    "attention",
    "attention_mask",
    "causal_mask",
    "from_key_padding_mask",
    "masked_softmax",
    "padding_mask",
    "to_key_padding_mask",
]

"""attnkit: attention and the Transformer, complete, correct and fast.

Mask convention (the whole package): boolean masks, **True = may attend / real token**.
"""

from attnkit.attention import (
    AdditiveAttention,
    DotProductAttention,
    KVCache,
    MultiHeadAttention,
    attention,
    attention_mask,
    causal_mask,
    from_key_padding_mask,
    masked_softmax,
    padding_mask,
    to_key_padding_mask,
)

__version__ = "0.1.0"

__all__ = [
    "AdditiveAttention",
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

"""Attention primitives: masks, masked softmax, scoring functions, multi-head attention."""

from attnkit.attention.functional import attention, masked_softmax
from attnkit.attention.kernel_regression import (
    NWKernelRegression,
    fit_kernel_regression,
    leave_one_out_keys,
    make_kernel_regression_data,
    nadaraya_watson,
)
from attnkit.attention.masks import (
    attention_mask,
    causal_mask,
    from_key_padding_mask,
    padding_mask,
    to_key_padding_mask,
)
from attnkit.attention.multihead import KVCache, MultiHeadAttention
from attnkit.attention.scoring import AdditiveAttention, DotProductAttention

__all__ = [
    "AdditiveAttention",
    "DotProductAttention",
    "KVCache",
    "MultiHeadAttention",
    "NWKernelRegression",
    "fit_kernel_regression",
    "leave_one_out_keys",
    "make_kernel_regression_data",
    "nadaraya_watson",
    "attention",
    "attention_mask",
    "causal_mask",
    "from_key_padding_mask",
    "masked_softmax",
    "padding_mask",
    "to_key_padding_mask",
]

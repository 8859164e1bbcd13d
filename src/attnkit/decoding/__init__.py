"""Decoding: greedy decoding and beam search for seq2seq models, sampling for language models.

Greedy and beam search use only the seq2seq interface (``encode`` / ``init_cache`` / ``decode``),
so they serve the Transformer and the Bahdanau GRU model alike; :mod:`~attnkit.decoding.sampling`
drives a decoder-only LM (``model(ids, cache=)`` / ``new_cache()``).
"""

from attnkit.decoding.beam import beam_search
from attnkit.decoding.common import Hypothesis, SentenceWeights, length_limits, length_penalty
from attnkit.decoding.greedy import DecodeResult, greedy_decode
from attnkit.decoding.sampling import (
    generate,
    generate_tokens,
    sample_next,
    top_k_filter,
    top_p_filter,
)

__all__ = [
    "DecodeResult",
    "Hypothesis",
    "SentenceWeights",
    "beam_search",
    "generate",
    "generate_tokens",
    "greedy_decode",
    "length_limits",
    "length_penalty",
    "sample_next",
    "top_k_filter",
    "top_p_filter",
]

"""Decoding for attnkit's seq2seq models: greedy decoding and beam search.

Both use only the seq2seq interface (``encode`` / ``init_cache`` / ``decode``), so they serve the
Transformer and the Bahdanau GRU model alike.
"""

from attnkit.decoding.beam import beam_search
from attnkit.decoding.common import Hypothesis, SentenceWeights, length_limits, length_penalty
from attnkit.decoding.greedy import DecodeResult, greedy_decode

__all__ = [
    "DecodeResult",
    "Hypothesis",
    "SentenceWeights",
    "beam_search",
    "greedy_decode",
    "length_limits",
    "length_penalty",
]

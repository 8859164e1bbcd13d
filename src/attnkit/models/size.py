"""How big a model a config describes, computed from the config alone (nothing is allocated).

A model is built from a stored config (a run's ``config.json``, a pretrained folder's) before its
weights are read; a damaged or hostile file claiming ``d_model = 10**9`` would otherwise make the
process allocate until the machine runs out of memory. :func:`check_model_size` refuses such a
config first, with the estimated size.
"""

from __future__ import annotations

import os
from typing import Any

from attnkit.config import (
    BahdanauConfig,
    ConfigError,
    DecoderLMConfig,
    EncoderConfig,
    TransformerConfig,
    ViTConfig,
)

__all__ = ["estimate_parameters", "check_model_size", "memory_bytes"]


def _block(d: int, ffn: int, attentions: int = 1, norms: int = 2) -> int:
    """One Transformer block: attention projections, the feed-forward net, LayerNorms."""
    return attentions * (4 * d * d + 4 * d) + (2 * d * ffn + ffn + d) + norms * 2 * d


def _gru(inputs: int, hidden: int, layers: int) -> int:
    first = 3 * (inputs * hidden + hidden * hidden + 2 * hidden)
    return first + (layers - 1) * 3 * (2 * hidden * hidden + 2 * hidden)


def estimate_parameters(config: Any) -> int:
    """The number of weights (parameters and buffers) of the model ``config`` describes.

    Exact up to biases, norms and small tables (within a few percent), and never allocating.

    Args:
        config: a :class:`~attnkit.config.TransformerConfig`, ``BahdanauConfig``,
            ``EncoderConfig``, ``ViTConfig`` or ``DecoderLMConfig``.
    """
    c = config
    if isinstance(c, TransformerConfig):
        d = c.d_model
        source = 0 if c.tie_embeddings == "all" else c.src_vocab_size
        embeddings = (source + c.tgt_vocab_size) * d
        output = c.tgt_vocab_size * (1 if c.tie_embeddings != "none" else d + 1)
        return (
            embeddings
            + output
            + c.max_len * d
            + c.num_encoder_layers * _block(d, c.ffn_hidden)
            + c.num_decoder_layers * _block(d, c.ffn_hidden, attentions=2, norms=3)
            + 4 * d
        )
    if isinstance(c, BahdanauConfig):
        e, h = c.embed_size, c.num_hiddens
        return (
            (c.src_vocab_size + c.tgt_vocab_size) * e
            + _gru(e, h, c.num_layers)
            + _gru(e + h, h, c.num_layers)
            + 2 * h * h
            + h
            + c.tgt_vocab_size * (h + 1)
        )
    if isinstance(c, EncoderConfig):
        d = c.d_model
        return (
            (c.vocab_size + 2 * c.max_len + c.type_vocab_size) * d
            + c.num_layers * _block(d, c.ffn_hidden)
            + 4 * d
        )
    if isinstance(c, ViTConfig):
        d = c.d_model
        patches = (c.image_size // c.patch_size) ** 2
        return (
            c.patch_size * c.patch_size * c.in_channels * d
            + (patches + 2) * d
            + c.num_layers * _block(d, c.ffn_hidden)
            + (d + 1) * c.num_classes
            + 4 * d
        )
    if isinstance(c, DecoderLMConfig):
        d = c.d_model
        return (
            c.vocab_size * d
            + 2 * c.max_len * d
            + c.num_layers * _block(d, c.ffn_hidden)
            + c.vocab_size
            + 2 * d
        )
    raise TypeError(f"estimate_parameters: unknown model config {type(config).__name__}")


def memory_bytes() -> int:
    """This machine's physical memory in bytes (1 TiB when it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not on Linux/macOS
        return 1 << 40


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_model_size(config: Any, source: str, fix: str | None = None) -> int:
    """Refuse a model config whose float32 weights alone would not fit in this machine's memory.

    Args:
        config: a model config dataclass (see :func:`estimate_parameters`).
        source: what the config came from, named in the error (a file, ``--set``).
        fix: what to do, for the error (default: the file is damaged, restore it or retrain).

    Returns:
        The estimated number of weights.

    Raises:
        ConfigError: one line with the estimated parameter count and bytes.
    """
    count = estimate_parameters(config)
    needed, available = 4 * count, memory_bytes()
    if needed > available:
        raise ConfigError(
            f"{source}: this {type(config).__name__} would have about {count:.3g} parameters "
            f"({_gib(needed)} in float32), more than this machine's {_gib(available)} of memory; "
            + (fix or "the file is damaged or was edited: restore it or retrain")
        )
    return count

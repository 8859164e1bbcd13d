"""Language modelling: train a decoder-only Transformer on text, generate, score text.

``config`` (run config and presets), ``data`` (reading, tokenizing, splitting, windows), ``task``
(what the Trainer trains), ``generator`` (:class:`Generator`, inference), ``run`` (training entry
point), ``report`` (HTML).
"""

from attnkit.lm.config import LMRunConfig, TextDataConfig
from attnkit.lm.generator import Generator
from attnkit.lm.run import train_lm

__all__ = ["Generator", "LMRunConfig", "TextDataConfig", "train_lm"]

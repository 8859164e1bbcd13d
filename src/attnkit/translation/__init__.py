"""Translation: train a sequence-to-sequence model on sentence pairs, translate, evaluate.

``config`` (run config and presets), ``task`` (what the Trainer trains), ``translator``
(:class:`Translator`, inference), ``run`` (training entry point, averaging), ``report`` (HTML).
"""

from attnkit.translation.config import DataConfig, RunConfig
from attnkit.translation.run import average_run_checkpoints, train_translator
from attnkit.translation.translator import Translation, Translator

__all__ = [
    "DataConfig",
    "RunConfig",
    "Translation",
    "Translator",
    "average_run_checkpoints",
    "train_translator",
]

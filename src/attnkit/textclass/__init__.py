"""Fine-tuning on labelled text: a pretrained encoder (BERT family, e.g. all-MiniLM-L6-v2) or an
attnkit language model with a classification or regression head.

``config`` (run config and presets), ``data`` (reading labelled files, labels, tokenizers,
length-bucketed batches), ``model`` (pooling, backbones, the head), ``task`` (what the Trainer
trains), ``classifier`` (:class:`TextClassifier`, inference), ``run`` (training entry point).
"""

from attnkit.textclass.classifier import TextClassifier, TextPrediction
from attnkit.textclass.config import TextClassDataConfig, TextClassRunConfig
from attnkit.textclass.run import train_textclass

__all__ = [
    "TextClassDataConfig",
    "TextClassRunConfig",
    "TextClassifier",
    "TextPrediction",
    "train_textclass",
]

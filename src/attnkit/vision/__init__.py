"""Image classification with the Vision Transformer: train on digits, MNIST, CIFAR-10 or a folder
of images, classify, and see where the model looks.

``config`` (run config and presets), ``data`` (splits), ``task`` (what the Trainer trains),
``classifier`` (:class:`Classifier`, inference), ``run`` (training entry point).
"""

from attnkit.vision.classifier import AttentionMaps, Classifier, Prediction
from attnkit.vision.config import ImageDataConfig, VisionRunConfig
from attnkit.vision.run import train_classifier

__all__ = [
    "AttentionMaps",
    "Classifier",
    "ImageDataConfig",
    "Prediction",
    "VisionRunConfig",
    "train_classifier",
]

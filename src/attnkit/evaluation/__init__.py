"""attnkit.evaluation: sacrebleu BLEU/chrF, the course's sentence BLEU, accuracies."""

from attnkit.evaluation.metrics import (
    MetricResult,
    accuracy,
    corpus_bleu,
    corpus_chrf,
    course_bleu,
    reference_streams,
    token_accuracy,
)

__all__ = [
    "MetricResult",
    "accuracy",
    "corpus_bleu",
    "corpus_chrf",
    "course_bleu",
    "reference_streams",
    "token_accuracy",
]

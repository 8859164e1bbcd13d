"""Translation and classification metrics.

* :func:`corpus_bleu` and :func:`corpus_chrf` are thin wrappers around sacrebleu, the reference
  implementation: report these numbers (with their signature) when comparing systems.
* :func:`course_bleu` is the sentence-level BLEU of the d2l course (brevity penalty times
  geometrically weighted clipped n-gram precisions, weight 1/2^n). It is handy for eyeballing single
  translations, but its numbers are not comparable with sacreBLEU's.
* :func:`accuracy` (exact sequence match) and :func:`token_accuracy` (argmax of logits vs targets,
  ignoring padding).

References are given *per hypothesis*: ``references[i]`` is either a string or a list of strings
(any number >= 1, which may differ between hypotheses). sacrebleu wants the transpose, one stream
per reference rank with ``None`` where a segment has fewer references; :func:`reference_streams`
does that conversion.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "MetricResult",
    "corpus_bleu",
    "corpus_chrf",
    "course_bleu",
    "accuracy",
    "token_accuracy",
    "reference_streams",
]


@dataclass(frozen=True)
class MetricResult:
    """A corpus-level score.

    Attributes:
        name: metric name, e.g. ``"BLEU"`` or ``"chrF2"``.
        score: the score on sacrebleu's 0-100 scale.
        signature: sacrebleu's reproducibility signature (e.g. ``nrefs:1|case:mixed|...``).
        details: metric-specific extras (BLEU: n-gram precisions, brevity penalty, lengths).
    """

    name: str
    score: float
    signature: str
    details: dict[str, Any] = field(default_factory=dict)

    def __float__(self) -> float:
        return float(self.score)

    def __str__(self) -> str:
        return f"{self.name} = {self.score:.2f}  ({self.signature})"


def reference_streams(
    references: Sequence[str] | Sequence[Sequence[str]], num_hypotheses: int
) -> list[list[str | None]]:
    """Turn per-hypothesis references into sacrebleu's reference streams.

    Args:
        references: one entry per hypothesis, each a string or a non-empty list of strings.
        num_hypotheses: number of hypotheses (checked against ``len(references)``).

    Returns:
        ``R`` streams of length ``num_hypotheses``, ``R`` the largest reference count; stream ``r``
        holds each segment's ``r``-th reference or ``None`` where the segment has fewer.

    Raises:
        ValueError: on a length mismatch, an empty reference list or a non-string reference.
    """
    if isinstance(references, str) or not isinstance(references, Sequence):
        raise ValueError(
            "references must be a list with one entry per hypothesis, "
            f"got {type(references).__name__}"
        )
    if len(references) != num_hypotheses:
        raise ValueError(
            f"got {num_hypotheses} hypotheses but {len(references)} references; pass one entry "
            "(a string or a list of strings) per hypothesis, not sacrebleu-style reference streams"
        )
    per_segment: list[list[str]] = []
    for i, refs in enumerate(references):
        refs_list = [refs] if isinstance(refs, str) else list(refs)
        if not refs_list:
            raise ValueError(f"references[{i}] is empty; every hypothesis needs >= 1 reference")
        for ref in refs_list:
            if not isinstance(ref, str):
                raise ValueError(
                    f"references[{i}] holds a {type(ref).__name__}, expected strings; "
                    "detokenize references to plain text first"
                )
        per_segment.append(refs_list)
    num_streams = max(len(refs) for refs in per_segment)
    return [
        [refs[r] if r < len(refs) else None for refs in per_segment] for r in range(num_streams)
    ]


def _check_hypotheses(hypotheses: Sequence[str]) -> list[str]:
    if isinstance(hypotheses, str) or not isinstance(hypotheses, Sequence):
        raise ValueError(
            f"hypotheses must be a list of strings, got {type(hypotheses).__name__}; "
            "wrap a single sentence in a list"
        )
    if len(hypotheses) == 0:
        raise ValueError("hypotheses is empty; need at least one sentence to score")
    for i, hyp in enumerate(hypotheses):
        if not isinstance(hyp, str):
            raise ValueError(f"hypotheses[{i}] is a {type(hyp).__name__}, expected a string")
    return list(hypotheses)


def corpus_bleu(
    hypotheses: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    lowercase: bool = False,
    tokenize: str = "13a",
) -> MetricResult:
    """Corpus BLEU computed by sacrebleu.

    Args:
        hypotheses: detokenized system outputs, one string per segment.
        references: per segment, one reference string or a list of references (counts may vary).
        lowercase: compare case-insensitively.
        tokenize: sacrebleu tokenizer name (``"13a"``, ``"intl"``, ``"char"``, ``"none"``, ...).

    Returns:
        :class:`MetricResult` with the 0-100 score, sacrebleu's signature, and details
        ``precisions`` (4 floats, percent), ``bp``, ``sys_len``, ``ref_len``, ``counts``,
        ``totals``.

    Shapes:
        ``len(references) == len(hypotheses)``.
    """
    from sacrebleu.metrics import BLEU

    hyps = _check_hypotheses(hypotheses)
    streams = reference_streams(references, len(hyps))
    metric = BLEU(lowercase=lowercase, tokenize=tokenize)
    result = metric.corpus_score(hyps, streams)
    details = {
        "precisions": [float(p) for p in result.precisions],
        "bp": float(result.bp),
        "sys_len": int(result.sys_len),
        "ref_len": int(result.ref_len),
        "counts": [int(c) for c in result.counts],
        "totals": [int(t) for t in result.totals],
    }
    return MetricResult("BLEU", float(result.score), str(metric.get_signature()), details)


def corpus_chrf(
    hypotheses: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    lowercase: bool = False,
    char_order: int = 6,
    word_order: int = 0,
    beta: int = 2,
) -> MetricResult:
    """Corpus chrF (or chrF++ with ``word_order=2``) computed by sacrebleu.

    Args:
        hypotheses: detokenized system outputs, one string per segment.
        references: per segment, one reference string or a list of references (counts may vary).
        lowercase: compare case-insensitively.
        char_order: character n-gram order.
        word_order: word n-gram order (0 for chrF, 2 for chrF++).
        beta: recall weight.

    Returns:
        :class:`MetricResult` named ``chrF2`` (``chrF2++`` ...) with the 0-100 score and signature.

    Shapes:
        ``len(references) == len(hypotheses)``.
    """
    from sacrebleu.metrics import CHRF

    hyps = _check_hypotheses(hypotheses)
    streams = reference_streams(references, len(hyps))
    metric = CHRF(char_order=char_order, word_order=word_order, beta=beta, lowercase=lowercase)
    result = metric.corpus_score(hyps, streams)
    details = {"char_order": char_order, "word_order": word_order, "beta": beta}
    return MetricResult(result.name, float(result.score), str(metric.get_signature()), details)


def course_bleu(pred_seq: str, label_seq: str, k: int) -> float:
    """Sentence BLEU as defined in the d2l course (0-1 scale).

    ``exp(min(0, 1 - len_label / len_pred)) * prod_{n=1..k} p_n ** (1 / 2**n)`` where ``p_n`` is
    the clipped n-gram precision (each label n-gram can be matched at most as often as it occurs).
    Tokens are whitespace-separated; n runs up to ``min(k, len_pred)``, so a prediction shorter
    than ``k`` is scored on the orders it has.

    Args:
        pred_seq: predicted sentence, tokens separated by spaces.
        label_seq: reference sentence, tokens separated by spaces.
        k: the longest n-gram order to match (the course uses 2).

    Returns:
        The score in [0, 1]; 1.0 for identical non-empty sentences, 0.0 for an empty prediction
        (unless the label is empty too).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int (the largest n-gram order), got {k!r}")
    pred_tokens, label_tokens = pred_seq.split(), label_seq.split()
    len_pred, len_label = len(pred_tokens), len(label_tokens)
    if len_pred == 0:
        return 1.0 if len_label == 0 else 0.0
    score = math.exp(min(0.0, 1.0 - len_label / len_pred))
    for n in range(1, min(k, len_pred) + 1):
        pred_ngrams = Counter(tuple(pred_tokens[i : i + n]) for i in range(len_pred - n + 1))
        label_ngrams = Counter(tuple(label_tokens[i : i + n]) for i in range(len_label - n + 1))
        matches = sum(min(c, label_ngrams[g]) for g, c in pred_ngrams.items())
        score *= (matches / (len_pred - n + 1)) ** (0.5**n)
    return score


def accuracy(predictions: Sequence[Any], targets: Sequence[Any]) -> float:
    """Fraction of predictions exactly equal to their target (e.g. whole translated sentences).

    Args:
        predictions: predicted items (strings, token lists, labels).
        targets: the gold items, same length.

    Returns:
        The exact-match accuracy in [0, 1].
    """
    if len(predictions) != len(targets):
        raise ValueError(
            f"got {len(predictions)} predictions but {len(targets)} targets; pass one target each"
        )
    if len(predictions) == 0:
        raise ValueError("predictions is empty; accuracy of nothing is undefined")
    return sum(p == t for p, t in zip(predictions, targets, strict=True)) / len(predictions)


def token_accuracy(logits: Tensor, targets: Tensor, pad_id: int | None = 0) -> float:
    """Fraction of non-padding target tokens whose argmax prediction is right.

    Args:
        logits: unnormalised scores over the vocabulary.
        targets: gold token ids.
        pad_id: target id to ignore (``None`` counts every position).

    Returns:
        The token accuracy in [0, 1].

    Shapes:
        logits (B, L, V), targets (B, L).
    """
    if logits.dim() != 3 or targets.dim() != 2 or logits.shape[:2] != targets.shape:
        raise ValueError(
            f"logits must be (B, L, V) and targets (B, L) with matching B, L; got logits "
            f"{tuple(logits.shape)} and targets {tuple(targets.shape)}"
        )
    correct = logits.argmax(dim=-1) == targets  # (B, L)
    if pad_id is None:
        keep = torch.ones_like(correct)
    else:
        keep = targets != pad_id  # (B, L)
    total = int(keep.sum())
    if total == 0:
        raise ValueError(f"targets hold only padding (pad_id={pad_id}); nothing to score")
    return int((correct & keep).sum()) / total

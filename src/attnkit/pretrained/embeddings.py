"""Sentence embeddings from a pretrained encoder (the sentence-transformers recipe).

``embedding = normalize(mean of the last hidden states over real tokens)``; padding never enters
the mean. Texts are tokenized once, sorted by length (longest first) and run in batches, so each
batch is padded only to its own longest member; results come back in the input order.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.models.encoder import EncoderModel
from attnkit.models.quantize import check_quantize, quantize_int8
from attnkit.pretrained.bert import load_pretrained, resolve_model_path
from attnkit.pretrained.tokenizer import PretrainedTokenizer

__all__ = [
    "SentenceEncoder",
    "embed",
    "embed_keeping_blanks",
    "embedding_rows",
    "mean_pool",
    "read_pooling",
    "similar",
]

logger = logging.getLogger(__name__)

POOLING_MODES = ("mean", "cls")


def mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """Average of the hidden states over real tokens.

    Args:
        hidden: (B, S, D) token representations.
        mask: (B, S) bool, True = real token.

    Returns:
        (B, D); a row without real tokens gives zeros.
    """
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, S, 1)
    total = (hidden * weights).sum(dim=1)  # (B, D)
    count = weights.sum(dim=1).clamp(min=1e-9)  # (B, 1)
    return total / count


def read_pooling(folder: str | Path) -> str:
    """Pooling of a sentence-transformers folder (``1_Pooling/config.json``); ``mean`` if absent."""
    path = Path(folder) / "1_Pooling" / "config.json"
    if not path.is_file():
        return "mean"
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data.get("pooling_mode"), str):  # newer sentence-transformers layout
        modes = [data["pooling_mode"]]
    else:
        modes = [k for k, v in data.items() if k.startswith("pooling_mode_") and v is True]
        modes = [
            {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}.get(m, m)
            for m in modes
        ]
    if len(modes) != 1 or modes[0] not in POOLING_MODES:
        raise ValueError(
            f"{path}: exactly one of the pooling modes {POOLING_MODES} must be set, got {modes}"
        )
    return modes[0]


class SentenceEncoder:
    """A pretrained encoder, its tokenizer and a pooling rule, producing unit-length vectors.

    Args:
        model: an :class:`~attnkit.models.encoder.EncoderModel` (put in eval mode).
        tokenizer: its :class:`~attnkit.pretrained.tokenizer.PretrainedTokenizer`.
        pooling: ``mean`` (masked mean over real tokens) or ``cls`` (first token).
        normalize: divide each embedding by its L2 norm.
    """

    def __init__(
        self,
        model: EncoderModel,
        tokenizer: PretrainedTokenizer,
        *,
        pooling: str = "mean",
        normalize: bool = True,
    ) -> None:
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.normalize = normalize

    @classmethod
    def from_pretrained(
        cls,
        path_or_name: str | Path = "minilm",
        device: str | torch.device = "cpu",
        *,
        quantize: str | None = None,
    ) -> SentenceEncoder:
        """Load a checkpoint folder or a short name (see :func:`load_pretrained`).

        ``quantize="int8"``: dynamic int8 Linear layers for CPU inference
        (:func:`attnkit.models.quantize.quantize_int8`).
        """
        check_quantize(quantize, device)
        model, tokenizer, _ = load_pretrained(path_or_name, device)
        if quantize is not None:
            model = quantize_int8(model)
        return cls(model, tokenizer, pooling=read_pooling(resolve_model_path(path_or_name)))

    @property
    def dim(self) -> int:
        """Embedding size D."""
        return self.model.config.d_model

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 32,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Embed texts.

        Args:
            texts: N strings (an empty string is allowed: it embeds ``[CLS] [SEP]``).
            batch_size: texts per forward pass.
            progress: called with the number of texts finished after each batch.

        Returns:
            float32 array (N, D), rows in the order of ``texts``.
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        ids = self.tokenizer.encode(texts)
        out = np.zeros((len(ids), self.dim), dtype=np.float32)  # (N, D)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                index = order[start : start + batch_size]
                batch = self.tokenizer.pad([ids[i] for i in index]).to(device)
                out[index] = self._pool(batch.input_ids, batch.attention_mask).cpu().numpy()
                if progress is not None:
                    progress(len(index))
        return out

    def _pool(self, input_ids: Tensor, mask: Tensor) -> Tensor:
        """(B, S) ids and mask -> (B, D) pooled (and normalised) embeddings."""
        hidden, _ = self.model(input_ids, mask)  # (B, S, D)
        pooled = mean_pool(hidden, mask) if self.pooling == "mean" else hidden[:, 0]  # (B, D)
        return F.normalize(pooled, p=2.0, dim=-1) if self.normalize else pooled


@functools.lru_cache(maxsize=2)
def _cached_encoder(path_or_name: str, device: str) -> SentenceEncoder:
    return SentenceEncoder.from_pretrained(path_or_name, device)


def _encoder(model: str | Path | SentenceEncoder, device: str) -> SentenceEncoder:
    if isinstance(model, SentenceEncoder):
        return model
    return _cached_encoder(str(model), device)


def embed(
    texts: Sequence[str],
    model: str | Path | SentenceEncoder = "minilm",
    batch_size: int = 32,
    device: str = "cpu",
) -> np.ndarray:
    """Unit-length sentence embeddings.

    Args:
        texts: N strings.
        model: short name (``"minilm"``), checkpoint folder, or a loaded :class:`SentenceEncoder`
            (a name or folder is loaded once and kept for later calls).
        batch_size: texts per forward pass.
        device: where to run a model loaded here.

    Returns:
        float32 array (N, D) (D = 384 for MiniLM); dot products are cosine similarities.
    """
    return _encoder(model, device).encode(texts, batch_size)


def embed_keeping_blanks(
    encode: Callable[[list[str]], np.ndarray], texts: Sequence[str]
) -> np.ndarray:
    """(N, D) embeddings of ``texts`` by ``encode``; a blank text is not embedded and gets a
    row of zeros (``embed``'s npy output; :func:`embedding_rows` makes it null)."""
    filled = [i for i, t in enumerate(texts) if t.strip()]
    found = encode([texts[i] for i in filled]) if filled else None
    dim = found.shape[1] if found is not None else 0
    vectors = np.zeros((len(texts), dim), dtype=np.float32)
    if found is not None:
        vectors[filled] = found
    return vectors


def embedding_rows(texts: Sequence[str], vectors: np.ndarray) -> list[list[float] | None]:
    """JSON rows of (N, D) ``vectors``: 7 decimals (rounded in float64, so no float32 digits
    trail), None for a blank text (as ``attnkit embed`` and ``POST /v1/embed`` write them)."""
    rows = vectors.astype(np.float64).round(7).tolist()
    return [row if text.strip() else None for text, row in zip(texts, rows, strict=True)]


def similar(
    query: str,
    lines: Sequence[str],
    top_k: int = 5,
    model: str | Path | SentenceEncoder = "minilm",
    batch_size: int = 32,
    device: str = "cpu",
) -> list[tuple[int, float, str]]:
    """Rank lines by cosine similarity to a query.

    Args:
        query: the text to match.
        lines: candidate texts.
        top_k: how many to return (all if larger than ``len(lines)``).
        model: as in :func:`embed`.
        batch_size: as in :func:`embed`.
        device: as in :func:`embed`.

    Returns:
        Up to ``top_k`` tuples ``(index in lines, cosine similarity, line)``, best first; ties
        keep the input order.
    """
    if top_k <= 0:
        raise ValueError(f"top_k must be > 0, got {top_k}")
    if not lines:
        return []
    encoder = _encoder(model, device)
    vectors = encoder.encode([query, *lines], batch_size)  # (1 + N, D)
    scores = vectors[1:] @ vectors[0]  # (N,)
    best = np.argsort(-scores, kind="stable")[:top_k]
    return [(int(i), float(scores[i]), lines[i]) for i in best]

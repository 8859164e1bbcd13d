"""A fine-tuned text classifier: load a run, predict labels (or values), score labelled text,
embed sentences with the fine-tuned backbone, and show its attention.

Texts are tokenized with the run's own tokenizer (``RUN/tokenizer``), cut to the run's
``max_length``, and run in batches sorted by length (little padding); results come back in the
input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.data.errors import DataError
from attnkit.textclass.config import TextClassRunConfig, load_textclass_config
from attnkit.textclass.data import (
    LabelledTexts,
    TextEncoder,
    load_text_encoder,
    pad_batch,
    read_labelled,
)
from attnkit.textclass.model import TextClassificationModel, build_backbone
from attnkit.textclass.task import length_batches, predict_outputs, score_outputs
from attnkit.training.checkpoint import load_checkpoint
from attnkit.training.runfolder import find_checkpoint
from attnkit.training.trainer import resolve_device

__all__ = ["TextPrediction", "TextClassifier"]


@dataclass
class TextPrediction:
    """One text's prediction: the most probable ``label`` with every class's probability in
    ``probs`` (in the order of :attr:`TextClassifier.labels`), or the ``value`` of a regression
    run (``label`` None, ``probs`` empty)."""

    text: str
    label: str | None
    probs: list[float]
    value: float | None = None

    @property
    def probability(self) -> float:
        """The probability of :attr:`label` (NaN for regression)."""
        return max(self.probs) if self.probs else float("nan")


class TextClassifier:
    """A fine-tuned :class:`~attnkit.textclass.model.TextClassificationModel` with its tokenizer,
    run configuration and label names; build one with :meth:`load`.

    Args:
        model: the model (put in eval mode).
        encoder: the run's tokenizer.
        config: the run's configuration.
        labels: class names in output order (empty for regression).
        batch_size: texts per forward pass (32, as ``attnkit embed``: on a CPU, batches of
            texts sorted by length waste less on padding when they are small).
    """

    def __init__(
        self,
        model: TextClassificationModel,
        encoder: TextEncoder,
        config: TextClassRunConfig,
        labels: Sequence[str],
        batch_size: int = 32,
    ) -> None:
        self.model, self.encoder, self.config = model.eval(), encoder, config
        self.labels, self.batch_size = list(labels), batch_size

    @classmethod
    def load(
        cls, run_dir: str | Path, checkpoint: str = "best", device: str = "auto"
    ) -> TextClassifier:
        """Load ``best`` (by the run's validation metric), ``last``, or a checkpoint folder."""
        cfg, labels = load_textclass_config(run_dir)
        backbone_config = cfg.backbone.model_config()
        model = TextClassificationModel(
            build_backbone(str(cfg.backbone.kind), backbone_config),
            cfg.model.num_labels,
            pooling=cfg.model.pooling,
            dropout=cfg.model.dropout,
        )
        load_checkpoint(
            find_checkpoint(run_dir, checkpoint, cfg.train.keep_best), model, with_state=False
        )
        max_length = min(cfg.data.max_length, backbone_config.max_len)
        pad_id = int(backbone_config.pad_id or 0) if cfg.backbone.kind == "bert" else 0
        encoder = load_text_encoder(
            str(cfg.backbone.kind), Path(run_dir) / "tokenizer", max_length, pad_id
        )
        return cls(model.to(resolve_device(device)), encoder, cfg, labels)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def problem(self) -> str:
        """``classification`` or ``regression``."""
        return self.config.model.problem

    def outputs(self, texts: Sequence[str]) -> Tensor:
        """Logits (regression: the value in column 0). Shapes: N texts -> (N, C) float32."""
        texts = _check_texts(texts)
        self.model.eval()
        ids = self.encoder.encode(texts)
        found = predict_outputs(
            self.model,
            ids,
            pad_id=self.encoder.pad_id,
            batch_size=self.batch_size,
            device=self.device,
        )
        return torch.stack([found[i] for i in range(len(texts))])  # (N, C)

    def probabilities(self, texts: Sequence[str]) -> Tensor:
        """Class probabilities (softmax of the logits). Shapes: N texts -> (N, C)."""
        if self.problem == "regression":
            raise ValueError("a regression run has values, not class probabilities; use predict")
        return self.outputs(texts).softmax(-1)

    def predict(self, texts: Sequence[str]) -> list[TextPrediction]:
        """The label and class probabilities (or the value) of every text, in order."""
        outputs = self.outputs(texts)
        if self.problem == "regression":
            values = outputs[:, 0].tolist()
            return [TextPrediction(t, None, [], v) for t, v in zip(texts, values, strict=True)]
        probs = outputs.softmax(-1)
        best = probs.argmax(-1).tolist()
        return [
            TextPrediction(t, self.labels[k], p.tolist())
            for t, k, p in zip(texts, best, probs, strict=True)
        ]

    def targets(self, data: LabelledTexts) -> Tensor:
        """The labels of ``data`` as class indices (or values). Shapes: (N,).

        Raises:
            DataError: a label the run does not know (or not a number), naming file and line.
        """
        if self.problem == "regression":
            values = []
            for i, label in enumerate(data.labels):
                try:
                    values.append(float(label))
                except ValueError:
                    raise DataError(f"{data.where(i)}: label {label!r} is not a number") from None
            return torch.tensor(values, dtype=torch.float32)
        index = {name: k for k, name in enumerate(self.labels)}
        for i, label in enumerate(data.labels):
            if label not in index:
                raise DataError(
                    f"{data.where(i)}: label {label!r} is not one of the run's labels "
                    f"{self.labels[:10]}"
                )
        return torch.tensor([index[x] for x in data.labels], dtype=torch.long)

    def evaluate(self, data: str | Path | LabelledTexts) -> dict[str, Any]:
        """Scores on labelled text (a file in the training format, the run's columns).

        Returns:
            classification: ``accuracy``, ``macro_f1``, ``loss``, ``confusion`` (rows: true
            label, columns: predicted, in :attr:`labels` order) and ``n``; regression:
            ``pearson``, ``spearman``, ``loss`` (MSE) and ``n``.
        """
        if not isinstance(data, LabelledTexts):
            data = read_labelled(data, self.config.data.text_column, self.config.data.label_column)
        targets = self.targets(data)
        scores = score_outputs(self.outputs(data.texts), targets, self.problem)
        return {**scores, "n": len(data)}

    @torch.inference_mode()
    def embed(
        self, texts: Sequence[str], batch_size: int | None = None, normalize: bool = True
    ) -> np.ndarray:
        """Sentence embeddings from the fine-tuned backbone: its pooled representation (the
        vector the head reads, before dropout), L2-normalised unless ``normalize`` is False.

        Returns:
            float32 array (N, D), in the order of ``texts``.
        """
        texts = _check_texts(texts)
        self.model.eval()
        ids = self.encoder.encode(texts)
        out = np.zeros((len(ids), self.model.head.in_features), dtype=np.float32)  # (N, D)
        for index in length_batches([len(x) for x in ids], batch_size or self.batch_size):
            batch_ids, mask = pad_batch([ids[i] for i in index], self.encoder.pad_id)
            pooled = self.model.pooled(batch_ids.to(self.device), mask.to(self.device))
            if normalize:
                pooled = F.normalize(pooled.float(), p=2.0, dim=-1)
            out[index] = pooled.float().cpu().numpy()
        return out

    @torch.no_grad()
    def attention(self, text: str) -> tuple[list[str], list[Tensor]]:
        """The backbone's self-attention over one text (causal for a language-model backbone).

        Returns:
            ``(tokens, weights)``: the token labels and one (H, S, S) tensor per layer.
        """
        (text,) = _check_texts([text])
        self.model.eval()
        ids = self.encoder.encode([text])
        batch_ids, mask = pad_batch(ids, self.encoder.pad_id)
        _, weights = self.model.backbone(
            batch_ids.to(self.device), mask.to(self.device), need_weights=True
        )
        assert weights is not None
        return self.encoder.tokens(text), [w[0].float().cpu() for w in weights]


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise ValueError("texts must be a list of strings (wrap a single text in a list)")
    if not texts:
        raise ValueError("no texts given")
    return list(texts)

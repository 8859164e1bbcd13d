"""One translated sentence as plain data: its source/target pieces and attention weights.

:class:`AttentionSample` is what the figures (:func:`attnkit.viz.figures.attention_figures`) and
the HTML report (:mod:`attnkit.viz.report`) draw; :func:`translation_sample` builds one from a
:class:`~attnkit.translation.translator.Translation` made with ``need_weights=True``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from attnkit.data.text import BOS_ID, EOS_ID

__all__ = ["KINDS", "KIND_TITLES", "AttentionSample", "translation_sample"]

#: Attention kinds of a seq2seq model, in the order they happen.
KINDS = ("encoder", "self", "cross")
KIND_TITLES = {
    "encoder": "encoder self-attention",
    "self": "decoder self-attention (causal)",
    "cross": "encoder–decoder attention",
}


@dataclass
class AttentionSample:
    """One translated sentence with its tokens and attention weights (plain data).

    ``weights[kind]`` is a list with one (heads, queries, keys) array per layer; kinds a model
    does not have are absent (a GRU seq2seq has only ``"cross"``).

    Decoder step t reads ``tgt_inputs[t]`` (BOS, then the previous output) and emits
    ``tgt_tokens[t]``: rows of cross-attention are named by the token emitted, while both axes
    of the decoder's self-attention are named by the tokens read (the keys are those inputs).
    ``tgt_inputs`` defaults to ``["<s>"] + tgt_tokens[:-1]``.

    Shapes: encoder (H, S, S), self (H, T, T), cross (H, T, S) per layer, with
    ``len(src_tokens) == S`` and ``len(tgt_tokens) == len(tgt_inputs) == T``.
    """

    source: str
    translation: str
    src_tokens: list[str]
    tgt_tokens: list[str]
    weights: dict[str, list[np.ndarray]] = field(default_factory=dict)
    reference: str | None = None
    tgt_inputs: list[str] | None = None

    def __post_init__(self) -> None:
        s, t = len(self.src_tokens), len(self.tgt_tokens)
        if self.tgt_inputs is None:
            self.tgt_inputs = ["<s>", *self.tgt_tokens[:-1]]
        if len(self.tgt_inputs) != t:
            raise ValueError(
                f"tgt_inputs has {len(self.tgt_inputs)} tokens but tgt_tokens has {t}; "
                "pass [BOS] + tgt_tokens[:-1]"
            )
        expected = {"encoder": (s, s), "self": (t, t), "cross": (t, s)}
        clean: dict[str, list[np.ndarray]] = {}
        for kind, layers in self.weights.items():
            if kind not in expected:
                raise ValueError(f"weights kind {kind!r} is not one of {list(KINDS)}")
            arrays = [_as_array(w) for w in layers or ()]
            for i, a in enumerate(arrays):
                if a.ndim != 3 or a.shape[1:] != expected[kind]:
                    raise ValueError(
                        f"weights[{kind!r}][{i}] has shape {a.shape}; expected (heads, "
                        f"{expected[kind][0]}, {expected[kind][1]}) for {s} source and {t} "
                        "target tokens"
                    )
            if arrays:
                clean[kind] = arrays
        self.weights = clean


def _as_array(w: Any) -> np.ndarray:
    if isinstance(w, torch.Tensor):
        return w.detach().to("cpu", torch.float64).numpy()
    return np.asarray(w, dtype=np.float64)


def _fit_labels(labels: list[str], size: int, extra: str, what: str) -> list[str]:
    """Labels for ``size`` positions: ``labels``, or ``labels + [extra]`` for a trailing EOS."""
    if len(labels) == size:
        return labels
    if len(labels) + 1 == size:
        return [*labels, extra]
    raise ValueError(f"{what}: {len(labels)} tokens but the weights have {size} positions")


def translation_sample(
    translator: Any, translation: Any, reference: str | None = None
) -> AttentionSample:
    """Turn a :class:`~attnkit.translation.translator.Translation` made with
    ``need_weights=True`` into an :class:`AttentionSample` with the tokenizers' pieces as labels.

    Args:
        translator: the :class:`~attnkit.translation.translator.Translator` that translated it.
        translation: its result for one sentence (``.weights`` must be set).
        reference: optional reference translation, shown in reports.
    """
    weights = translation.weights
    if not weights:
        raise ValueError("translation has no attention weights; translate with need_weights=True")
    src_tok, tgt_tok = translator.src_tok, translator.tgt_tok
    src = src_tok.pieces(translator.encode_sources([translation.source])[0])  # as translated
    tgt = tgt_tok.pieces(list(translation.tokens))
    kinds = {k: list(v) for k, v in weights.items() if k in KINDS and v}
    first = {k: _as_array(v[0]) for k, v in kinds.items()}
    if "cross" in first:
        t, s = first["cross"].shape[1:]
    elif "encoder" in first:
        s, t = first["encoder"].shape[1], len(tgt)
    else:
        s, t = len(src), len(tgt)
    if "self" in first:
        t = first["self"].shape[1]
    tgt = _fit_labels(tgt, t, tgt_tok.pieces([EOS_ID])[0], "target")
    return AttentionSample(
        source=translation.source,
        translation=translation.text,
        src_tokens=_fit_labels(src, s, src_tok.pieces([EOS_ID])[0], "source"),
        tgt_tokens=tgt,
        weights=kinds,
        reference=reference,
        tgt_inputs=[*tgt_tok.pieces([BOS_ID]), *tgt[:-1]],
    )

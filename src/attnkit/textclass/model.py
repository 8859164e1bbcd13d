"""The fine-tuned model: a pretrained backbone, a pooled representation, dropout and a Linear.

Backbones (both return final hidden states (B, S, D) and, on request, every layer's attention):

* :class:`BertBackbone`: attnkit's :class:`~attnkit.models.encoder.EncoderModel` (BERT family),
  padding masked on the keys;
* :class:`LMBackbone`: attnkit's :class:`~attnkit.models.decoder_lm.DecoderLM`
  (``hidden()``); it is causal, so with right padding no real token sees a pad.

Pooling (:func:`pool_hidden`): ``mean`` over real tokens (sentence encoders), ``cls`` the first
token (BERT), ``last`` the last real token (causal language models: the only position that has
read the whole text).

Each backbone lists its parameters by depth (:meth:`depths`): embeddings first, then one entry
per layer (a final LayerNorm goes with the top layer); the fine-tuning task uses that for
layer-wise learning rates and for freezing the lower layers.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnkit.config import DecoderLMConfig, EncoderConfig
from attnkit.models.decoder_lm import DecoderLM
from attnkit.models.encoder import EncoderModel
from attnkit.pretrained.embeddings import mean_pool

__all__ = [
    "POOLING_MODES",
    "pool_hidden",
    "BertBackbone",
    "LMBackbone",
    "TextClassificationModel",
    "build_backbone",
]

POOLING_MODES = ("mean", "cls", "last")


def pool_hidden(hidden: Tensor, mask: Tensor, mode: str) -> Tensor:
    """One vector per sequence.

    Args:
        hidden: (B, S, D) token representations.
        mask: (B, S) bool, True = real token; real tokens come first (right padding).
        mode: ``mean`` (average over real tokens), ``cls`` (position 0) or ``last`` (the last
            real token).

    Returns:
        (B, D).
    """
    if mode == "mean":
        return mean_pool(hidden, mask)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "last":
        last = mask.long().sum(1).clamp(min=1) - 1  # (B,)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (B, D)
    raise ValueError(f"pooling must be one of {POOLING_MODES}, got {mode!r}")


class BertBackbone(nn.Module):
    """A BERT-family encoder as a fine-tuning backbone.

    Args:
        encoder: the :class:`~attnkit.models.encoder.EncoderModel` (pretrained weights loaded).
    """

    kind = "bert"

    def __init__(self, encoder: EncoderModel) -> None:
        super().__init__()
        self.encoder = encoder

    @property
    def d_model(self) -> int:
        return self.encoder.config.d_model

    def forward(
        self, ids: Tensor, mask: Tensor, need_weights: bool = False
    ) -> tuple[Tensor, list[Tensor] | None]:
        """(B, S) ids and mask -> hidden (B, S, D) and [(B, H, S, S) per layer] or None."""
        return self.encoder(ids, mask, need_weights=need_weights)

    def depths(self) -> list[list[nn.Module]]:
        """Modules by depth: the embeddings, then each layer (bottom to top)."""
        layers = [[layer] for layer in self.encoder.layers]
        if self.encoder.final_norm is not None:
            layers[-1].append(self.encoder.final_norm)
        return [[self.encoder.embeddings], *layers]


class LMBackbone(nn.Module):
    """A decoder-only language model as a fine-tuning backbone (its output projection, tied to
    the token embedding, is not used).

    Args:
        lm: the :class:`~attnkit.models.decoder_lm.DecoderLM` (pretrained weights loaded).
    """

    kind = "lm"

    def __init__(self, lm: DecoderLM) -> None:
        super().__init__()
        self.lm = lm

    @property
    def d_model(self) -> int:
        return self.lm.config.d_model

    def forward(
        self, ids: Tensor, mask: Tensor, need_weights: bool = False
    ) -> tuple[Tensor, list[Tensor] | None]:
        """(B, S) right-padded ids (mask unused: causal attention never reads a later pad) ->
        hidden (B, S, D) and [(B, H, S, S) per layer] or None."""
        return self.lm.hidden(ids, need_weights=need_weights)

    def depths(self) -> list[list[nn.Module]]:
        """Modules by depth: token (and position) embeddings, then each block, the final
        LayerNorm with the top block."""
        bottom: list[nn.Module] = [self.lm.embed]
        if self.lm.positions is not None:
            bottom.append(self.lm.positions)
        layers: list[list[nn.Module]] = [[block] for block in self.lm.blocks]
        layers[-1].append(self.lm.final_norm)
        return [bottom, *layers]


def build_backbone(kind: str, config: EncoderConfig | DecoderLMConfig) -> nn.Module:
    """A randomly initialised backbone of ``kind`` (``bert`` or ``lm``) from its config."""
    if kind == "bert":
        assert isinstance(config, EncoderConfig)
        return BertBackbone(EncoderModel(config))
    if kind == "lm":
        assert isinstance(config, DecoderLMConfig)
        return LMBackbone(DecoderLM(config))
    raise ValueError(f"backbone kind must be 'bert' or 'lm', got {kind!r}")


class TextClassificationModel(nn.Module):
    """Backbone -> pooling -> dropout -> Linear(D, num_outputs).

    Args:
        backbone: :class:`BertBackbone` or :class:`LMBackbone`.
        num_outputs: classes (1 for regression).
        pooling: ``mean``, ``cls`` or ``last``.
        dropout: dropout on the pooled vector.

    Example::

        logits = model(ids, mask)  # (B, S) -> (B, num_outputs)
    """

    def __init__(
        self, backbone: nn.Module, num_outputs: int, *, pooling: str, dropout: float = 0.1
    ) -> None:
        super().__init__()
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}")
        self.backbone, self.pooling = backbone, pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.d_model, num_outputs)  # type: ignore[arg-type]
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def pooled(self, ids: Tensor, mask: Tensor) -> Tensor:
        """The pooled backbone representation. Shapes: (B, S) -> (B, D)."""
        hidden, _ = self.backbone(ids, mask)  # (B, S, D)
        return pool_hidden(hidden, mask, self.pooling)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Logits (or the regression value in column 0).

        Args:
            ids: (B, S) token ids, right-padded.
            mask: (B, S) bool, True = real token.

        Returns:
            (B, num_outputs).
        """
        return self.head(self.dropout(self.pooled(ids, mask)))

    def depths(self) -> list[list[nn.Module]]:
        """Modules by depth, bottom to top: the backbone's, then the head."""
        return [*self.backbone.depths(), [self.head]]  # type: ignore[operator]

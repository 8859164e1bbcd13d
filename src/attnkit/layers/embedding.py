"""Token embeddings (scaled by sqrt(D), as in the paper); the output layer may share the matrix."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["TokenEmbedding"]


class TokenEmbedding(nn.Module):
    """Embedding lookup multiplied by ``sqrt(d_model)`` (paper, section 3.4).

    Args:
        vocab_size: V. d_model: D. pad_id: index whose vector starts at zero.
        scale: multiply by sqrt(D) (the paper); BERT-style models use ``scale=False``.

    The weight is initialised N(0, D^-1/2) so that scaled embeddings have unit variance and the
    same matrix can serve as the output projection (``Transformer.output_weight``).
    """

    def __init__(
        self, vocab_size: int, d_model: int, *, pad_id: int | None = 0, scale: bool = True
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        nn.init.normal_(self.embedding.weight, mean=0.0, std=d_model**-0.5)
        if pad_id is not None:
            nn.init.zeros_(self.embedding.weight[pad_id])
        self.scale = math.sqrt(d_model) if scale else 1.0

    @property
    def weight(self) -> Tensor:
        return self.embedding.weight

    def forward(self, ids: Tensor) -> Tensor:
        """Shapes: (B, L) long -> (B, L, D)."""
        vocab = self.embedding.num_embeddings
        # Checked on the CPU only (on CUDA it would synchronise every decoding step) and not
        # while torch.compile traces (reading the range back would break the graph).
        checked = not ids.is_cuda and not torch.compiler.is_compiling() and ids.numel()
        if checked and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            raise ValueError(
                f"token ids must lie in [0, {vocab}), got range [{int(ids.min())}, "
                f"{int(ids.max())}]; was the input encoded with this model's tokenizer?"
            )
        return self.embedding(ids) * self.scale  # (B, L, D)

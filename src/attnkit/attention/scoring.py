"""The course's two scoring functions as modules: scaled dot-product and additive attention.

Both return ``(output, weights)``; ``weights`` is None unless ``need_weights=True`` (the additive
score always builds its weights, so it always returns them).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnkit.attention.functional import attention, masked_softmax

__all__ = ["DotProductAttention", "AdditiveAttention"]


def _check_qkv(queries: Tensor, keys: Tensor, values: Tensor) -> None:
    if queries.dim() != 3 or keys.dim() != 3 or values.dim() != 3:
        raise ValueError(
            "queries, keys and values must be 3-D (B, L, D), (B, S, Dk), (B, S, Dv); got "
            f"{tuple(queries.shape)}, {tuple(keys.shape)}, {tuple(values.shape)}"
        )
    if not (queries.shape[0] == keys.shape[0] == values.shape[0]):
        raise ValueError(
            f"batch sizes differ: queries {tuple(queries.shape)}, keys {tuple(keys.shape)}, "
            f"values {tuple(values.shape)}"
        )
    if keys.shape[1] != values.shape[1]:
        raise ValueError(
            f"keys and values need the same length S, got {tuple(keys.shape)} and "
            f"{tuple(values.shape)}"
        )


class DotProductAttention(nn.Module):
    """Scaled dot-product attention: ``softmax(Q K^T / sqrt(d)) V``.

    Args:
        dropout: dropout probability on the attention weights (training only).
    """

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout = dropout

    def forward(
        self,
        queries: Tensor,
        keys: Tensor,
        values: Tensor,
        valid_lens: Tensor | None = None,
        mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend.

        Args:
            queries: (B, L, D).
            keys: (B, S, D).
            values: (B, S, Dv).
            valid_lens: (B,) or (B, L) number of real keys.
            mask: bool broadcastable to (B, L, S), True = may attend.
            need_weights: also return the weights (computed on the math path).

        Returns:
            ``(output (B, L, Dv), weights (B, L, S) or None)``.
        """
        _check_qkv(queries, keys, values)
        if queries.shape[-1] != keys.shape[-1]:
            raise ValueError(
                f"dot-product attention needs queries and keys of the same size, got "
                f"{tuple(queries.shape)} and {tuple(keys.shape)}; use AdditiveAttention otherwise"
            )
        return attention(
            queries,
            keys,
            values,
            mask=mask,
            valid_lens=valid_lens,
            dropout_p=self.dropout if self.training else 0.0,
            need_weights=need_weights,
        )


class AdditiveAttention(nn.Module):
    """Additive (Bahdanau) attention: ``w_v^T tanh(W_q q + W_k k)``.

    Args:
        key_size: feature size of the keys.
        query_size: feature size of the queries.
        num_hiddens: hidden size of the scoring MLP.
        dropout: dropout probability on the attention weights.
    """

    def __init__(
        self, key_size: int, query_size: int, num_hiddens: int, *, dropout: float = 0.0
    ) -> None:
        super().__init__()
        for name, value in (
            ("key_size", key_size),
            ("query_size", query_size),
            ("num_hiddens", num_hiddens),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        self.W_k = nn.Linear(key_size, num_hiddens, bias=False)
        self.W_q = nn.Linear(query_size, num_hiddens, bias=False)
        self.w_v = nn.Linear(num_hiddens, 1, bias=False)
        self.dropout = nn.Dropout(dropout)

    def project_keys(self, keys: Tensor) -> Tensor:
        """``W_k keys``, the query-independent half of the score. Shapes: (B, S, key_size) ->
        (B, S, num_hiddens)."""
        return self.W_k(keys)

    def forward(
        self,
        queries: Tensor,
        keys: Tensor,
        values: Tensor,
        valid_lens: Tensor | None = None,
        mask: Tensor | None = None,
        need_weights: bool = True,
        projected_keys: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend.

        Args:
            queries: (B, L, query_size).
            keys: (B, S, key_size).
            values: (B, S, Dv).
            valid_lens: (B,) or (B, L) number of real keys.
            mask: bool broadcastable to (B, L, S), True = may attend.
            need_weights: return the weights (they are always computed here).
            projected_keys: ``project_keys(keys)`` computed earlier, (B, S, num_hiddens): a
                decoder that attends to the same keys at every step projects them once.

        Returns:
            ``(output (B, L, Dv), weights (B, L, S) or None)``.
        """
        _check_qkv(queries, keys, values)
        if queries.shape[-1] != self.W_q.in_features or keys.shape[-1] != self.W_k.in_features:
            raise ValueError(
                f"AdditiveAttention expects query size {self.W_q.in_features} and key size "
                f"{self.W_k.in_features}, got queries {tuple(queries.shape)}, keys "
                f"{tuple(keys.shape)}"
            )
        q = self.W_q(queries)  # (B, L, h)
        k = self.project_keys(keys) if projected_keys is None else projected_keys  # (B, S, h)
        if k.shape != (*keys.shape[:2], self.W_k.out_features):
            raise ValueError(
                f"projected_keys must be (B, S, {self.W_k.out_features}) for keys "
                f"{tuple(keys.shape)}, got {tuple(k.shape)}"
            )
        features = torch.tanh(q.unsqueeze(2) + k.unsqueeze(1))  # (B, L, S, h)
        scores = self.w_v(features).squeeze(-1)  # (B, L, S)
        weights = masked_softmax(scores, valid_lens=valid_lens, mask=mask)  # (B, L, S)
        output = torch.bmm(self.dropout(weights), values)  # (B, L, Dv)
        return output, (weights if need_weights else None)

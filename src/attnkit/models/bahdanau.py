"""GRU encoder–decoder with additive (Bahdanau) attention: the course's RNN baseline.

Same interface as :class:`~attnkit.models.transformer.Transformer` (encode / init_cache / decode /
forward), so the trainer, greedy and beam search serve both.

Where it differs from the course's code: the course starts the decoder GRU from the encoder's final
hidden state of every layer; here the initial decoder state is ``tanh(W h_last)`` computed from the
encoder output at each sentence's last real token (Bahdanau et al. 2015 also start the decoder from
a learned projection). This lets the encoder output alone (``memory``) carry everything the decoder
needs, and makes padded batches exact: the state is read at each sentence's own last token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnkit.attention.scoring import AdditiveAttention
from attnkit.config import BahdanauConfig
from attnkit.layers.dropout import Dropout
from attnkit.models.transformer import check_src_mask

__all__ = ["BahdanauSeq2Seq", "GRUCache"]


@dataclass
class GRUCache:
    """Decoder GRU state (num_layers, B, H), the attention's projected keys ``W_k memory``
    (B, S, H; computed once per source) and the number of target tokens consumed."""

    hidden: Tensor
    keys: Tensor
    offset: int = 0

    def reorder(self, index: Tensor) -> None:
        self.hidden = self.hidden.index_select(1, index)
        self.keys = self.keys.index_select(0, index)


class BahdanauSeq2Seq(nn.Module):
    """RNN encoder–decoder with additive attention.

    Args:
        config: :class:`~attnkit.config.BahdanauConfig`.
    """

    def __init__(self, config: BahdanauConfig) -> None:
        super().__init__()
        self.config = c = config
        gru_dropout = c.dropout if c.num_layers > 1 else 0.0
        self.src_embed = nn.Embedding(c.src_vocab_size, c.embed_size, padding_idx=c.pad_id)
        self.encoder = nn.GRU(
            c.embed_size, c.num_hiddens, c.num_layers, batch_first=True, dropout=gru_dropout
        )
        self.tgt_embed = nn.Embedding(c.tgt_vocab_size, c.embed_size, padding_idx=c.pad_id)
        self.attention = AdditiveAttention(
            c.num_hiddens, c.num_hiddens, c.num_hiddens, dropout=c.dropout
        )
        self.decoder = nn.GRU(
            c.embed_size + c.num_hiddens,
            c.num_hiddens,
            c.num_layers,
            batch_first=True,
            dropout=gru_dropout,
        )
        self.init_state = nn.Linear(c.num_hiddens, c.num_layers * c.num_hiddens)
        self.dropout = Dropout(c.dropout)
        self.output = nn.Linear(c.num_hiddens, c.tgt_vocab_size)

    def encode(
        self, src: Tensor, src_mask: Tensor | None = None, need_weights: bool = False
    ) -> tuple[Tensor, list[Tensor] | None]:
        """Encode. Shapes: src (B, S), src_mask (B, S) bool -> (memory (B, S, H), None)."""
        check_src_mask(src, src_mask)
        x = self.dropout(self.src_embed(src))  # (B, S, E)
        if src_mask is not None:
            lengths = src_mask.sum(1).clamp(min=1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(
                x, lengths, batch_first=True, enforce_sorted=False
            )
            out, _ = self.encoder(packed)
            memory, _ = nn.utils.rnn.pad_packed_sequence(
                out, batch_first=True, total_length=src.shape[1]
            )
        else:
            memory, _ = self.encoder(x)  # (B, S, H)
        return memory, ([] if need_weights else None)

    def init_cache(self, memory: Tensor, src_mask: Tensor | None = None) -> GRUCache:
        """Initial decoder state from the encoder output at each sentence's last real token,
        and the attention keys projected once for all decoding steps."""
        b, s, h = memory.shape
        if src_mask is None:
            last = memory[:, -1]  # (B, H)
        else:
            idx = (src_mask.sum(1) - 1).clamp(min=0)  # (B,)
            last = memory[torch.arange(b, device=memory.device), idx]  # (B, H)
        state = torch.tanh(self.init_state(last))  # (B, layers * H)
        state = state.view(b, self.config.num_layers, h).transpose(0, 1).contiguous()
        return GRUCache(hidden=state, keys=self.attention.project_keys(memory))

    def decode(
        self,
        tgt: Tensor,
        memory: Tensor,
        src_mask: Tensor | None = None,
        cache: GRUCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, dict[str, list[Tensor]] | None]:
        """Decode step by step.

        Args:
            tgt: (B, L) target ids (with a cache: the new tokens only).
            memory: (B, S, H). src_mask: (B, S) bool. cache: :class:`GRUCache`, updated in place.
            need_weights: return the additive attention weights as ``{"cross": [(B, 1, L, S)]}``.

        Returns:
            ``(logits (B, L, V), weights or None)``.
        """
        if cache is None:
            cache = self.init_cache(memory, src_mask)
        mask = None if src_mask is None else src_mask[:, None, :]  # (B, 1, S)
        embedded = self.dropout(self.tgt_embed(tgt))  # (B, L, E)
        hidden = cache.hidden
        outputs, all_weights = [], []
        for t in range(tgt.shape[1]):
            query = hidden[-1].unsqueeze(1)  # (B, 1, H)
            context, w = self.attention(
                query, memory, memory, mask=mask, projected_keys=cache.keys
            )  # (B, 1, H)
            step_in = torch.cat([context, embedded[:, t : t + 1]], dim=-1)  # (B, 1, H + E)
            out, hidden = self.decoder(step_in, hidden)  # (B, 1, H)
            outputs.append(out)
            all_weights.append(w)
        cache.hidden = hidden
        cache.offset += tgt.shape[1]
        logits = self.output(self.dropout(torch.cat(outputs, dim=1)))  # (B, L, V)
        weights = None
        if need_weights:
            weights = {"self": [], "cross": [torch.cat(all_weights, dim=1).unsqueeze(1)]}
        return logits, weights

    def forward(self, src: Tensor, tgt_in: Tensor, src_mask: Tensor | None = None) -> Tensor:
        """Teacher-forced logits: (B, S), (B, L), (B, S) -> (B, L, V)."""
        memory, _ = self.encode(src, src_mask)
        logits, _ = self.decode(tgt_in, memory, src_mask)
        return logits

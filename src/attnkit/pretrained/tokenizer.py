"""Tokenization for pretrained checkpoints through the Hugging Face ``tokenizers`` library.

A checkpoint's tokenizer.json may carry fixed padding and truncation settings (all-MiniLM-L6-v2's
pads every input to 128 tokens and cuts at 128). :class:`PretrainedTokenizer` switches both off,
truncates at the model's own limit instead (``max_seq_length`` of sentence_bert_config.json when
the folder has one, else ``max_position_embeddings``), and pads each batch only to its longest
member.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["EncodedBatch", "PretrainedTokenizer", "model_max_length"]

TOKENIZER_FILE = "tokenizer.json"


@dataclass
class EncodedBatch:
    """A padded batch for :class:`~attnkit.models.encoder.EncoderModel`.

    Shapes: ``input_ids`` (B, S) long, ``attention_mask`` (B, S) bool (True = real token),
    ``token_type_ids`` (B, S) long.
    """

    input_ids: Tensor
    attention_mask: Tensor
    token_type_ids: Tensor

    def to(self, device: str | torch.device) -> EncodedBatch:
        """The same batch on ``device``."""
        return EncodedBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.token_type_ids.to(device),
        )


def model_max_length(folder: str | Path, hf_config: dict[str, Any]) -> int:
    """Longest input (in tokens, specials included) the checkpoint is meant to see.

    ``max_seq_length`` of sentence_bert_config.json (sentence-transformers models: 256 for
    all-MiniLM-L6-v2) when present, never more than ``max_position_embeddings``.
    """
    limit = int(hf_config.get("max_position_embeddings", 512))
    st_config = Path(folder) / "sentence_bert_config.json"
    if st_config.is_file():
        value = json.loads(st_config.read_text(encoding="utf-8")).get("max_seq_length")
        if value:
            limit = min(limit, int(value))
    return limit


class PretrainedTokenizer:
    """A ``tokenizers.Tokenizer`` with padding/truncation under attnkit's control.

    Args:
        tokenizer: a ``tokenizers.Tokenizer`` (its fixed padding/truncation are switched off).
        max_length: truncate every encoding to this many tokens, special tokens included.
        pad_id: id used to fill padded positions.
    """

    def __init__(self, tokenizer: Any, max_length: int, pad_id: int = 0) -> None:
        if max_length < 2:
            raise ValueError(
                f"max_length must be >= 2 (room for [CLS] and [SEP]), got {max_length}"
            )
        tokenizer.no_padding()
        tokenizer.no_truncation()
        tokenizer.enable_truncation(max_length=max_length)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_id = pad_id

    @classmethod
    def from_folder(
        cls, folder: str | Path, max_length: int, pad_id: int = 0
    ) -> PretrainedTokenizer:
        """Read ``folder/tokenizer.json``.

        Args:
            folder: checkpoint folder.
            max_length: the model's input limit (see :func:`model_max_length`).
            pad_id: padding id (the checkpoint's ``pad_token_id``).
        """
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ImportError(
                "pretrained tokenization needs the `tokenizers` package: pip install tokenizers"
            ) from None
        path = Path(folder) / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found; the checkpoint folder needs a Hugging Face {TOKENIZER_FILE}"
            )
        return cls(Tokenizer.from_file(str(path)), max_length, pad_id)

    @property
    def vocab_size(self) -> int:
        """Number of ids (added tokens included)."""
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text with special tokens, truncated at ``max_length``."""
        return [e.ids for e in self._encode(texts)]

    def tokens(self, text: str) -> list[str]:
        """The token strings of one text (for labelling attention heatmaps)."""
        return list(self._encode([text])[0].tokens)

    def __call__(self, texts: Sequence[str]) -> EncodedBatch:
        """Encode and pad a batch to its longest member.

        Returns:
            :class:`EncodedBatch` with tensors of shape (B, S), S = longest encoding.
        """
        encodings = self._encode(texts)
        return self.pad([e.ids for e in encodings], [e.type_ids for e in encodings])

    def pad(
        self, ids: Sequence[Sequence[int]], type_ids: Sequence[Sequence[int]] | None = None
    ) -> EncodedBatch:
        """Right-pad id lists into an :class:`EncodedBatch` (B, max length)."""
        if not ids:
            raise ValueError("pad: got an empty batch; pass at least one sequence")
        length = max(len(row) for row in ids)
        batch = len(ids)
        input_ids = torch.full((batch, length), self.pad_id, dtype=torch.long)  # (B, S)
        token_types = torch.zeros((batch, length), dtype=torch.long)  # (B, S)
        mask = torch.zeros((batch, length), dtype=torch.bool)  # (B, S)
        for row, seq in enumerate(ids):
            n = len(seq)
            input_ids[row, :n] = torch.as_tensor(seq, dtype=torch.long)
            if type_ids is not None:
                token_types[row, :n] = torch.as_tensor(type_ids[row], dtype=torch.long)
            mask[row, :n] = True
        return EncodedBatch(input_ids, mask, token_types)

    def _encode(self, texts: Sequence[str]) -> list[Any]:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError("texts must be a list of strings (wrap a single text in a list)")
        return self.tokenizer.encode_batch(list(texts))

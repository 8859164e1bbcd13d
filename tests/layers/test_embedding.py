"""layers.embedding.TokenEmbedding: scaled lookup, the id-range check, and no graph break under
torch.compile."""

from __future__ import annotations

import math

import pytest
import torch

from attnkit.layers.embedding import TokenEmbedding


def test_lookup_is_scaled_embedding_and_pad_row_is_zero() -> None:
    emb = TokenEmbedding(11, 8, pad_id=0)
    ids = torch.tensor([[0, 3, 10], [5, 5, 1]])
    expected = emb.weight.detach()[ids] * math.sqrt(8)
    torch.testing.assert_close(emb(ids), expected)
    assert torch.count_nonzero(emb(torch.zeros(1, 2, dtype=torch.long))) == 0


@pytest.mark.parametrize("bad", [11, -1])
def test_out_of_range_ids_are_a_clear_error(bad: int) -> None:
    emb = TokenEmbedding(11, 8, pad_id=0)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 11\).*tokenizer"):
        emb(torch.tensor([[1, bad]]))


def test_compiles_as_one_graph() -> None:
    emb = TokenEmbedding(11, 8, pad_id=0)
    ids = torch.tensor([[2, 3, 4]])
    compiled = torch.compile(emb, backend="eager", fullgraph=True)  # a graph break would raise
    torch.testing.assert_close(compiled(ids), emb(ids))

"""Pretrained BERT-family encoders, offline: strict checkpoint loading, tokenization through
Hugging Face ``tokenizers`` (imported only when a tokenizer is built), sentence embeddings.

Example::

    from attnkit.pretrained import embed, load_pretrained, similar

    vectors = embed(["a cat sits", "a dog runs"])  # (2, 384), unit length
    model, tokenizer, config = load_pretrained("minilm")
"""

from attnkit.pretrained.bert import (
    CheckpointError,
    convert_state_dict,
    load_encoder,
    load_pretrained,
    resolve_model_path,
    sha256_file,
)
from attnkit.pretrained.embeddings import SentenceEncoder, embed, mean_pool, similar
from attnkit.pretrained.tokenizer import EncodedBatch, PretrainedTokenizer

__all__ = [
    "CheckpointError",
    "EncodedBatch",
    "PretrainedTokenizer",
    "SentenceEncoder",
    "convert_state_dict",
    "embed",
    "load_encoder",
    "load_pretrained",
    "mean_pool",
    "resolve_model_path",
    "sha256_file",
    "similar",
]

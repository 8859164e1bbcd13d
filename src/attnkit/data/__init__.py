"""Data for translation: normalisation, tokenizers, corpora and token-budget batching.

Typical use::

    from attnkit import data
    pairs = data.load_corpus("dates", n=20000)
    train, valid, _ = data.split_pairs(pairs, valid_frac=0.05)
    src_tok = data.WordTokenizer.build([s for s, _ in train], min_freq=2)
    tgt_tok = data.SentencePieceTokenizer.train([t for _, t in train], vocab_size=64,
                                                split_digits=True)
    examples = data.encode_pairs(train, src_tok, tgt_tok, max_len=64)
    for batch in data.make_batches(examples, max_tokens=4096, seed=0, epoch=0):
        ...  # batch.src (B, S), batch.tgt_in / batch.tgt_out (B, L), batch.src_mask (B, S)
"""

from .batching import (
    Batch,
    Example,
    TokenBucketSampler,
    collate,
    encode_pairs,
    example_lengths,
    make_batches,
    pad_sequences,
    padding_fraction,
)
from .corpora import (
    FRA_ENG_SHA1,
    FRA_ENG_URL,
    default_cache_dir,
    download_fra_eng,
    group_references,
    load_corpus,
    read_pairs,
    split_pairs,
)
from .dates import DATE_FORMATS, format_date, generate_dates
from .errors import DataError
from .sentences import join_sentences, split_sentences
from .text import (
    BOS,
    BOS_ID,
    EOS,
    EOS_ID,
    PAD,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK,
    UNK_ID,
    detokenize_words,
    normalize_spaces,
    preprocess,
    tokenize_words,
)
from .tokenizers import (
    CharTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    WordTokenizer,
    load_tokenizer,
)

__all__ = [
    "BOS",
    "BOS_ID",
    "DATE_FORMATS",
    "EOS",
    "EOS_ID",
    "FRA_ENG_SHA1",
    "FRA_ENG_URL",
    "PAD",
    "PAD_ID",
    "SPECIAL_TOKENS",
    "UNK",
    "UNK_ID",
    "Batch",
    "DataError",
    "Example",
    "SentencePieceTokenizer",
    "TokenBucketSampler",
    "CharTokenizer",
    "Tokenizer",
    "WordTokenizer",
    "collate",
    "default_cache_dir",
    "detokenize_words",
    "download_fra_eng",
    "encode_pairs",
    "example_lengths",
    "format_date",
    "generate_dates",
    "group_references",
    "join_sentences",
    "load_corpus",
    "load_tokenizer",
    "make_batches",
    "normalize_spaces",
    "pad_sequences",
    "padding_fraction",
    "preprocess",
    "read_pairs",
    "split_pairs",
    "split_sentences",
    "tokenize_words",
]

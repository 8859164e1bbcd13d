"""Tokenizers: text <-> token ids, with the fixed special ids PAD=0, UNK=1, BOS=2, EOS=3.

Three kinds share one interface (:class:`Tokenizer`):

* :class:`WordTokenizer` — the course's word-level vocabulary over text normalised by
  :func:`~attnkit.data.text.preprocess`;
* :class:`SentencePieceTokenizer` — BPE or unigram sub-words trained with the ``sentencepiece``
  library;
* :class:`CharTokenizer` — one id per character of the training text, nothing normalised
  (character-level language models).

``encode`` never adds BOS/EOS (batching does); ``decode`` stops at the first EOS and skips PAD and
BOS. ``save(directory)`` writes ``tokenizer.json`` (naming the kind) plus the kind's own files, and
:func:`load_tokenizer` reads back whichever kind was saved. Use one tokenizer for both languages or
one per language: that is the caller's choice.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .errors import DataError
from .text import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    detokenize_words,
    normalize_spaces,
    preprocess,
    tokenize_words,
)

__all__ = [
    "Tokenizer",
    "WordTokenizer",
    "SentencePieceTokenizer",
    "CharTokenizer",
    "load_tokenizer",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = "tokenizer.json"
_FORMAT_VERSION = 1


def _as_int_list(ids: Iterable[int] | Any) -> list[int]:
    """Accept a list, tuple, numpy array or 1-D tensor of ids."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return [int(i) for i in ids]


def _strip_specials(ids: Iterable[int] | Any) -> list[int]:
    """Cut at the first EOS and drop PAD and BOS ids."""
    out = []
    for i in _as_int_list(ids):
        if i == EOS_ID:
            break
        if i not in (PAD_ID, BOS_ID):
            out.append(i)
    return out


class Tokenizer(ABC):
    """Common interface of attnkit tokenizers."""

    #: the name written to ``tokenizer.json`` and used by :func:`load_tokenizer`.
    kind: str = ""

    pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, specials included (ids are ``0 .. vocab_size - 1``)."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of one sentence, without BOS or EOS."""

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Text of an id sequence (list or 1-D tensor): stops at the first EOS, skips PAD/BOS."""

    @abstractmethod
    def pieces(self, ids: Iterable[int]) -> list[str]:
        """Token strings of ``ids``, one per id (specials included), e.g. for plot tick labels."""

    @abstractmethod
    def normalize(self, text: str) -> str:
        """``text`` rendered as :meth:`decode` renders output, for comparing with references."""

    @abstractmethod
    def _config(self) -> dict[str, Any]:
        """JSON-serialisable settings (besides the kind) written to ``tokenizer.json``."""

    @abstractmethod
    def _save_files(self, directory: Path) -> None:
        """Write the kind's own files into ``directory``."""

    @classmethod
    @abstractmethod
    def _from_config(cls, config: dict[str, Any], directory: Path) -> Tokenizer:
        """Rebuild from the ``tokenizer.json`` contents and the kind's files in ``directory``."""

    def save(self, directory: str | Path) -> Path:
        """Write the tokenizer into ``directory`` (created if needed) and return it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_files(directory)
        config = {"kind": self.kind, "format_version": _FORMAT_VERSION, **self._config()}
        tmp = directory / f".{CONFIG_FILE}.tmp"
        tmp.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, directory / CONFIG_FILE)  # last and whole: its presence means complete
        return directory

    def __len__(self) -> int:
        return self.vocab_size


class WordTokenizer(Tokenizer):
    """Word-level vocabulary over preprocessed text (the course's ``Vocab``).

    Ids 0–3 are the specials; then words by decreasing training frequency, ties broken
    alphabetically, so the vocabulary is deterministic. Words not in it map to ``UNK_ID``.

    Args:
        tokens: the vocabulary, index = id; must start with ``<pad> <unk> <bos> <eos>``.
        lowercase: passed to :func:`~attnkit.data.text.preprocess` when encoding.
        lang: detokenisation style for :meth:`decode` (see
            :func:`~attnkit.data.text.detokenize_words`): ``None``/``"en"`` or ``"fr"``.
    """

    kind = "word"

    def __init__(self, tokens: Sequence[str], lowercase: bool = True, lang: str | None = None):
        tokens = list(tokens)
        if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(
                f"tokens must start with the specials {list(SPECIAL_TOKENS)}, got {tokens[:4]}"
            )
        if len(set(tokens)) != len(tokens):
            raise ValueError(
                "tokens must be distinct; build the vocabulary with WordTokenizer.build"
            )
        self.tokens = tokens
        self.lowercase = lowercase
        self.lang = lang
        self._index = {token: i for i, token in enumerate(tokens)}

    @classmethod
    def build(
        cls,
        texts: Iterable[str],
        min_freq: int = 2,
        max_size: int | None = None,
        lowercase: bool = True,
        lang: str | None = None,
    ) -> WordTokenizer:
        """Build the vocabulary from training sentences.

        Args:
            texts: raw training sentences of one language (or both, for a shared vocabulary).
            min_freq: keep words seen at least this many times (the course uses 2).
            max_size: cap on ``vocab_size`` including the 4 specials (``None``: no cap).
            lowercase: lower-case before counting and encoding.
            lang: detokenisation style for :meth:`decode` (``"fr"`` keeps the space before ! ?).

        Returns:
            The tokenizer.
        """
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq}")
        if max_size is not None and max_size < len(SPECIAL_TOKENS):
            raise ValueError(
                f"max_size must be >= {len(SPECIAL_TOKENS)} (the specials), got {max_size}"
            )
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(tokenize_words(preprocess(text, lowercase)))
        for special in SPECIAL_TOKENS:
            counts.pop(special, None)
        words = sorted(
            (w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w)
        )
        if max_size is not None:
            words = words[: max_size - len(SPECIAL_TOKENS)]
        return cls(list(SPECIAL_TOKENS) + words, lowercase=lowercase, lang=lang)

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def token_to_id(self, token: str) -> int:
        """Id of one word (``UNK_ID`` if unknown)."""
        return self._index.get(token, UNK_ID)

    def encode(self, text: str) -> list[int]:
        """Preprocess, split on spaces and look up each word (unknown -> ``UNK_ID``)."""
        return [
            self._index.get(t, UNK_ID) for t in tokenize_words(preprocess(text, self.lowercase))
        ]

    def decode(self, ids: Iterable[int]) -> str:
        """Words of ``ids`` up to the first EOS, joined by :func:`detokenize_words`."""
        return detokenize_words(self.pieces(_strip_specials(ids)), self.lang)

    def pieces(self, ids: Iterable[int]) -> list[str]:
        out = []
        for i in _as_int_list(ids):
            if not 0 <= i < len(self.tokens):
                raise ValueError(f"id {i} out of range for a vocabulary of {len(self.tokens)}")
            out.append(self.tokens[i])
        return out

    def normalize(self, text: str) -> str:
        """Preprocess, tokenize and detokenize: the form :meth:`decode` output takes."""
        return detokenize_words(tokenize_words(preprocess(text, self.lowercase)), self.lang)

    def _config(self) -> dict[str, Any]:
        return {"lowercase": self.lowercase, "lang": self.lang, "tokens": self.tokens}

    def _save_files(self, directory: Path) -> None:
        pass  # the vocabulary lives in tokenizer.json

    @classmethod
    def _from_config(cls, config: dict[str, Any], directory: Path) -> WordTokenizer:
        return cls(config["tokens"], lowercase=config["lowercase"], lang=config.get("lang"))

    def __repr__(self) -> str:
        return (
            f"WordTokenizer(vocab_size={self.vocab_size}, lowercase={self.lowercase}, "
            f"lang={self.lang!r})"
        )


_SURROGATE = re.compile("[\ud800-\udfff]")
_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")


class SentencePieceTokenizer(Tokenizer):
    """Sub-word tokenizer backed by a trained ``sentencepiece`` model.

    Text is normalised by :func:`~attnkit.data.text.normalize_spaces` (non-breaking spaces,
    optional lower-casing) and then by sentencepiece's own NFKC rule; punctuation is not split
    beforehand. :meth:`pieces` returns the sub-word strings with sentencepiece's word-start
    marker ``▁`` (e.g. ``["▁go", "."]``).

    Args:
        model_proto: the serialised sentencepiece model (bytes of a ``.model`` file).
        lowercase: lower-case before encoding.
    """

    kind = "sentencepiece"
    MODEL_FILE = "spm.model"

    def __init__(self, model_proto: bytes, lowercase: bool = True):
        import sentencepiece as spm

        self.model_proto = bytes(model_proto)
        self.lowercase = lowercase
        if not self.model_proto:
            raise DataError("the sentencepiece model is empty (0 bytes)")
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
        except RuntimeError as err:
            raise DataError(
                f"not a sentencepiece model ({str(err).strip().splitlines()[0][:80]})"
            ) from None
        expected = dict(enumerate(SPECIAL_TOKENS))
        got = {i: self._sp.id_to_piece(i) for i in expected if i < self._sp.get_piece_size()}
        if got != expected:
            raise DataError(
                f"sentencepiece model has special pieces {got}, expected {expected}; "
                "train it with SentencePieceTokenizer.train"
            )

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = 8000,
        model_type: str = "bpe",
        directory: str | Path | None = None,
        character_coverage: float = 1.0,
        lowercase: bool = True,
        split_digits: bool = False,
        num_threads: int = 1,
    ) -> SentencePieceTokenizer:
        """Train a model on the given (training-split) sentences.

        Training uses every sentence in the given order (no sampling, no shuffling, no temporary
        file) so the model bytes are deterministic. If the corpus is too small for
        ``vocab_size``, training is retried with the largest size sentencepiece accepts and a
        warning is logged.

        Args:
            texts: raw training sentences (one language, or both for a shared model).
            vocab_size: requested number of pieces, the 4 specials included.
            model_type: ``"bpe"`` or ``"unigram"``.
            directory: if given, the trained tokenizer is also saved there.
            character_coverage: fraction of characters covered by the alphabet (1.0 keeps all;
                ~0.9995 is usual for large-alphabet languages).
            lowercase: lower-case before training and encoding.
            split_digits: split numbers into single digits (useful for dates and numbers).
            num_threads: sentencepiece training threads.

        Returns:
            The tokenizer (``vocab_size`` may be smaller than requested, see above).
        """
        import sentencepiece as spm

        if model_type not in ("bpe", "unigram"):
            raise ValueError(f"model_type must be 'bpe' or 'unigram', got {model_type!r}")
        if vocab_size <= len(SPECIAL_TOKENS):
            raise ValueError(f"vocab_size must be > {len(SPECIAL_TOKENS)}, got {vocab_size}")
        lines = [" ".join(normalize_spaces(text, lowercase).split()) for text in texts]
        lines = [line for line in lines if line]
        if not lines:
            raise DataError("SentencePieceTokenizer.train: no non-empty training sentences")
        options = dict(
            model_type=model_type,
            character_coverage=character_coverage,
            split_digits=split_digits,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            pad_piece=SPECIAL_TOKENS[PAD_ID],
            unk_piece=SPECIAL_TOKENS[UNK_ID],
            bos_piece=SPECIAL_TOKENS[BOS_ID],
            eos_piece=SPECIAL_TOKENS[EOS_ID],
            input_sentence_size=0,  # use every sentence, in order
            shuffle_input_sentence=False,
            num_threads=num_threads,
            minloglevel=2,
        )
        size = vocab_size
        for _attempt in range(3):
            model = io.BytesIO()
            try:
                spm.SentencePieceTrainer.train(
                    sentence_iterator=iter(lines), model_writer=model, vocab_size=size, **options
                )
                break
            except RuntimeError as err:
                match = _TOO_HIGH.search(str(err))
                if match is None or int(match.group(2)) >= size:
                    raise DataError(
                        f"sentencepiece training failed ({str(err).splitlines()[0]}); "
                        "check vocab_size and character_coverage"
                    ) from err
                logger.warning(
                    "corpus too small for vocab_size=%d; retrying sentencepiece with %s",
                    size,
                    match.group(2),
                )
                size = int(match.group(2))
        else:
            raise DataError(f"sentencepiece training failed for vocab_size={vocab_size}")
        tokenizer = cls(model.getvalue(), lowercase=lowercase)
        if directory is not None:
            tokenizer.save(directory)
        return tokenizer

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; a lone surrogate (from bytes decoded with ``surrogateescape``,
        not valid Unicode) is read as U+FFFD, i.e. an unknown character."""
        return self._sp.encode(_SURROGATE.sub("\ufffd", normalize_spaces(text, self.lowercase)))

    def decode(self, ids: Iterable[int]) -> str:
        ids = _strip_specials(ids)
        for i in ids:
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"id {i} out of range for a vocabulary of {self.vocab_size}")
        return self._sp.decode(ids)

    def pieces(self, ids: Iterable[int]) -> list[str]:
        ids = _as_int_list(ids)
        for i in ids:
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"id {i} out of range for a vocabulary of {self.vocab_size}")
        return [self._sp.id_to_piece(i) for i in ids]

    def normalize(self, text: str) -> str:
        """Lower-case (optional), NFKC-normalise and collapse spaces, as decoding renders text."""
        normalized = self._sp.normalize(normalize_spaces(text, self.lowercase))
        return normalized.replace("\u2581", " ").strip()

    def _config(self) -> dict[str, Any]:
        return {"lowercase": self.lowercase, "model_file": self.MODEL_FILE}

    def _save_files(self, directory: Path) -> None:
        (directory / self.MODEL_FILE).write_bytes(self.model_proto)

    @classmethod
    def _from_config(cls, config: dict[str, Any], directory: Path) -> SentencePieceTokenizer:
        path = directory / config.get("model_file", cls.MODEL_FILE)
        if not path.is_file():
            raise DataError(f"no such file: {path} (named by {directory / CONFIG_FILE})")
        try:
            return cls(path.read_bytes(), lowercase=config["lowercase"])
        except DataError as err:
            raise DataError(f"{path}: {err}") from None

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer(vocab_size={self.vocab_size}, lowercase={self.lowercase})"


class CharTokenizer(Tokenizer):
    """One id per character: the specials, then the training text's characters in code-point
    order (deterministic). Nothing is normalised: ``decode(encode(text)) == text`` for any text
    made of known characters; unknown characters map to ``UNK_ID`` (see :meth:`unknown`).

    Args:
        chars: the vocabulary's characters (distinct, one character each), ids 4, 5, ...
    """

    kind = "char"

    def __init__(self, chars: Sequence[str]):
        chars = list(chars)
        if any(len(c) != 1 for c in chars) or len(set(chars)) != len(chars):
            raise ValueError(
                "chars must be distinct single characters; build them with CharTokenizer.build"
            )
        self.chars = chars
        self._index = {c: i for i, c in enumerate(chars, len(SPECIAL_TOKENS))}

    @classmethod
    def build(cls, texts: Iterable[str]) -> CharTokenizer:
        """The vocabulary of every character in ``texts`` (the training text)."""
        seen: set[str] = set()
        for text in texts:
            seen.update(text)
        if not seen:
            raise DataError("CharTokenizer.build: the training text is empty")
        return cls(sorted(seen))

    @property
    def vocab_size(self) -> int:
        return len(SPECIAL_TOKENS) + len(self.chars)

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of ``text`` outside the vocabulary, in order of appearance."""
        return list(dict.fromkeys(c for c in text if c not in self._index))

    def encode(self, text: str) -> list[int]:
        """One id per character (unknown ones -> ``UNK_ID``)."""
        return [self._index.get(c, UNK_ID) for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        """The characters of ``ids`` up to the first EOS (PAD/BOS skipped, UNK as ``<unk>``)."""
        return "".join(self.pieces(_strip_specials(ids)))

    def pieces(self, ids: Iterable[int]) -> list[str]:
        out = []
        for i in _as_int_list(ids):
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"id {i} out of range for a vocabulary of {self.vocab_size}")
            specials = len(SPECIAL_TOKENS)
            out.append(SPECIAL_TOKENS[i] if i < specials else self.chars[i - specials])
        return out

    def normalize(self, text: str) -> str:
        """``text`` itself (nothing is normalised)."""
        return text

    def _config(self) -> dict[str, Any]:
        return {"chars": "".join(self.chars)}

    def _save_files(self, directory: Path) -> None:
        pass  # the characters live in tokenizer.json

    @classmethod
    def _from_config(cls, config: dict[str, Any], directory: Path) -> CharTokenizer:
        return cls(list(config["chars"]))

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


_KINDS: dict[str, type[Tokenizer]] = {
    WordTokenizer.kind: WordTokenizer,
    SentencePieceTokenizer.kind: SentencePieceTokenizer,
    CharTokenizer.kind: CharTokenizer,
}


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Read back a tokenizer written by :meth:`Tokenizer.save`, whatever its kind.

    Args:
        directory: the folder holding ``tokenizer.json``.

    Returns:
        A :class:`WordTokenizer`, :class:`SentencePieceTokenizer` or :class:`CharTokenizer`.
    """
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise DataError(f"no such file: {path}; save a tokenizer there with tokenizer.save()")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(config, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(config).__name__}")
    kind = config.get("kind")
    if not isinstance(kind, str) or kind not in _KINDS:
        raise DataError(
            f"{path}: unknown tokenizer kind {kind!r}; expected one of {sorted(_KINDS)}"
        )
    try:
        return _KINDS[kind]._from_config(config, Path(directory))
    except KeyError as err:
        raise DataError(f"{path}: missing field {err}") from err
    except DataError:
        raise
    except (TypeError, ValueError, AttributeError) as err:
        raise DataError(f"{path}: a field has the wrong type or value ({err})") from None

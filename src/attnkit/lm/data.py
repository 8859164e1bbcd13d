"""The text of a language-model run: reading it, tokenizing it, splitting it, cutting windows.

* :func:`read_text` reads ``tinyshakespeare`` (downloaded once, sha256-checked), a UTF-8 file or
  a folder of ``.txt`` files; bad input is a one-line :class:`~attnkit.data.errors.DataError`
  naming the file (missing, empty, binary or not UTF-8 with the byte offset, no ``.txt``).
* Tokenizers: :class:`~attnkit.data.tokenizers.CharTokenizer` or a sentencepiece BPE, trained on
  the training split only and kept in ``RUN/tokenizer`` (a resumed run re-uses it). BPE encodes
  each line on its own and marks line ends with the EOS id, so the text keeps its lines
  (sentencepiece itself folds newlines into spaces).
* :func:`train_windows`: the random windows of one step, drawn from (seed, epoch, position)
  alone, so that a resumed run draws the same ones; the step's windows are shared out over the
  DDP ranks (rank r takes every world-size-th), so N processes train on exactly the windows
  of one.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from attnkit.data.corpora import default_cache_dir
from attnkit.data.download import download_file
from attnkit.data.errors import DataError
from attnkit.data.text import EOS_ID, SPECIAL_TOKENS, UNK_ID
from attnkit.data.tokenizers import (
    CharTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    load_tokenizer,
)
from attnkit.lm.config import TextDataConfig

__all__ = [
    "TINYSHAKESPEARE_URL",
    "TINYSHAKESPEARE_SHA256",
    "TextData",
    "download_tinyshakespeare",
    "read_text",
    "read_text_file",
    "split_text",
    "encode_text",
    "decode_ids",
    "unknown_characters",
    "prepare_text_data",
    "train_windows",
    "IncrementalDecoder",
]

log = logging.getLogger(__name__)

TINYSHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
_HINT = "pass --data FILE, a folder of .txt files, or tinyshakespeare"


def download_tinyshakespeare(
    cache_dir: str | Path | None = None, *, download: bool = True, timeout: float = 60.0
) -> Path:
    """Tiny Shakespeare (1,115,394 characters) in ``cache_dir/tinyshakespeare/input.txt``,
    downloaded once (sha256-checked; default cache: ``$ATTNKIT_CACHE`` or ``~/.cache/attnkit``).

    Args:
        cache_dir: the cache folder.
        download: False only looks in the cache (DDP ranks other than 0).
        timeout: network timeout in seconds.
    """
    folder = Path(cache_dir or default_cache_dir()) / "tinyshakespeare"
    if not download:
        path = folder / "input.txt"
        if not path.is_file():
            raise DataError(f"{path} is missing; rank 0 downloads it first")
        return path
    return download_file(
        TINYSHAKESPEARE_URL,
        folder,
        checksum=TINYSHAKESPEARE_SHA256,
        algorithm="sha256",
        timeout=timeout,
        filename="input.txt",
        hint=f"retry, or copy input.txt by hand into {folder}",
    )


def read_text_file(path: str | Path) -> str:
    """A UTF-8 text file's contents (a leading byte-order mark dropped, CRLF kept as it is).

    Raises:
        DataError: a missing, empty, binary or non-UTF-8 file (naming the file and the offset
            of the first bad byte).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file: {path}; {_HINT}")
    raw = path.read_bytes()
    if not raw:
        raise DataError(f"{path}: the file is empty; {_HINT}")
    nul = raw.find(b"\0")
    if nul >= 0:
        raise DataError(f"{path}: a binary file, not text (NUL byte at offset {nul}); {_HINT}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset "
            f"{err.start}); convert it, e.g. `iconv -t UTF-8`"
        ) from None
    return text.removeprefix("\ufeff")


def read_text(source: str | Path, *, download: bool = True) -> str:
    """The text of ``source``: ``tinyshakespeare``, a file, or a folder of ``.txt`` files (all
    of them below it, in path order, each ending with a line break; empty ones skipped)."""
    if str(source) == "tinyshakespeare":
        return read_text_file(download_tinyshakespeare(download=download))
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"{path}: a folder without .txt files; {_HINT}")
        parts = []
        for file in files:
            if file.stat().st_size == 0:
                log.warning("%s is empty; skipped", file)
                continue
            text = read_text_file(file)
            parts.append(text if text.endswith("\n") else text + "\n")
        if not parts:
            raise DataError(f"{path}: every .txt file in it is empty")
        return "".join(parts)
    if not path.exists():
        raise DataError(f"no such file or folder: {source}; {_HINT}")
    return read_text_file(path)


def split_text(text: str, valid_fraction: float) -> tuple[str, str]:
    """The first ``1 - valid_fraction`` of the characters (training) and the rest (validation)."""
    cut = int(len(text) * (1.0 - valid_fraction))
    return text[:cut], text[cut:]


def unknown_characters(tokenizer: Tokenizer, text: str) -> list[str]:
    """The distinct characters of ``text`` that ``tokenizer`` maps to UNK, in order of first use."""
    if isinstance(tokenizer, CharTokenizer):
        return tokenizer.unknown(text)
    return [c for c in dict.fromkeys(text) if c != "\n" and UNK_ID in tokenizer.encode(c)]


def encode_text(
    tokenizer: Tokenizer, text: str, *, strict: bool = True, what: str = "the text"
) -> list[int]:
    """Token ids of ``text`` as one stream (BPE: line by line, EOS for each line end).

    Args:
        tokenizer: a :class:`CharTokenizer` or :class:`SentencePieceTokenizer`.
        text: any text.
        strict: characters the tokenizer does not know are an error (naming them); otherwise
            they become UNK.
        what: how the error names ``text`` (e.g. a file name).
    """
    if strict:
        unknown = unknown_characters(tokenizer, text)
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            line = text.count("\n", 0, text.index(unknown[0])) + 1
            raise DataError(
                f"{what} has characters the model's tokenizer does not know (the first on line "
                f"{line}): {shown}{more}; remove them or train on a text that has them"
            )
    if isinstance(tokenizer, CharTokenizer):
        return tokenizer.encode(text)
    ids: list[int] = []
    lines = text.split("\n")
    for i, line in enumerate(lines):
        ids += tokenizer.encode(line)
        if i < len(lines) - 1:
            ids.append(EOS_ID)
    return ids


def decode_ids(tokenizer: Tokenizer, ids: Sequence[int]) -> str:
    """The text of a stream of ids (BPE: EOS ids become line breaks; other specials vanish)."""
    decoder = IncrementalDecoder(tokenizer)
    return "".join(decoder.push(int(i)) for i in ids)


class IncrementalDecoder:
    """Turn ids into text one id at a time (for streaming), exactly as :func:`decode_ids` would.

    BPE pieces are decoded with the rest of their line, since a piece's leading space shows
    only after another piece; ``context`` (e.g. the prompt's ids) sets the line so far.
    """

    def __init__(self, tokenizer: Tokenizer, context: Sequence[int] = ()) -> None:
        self.tokenizer = tokenizer
        self.char = isinstance(tokenizer, CharTokenizer)
        self.line: list[int] = []
        self.shown = ""
        for i in context:
            self.push(int(i))

    def push(self, token: int) -> str:
        """The new text that ``token`` adds."""
        if self.char:
            return "" if token < len(SPECIAL_TOKENS) else self.tokenizer.pieces([token])[0]
        if token == EOS_ID:
            self.line, self.shown = [], ""
            return "\n"
        self.line.append(token)
        text = self.tokenizer.decode(self.line)
        new = text[len(self.shown) :] if text.startswith(self.shown) else ""
        self.shown = text
        return new


@dataclass
class TextData:
    """A run's tokenizer and token streams. Shapes: train (N,), valid (M,) int64 ids.

    ``valid`` encodes the validated text (the first ``data.valid_chars`` characters of the
    validation split), ``valid_chars`` is its length, for bits per character.
    """

    tokenizer: Tokenizer
    train: Tensor
    valid: Tensor
    valid_chars: int


def _build_tokenizer(cfg: TextDataConfig, train_text: str) -> Tokenizer:
    if cfg.tokenizer == "char":
        return CharTokenizer.build([train_text])
    lines = [line for line in train_text.split("\n") if line.strip()]
    return SentencePieceTokenizer.train(
        lines, vocab_size=cfg.vocab_size, model_type="bpe", lowercase=False
    )


def prepare_text_data(
    cfg: TextDataConfig, run_dir: Path, *, first: bool = True, tokenizer_from: Path | None = None
) -> TextData:
    """Read, split and encode the text; build (or re-load) the tokenizer in ``run_dir/tokenizer``.

    Args:
        cfg: the data section.
        run_dir: the run folder.
        first: rank 0 (may download and write the tokenizer); other ranks read them.
        tokenizer_from: another run's tokenizer folder to copy (continued pretraining): the
            whole text must then be encodable by it.

    Raises:
        DataError: unreadable text, a text too short for one window, or characters unknown to
            the tokenizer taken from another run.
    """
    text = read_text(cfg.source, download=first)
    train_text, valid_text = split_text(text, cfg.valid_fraction)
    valid_text = valid_text[: cfg.valid_chars]  # None: all
    need = cfg.block_size + 1
    if len(train_text) < need or not valid_text:
        raise DataError(
            f"{cfg.source}: {len(text)} characters are too short: the training "
            f"split ({len(train_text)}) needs one window of data.block_size + 1 = "
            f"{need} tokens and the validation split at least 1; use a longer text "
            "or a smaller --block-size"
        )
    tok_dir = run_dir / "tokenizer"
    if not (tok_dir / "tokenizer.json").is_file():
        if not first:
            raise DataError(
                f"{tok_dir}: the tokenizer must be built by rank 0 first; launch "
                "through `attnkit train-lm --nproc N`"
            )
        if tokenizer_from is not None:
            shutil.copytree(tokenizer_from, tok_dir, dirs_exist_ok=True)
        else:
            _build_tokenizer(cfg, train_text).save(tok_dir)
    tokenizer = load_tokenizer(tok_dir)
    strict = tokenizer_from is not None
    train = encode_text(tokenizer, train_text, strict=strict, what=str(cfg.source))
    valid = encode_text(tokenizer, valid_text, strict=strict, what=str(cfg.source))
    unknown = unknown_characters(tokenizer, valid_text) if not strict else []
    if unknown:
        log.warning(
            "%d characters of the validation split never occur in the training split "
            "and read as <unk>: %s",
            len(unknown),
            "".join(unknown[:20]),
        )
    if len(train) < need or not valid:
        raise DataError(
            f"{cfg.source}: the training split has {len(train)} tokens and the validation "
            f"split {len(valid)}: too short for one window of data.block_size + 1 = {need} "
            "and one token to validate; use a longer text or a smaller --block-size"
        )
    return TextData(
        tokenizer,
        torch.tensor(train, dtype=torch.long),
        torch.tensor(valid, dtype=torch.long),
        len(valid_text),
    )


def window_key(seed: int, epoch: int, position: int) -> int:
    """The random seed of one step's windows (a 63-bit mix of its three arguments)."""
    return ((seed * 1_000_003 + epoch) * 1_000_003 + position) % (2**63 - 1)


def train_windows(
    stream: Tensor,
    block_size: int,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    position: int,
    rank: int = 0,
    world_size: int = 1,
) -> Tensor:
    """This rank's share of one step's ``batch_size`` random windows of ``block_size + 1`` tokens.

    The windows depend on (seed, epoch, position) only; rank r takes windows r, r + world_size,
    ... of them.

    Shapes: stream (N,) -> (b, block_size + 1) with b = ceil((batch_size - rank) / world_size).
    """
    generator = torch.Generator().manual_seed(window_key(seed, epoch, position))
    starts = torch.randint(0, len(stream) - block_size, (batch_size,), generator=generator)
    starts = starts[rank::world_size]  # (b,)
    index = starts[:, None] + torch.arange(block_size + 1)  # (b, T + 1)
    return stream[index]  # (b, T + 1)


def eval_windows(length: int, block_size: int, batch_size: int) -> Iterator[list[int]]:
    """Start offsets of the non-overlapping windows that predict tokens 1 .. length - 1 of a
    stream, in batches (the last window may be shorter and comes alone)."""
    starts = list(range(0, length - 1, block_size))
    full = [s for s in starts if s + block_size + 1 <= length]
    for i in range(0, len(full), batch_size):
        yield full[i : i + batch_size]
    if len(full) < len(starts):
        yield [starts[-1]]


def bits_per_character(nats: float, chars: int) -> float:
    """``nats / ln 2 / chars``: the cost of a text in bits per character, whatever the tokens."""
    return nats / math.log(2) / max(chars, 1)

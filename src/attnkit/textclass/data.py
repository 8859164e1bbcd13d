"""The labelled text of a fine-tuning run: reading it, its labels, its tokenizer, its batches.

* :func:`read_labelled` reads TSV or CSV with a header row (``label<TAB>sentence``,
  ``sentence<TAB>label``, any column order; names chosen with ``text_column`` /
  ``label_column``) or JSON lines. Bad input is a one-line
  :class:`~attnkit.data.errors.DataError` naming the file and the line: unreadable or not UTF-8,
  no header, a missing column, a row with the wrong number of fields, an empty text or label.
* :func:`resolve_labels` decides classification or regression and checks the labels: a
  training label column with one class, a validation label the training data lacks, a
  regression label that is not a number.
* Tokenizers (:class:`BertTextEncoder`, :class:`LMTextEncoder`) turn texts into id lists cut to
  ``max_length``; they live in ``RUN/tokenizer``.
* :class:`LengthBuckets`: batches of ``batch_size`` sentences of similar length (little
  padding), drawn from (seed, epoch) alone, so that a resumed run sees the same batches.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import random
import shutil
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from attnkit.data import corpora
from attnkit.data.batching import check_replicas, pad_sequences
from attnkit.data.errors import AdvisedError, DataError
from attnkit.data.tokenizers import Tokenizer, load_tokenizer
from attnkit.pretrained.tokenizer import PretrainedTokenizer

__all__ = [
    "TEXT_COLUMNS",
    "LABEL_COLUMNS",
    "ColumnError",
    "LabelledTexts",
    "read_labelled",
    "split_labelled",
    "Labels",
    "resolve_labels",
    "class_counts",
    "TextEncoder",
    "BertTextEncoder",
    "LMTextEncoder",
    "load_text_encoder",
    "save_text_encoder",
    "LengthBuckets",
    "pad_batch",
]

log = logging.getLogger(__name__)

#: Column names found without ``text_column`` / ``label_column``, in order of preference
#: (:mod:`attnkit.data.corpora` knows them too: a translation command refuses such a file).
TEXT_COLUMNS, LABEL_COLUMNS = corpora.TEXT_COLUMNS, corpora.LABEL_COLUMNS


class ColumnError(AdvisedError):
    """The header lacks the text or label column; the advice names ``finetune``'s flag."""


@dataclass
class LabelledTexts:
    """The rows of one file: texts, raw label strings and their line numbers (1-based)."""

    path: str
    texts: list[str]
    labels: list[str]
    lines: list[int]
    text_column: str
    label_column: str

    def __len__(self) -> int:
        return len(self.texts)

    def where(self, i: int) -> str:
        """``FILE: line N`` of row ``i``."""
        return f"{self.path}: line {self.lines[i]}"

    def subset(self, rows: Sequence[int]) -> LabelledTexts:
        """The rows ``rows`` (indices, in the order given) of the same file."""
        return LabelledTexts(
            self.path,
            [self.texts[i] for i in rows],
            [self.labels[i] for i in rows],
            [self.lines[i] for i in rows],
            self.text_column,
            self.label_column,
        )


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    return "csv" if suffix == ".csv" else "tsv"


def _read_text(path: Path) -> str:
    if not path.is_file():
        what = "a folder" if path.is_dir() else "no such file"
        raise DataError(f"{path}: {what}; pass a TSV, CSV or JSONL file of labelled text")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line}: not UTF-8 text ({err.reason} at byte {err.start}); "
            "convert the file to UTF-8"
        ) from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise DataError(f"{path}: line {line}: a NUL byte: this is not a text file")
    return text.removeprefix("\ufeff")


def _pick(
    path: Path, header: list[str], given: str | None, candidates: tuple[str, ...], what: str
) -> str:
    """The column named ``given``, else the first of ``candidates`` present."""
    names = [given] if given else list(candidates)
    for name in names:
        if name in header:
            return name
    flag = "--text-column" if what == "text" else "--label-column"
    wanted = repr(given) if given else " or ".join(repr(c) for c in candidates)
    raise ColumnError(
        f"{path}: line 1: no {what} column {wanted}; the columns are {header}",
        f"choose one with {flag}",
    )


def _columns(
    path: Path, header: list[str], text_column: str | None, label_column: str | None
) -> tuple[str, str]:
    """The text and label column names of ``header``: as given, else found by name; in a
    two-column file the one not named as the other."""
    label = _pick(path, header, label_column, LABEL_COLUMNS, "label")
    if text_column is None and len(header) == 2 and not set(TEXT_COLUMNS) & set(header):
        text = header[1 - header.index(label)]
    else:
        text = _pick(path, header, text_column, TEXT_COLUMNS, "text")
    if text == label:
        raise DataError(f"{path}: line 1: the text and label columns are both {text!r}")
    return text, label


def _rows(path: Path, text: str) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of every non-blank row of a TSV or CSV file, header first."""
    if _format(path) == "tsv":
        for number, line in enumerate(text.split("\n"), 1):
            line = line.rstrip("\r")
            if line.strip():
                yield number, line.split("\t")
        return
    reader = csv.reader(io.StringIO(text, newline=""))
    start = 1
    try:
        for fields in reader:
            if any(f.strip() for f in fields):
                yield start, fields
            start = reader.line_num + 1
    except csv.Error as err:
        raise DataError(f"{path}: line {reader.line_num}: bad CSV ({err})") from None


def read_labelled(
    path: str | Path, text_column: str | None = None, label_column: str | None = None
) -> LabelledTexts:
    """Read a file of labelled texts (TSV/CSV with a header row, or JSON lines).

    Args:
        path: ``.tsv`` (tab-separated, no quoting, as GLUE), ``.csv`` (RFC 4180 quoting) or
            ``.jsonl`` (one object per line); anything else is read as TSV.
        text_column: the text column (JSON key); None: ``sentence`` or ``text`` (in a
            two-column file: the column that is not the label).
        label_column: the label column; None: ``label``.

    Returns:
        The rows, labels as strings (JSON numbers as written, ``1`` and ``1.5``).

    Raises:
        DataError: naming the file and line (see the module docstring).
    """
    path = Path(path)
    content = _read_text(path)
    texts: list[str] = []
    labels: list[str] = []
    lines: list[int] = []
    if _format(path) == "jsonl":
        text_col, label_col = text_column or "", label_column or ""
        for number, line in enumerate(content.split("\n"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: line {number}: not JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}: line {number}: expected a JSON object per line")
            if not lines:  # the first row decides the columns
                text_col, label_col = _columns(path, list(row), text_column, label_column)
            for name in (text_col, label_col):
                if name not in row:
                    raise DataError(
                        f"{path}: line {number}: no {name!r} key; every line needs "
                        f"{text_col!r} and {label_col!r}"
                    )
            value, label = row[text_col], row[label_col]
            if not isinstance(value, str):
                raise DataError(f"{path}: line {number}: {text_col!r} must be a string")
            if isinstance(label, bool) or not isinstance(label, str | int | float):
                raise DataError(
                    f"{path}: line {number}: {label_col!r} must be a string or a number"
                )
            texts.append(value)
            labels.append(str(label))
            lines.append(number)
    else:
        rows = _rows(path, content)
        first = next(rows, None)
        if first is None:
            raise DataError(f"{path}: empty file; expected a header row and labelled rows")
        header = [h.strip() for h in first[1]]
        text_col, label_col = _columns(path, header, text_column, label_column)
        ti, li = header.index(text_col), header.index(label_col)
        sep = "tabs" if _format(path) == "tsv" else "commas"
        for number, fields in rows:
            if len(fields) != len(header):
                raise DataError(
                    f"{path}: line {number}: {len(fields)} fields, but the header has "
                    f"{len(header)} ({sep} inside a text? use a .csv with quotes or .jsonl)"
                )
            texts.append(fields[ti])
            labels.append(fields[li].strip())
            lines.append(number)
    if not texts:
        raise DataError(f"{path}: no labelled rows after the header")
    data = LabelledTexts(str(path), texts, labels, lines, text_col, label_col)
    for i, (value, label) in enumerate(zip(texts, labels, strict=True)):
        if not value.strip():
            raise DataError(f"{data.where(i)}: empty text; remove the row or give it a text")
        if not label:
            raise DataError(f"{data.where(i)}: empty label in column {label_col!r}")
    return data


def split_labelled(
    data: LabelledTexts, fraction: float, seed: int = 0
) -> tuple[LabelledTexts, LabelledTexts]:
    """A seeded random ``fraction`` of the rows (at least one) for validation, the rest for
    training; both keep the file order."""
    order = list(range(len(data)))
    random.Random(f"split:{seed}").shuffle(order)
    cut = min(max(1, round(len(order) * fraction)), len(order) - 1)
    if cut < 1:
        raise DataError(f"{data.path}: {len(data)} row(s) cannot be split; pass --valid FILE")
    held = set(order[:cut])

    kept = [i for i in range(len(data)) if i not in held]
    return data.subset(kept), data.subset(sorted(held))


def _number(label: str) -> float | None:
    try:
        value = float(label)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _label_order(names: set[str]) -> list[str]:
    """Numbers in numeric order (``2`` before ``10``), else strings in alphabetical order."""
    numbers = {n: _number(n) for n in names}
    if all(v is not None for v in numbers.values()):
        return sorted(names, key=lambda n: (numbers[n], n))
    return sorted(names)


@dataclass
class Labels:
    """The training and validation targets. Shapes: train (N,), valid (M,); long class indices
    (classification) or float values (regression)."""

    problem: str
    names: list[str]
    train: Tensor
    valid: Tensor


def _is_regression(values: Sequence[str]) -> bool:
    numbers = [_number(v) for v in values]
    return all(n is not None for n in numbers) and any(
        n is not None and not float(n).is_integer() for n in numbers
    )


def resolve_labels(train: LabelledTexts, valid: LabelledTexts, problem: str = "auto") -> Labels:
    """Decide the problem, number the classes and check the labels.

    Args:
        train: the training rows.
        valid: the validation rows.
        problem: ``auto`` (regression when every training label is a number and some are not
            whole), ``classification`` or ``regression``.

    Raises:
        DataError: one class in the training labels; a validation label the training data
            lacks; a regression label that is not a number (naming the file and line).
    """
    if problem == "auto":
        problem = "regression" if _is_regression(train.labels) else "classification"
    if problem == "regression":
        columns = []
        for data in (train, valid):
            values = []
            for i, label in enumerate(data.labels):
                value = _number(label)
                if value is None:
                    raise DataError(
                        f"{data.where(i)}: label {label!r} is not a number; regression needs "
                        "numeric labels (for classes: no --regression, or --set "
                        "model.problem=classification)"
                    )
                values.append(value)
            columns.append(torch.tensor(values, dtype=torch.float32))
        return Labels(problem, [], columns[0], columns[1])
    names = _label_order(set(train.labels))
    same_file = valid.path == train.path  # validation rows held out of the training file
    if len(names) < 2 and same_file and len(set(train.labels) | set(valid.labels)) > 1:
        raise DataError(
            f"{train.path}: too few rows ({len(train) + len(valid)}) to hold some out for "
            "validation and keep two classes to train on; add rows (at least 2 of each class) "
            "or give a separate --valid FILE"
        )
    if len(names) < 2:
        raise DataError(
            f"{train.path}: line {train.lines[0]}: the label column {train.label_column!r} "
            f"holds one class ({names[0]!r}) in all {len(train) + len(valid) * same_file} rows; "
            "classification needs at least two (wrong --label-column?)"
        )
    index = {name: k for k, name in enumerate(names)}
    for i, label in enumerate(valid.labels):
        if label not in index:
            if len(names) > 20 and len(names) > len(train) // 2:  # one "class" per row or so
                raise DataError(
                    f"{train.path}: the label column {train.label_column!r} has {len(names)} "
                    f"different values in {len(train)} training rows: it holds text, not "
                    "classes (columns swapped, or not a labelled file?); choose the columns "
                    "with --text-column and --label-column"
                )
            part = " (the part kept for training)" if same_file else ""
            raise DataError(
                f"{valid.where(i)}: label {label!r} does not occur in the training data "
                f"{train.path}{part} (its labels: {names[:10]}"
                f"{' ...' if len(names) > 10 else ''})"
            )
    return Labels(
        problem,
        names,
        torch.tensor([index[x] for x in train.labels], dtype=torch.long),
        torch.tensor([index[x] for x in valid.labels], dtype=torch.long),
    )


def class_counts(labels: Labels, split: str = "train") -> str:
    """One line: each class's count and share of ``split`` (regression: range and mean)."""
    values = labels.train if split == "train" else labels.valid
    if labels.problem == "regression":
        return (
            f"{len(values)} values in [{float(values.min()):.4g}, {float(values.max()):.4g}], "
            f"mean {float(values.mean()):.4g}"
        )
    counts = Counter(values.tolist())
    return ", ".join(
        f"{name}: {counts.get(k, 0)} ({counts.get(k, 0) / max(len(values), 1):.1%})"
        for k, name in enumerate(labels.names)
    )


# ---------------------------------------------------------------------------- tokenizers


class TextEncoder(Protocol):
    """Texts to token ids for one backbone kind."""

    pad_id: int

    def encode(self, texts: Sequence[str]) -> list[list[int]]: ...
    def tokens(self, text: str) -> list[str]: ...


class BertTextEncoder:
    """A Hugging Face WordPiece tokenizer (``[CLS] text [SEP]``, cut to ``max_length``).

    Args:
        tokenizer: the :class:`~attnkit.pretrained.tokenizer.PretrainedTokenizer`.
    """

    def __init__(self, tokenizer: PretrainedTokenizer) -> None:
        self.tokenizer, self.pad_id = tokenizer, tokenizer.pad_id

    @classmethod
    def from_folder(cls, folder: str | Path, max_length: int, pad_id: int) -> BertTextEncoder:
        return cls(PretrainedTokenizer.from_folder(folder, max_length, pad_id=pad_id))

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer.encode(list(texts))

    def tokens(self, text: str) -> list[str]:
        return self.tokenizer.tokens(text)


class LMTextEncoder:
    """An attnkit language model's tokenizer: the text's ids, then a line end (the char
    tokenizer's newline, BPE's EOS), so that the last token (the one ``last`` pooling reads)
    always marks the end of the text. Longer texts keep their first ``max_length - 1`` ids.
    """

    def __init__(self, tokenizer: Tokenizer, max_length: int) -> None:
        from attnkit.lm.data import (
            encode_text,  # the language-model task, needed only here
            unknown_characters,
        )

        self.tokenizer, self.max_length, self.pad_id = tokenizer, max_length, 0
        self._encode, self._unknown = encode_text, unknown_characters
        self.end = encode_text(tokenizer, "\n", strict=False)[-1:]

    def unknown(self, texts: Sequence[str]) -> tuple[list[str], int]:
        """The distinct characters of ``texts`` the tokenizer reads as UNK (in order of first
        use), and how many of the texts hold one."""
        chars = self._unknown(self.tokenizer, "\n".join(texts))
        if not chars:
            return [], 0
        found = set(chars)
        return chars, sum(any(c in found for c in t) for t in texts)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        keep = self.max_length - len(self.end)
        return [self._encode(self.tokenizer, t, strict=False)[:keep] + self.end for t in texts]

    def tokens(self, text: str) -> list[str]:
        ids = self.encode([text])[0]
        pieces = self.tokenizer.pieces(ids)
        return [p.replace("\n", "\u21b5").replace(" ", "\u2423") for p in pieces]


def save_text_encoder(kind: str, source: Path, run_dir: Path) -> Path:
    """Copy the backbone's tokenizer into ``run_dir/tokenizer``: a BERT folder's
    ``tokenizer.json``, or a language-model run's ``tokenizer/`` folder."""
    target = run_dir / "tokenizer"
    target.mkdir(parents=True, exist_ok=True)
    if kind == "bert":
        file = source / "tokenizer.json"
        if not file.is_file():
            raise DataError(
                f"{file} not found; the checkpoint folder needs a Hugging Face tokenizer.json"
            )
        shutil.copyfile(file, target / "tokenizer.json")
    else:
        shutil.copytree(source / "tokenizer", target, dirs_exist_ok=True)
    return target


def load_text_encoder(kind: str, folder: str | Path, max_length: int, pad_id: int) -> TextEncoder:
    """The run's tokenizer from ``folder`` (``RUN/tokenizer``) for a backbone of ``kind``."""
    if kind == "bert":
        return BertTextEncoder.from_folder(folder, max_length, pad_id)
    return LMTextEncoder(load_tokenizer(folder), max_length)


# ---------------------------------------------------------------------------- batches


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-pad id lists to the longest. Returns ids (B, S) long and mask (B, S) bool."""
    ids, lens = pad_sequences(seqs, pad_id)  # (B, S), (B,)
    return ids, torch.arange(ids.shape[1]) < lens[:, None]  # (B, S) bool


class LengthBuckets:
    """Batches of ``batch_size`` examples of similar length: little padding, random order.

    Each epoch, with ``random.Random(f"{seed}:{epoch}")``: the indices are shuffled; with
    ``bucket``, sorted by length (stably) within chunks of ``chunk_batches * batch_size``; cut
    into batches of ``batch_size`` (the last may be smaller); the batch order is shuffled. Every
    index appears once per epoch. Distributed: every rank sees the same global batches and
    takes elements ``rank::num_replicas`` of each (sorted by length), so N processes train on
    the batches of one. ``state_dict`` holds the epoch and the batches handed out, for an exact
    resume.

    Args:
        lengths: tokens of each example.
        batch_size: examples per (global) batch.
        bucket: group by length (False: random batches).
        seed: base seed.
        chunk_batches: batches per sorted chunk.
        num_replicas: processes in the data-parallel split.
        rank: this process's place in it.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        bucket: bool = True,
        seed: int = 0,
        chunk_batches: int = 100,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if not lengths:
            raise ValueError("lengths is empty: there is nothing to batch")
        check_replicas(num_replicas, rank)
        if batch_size < 1 or chunk_batches < 1:
            raise ValueError(
                f"batch_size and chunk_batches must be >= 1, got {batch_size} and {chunk_batches}"
            )
        if batch_size < num_replicas:
            raise ValueError(
                f"batch_size={batch_size} is smaller than the {num_replicas} processes; every "
                "process needs at least one example per batch"
            )
        self.lengths, self.batch_size, self.bucket = list(lengths), batch_size, bucket
        self.seed, self.chunk = seed, chunk_batches * batch_size
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch, self.position = 0, 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def global_batches(self, epoch: int | None = None) -> list[list[int]]:
        """All batches of an epoch (default: the current one) as one process would see them."""
        epoch = self.epoch if epoch is None else epoch
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = random.Random(f"{self.seed}:{epoch}")
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        if self.bucket:
            order = [
                i
                for start in range(0, len(order), self.chunk)
                for i in sorted(order[start : start + self.chunk], key=self.lengths.__getitem__)
            ]
        batches = [
            order[start : start + self.batch_size]
            for start in range(0, len(order), self.batch_size)
        ]
        if len(batches[-1]) < self.num_replicas:
            batches.pop()  # too small to give every process an example
        rng.shuffle(batches)
        self._cache = (epoch, batches)
        return batches

    def __len__(self) -> int:
        return len(self.global_batches())

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (restarting at its first batch if it differs from the current one)."""
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.global_batches()
        for k in range(self.position, len(batches)):
            self.position = k + 1  # counted before yielding: a saved state skips this batch
            batch = batches[k]
            if self.num_replicas > 1:
                batch = sorted(batch, key=self.lengths.__getitem__)[self.rank :: self.num_replicas]
            yield batch
        self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "num_examples": len(self.lengths),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, mine in (("seed", self.seed), ("num_examples", len(self.lengths))):
            if state.get(key, mine) != mine:
                raise ValueError(
                    f"batch state has {key}={state[key]} but this run has {mine}; resume with "
                    "the same data"
                )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

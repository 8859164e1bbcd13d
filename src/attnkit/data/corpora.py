"""Parallel corpora: tab-separated files (the Tatoeba/manythings English–French file), its download,
the bundled offline dates corpus, and deterministic train/valid/test splits.

A corpus is a list of ``(source, target)`` string pairs. Nothing here tokenizes; see
:mod:`attnkit.data.tokenizers`.
"""

from __future__ import annotations

import logging
import os
import random
import urllib.parse
import zipfile
from collections.abc import Sequence
from pathlib import Path

from .dates import generate_dates
from .download import download_file
from .errors import DataError

__all__ = [
    "FRA_ENG_URL",
    "FRA_ENG_SHA1",
    "read_pairs",
    "download_fra_eng",
    "default_cache_dir",
    "generate_dates",
    "split_pairs",
    "group_references",
    "load_corpus",
]

logger = logging.getLogger(__name__)

Pair = tuple[str, str]

#: The English–French corpus as packaged by the d2l course (a zip holding ``fra-eng/fra.txt``).
FRA_ENG_URL = "http://d2l-data.s3-accelerate.amazonaws.com/fra-eng.zip"
FRA_ENG_SHA1 = "94646ad1522d915e7b0f9296181140edcf86a4f5"

_CORPUS_NAMES = ("fra.txt", "train.txt", "train.tsv")  # looked for, in this order
_HINT = "pass --data dates|fra-eng|PATH"
#: Column names of a labelled text file's header (``attnkit finetune``'s data, never a pair
#: corpus's), in order of preference: the text, the label.
TEXT_COLUMNS = ("sentence", "text")
LABEL_COLUMNS = ("label",)


def _pick(names: Sequence[str]) -> str | None:
    """The corpus among a folder's or zip's file names: ``fra.txt``, ``train.txt`` or
    ``train.tsv`` (the first found), else the only ``.tsv``/``.txt`` file there is. Not
    considered: notes (``_about.txt``), hidden files and macOS's ``__MACOSX/`` / ``._`` copies."""
    names = [
        n
        for n in names
        if "__MACOSX" not in Path(n).parts and not Path(n).name.startswith((".", "_"))
    ]
    by_name = {Path(n).name: n for n in reversed(names)}
    for name in _CORPUS_NAMES:
        if name in by_name:
            return by_name[name]
    texts = [n for n in names if Path(n).suffix.lower() in (".tsv", ".txt")]
    return texts[0] if len(texts) == 1 else None


def _not_found(where: str, hint: str) -> DataError:
    return DataError(
        f"no {', '.join(_CORPUS_NAMES)} and not exactly one .tsv/.txt file {where}; {hint}"
    )


def _read_source(path: Path, hint: str = _HINT) -> tuple[str, bytes]:
    """Return (display name, raw bytes) of the corpus file that ``path`` designates."""
    if not path.exists():
        raise DataError(f"no such file: {path}; {hint}")
    if path.is_dir():
        found = _pick(sorted(p.name for p in path.iterdir() if p.is_file()))
        if found is None:
            raise _not_found(f"in folder {path}", hint)
        return str(path / found), (path / found).read_bytes()
    if path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as archive:
                found = _pick([m for m in archive.namelist() if not m.endswith("/")])
                if found is not None:
                    return f"{path}/{found}", archive.read(found)
        except zipfile.BadZipFile as err:
            raise DataError(f"{path}: not a valid zip file ({err}); {hint}") from err
        raise _not_found(f"inside zip {path}", hint)
    return str(path), path.read_bytes()


def read_pairs(
    path: str | Path, src_col: int = 0, tgt_col: int = 1, *, hint: str = _HINT
) -> list[Pair]:
    """Read ``source<TAB>target`` pairs from a UTF-8 text file.

    Extra columns (like the attribution column of the manythings files) are ignored; blank lines
    are skipped; a UTF-8 byte-order mark and Windows line ends are accepted; fields are stripped.

    Args:
        path: a text file; a folder holding ``fra.txt``, ``train.txt`` or ``train.tsv`` (or a
            single ``.tsv``/``.txt`` file); or a ``.zip`` holding such a file (in any sub-folder, as
            d2l's ``fra-eng.zip`` does).
        src_col: column index of the source sentence.
        tgt_col: column index of the target sentence.
        hint: what the caller's user should do, ending the messages of a missing file or an
            empty corpus (default: ``train``'s ``--data`` choices).

    Returns:
        The list of ``(source, target)`` pairs in file order.

    Raises:
        DataError: one line naming ``file:line`` for a missing file, a line with too few columns,
            an empty field, bytes that are not UTF-8, a file with no pairs, or a labelled file
            (a ``sentence<TAB>label`` header: fine-tuning data, not translation pairs).
    """
    if src_col < 0 or tgt_col < 0 or src_col == tgt_col:
        raise ValueError(f"src_col and tgt_col must be distinct and >= 0, got {src_col}, {tgt_col}")
    name, data = _read_source(Path(path), hint)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{name}:{line}: bytes that are not UTF-8 ({err.reason}); re-save the file as UTF-8"
        ) from err
    needed = max(src_col, tgt_col) + 1
    pairs: list[Pair] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) < needed:
            raise DataError(
                f"{name}:{lineno}: expected at least {needed} tab-separated columns "
                f"(source<TAB>target), found {len(columns)}: {line[:60]!r}"
            )
        src, tgt = columns[src_col].strip(), columns[tgt_col].strip()
        if not pairs and _is_labelled_header(columns):
            raise DataError(
                f"{name}:{lineno}: a header {line[:60]!r}: this is labelled text for `attnkit "
                "finetune`; translation needs source<TAB>target pairs, without a header"
            )
        if not src or not tgt:
            side = "source" if not src else "target"
            raise DataError(f"{name}:{lineno}: empty {side} sentence: {line[:60]!r}")
        pairs.append((src, tgt))
    if not pairs:
        raise DataError(f"{name}: no sentence pairs in the file (empty corpus); {hint}")
    return pairs


def _is_labelled_header(columns: list[str]) -> bool:
    """Whether a first line names a text column and a label column (in either order)."""
    names = {c.strip().lower() for c in columns}
    return bool(names.intersection(TEXT_COLUMNS)) and bool(names.intersection(LABEL_COLUMNS))


def default_cache_dir() -> Path:
    """``$ATTNKIT_CACHE`` if set, else ``~/.cache/attnkit``."""
    env = os.environ.get("ATTNKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "attnkit"


def download_fra_eng(
    cache_dir: str | Path | None = None,
    url: str = FRA_ENG_URL,
    sha1: str | None = FRA_ENG_SHA1,
    timeout: float = 60.0,
) -> Path:
    """Download the English–French zip once into a cache folder and return its path.

    A cached file with the right checksum is reused without any network access; otherwise
    :func:`attnkit.data.download.download_file` fetches it to a temporary file, checks it, and
    only then renames it into place, so an interrupted or corrupt download never leaves a file
    under the final name.

    Args:
        cache_dir: folder for the file (default :func:`default_cache_dir`).
        url: where to fetch from (anything ``urllib`` opens, ``file://`` included).
        sha1: expected SHA-1 hex digest (``None`` skips the check).
        timeout: network timeout in seconds.

    Returns:
        Path of the cached zip (``<cache_dir>/<file name of url>``).

    Raises:
        DataError: the download failed or its checksum does not match.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    name = Path(urllib.parse.urlparse(url).path).name or "corpus.zip"
    return download_file(
        url,
        cache,
        sha1,
        algorithm="sha1",
        timeout=timeout,
        filename=name,
        hint=f"download it by hand and {_HINT}",
    )


def split_pairs(
    pairs: Sequence[Pair], valid_frac: float = 0.05, test_frac: float = 0.0, seed: int = 0
) -> tuple[list[Pair], list[Pair], list[Pair]]:
    """Split pairs into train/valid/test, keeping all pairs with the same source in one split.

    Distinct sources are shuffled with ``random.Random(seed)``; the first ``round(test_frac * G)``
    of the ``G`` sources go to test, the next ``round(valid_frac * G)`` to valid (at least one
    each when the fraction is positive), the rest to train. Each split keeps the input order.

    Args:
        pairs: ``(source, target)`` pairs.
        valid_frac: fraction of distinct sources for validation, in [0, 1).
        test_frac: fraction of distinct sources for test, in [0, 1).
        seed: shuffling seed.

    Returns:
        ``(train, valid, test)`` lists of pairs.
    """
    if not (0 <= valid_frac < 1 and 0 <= test_frac < 1 and valid_frac + test_frac < 1):
        raise ValueError(
            "valid_frac and test_frac must be in [0, 1) with a sum < 1, "
            f"got {valid_frac}, {test_frac}"
        )
    sources = list(dict.fromkeys(src for src, _ in pairs))
    random.Random(seed).shuffle(sources)

    def count(frac: float) -> int:
        return max(1, round(frac * len(sources))) if frac > 0 else 0

    n_test, n_valid = count(test_frac), count(valid_frac)
    if n_test + n_valid >= len(sources):
        raise ValueError(
            f"split_pairs: {len(sources)} distinct sources are too few for "
            f"valid_frac={valid_frac}, test_frac={test_frac}; use a larger corpus or smaller "
            "fractions"
        )
    split_of = {src: 2 for src in sources[:n_test]}
    split_of.update({src: 1 for src in sources[n_test : n_test + n_valid]})
    splits: tuple[list[Pair], list[Pair], list[Pair]] = ([], [], [])
    for pair in pairs:
        splits[split_of.get(pair[0], 0)].append(pair)
    return splits


def group_references(pairs: Sequence[Pair]) -> list[tuple[str, list[str]]]:
    """Group targets by source, for multi-reference BLEU.

    Args:
        pairs: ``(source, target)`` pairs.

    Returns:
        ``(source, [target, ...])`` for each distinct source in first-seen order, targets in input
        order.
    """
    groups: dict[str, list[str]] = {}
    for src, tgt in pairs:
        groups.setdefault(src, []).append(tgt)
    return list(groups.items())


def load_corpus(
    name_or_path: str | Path,
    n: int = 20000,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    src_col: int = 0,
    tgt_col: int = 1,
    limit: int | None = None,
) -> list[Pair]:
    """Load a corpus by name or path.

    Args:
        name_or_path: ``"dates"`` (generated offline), ``"fra-eng"`` (downloaded once and cached),
            or a path accepted by :func:`read_pairs`.
        n: number of pairs for ``"dates"``.
        seed: generation seed for ``"dates"``.
        cache_dir: download cache for ``"fra-eng"``.
        src_col: column of the sources in files.
        tgt_col: column of the targets (swap the two to translate the other way).
        limit: keep only the first ``limit`` pairs (``None``: all).

    Returns:
        The list of ``(source, target)`` pairs.
    """
    if name_or_path == "dates":
        pairs = generate_dates(n, seed=seed)
    elif name_or_path == "fra-eng":
        pairs = read_pairs(download_fra_eng(cache_dir), src_col=src_col, tgt_col=tgt_col)
    else:
        pairs = read_pairs(name_or_path, src_col=src_col, tgt_col=tgt_col)
    return pairs if limit is None else pairs[:limit]

"""Every text reader fed random bytes, odd Unicode (combining marks, right-to-left, zero-width
characters, NUL, lone surrogates from ``surrogateescape``), CRLF files and very long lines: the
only outcomes allowed are a correct result or attnkit's own one-line error naming the file and
line (DataError / ValueError)."""

from __future__ import annotations

import functools
import json
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnkit.cli.options import input_lines
from attnkit.data.corpora import load_corpus, read_pairs
from attnkit.data.errors import DataError
from attnkit.data.sentences import split_sentences
from attnkit.data.text import (
    detokenize_words,
    normalize_spaces,
    preprocess,
    tidy_punctuation_spacing,
    tokenize_words,
)
from attnkit.data.tokenizers import (
    CharTokenizer,
    SentencePieceTokenizer,
    WordTokenizer,
    load_tokenizer,
)
from attnkit.files import read_json_lines

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ODD = (
    "\u0301\u0308\u20dd"  # combining marks
    "\u202e\u202b\u200f\u05d0\u0639"  # right-to-left marks and letters
    "\u200b\u200c\u200d\ufeff\u2060"  # zero-width
    "\x00\x0b\x0c\x1c\x85\u2028\u2029"  # NUL and other line/paragraph separators
    "\xa0\u202f\u3000"  # non-breaking and wide spaces
    "İıßﬁ\U0001f600\U00010348"  # case-mapping oddities, astral characters
    ".!?,…«»\"' \t"
)
valid = st.characters(exclude_categories=("Cs",))  # what a UTF-8 file can hold
odd_text = st.text(alphabet=st.one_of(st.sampled_from(ODD), valid), max_size=80)
# Lone surrogates, as str(bytes, errors="surrogateescape") makes them from bytes that are not UTF-8
escaped_text = st.binary(max_size=80).map(lambda b: b.decode("utf-8", "surrogateescape"))
any_text = st.one_of(odd_text, escaped_text, st.text(max_size=40))  # the last: any code point
file_bytes = st.one_of(
    st.binary(max_size=400),
    st.lists(any_text, max_size=8).map(
        lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")
    ),
    st.lists(st.tuples(odd_text, odd_text), max_size=6).map(
        lambda pairs: "\r\n".join(f"{a}\t{b}" for a, b in pairs).encode("utf-8")
    ),
)


def names_the_file(err: Exception, path: Path) -> bool:
    message = str(err)
    return str(path) in message and len(message.splitlines()) == 1


@FUZZ
@given(data=file_bytes)
def test_read_pairs_returns_pairs_or_names_file_and_line(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "corpus.tsv"
        path.write_bytes(data)
        for reader in (read_pairs, load_corpus):
            try:
                pairs = reader(path)
            except DataError as err:
                assert names_the_file(err, path), err
                continue
            assert pairs and all(s and t and s == s.strip() and t == t.strip() for s, t in pairs)
            assert all("\n" not in s + t and "\t" not in s + t for s, t in pairs)


@FUZZ
@given(
    pairs=st.lists(
        st.tuples(odd_text, odd_text).filter(
            lambda p: all(x.strip() and not set(x) & set("\t\n\r") for x in p)
        ),
        min_size=1,
        max_size=6,
    ),
    crlf=st.booleans(),
    bom=st.booleans(),
)
def test_read_pairs_reads_back_what_was_written(pairs, crlf: bool, bom: bool) -> None:
    end = "\r\n" if crlf else "\n"
    data = ("\ufeff" if bom else "") + "".join(f"{s}\t{t}{end}" for s, t in pairs)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "corpus.tsv"
        path.write_bytes(data.encode("utf-8"))
        # split("\n") is the reader's only line separator; other separators stay in the text
        assert read_pairs(path) == [(s.strip(), t.strip()) for s, t in pairs]


def test_very_long_lines_are_read(tmp_path: Path) -> None:
    path = tmp_path / "long.tsv"
    long = "Word. " * 200_000
    path.write_text(f"{long}\tcourt\r\nshort\t{long}\n", encoding="utf-8")
    started = time.monotonic()
    pairs = read_pairs(path)
    assert [len(s) + len(t) for s, t in pairs] == [len(long.strip()) + 5] * 2
    assert len(split_sentences(long)) == 200_000
    assert time.monotonic() - started < 20


@FUZZ
@given(text=any_text)
def test_text_functions_take_any_text(text: str) -> None:
    assert isinstance(normalize_spaces(text), str)
    words = tokenize_words(preprocess(text))
    assert all(word and " " not in word for word in words)
    assert isinstance(detokenize_words(words, "fr"), str)
    tidy = tidy_punctuation_spacing(text)
    assert tidy.replace(" ", "") == text.replace(" ", "")


@FUZZ
@given(text=any_text)
def test_sentence_splitting_is_lossless(text: str) -> None:
    sentences = split_sentences(text)
    assert all(s and s == s.strip() for s in sentences)
    assert "".join("".join(s.split()) for s in sentences) == "".join(text.split())


@FUZZ
@given(text=any_text, ids=st.lists(st.integers(min_value=-(2**70), max_value=2**70), max_size=10))
def test_word_and_char_tokenizers_round_trip(text: str, ids: list[int]) -> None:
    words = WordTokenizer.build([text], min_freq=1)
    ids = words.encode(text)
    assert all(4 <= i < words.vocab_size for i in ids)
    assert words.decode(ids) == words.normalize(text)
    if text:
        chars = CharTokenizer.build([text])
        assert chars.decode(chars.encode(text)) == text
    for tok in (words, chars) if text else (words,):
        try:
            assert isinstance(tok.decode(ids), str)
        except ValueError as err:
            assert "out of range" in str(err)


@functools.lru_cache(maxsize=1)
def sentencepiece() -> SentencePieceTokenizer:
    from attnkit.data.dates import generate_dates

    texts = [s for pair in generate_dates(300, seed=0) for s in pair]
    return SentencePieceTokenizer.train(texts + ["Ünïcödé ½ ﬁx"], vocab_size=120)


@FUZZ
@given(text=any_text, ids=st.lists(st.integers(min_value=-(2**70), max_value=2**70), max_size=10))
def test_sentencepiece_encodes_any_text_and_checks_ids(text: str, ids: list[int]) -> None:
    tok = sentencepiece()
    encoded = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in encoded)
    assert isinstance(tok.decode(encoded), str)
    try:
        assert isinstance(tok.decode(ids), str)
    except ValueError as err:
        assert "out of range" in str(err)


@FUZZ
@given(data=file_bytes)
def test_tokenizer_files_load_or_name_the_file(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        for name, content in (
            ("tokenizer.json", data),
            ("tokenizer.json", json.dumps({"kind": "word", "tokens": data.hex()}).encode()),
        ):
            (Path(folder) / name).write_bytes(content)
            try:
                load_tokenizer(folder)
            except DataError as err:
                assert names_the_file(err, Path(folder) / "tokenizer.json"), err
            except ValueError as err:  # WordTokenizer's own check of its vocabulary
                assert "tokens must" in str(err)


@FUZZ
@given(data=file_bytes)
def test_json_lines_and_stdin_lines(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "metrics.jsonl"
        path.write_bytes(data)
        try:
            rows = read_json_lines(path)
            assert len(rows) <= data.count(b"\n") + 1
        except ValueError as err:
            assert names_the_file(err, path), err
    import io

    try:
        lines = list(input_lines(io.BufferedReader(io.BytesIO(data))))
        assert len(lines) == len(io.BytesIO(data).readlines())
        assert all("\n" not in line for line in lines)
    except ValueError as err:
        assert str(err).startswith("stdin line ") and len(str(err).splitlines()) == 1


@pytest.mark.parametrize("line_end", ["\n", "\r\n"])
def test_stdin_lines_keep_blank_lines_and_drop_line_ends(line_end: str) -> None:
    import io

    data = line_end.join(["\ufeffa", "", "b\u2028c", "  "]) + line_end
    assert list(input_lines(io.BufferedReader(io.BytesIO(data.encode())))) == [
        "a",
        "",
        "b\u2028c",
        "  ",
    ]

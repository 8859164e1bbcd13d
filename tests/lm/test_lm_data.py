"""The text of a language-model run: reading (and its errors), tokenizers, the split, the windows
and the tiny-shakespeare download (a local file:// URL; never the network)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from attnkit.data.errors import DataError
from attnkit.data.text import EOS_ID, UNK_ID
from attnkit.data.tokenizers import CharTokenizer, SentencePieceTokenizer, load_tokenizer
from attnkit.lm import data as lm_data
from attnkit.lm.config import TextDataConfig
from attnkit.lm.data import (
    decode_ids,
    encode_text,
    eval_windows,
    prepare_text_data,
    read_text,
    train_windows,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "tinyshakespeare"


def test_read_text_errors_name_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    binary = tmp_path / "image.txt"
    binary.write_bytes(b"GIF89a" + b"\x00\x01" * 10)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\u00e9 au lait".encode("latin-1"))
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "notes.md").write_text("not a .txt")
    cases = [
        (tmp_path / "missing.txt", "no such file"),
        (empty, "empty"),
        (binary, "NUL byte at offset 6"),
        (latin, "byte 0xe9 at offset 3"),
        (folder, "without .txt"),
    ]
    for path, needle in cases:
        with pytest.raises(DataError) as err:
            read_text(path)
        message = str(err.value)
        assert needle in message and str(path) in message and "\n" not in message, message


def test_a_folder_reads_its_txt_files_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first\n")
    (tmp_path / "c.md").write_text("skipped")
    (tmp_path / "d.txt").write_text("")  # empty: skipped
    assert read_text(tmp_path) == "first\nsecond\n"


def test_split_is_the_last_tenth_and_the_tokenizer_sees_training_text_only(
    tmp_path: Path,
) -> None:
    text = "abcdefghij" * 30 + "XYZ" + "abc" * 9  # 'X', 'Y', 'Z' only in the last 10 %
    path = tmp_path / "t.txt"
    path.write_text(text)
    cfg = TextDataConfig(source=str(path), block_size=8, batch_size=2)
    data = prepare_text_data(cfg, tmp_path / "run")
    cut = int(len(text) * 0.9)
    tok = load_tokenizer(tmp_path / "run" / "tokenizer")
    assert isinstance(tok, CharTokenizer)
    assert "".join(tok.chars) == "abcdefghij"  # trained on the training split only
    assert tok.decode(data.train.tolist()) == text[:cut]
    assert len(data.valid) == len(text) - cut == data.valid_chars
    expected = [UNK_ID if c in "XYZ" else tok.chars.index(c) + 4 for c in text[cut:]]
    assert data.valid.tolist() == expected
    # a resumed run re-uses the stored tokenizer, whatever the text says now
    path.write_text(text.replace("a", "q"))
    again = prepare_text_data(cfg, tmp_path / "run")
    assert load_tokenizer(tmp_path / "run" / "tokenizer").chars == tok.chars
    assert UNK_ID in again.train.tolist()


def test_too_short_text_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "short.txt"
    path.write_text("to be or not to be")
    with pytest.raises(DataError, match="short.txt.*block_size") as err:
        prepare_text_data(TextDataConfig(source=str(path), block_size=64), tmp_path / "run")
    assert "\n" not in str(err.value)


def test_char_tokenizer_round_trip_and_unknown_characters(tmp_path: Path) -> None:
    tok = CharTokenizer.build(["hello world\n"])
    assert tok.vocab_size == 4 + len(set("hello world\n"))
    loaded = load_tokenizer(tok.save(tmp_path / "tok"))
    assert isinstance(loaded, CharTokenizer) and loaded.chars == tok.chars
    text = "world\nhello"
    assert decode_ids(loaded, encode_text(loaded, text)) == text
    with pytest.raises(DataError, match=r"'z', 'Q'"):
        encode_text(loaded, "hez Qz", what="the prompt")
    assert encode_text(loaded, "hez", strict=False)[-1] == UNK_ID


def test_bpe_stream_keeps_line_breaks() -> None:
    lines = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog"] * 20
    tok = SentencePieceTokenizer.train(lines, vocab_size=40, lowercase=False)
    text = "the cat sat\non the log\n\na dog"
    ids = encode_text(tok, text)
    assert ids.count(EOS_ID) == text.count("\n")
    assert decode_ids(tok, ids) == text
    with pytest.raises(DataError, match="'#'"):
        encode_text(tok, "the # cat")


def test_train_windows_are_reproducible_and_shared_out_over_ranks() -> None:
    stream = torch.arange(1000)
    args = dict(seed=3, epoch=2, position=5)
    one = train_windows(stream, 16, 6, **args)
    assert one.shape == (6, 17)
    assert torch.equal(one, train_windows(stream, 16, 6, **args))
    assert not torch.equal(one, train_windows(stream, 16, 6, seed=3, epoch=2, position=6))
    assert torch.equal(one[:, 1:] - one[:, :-1], torch.ones(6, 16, dtype=torch.long))  # windows
    ranks = [train_windows(stream, 16, 6, **args, rank=r, world_size=2) for r in range(2)]
    assert torch.equal(ranks[0], one[0::2]) and torch.equal(ranks[1], one[1::2])


@pytest.mark.parametrize("length", [2, 17, 33, 100])
def test_eval_windows_predict_every_token_once(length: int) -> None:
    predicted = []
    for batch in eval_windows(length, 16, 3):
        for start in batch:
            predicted += range(start + 1, min(start + 17, length))
    assert predicted == list(range(1, length))


def _serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes, digest: str) -> Path:
    source = tmp_path / "served" / "input.txt"
    source.parent.mkdir()
    source.write_bytes(content)
    monkeypatch.setattr(lm_data, "TINYSHAKESPEARE_URL", source.as_uri())
    monkeypatch.setattr(lm_data, "TINYSHAKESPEARE_SHA256", digest)
    monkeypatch.setenv("ATTNKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "tinyshakespeare" / "input.txt"


def test_tinyshakespeare_download_is_checked_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = b"First Citizen:\nBefore we proceed any further, hear me speak.\n"
    cached = _serve(tmp_path, monkeypatch, content, hashlib.sha256(content).hexdigest())
    assert read_text("tinyshakespeare") == content.decode()
    assert cached.read_bytes() == content
    (tmp_path / "served" / "input.txt").unlink()  # the cached copy is used from now on
    assert read_text("tinyshakespeare") == content.decode()


def test_tinyshakespeare_checksum_mismatch_through_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from attnkit.cli import main

    cached = _serve(tmp_path, monkeypatch, b"not shakespeare\n" * 100, "0" * 64)
    argv = ["train-lm", "--data", "tinyshakespeare", "--run", str(tmp_path / "run")]
    assert main([*argv, "--no-progress", "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "checksum mismatch" in err and len(err.splitlines()) == 1, err
    assert not cached.exists()


@pytest.mark.skipif(not (SHARED / "input.txt").is_file(), reason="no shared tiny-shakespeare")
def test_the_pinned_checksum_is_the_corpus_one() -> None:
    digest = hashlib.sha256((SHARED / "input.txt").read_bytes()).hexdigest()
    assert digest == lm_data.TINYSHAKESPEARE_SHA256

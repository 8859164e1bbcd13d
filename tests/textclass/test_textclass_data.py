"""Reading labelled files (TSV, CSV, JSON lines), labels, length-bucketed batches, and bad data
reported by ``attnkit finetune`` as one line naming the file and the line (exit status 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attnkit.cli import main
from attnkit.data.batching import TokenBucketSampler, padding_fraction
from attnkit.data.errors import DataError
from attnkit.textclass.data import (
    LengthBuckets,
    read_labelled,
    resolve_labels,
    split_labelled,
)
from tests.textclass.textclass_tiny import tiny_argv


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_tsv_csv_and_jsonl_read_the_same_rows(tmp_path: Path) -> None:
    rows = [("1", 'a "quoted" text, with a comma'), ("0", "plain text"), ("10", "ten")]
    label_first = write(
        tmp_path / "a.tsv", "label\tsentence\n" + "".join(f"{y}\t{x}\n" for y, x in rows)
    )
    text_first = write(
        tmp_path / "b.tsv", "sentence\tlabel\n\n" + "".join(f"{x}\t{y}\r\n" for y, x in rows)
    )
    csv_rows = "".join(f'"{x.replace(chr(34), 2 * chr(34))}",{y}\n' for y, x in rows)
    as_csv = write(tmp_path / "c.csv", "text,label\n" + csv_rows)
    as_jsonl = write(
        tmp_path / "d.jsonl",
        "".join(
            json.dumps({"label": int(y), "text": x, "id": i}) + "\n"
            for i, (y, x) in enumerate(rows)
        ),
    )
    for path in (label_first, text_first, as_csv, as_jsonl):
        data = read_labelled(path)
        assert data.texts == [x for _, x in rows], path
        assert data.labels == [y for y, _ in rows], path
    assert read_labelled(text_first).lines == [3, 4, 5]  # blank lines are skipped, not counted
    review = write(tmp_path / "e.tsv", "review\tlabel\nnice\tpos\nbad\tneg\n")
    assert read_labelled(review).texts == ["nice", "bad"]  # two columns: the other one
    named = write(tmp_path / "f.tsv", "id\tbody\tstars\n1\tnice\t5\n2\tbad\t1\n")
    data = read_labelled(named, text_column="body", label_column="stars")
    assert (data.texts, data.labels) == (["nice", "bad"], ["5", "1"])


def test_labels_are_ordered_checked_and_split(tmp_path: Path) -> None:
    train = read_labelled(write(tmp_path / "t.tsv", "label\ttext\n10\ta\n2\tb\n2\tc\n"))
    valid = read_labelled(write(tmp_path / "v.tsv", "label\ttext\n2\td\n"))
    labels = resolve_labels(train, valid)
    assert labels.problem == "classification" and labels.names == ["2", "10"]  # numeric order
    assert labels.train.tolist() == [1, 0, 0] and labels.valid.tolist() == [0]
    scores = read_labelled(write(tmp_path / "s.tsv", "label\ttext\n0.5\ta\n3\tb\n4.25\tc\n"))
    regression = resolve_labels(scores, scores)
    assert regression.problem == "regression" and regression.names == []
    assert regression.train.tolist() == [0.5, 3.0, 4.25]
    rows = read_labelled(write(tmp_path / "r.tsv", "label\ttext\n" + "1\tx\n0\ty\n" * 10))
    kept, held = split_labelled(rows, 0.25, seed=3)
    assert (len(kept), len(held)) == (15, 5)
    assert sorted(kept.lines + held.lines) == rows.lines
    assert split_labelled(rows, 0.25, seed=3)[1].lines == held.lines  # seeded


def test_length_buckets_cover_every_example_with_little_padding() -> None:
    import random

    rng = random.Random(0)
    lengths = [rng.randint(3, 60) for _ in range(1000)]
    buckets = LengthBuckets(lengths, 32, seed=1)
    batches = list(buckets)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert {len(b) for b in batches[:-1]} <= {32, 1000 % 32}
    random_batches = list(LengthBuckets(lengths, 32, bucket=False, seed=1))
    assert padding_fraction(lengths, batches) < 0.05
    assert padding_fraction(lengths, random_batches) > 0.3
    assert list(LengthBuckets(lengths, 32, seed=1)) == batches  # seeded
    assert buckets.epoch == 1 and list(buckets) != batches  # a new order each epoch


def test_length_buckets_resume_mid_epoch_and_split_over_ranks() -> None:
    lengths = [(i * 7) % 23 + 1 for i in range(100)]
    straight = list(LengthBuckets(lengths, 8, seed=2))
    first = LengthBuckets(lengths, 8, seed=2)
    head = [b for _, b in zip(range(5), first, strict=False)]
    second = LengthBuckets(lengths, 8, seed=2)
    second.load_state_dict(first.state_dict())
    assert head + list(second) == straight
    ranks = [list(LengthBuckets(lengths, 8, seed=2, num_replicas=3, rank=r)) for r in range(3)]
    for k, batch in enumerate(straight):
        assert sorted(i for r in range(3) for i in ranks[r][k]) == sorted(batch)
    with pytest.raises(ValueError, match="same data"):
        LengthBuckets(lengths[:50], 8, seed=2).load_state_dict(first.state_dict())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size and chunk_batches must be >= 1"),
        ({"batch_size": 8, "chunk_batches": 0}, "batch_size and chunk_batches must be >= 1"),
        ({"batch_size": 8, "num_replicas": 2, "rank": 2}, "need 0 <= rank < num_replicas"),
        ({"batch_size": 8, "num_replicas": 0}, "need 0 <= rank < num_replicas"),
        ({"batch_size": 2, "num_replicas": 3, "rank": 0}, "smaller than the 3 processes"),
    ],
)
def test_length_buckets_reject_bad_settings_like_the_token_sampler(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        LengthBuckets([3, 4, 5, 6], **kwargs)
    if "rank" in match:  # the same check, the same words, as the translation sampler
        with pytest.raises(ValueError, match=match):
            TokenBucketSampler(
                [3, 4, 5, 6],
                64,
                num_replicas=kwargs["num_replicas"],
                rank=kwargs.get("rank", 0),
            )


GOOD = "label\tsentence\npos\tgood film\nneg\tbad film\npos\tgreat plot\n"


@pytest.mark.parametrize(
    ("train", "valid", "extra", "where"),
    [
        # a missing column (named by --text-column)
        (GOOD, GOOD, ("--text-column", "review"), "train.tsv: line 1: no text column 'review'"),
        ("label\tsentence\npos\tgood\nneg\t  \n", GOOD, (), "train.tsv: line 3: empty text"),
        (GOOD, "label\tsentence\npos\tfine\nmeh\tso so\n", (), "valid.tsv: line 3: label 'meh'"),
        ("label\tsentence\npos\tgood\n\npos\tgreat\n", GOOD, (), "train.tsv: line 2: the label"),
        ("label\tsentence\npos\tgood\nneg\tbad\textra\n", GOOD, (), "train.tsv: line 3: 3 fields"),
        (b"label\tsentence\npos\tgood\nneg\tbad \xff\n", GOOD, (), "train.tsv: line 3: not UTF-8"),
        (None, GOOD, (), "train.tsv: no such file"),
        ('{"label": "pos", "text": "good"}\n{"label": "neg"}\n', GOOD, (), "line 2: no 'text'"),
    ],
)
def test_bad_data_is_one_line_naming_file_and_line(
    tmp_path, capsys, tiny_bert, train, valid, extra, where
) -> None:
    name = "train.jsonl" if isinstance(train, str) and train.startswith("{") else "train.tsv"
    train_path = tmp_path / name
    if train is not None:
        write(train_path, train)
    valid_path = write(tmp_path / "valid.tsv", valid)
    status = main(tiny_argv(tiny_bert, train_path, valid_path, tmp_path / "run", *extra))
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1 and err.startswith("attnkit finetune: error: "), err
    assert where.replace("train.tsv", name) in err, err
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_label_column_holding_text_is_named_so(tmp_path: Path) -> None:
    """Swapped columns, or translation pairs with --label-column: the held-out rows' "labels"
    are sentences the training part lacks (was: "label ... does not occur in the training data
    FILE", though it was in FILE, with ten sentences listed as its labels)."""
    pairs = "".join(f"sentence number {i}\tphrase numéro {i}\n" for i in range(60))
    rows = read_labelled(
        write(tmp_path / "pairs.tsv", "text\tlabel\n" + pairs), label_column="label"
    )
    kept, held = split_labelled(rows, 0.1, seed=0)
    with pytest.raises(DataError, match=r"pairs.tsv: the label column 'label' has 54 different "):
        resolve_labels(kept, held)
    # a few classes, one missing from the part kept for training: that part is named
    few = "".join(f"{i}\t{'pos' if i else 'neu'}\n" for i in range(40)) + "x\tneg\n"
    rows = read_labelled(write(tmp_path / "few.tsv", "text\tlabel\n" + few))

    kept = rows.subset([i for i in range(len(rows)) if rows.labels[i] != "neg"])
    held = rows.subset([i for i in range(len(rows)) if rows.labels[i] == "neg"])
    with pytest.raises(DataError, match=r"'neg' does not occur .*\(the part kept for training\)"):
        resolve_labels(kept, held)


def test_regression_labels_must_be_numbers(tmp_path: Path) -> None:
    train = read_labelled(write(tmp_path / "t.tsv", "label\ttext\n0.5\ta\n1.5\tb\n"))
    valid = read_labelled(write(tmp_path / "v.tsv", "label\ttext\n0.5\ta\nhigh\tb\n"))
    with pytest.raises(DataError, match=r"v.tsv: line 3: label 'high' is not a number"):
        resolve_labels(train, valid)


def test_one_class_left_after_the_validation_split_is_told_apart(tmp_path: Path) -> None:
    """Two rows of two classes: holding one out leaves one class to train on - the message says
    so instead of claiming the file holds one class."""
    both = read_labelled(write(tmp_path / "both.tsv", "text\tlabel\ngood\tpos\nbad\tneg\n"))
    train, valid = split_labelled(both, 0.1)
    with pytest.raises(DataError, match=r"both.tsv: too few rows \(2\) to hold some out for"):
        resolve_labels(train, valid)
    one = read_labelled(write(tmp_path / "one.tsv", "text\tlabel\na\tpos\nb\tpos\nc\tpos\n"))
    train, valid = split_labelled(one, 0.1)
    with pytest.raises(DataError, match=r"holds one class \('pos'\) in all 3 rows"):
        resolve_labels(train, valid)

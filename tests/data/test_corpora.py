"""Corpora: reading TSV pairs, the cached download, the dates corpus, splits (attnkit.data)."""

import datetime
import hashlib
import re
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from attnkit.data import (
    DataError,
    corpora,
    default_cache_dir,
    download_fra_eng,
    format_date,
    generate_dates,
    group_references,
    load_corpus,
    preprocess,
    read_pairs,
    split_pairs,
)

GOOD = "Go.\tVa !\tCC-BY 2.0 (France) Attribution: tatoeba.org #2877272\n\nHi.\tSalut !\tCC-BY\n"


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


# --- read_pairs ----------------------------------------------------------------------------


def test_read_pairs_file_with_attribution_column_bom_crlf(tmp_path):
    path = write(tmp_path / "c.txt", b"\xef\xbb\xbf" + GOOD.replace("\n", "\r\n").encode())
    assert read_pairs(path) == [("Go.", "Va !"), ("Hi.", "Salut !")]
    assert read_pairs(path, src_col=1, tgt_col=0) == [("Va !", "Go."), ("Salut !", "Hi.")]


def test_read_pairs_refuses_a_labelled_file_by_its_header(tmp_path):
    """finetune's data (sentence<TAB>label, either order, any case) given to a translation
    command is named as such instead of becoming pairs such as ("a dull mess", "0")."""
    for header in ("sentence\tlabel", "Label\tText"):
        path = write(tmp_path / "sst.tsv", f"\n{header}\na dull mess\t0\na fine film\t1\n")
        with pytest.raises(DataError, match=r"sst.tsv:2: a header .*attnkit finetune"):
            read_pairs(path)
    # only a first line is a header: the same words later are an ordinary pair
    path = write(tmp_path / "pairs.tsv", "Go.\tVa !\nsentence\tlabel\n")
    assert read_pairs(path) == [("Go.", "Va !"), ("sentence", "label")]


@pytest.mark.parametrize("name", ["fra.txt", "train.txt"])
def test_read_pairs_folder(tmp_path, name):
    write(tmp_path / "corpus" / name, GOOD)
    assert read_pairs(tmp_path / "corpus")[1] == ("Hi.", "Salut !")


def test_read_pairs_zip_like_d2l(tmp_path):
    zpath = tmp_path / "fra-eng.zip"
    with zipfile.ZipFile(zpath, "w") as archive:
        archive.writestr("fra-eng/_about.txt", "not a corpus")
        archive.writestr("fra-eng/fra.txt", GOOD)
    assert read_pairs(zpath) == [("Go.", "Va !"), ("Hi.", "Salut !")]


def test_read_pairs_zip_bad_line_names_member_and_line(tmp_path):
    zpath = tmp_path / "c.zip"
    with zipfile.ZipFile(zpath, "w") as archive:
        archive.writestr("fra-eng/fra.txt", "Go.\tVa !\nno tab here\n")
    with pytest.raises(DataError, match=r"c\.zip/fra-eng/fra\.txt:2: "):
        read_pairs(zpath)


@pytest.mark.parametrize(
    "content, line, words",
    [
        ("Go.\tVa !\nHi.\tSalut !\nno tab\n", 3, "tab-separated"),
        (b"Go.\tVa !\nCaf\xe9\tCaf\xe9\n", 2, "not UTF-8"),
        ("Go.\tVa !\n\n\t Salut\n", 3, "empty source"),
    ],
)
def test_read_pairs_bad_lines_name_file_and_line(tmp_path, content, line, words):
    path = write(tmp_path / "bad.txt", content)
    with pytest.raises(DataError, match=re.escape(f"{path}:{line}: ")) as info:
        read_pairs(path)
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_read_pairs_missing_and_empty(tmp_path):
    with pytest.raises(
        DataError, match=r"no such file: .*nope\.txt; pass --data dates\|fra-eng\|PATH"
    ):
        read_pairs(tmp_path / "nope.txt")
    empty = write(tmp_path / "empty.txt", "\n  \n")
    with pytest.raises(DataError, match=r"empty\.txt: no sentence pairs"):
        read_pairs(empty)
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="no fra.txt, train.txt, train.tsv and not exactly one"):
        read_pairs(tmp_path / "folder")
    with pytest.raises(DataError, match="not a valid zip"):
        read_pairs(write(tmp_path / "broken.zip", "not a zip"))
    with pytest.raises(DataError, match="; pass --data a file of pairs$"):
        read_pairs(tmp_path / "nope.txt", hint="pass --data a file of pairs")  # the caller's


def test_a_zip_or_folder_holding_one_tsv_of_any_name_is_read(tmp_path):
    """own-data.md: "a .zip holding such a file works too" - whatever the file is called."""
    import zipfile

    with zipfile.ZipFile(tmp_path / "pairs.zip", "w") as archive:  # as macOS zips a folder
        archive.writestr("data/my-pairs.tsv", "Go.\tVa !\n")
        archive.writestr("data/_about.txt", "where the pairs come from")
        archive.writestr("__MACOSX/data/._my-pairs.tsv", "resource fork")
    assert read_pairs(tmp_path / "pairs.zip") == [("Go.", "Va !")]
    with zipfile.ZipFile(tmp_path / "split.zip", "w") as archive:
        archive.writestr("train.tsv", "Go.\tVa !\n")
        archive.writestr("valid.tsv", "Hi.\tSalut.\n")
    assert read_pairs(tmp_path / "split.zip") == [("Go.", "Va !")]  # train.tsv by its name
    folder = tmp_path / "folder"
    folder.mkdir()
    write(folder / "one.tsv", "Hi.\tSalut.\n")
    assert read_pairs(folder) == [("Hi.", "Salut.")]
    write(folder / "two.tsv", "Hi.\tSalut.\n")
    with pytest.raises(DataError, match="not exactly one .tsv/.txt file in folder"):
        read_pairs(folder)  # two candidates: which one is meant is not guessed


REAL = Path("/work/shared/data/fra-eng/train.txt")


@pytest.mark.skipif(not REAL.is_file(), reason="real fra-eng data not available")
def test_read_pairs_real_fra_eng():
    pairs = read_pairs(REAL)
    assert len(pairs) > 100_000
    assert pairs[0] == ("Go.", "Va !")
    assert preprocess("\t".join(pairs[2])) == "run !\tcours !"


# --- download ------------------------------------------------------------------------------


@pytest.fixture
def remote_zip(tmp_path):
    path = tmp_path / "remote" / "fra-eng.zip"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("fra-eng/fra.txt", GOOD)
    return path, hashlib.sha1(path.read_bytes()).hexdigest()


def test_download_once_then_cache_hit(tmp_path, remote_zip):
    remote, sha1 = remote_zip
    cache = tmp_path / "cache"
    got = download_fra_eng(cache, url=remote.as_uri(), sha1=sha1)
    assert got == cache / "fra-eng.zip" and got.read_bytes() == remote.read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == ["fra-eng.zip"]  # no temp file left
    remote.unlink()  # a second download would now fail
    assert download_fra_eng(cache, url=remote.as_uri(), sha1=sha1) == got
    assert read_pairs(got)[0] == ("Go.", "Va !")


def test_download_checksum_mismatch_leaves_nothing(tmp_path, remote_zip):
    remote, _ = remote_zip
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="checksum mismatch .* expected sha1 0000"):
        download_fra_eng(cache, url=remote.as_uri(), sha1="0" * 40)
    assert list(cache.iterdir()) == []


def test_download_replaces_corrupt_cache_and_reports_failures(tmp_path, remote_zip):
    remote, sha1 = remote_zip
    cache = tmp_path / "cache"
    write(cache / "fra-eng.zip", "truncated")
    assert (
        download_fra_eng(cache, url=remote.as_uri(), sha1=sha1).read_bytes() == remote.read_bytes()
    )
    with pytest.raises(DataError, match="could not download .*--data"):
        download_fra_eng(tmp_path / "other", url=(tmp_path / "missing.zip").as_uri(), sha1=sha1)
    assert list((tmp_path / "other").iterdir()) == []


def test_cache_dir_env_override(tmp_path, monkeypatch, remote_zip):
    monkeypatch.setenv("ATTNKIT_CACHE", str(tmp_path / "envcache"))
    assert default_cache_dir() == tmp_path / "envcache"
    remote, sha1 = remote_zip
    assert download_fra_eng(url=remote.as_uri(), sha1=sha1).parent == tmp_path / "envcache"
    monkeypatch.delenv("ATTNKIT_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "attnkit"


def test_load_corpus_names_and_paths(tmp_path, monkeypatch, remote_zip):
    remote, _ = remote_zip
    monkeypatch.setattr(corpora, "download_fra_eng", lambda cache_dir=None: remote)
    assert load_corpus("fra-eng") == [("Go.", "Va !"), ("Hi.", "Salut !")]
    assert load_corpus(remote, limit=1) == [("Go.", "Va !")]
    assert load_corpus("dates", n=7, seed=2) == generate_dates(7, seed=2)


# --- dates ---------------------------------------------------------------------------------

MONTHS = {
    name: i + 1
    for names in (
        "january february march april may june july august september october november december",
        "jan feb mar apr may jun jul aug sep oct nov dec",
        "janvier février mars avril mai juin juillet août septembre octobre novembre décembre",
    )
    for i, name in enumerate(names.split())
}
WEEKDAYS = {  # Zeller numbering: 0 = saturday
    name: i
    for names in (
        "saturday sunday monday tuesday wednesday thursday friday",
        "sat sun mon tue wed thu fri",
        "samedi dimanche lundi mardi mercredi jeudi vendredi",
    )
    for i, name in enumerate(names.split())
}


def zeller(year: int, month: int, day: int) -> int:
    """Day of week by Zeller's congruence (0 = Saturday), independent of datetime."""
    if month < 3:
        month, year = month + 12, year - 1
    k, j = year % 100, year // 100
    return (day + 13 * (month + 1) // 5 + k + k // 4 + j // 4 + 5 * j) % 7


def parse_date(src: str) -> tuple[tuple[int, int, int], str | None]:
    """A small independent reader of the generated formats -> ((y, m, d), weekday word)."""
    tokens = src.split()
    for sep in "/.":
        if tokens[1:2] == [sep]:
            a, b, c = tokens[0], tokens[2], tokens[4]
            return ((int(a), int(b), int(c)) if len(a) == 4 else (int(c), int(b), int(a))), None
    year = next(int(t) for t in tokens if re.fullmatch(r"\d{4}", t))
    month = next(MONTHS[t] for t in tokens if t in MONTHS)
    day = next(
        int(re.match(r"\d+", t).group())
        for t in tokens
        if re.fullmatch(r"\d{1,2}(st|nd|rd|th|er)?", t)
    )
    weekday = next((t for t in tokens if t in WEEKDAYS), None)
    return (year, month, day), weekday


def test_dates_known_example():
    date = datetime.date(1987, 3, 10)
    assert format_date(date, "{wd} {d} {month} {y}") == "tuesday 10 march 1987"
    assert format_date(date, "the {ord} of {month} {y}") == "the 10th of march 1987"
    assert format_date(datetime.date(1987, 3, 1), "le {jour} {d_fr} {mois} {y}") == (
        "le dimanche 1er mars 1987"
    )


def test_dates_are_correct_with_true_weekdays():
    for src, tgt in generate_dates(3000, seed=5):
        (year, month, day), weekday = parse_date(src)
        assert f"{year:04d}-{month:02d}-{day:02d}" == tgt, src
        assert 1900 <= year <= 2099
        if weekday is not None:
            assert WEEKDAYS[weekday] == zeller(year, month, day), src
        assert src == src.lower() and preprocess(src) == src  # word tokenizer sees it as is


def test_dates_deterministic_varied_and_french():
    pairs = generate_dates(3000, seed=11)
    assert pairs == generate_dates(3000, seed=11)
    assert pairs != generate_dates(3000, seed=12)
    shapes = Counter(re.sub(r"[a-zéû]+", "w", re.sub(r"\d+\w*", "9", s)) for s, _ in pairs)
    assert len(shapes) >= 10
    words = Counter(w for s, _ in pairs for w in s.split())
    assert words["le"] > 100 and words["1er"] > 0 and words[","] > 100 and words["/"] > 100
    assert {"mardi", "février", "août", "décembre", "tuesday", "tue", "mar"} <= set(words)
    years = [int(t[:4]) for _, t in pairs]
    assert min(years) < 1910 and max(years) > 2090


# --- splits and references -----------------------------------------------------------------


def test_split_pairs_grouped_by_source_and_deterministic():
    pairs = [(f"s{i % 300}", f"t{i}") for i in range(900)]  # each source has 3 references
    train, valid, test = split_pairs(pairs, valid_frac=0.1, test_frac=0.05, seed=1)
    assert Counter(train + valid + test) == Counter(pairs)
    sources = [{s for s, _ in part} for part in (train, valid, test)]
    assert not (sources[0] & sources[1] or sources[0] & sources[2] or sources[1] & sources[2])
    assert (len(sources[1]), len(sources[2])) == (30, 15)
    assert train == [p for p in pairs if p[0] in sources[0]]  # input order kept
    assert split_pairs(pairs, 0.1, 0.05, seed=1) == (train, valid, test)
    assert split_pairs(pairs, 0.1, 0.05, seed=2)[1] != valid
    with pytest.raises(ValueError, match="valid_frac"):
        split_pairs(pairs, valid_frac=0.7, test_frac=0.4)


def test_group_references():
    pairs = [("b", "1"), ("a", "2"), ("b", "3")]
    assert group_references(pairs) == [("b", ["1", "3"]), ("a", ["2"])]

"""Text preprocessing and tokenizers (attnkit.data.text, attnkit.data.tokenizers)."""

import json
import logging
import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attnkit.data import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    DataError,
    SentencePieceTokenizer,
    WordTokenizer,
    detokenize_words,
    generate_dates,
    load_tokenizer,
    preprocess,
    tokenize_words,
)
from attnkit.data.text import tidy_punctuation_spacing


def course_rule(text: str) -> str:
    """The course's preprocessing stated as a regular expression (independent of our loop)."""
    text = text.replace("\u202f", " ").replace("\xa0", " ").lower()
    return re.sub(r"(?<=[^ ])([,.!?])", r" \1", text)


# Raw lines of the Tatoeba English–French file and the output printed in the d2l chapter.
COURSE_EXAMPLES = [
    ("Go.\tVa !", "go .\tva !"),
    ("Hi.\tSalut !", "hi .\tsalut !"),
    ("Run!\tCours\u202f!", "run !\tcours !"),
    ("Run!\tCourez\u202f!", "run !\tcourez !"),
    ("Who?\tQui ?", "who ?\tqui ?"),
    ("Wow!\tÇa alors\u202f!", "wow !\tça alors !"),
]


@pytest.mark.parametrize("raw, expected", COURSE_EXAMPLES)
def test_preprocess_reproduces_course_output(raw, expected):
    assert preprocess(raw) == expected


def test_preprocess_details():
    assert preprocess("Hi, Tom.\xa0OK?!") == "hi , tom . ok ? !"
    assert preprocess(".Leading dot") == ".leading dot"  # first character: no space added
    assert preprocess("Wait...") == "wait . . ."
    assert preprocess("Keep Case.", lowercase=False) == "Keep Case ."
    whole_file = "Go.\tVa !\nHi.\tSalut !\n"
    assert preprocess(whole_file) == "go .\tva !\nhi .\tsalut !\n"


@given(st.text(alphabet="aB ,.!?\t\n\u202f\xa0xÉ", max_size=40))
def test_preprocess_matches_course_rule(text):
    assert preprocess(text) == course_rule(text)


def test_tokenize_words_drops_empty_strings():
    assert tokenize_words("go  .") == ["go", "."]
    assert tokenize_words("") == []


def test_detokenize_english_and_french():
    assert detokenize_words(["hi", ",", "tom", "."]) == "hi, tom."
    assert detokenize_words(["who", "?"]) == "who?"
    assert detokenize_words(["qui", "?"], lang="fr") == "qui ?"
    assert detokenize_words(["oui", ",", "va", "!"], lang="fr") == "oui, va !"
    assert detokenize_words(["wait", ".", ".", "."]) == "wait..."


words = st.text(alphabet="abcxyzé'", min_size=1, max_size=6)
punct_words = st.tuples(words, st.sampled_from(["", ",", ".", "!", "?", "?!"]))


@given(st.lists(punct_words, min_size=1, max_size=8))
def test_detokenize_inverts_preprocess_for_english_spacing(items):
    text = " ".join(w + p for w, p in items)  # English style: no space before punctuation
    assert detokenize_words(tokenize_words(preprocess(text))) == text


@given(st.lists(punct_words, min_size=1, max_size=8))
def test_tidy_spacing_undoes_preprocess_spacing(items):
    """English-style text survives preprocess -> tidy unchanged: the course's spaced form and
    ordinary typography meet in one form."""
    text = " ".join(w + p for w, p in items)
    assert tidy_punctuation_spacing(preprocess(text, lowercase=False)) == text
    assert tidy_punctuation_spacing(text) == text


def test_tidy_spacing_examples():
    assert tidy_punctuation_spacing("i lost .") == "i lost."
    assert tidy_punctuation_spacing("he's calm  .") == "he's calm."
    assert tidy_punctuation_spacing("wait ... what ?") == "wait... what?"
    assert tidy_punctuation_spacing("Va !") == "Va!"
    assert tidy_punctuation_spacing("a , b") == "a, b"
    assert tidy_punctuation_spacing("") == ""


# --- WordTokenizer -------------------------------------------------------------------------


def test_word_vocab_order_min_freq_and_unk():
    texts = ["b a.", "a c.", "a b!", "d"]  # counts: a 3, . 2, b 2, ! 1, c 1, d 1
    tok = WordTokenizer.build(texts, min_freq=2)
    assert tok.tokens == ["<pad>", "<unk>", "<bos>", "<eos>", "a", ".", "b"]
    assert tok.vocab_size == 7
    assert tok.encode("A c b.") == [4, UNK_ID, 6, 5]
    full = WordTokenizer.build(texts, min_freq=1, max_size=6)
    assert full.tokens[4:] == ["a", "."]


def test_word_round_trip_and_special_handling():
    texts = ["Hi, Tom.", "Tom is here!", "Is Tom here?"]
    tok = WordTokenizer.build(texts, min_freq=1)
    for text in texts:
        ids = tok.encode(text)
        assert BOS_ID not in ids and EOS_ID not in ids
        assert tok.decode(ids) == tok.normalize(text) == text.lower()
    ids = tok.encode("Tom is here!")
    padded = [BOS_ID, *ids, EOS_ID, PAD_ID, *ids]
    assert tok.decode(padded) == "tom is here!"
    assert tok.decode(torch.tensor(padded)) == "tom is here!"
    assert tok.pieces([BOS_ID, *ids, EOS_ID]) == ["<bos>", "tom", "is", "here", "!", "<eos>"]
    assert tok.decode(tok.encode("Tom is absent!")) == "tom is <unk>!"
    with pytest.raises(ValueError, match="out of range"):
        tok.pieces([tok.vocab_size])


def test_word_french_detokenization():
    tok = WordTokenizer.build(["Qui ?", "Va, cours !"], min_freq=1, lang="fr")
    assert tok.decode(tok.encode("Va, cours !")) == "va, cours !"
    assert tok.normalize("Qui\u202f?") == "qui ?"


def test_word_save_load(tmp_path):
    tok = WordTokenizer.build(["Ça va ?", "Ça va bien."], min_freq=1, lowercase=False, lang="fr")
    tok.save(tmp_path / "tok")
    config = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())
    assert config["kind"] == "word"
    loaded = load_tokenizer(tmp_path / "tok")
    assert isinstance(loaded, WordTokenizer)
    assert loaded.tokens == tok.tokens and loaded.lowercase is False and loaded.lang == "fr"
    assert loaded.encode("Ça va bien.") == tok.encode("Ça va bien.")


def test_word_build_validates_arguments():
    with pytest.raises(ValueError, match="min_freq"):
        WordTokenizer.build(["a"], min_freq=0)
    with pytest.raises(ValueError, match="specials"):
        WordTokenizer(["a", "b"])


# --- SentencePieceTokenizer ----------------------------------------------------------------


@pytest.fixture(scope="module")
def date_texts():
    pairs = generate_dates(1500, seed=3)
    return [s for s, _ in pairs] + [t for _, t in pairs]


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_sentencepiece_trains_and_round_trips(date_texts, model_type):
    tok = SentencePieceTokenizer.train(date_texts, vocab_size=120, model_type=model_type)
    assert tok.vocab_size == 120
    assert tok.pieces([PAD_ID, UNK_ID, BOS_ID, EOS_ID]) == ["<pad>", "<unk>", "<bos>", "<eos>"]
    for text in date_texts[:50] + date_texts[-50:]:
        ids = tok.encode(text)
        assert all(i > EOS_ID for i in ids)  # known characters: no UNK, no specials
        assert tok.decode(ids) == text == tok.normalize(text)
    ids = tok.encode("mardi 10 mars 1987")
    assert tok.decode([BOS_ID, *ids, EOS_ID, *ids]) == "mardi 10 mars 1987"
    assert "".join(tok.pieces(ids)).replace("\u2581", " ").strip() == "mardi 10 mars 1987"


def test_sentencepiece_lowercase_and_split_digits(date_texts):
    tok = SentencePieceTokenizer.train(date_texts, vocab_size=100, split_digits=True)
    assert tok.decode(tok.encode("MARCH 10\xa0, 1987")) == "march 10 , 1987"
    digits = [p for p in tok.pieces(tok.encode("1987-03-10")) if any(c.isdigit() for c in p)]
    assert all(len(p.strip("\u2581")) == 1 for p in digits)


def test_sentencepiece_deterministic(date_texts):
    a = SentencePieceTokenizer.train(date_texts, vocab_size=90)
    b = SentencePieceTokenizer.train(date_texts, vocab_size=90)
    assert a.model_proto == b.model_proto


def test_sentencepiece_vocab_too_high_retries_with_warning(caplog):
    texts = ["the cat sat on the mat", "hello world"] * 5
    with caplog.at_level(logging.WARNING, logger="attnkit.data.tokenizers"):
        tok = SentencePieceTokenizer.train(texts, vocab_size=5000)
    assert 4 < tok.vocab_size < 5000
    assert "too small" in caplog.text
    assert tok.decode(tok.encode("the cat sat")) == "the cat sat"


def test_sentencepiece_save_load(tmp_path, date_texts):
    tok = SentencePieceTokenizer.train(date_texts, vocab_size=80, directory=tmp_path / "spm")
    loaded = load_tokenizer(tmp_path / "spm")
    assert isinstance(loaded, SentencePieceTokenizer)
    assert loaded.vocab_size == tok.vocab_size
    assert loaded.encode(date_texts[7]) == tok.encode(date_texts[7])


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_tokenizer(tmp_path / "nothing")
    (tmp_path / "tokenizer.json").write_text('{"kind": "morse"}')
    with pytest.raises(DataError, match="unknown tokenizer kind 'morse'"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"kind": "sentencepiece", "lowercase": true}')
    with pytest.raises(DataError, match="spm.model"):
        load_tokenizer(tmp_path)


def test_restore_case_gives_lower_case_sentences_their_capitals() -> None:
    from attnkit.data.text import restore_case

    assert restore_case("i lost.") == "I lost."
    assert restore_case("i'm home.") == "I'm home."
    assert restore_case("he's calm.") == "He's calm."
    assert restore_case("go.") == "Go."
    assert restore_case("« va ! »") == "« Va ! »"
    assert restore_case("did i win? yes, i did.") == "Did I win? yes, I did."
    assert restore_case("icy roads.") == "Icy roads."  # only the pronoun, not words with i
    for unchanged in ("Tom is here.", "iPhone sales", "NASA", "", "123 ...", "I lost."):
        if any(c.isupper() for c in unchanged) or not any(c.isalpha() for c in unchanged):
            assert restore_case(unchanged) == unchanged

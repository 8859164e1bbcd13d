"""Tests for attnkit.data.sentences: the rule-based English/French sentence splitter."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnkit import data
from attnkit.data.sentences import join_sentences, split_sentences

NBSP, NNBSP = "\xa0", "\u202f"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I don't know. Do you?", ["I don't know.", "Do you?"]),
        (
            "Mr. Smith went to Washington. He arrived at 3 p.m. on Monday.",
            ["Mr. Smith went to Washington.", "He arrived at 3 p.m. on Monday."],
        ),
        (
            "Il est arrivé, p. ex. hier. C'est vrai !",
            ["Il est arrivé, p. ex. hier.", "C'est vrai !"],
        ),
        ("Tom est là… Il attend.", ["Tom est là…", "Il attend."]),
        ("Tom is here... He waits.", ["Tom is here...", "He waits."]),
        ("Wait... what?", ["Wait... what?"]),
        ("Well... maybe.", ["Well... maybe."]),
        ("Stop! Who goes there?! Nobody.", ["Stop!", "Who goes there?!", "Nobody."]),
        ("Why? because I said so.", ["Why? because I said so."]),
        ("Pourquoi ? parce que.", ["Pourquoi ? parce que."]),
        ("Vraiment ? Oui.", ["Vraiment ?", "Oui."]),
        (f"Vraiment{NNBSP}? Oui{NNBSP}!", [f"Vraiment{NNBSP}?", f"Oui{NNBSP}!"]),
        ("Vraiment ?", ["Vraiment ?"]),
    ],
)
def test_basic_splits(text, expected):
    assert split_sentences(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('He said "Go." Then left.', ['He said "Go."', "Then left."]),
        ("He said “Go!” Then left.", ["He said “Go!”", "Then left."]),
        ("He said 'go.' Then left.", ["He said 'go.'", "Then left."]),
        ("He left. (She stayed.) Fine.", ["He left.", "(She stayed.)", "Fine."]),
        ('He left. "Why?" she asked.', ["He left.", '"Why?" she asked.']),
        ('"Go." "Now?" Yes.', ['"Go."', '"Now?"', "Yes."]),
        ("«Bonjour !» dit-il.", ["«Bonjour !» dit-il."]),
        (f"«{NBSP}Bonjour{NNBSP}!{NBSP}» dit-il.", [f"«{NBSP}Bonjour{NNBSP}!{NBSP}» dit-il."]),
        (
            f"Il a dit «{NBSP}Non.{NBSP}» Puis il est parti.",
            [f"Il a dit «{NBSP}Non.{NBSP}»", "Puis il est parti."],
        ),
        ("Il part. « Bonjour », dit-elle.", ["Il part.", "« Bonjour », dit-elle."]),
        ("— Bonjour. — Salut.", ["— Bonjour.", "— Salut."]),
    ],
)
def test_quotes_and_brackets_stay_with_their_sentence(text, expected):
    assert split_sentences(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Mrs. Jones and Dr. Who met Prof. Plum on St. Patrick's Day.",
        "Apples vs. Oranges is a debate.",
        "Bring fruit, e.g. Apples, i.e. Red ones.",
        "It opened on Jan. 5 and closed on Dec. 24.",
        "See No. 5 and Fig. 3 for details.",
        "J. R. R. Tolkien wrote it.",
        "J.R.R. Tolkien wrote it.",
        "M. Dupont et Mme Martin parlent à Mlle Durand.",
        "M. Dupont et Mme. Martin parlent à Mlle. Durand.",
        "Voir c.-à-d. Paris, cf. Lyon.",
        "Il est né en 50 av. J.-C. en Gaule.",
        "Il y avait env. 300 personnes.",
        "J.-P. Sartre a écrit ce livre.",
        "Pi is 3.14 and e is 2.72.",
        "Smith et al. (2020) show it.",
        "(cf. Smith) and more.",
    ],
)
def test_no_split_after_abbreviations_initials_and_decimals(text):
    assert split_sentences(text) == [text]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Abbreviations that may end a sentence split before a capital, not before lowercase.
        (
            "We ate apples, pears, etc. Then we left.",
            ["We ate apples, pears, etc.", "Then we left."],
        ),
        ("We ate apples, pears, etc. and left.", ["We ate apples, pears, etc. and left."]),
        ("It starts at 3 p.m. Be there.", ["It starts at 3 p.m.", "Be there."]),
        ("I work for Acme Inc. It is big.", ["I work for Acme Inc.", "It is big."]),
        ("Il est né en 50 av. J.-C. Il a régné.", ["Il est né en 50 av. J.-C.", "Il a régné."]),
        # "No." counts as an abbreviation only before a number.
        ("He said No. Then he left.", ["He said No.", "Then he left."]),
        # Ordinary sentence ends around numbers.
        ("I have 3. 4 is more.", ["I have 3.", "4 is more."]),
        ("It costs $3.50. That is cheap.", ["It costs $3.50.", "That is cheap."]),
        ("Il est là. Élise arrive.", ["Il est là.", "Élise arrive."]),
    ],
)
def test_abbreviations_that_may_end_a_sentence(text, expected):
    assert split_sentences(text) == expected


def test_lang_selects_the_abbreviation_lists():
    text = "Il y avait env. Trois cents personnes."
    assert split_sentences(text, lang="fr") == [text]
    assert split_sentences(text, lang="auto") == [text]
    assert split_sentences(text, lang="en") == ["Il y avait env.", "Trois cents personnes."]
    assert split_sentences("Mr. Smith left.", lang="en_US") == ["Mr. Smith left."]
    assert split_sentences("Mme. Martin part.", lang="fra") == ["Mme. Martin part."]
    with pytest.raises(ValueError, match="lang"):
        split_sentences("Hallo. Welt.", lang="de")


def test_whitespace_and_newlines():
    assert split_sentences("") == []
    assert split_sentences("   \n\t ") == []
    assert split_sentences("  One.\nTwo.  \n") == ["One.", "Two."]
    assert split_sentences("One  two.   Three\nfour.") == ["One  two.", "Three\nfour."]
    assert split_sentences("No punctuation at all") == ["No punctuation at all"]
    assert split_sentences("...") == ["..."]
    assert split_sentences(". . .") == [". . ."]


def test_join_sentences_and_export():
    assert join_sentences(["One.", "Two?"]) == "One. Two?"
    assert join_sentences([]) == ""
    assert data.split_sentences is split_sentences
    text = "Mr. Smith went to Washington. He arrived at 3 p.m. on Monday."
    assert join_sentences(split_sentences(text)) == text


# Text made of the characters the splitter cares about, so boundaries and edge cases are common.
_ALPHABET = st.sampled_from(
    list("aZé9 .!?…\"'”’«»()[]—-\n\t")
    + [NBSP, NNBSP, "Mr", "etc", "J", "e.g", "No", "p.m", "3.14", "...", "ex", "A. "]
)
_TEXTS = st.one_of(st.text(), st.lists(_ALPHABET, max_size=60).map("".join))


def _squash(text: str) -> str:
    return "".join(text.split())


@settings(max_examples=400, deadline=None)
@given(_TEXTS, st.sampled_from(["auto", "en", "fr"]))
def test_split_is_lossless_and_stable(text, lang):
    sentences = split_sentences(text, lang)
    assert _squash("".join(sentences)) == _squash(text)
    for sentence in sentences:
        assert sentence
        assert sentence == sentence.strip()
        assert split_sentences(sentence, lang) == [sentence]

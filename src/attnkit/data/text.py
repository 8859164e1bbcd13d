"""Text normalisation and word-level tokenisation, as in the d2l machine-translation chapter.

The course prepares the English–French corpus in three steps, which :func:`preprocess` reproduces
character for character:

1. non-breaking spaces (U+202F narrow, U+00A0) become ordinary spaces;
2. the text is lower-cased (optional here);
3. a space is inserted before each of ``, . ! ?`` that is not already preceded by a space (and is
   not the first character).

So ``"Go.\\tVa !"`` becomes ``"go .\\tva !"``. :func:`tokenize_words` then splits on spaces.

:func:`detokenize_words` turns tokens back into readable text. Preprocessing loses whether a space
stood before a punctuation mark, so the inverse is a choice, made per language:

* default (English style): remove the space before every ``, . ! ?``;
* ``lang="fr"`` (French typography): remove it only before ``,`` and ``.`` and keep it before
  ``!`` and ``?`` (French writes ``"Va !"``, ``"Qui ?"``).

Evaluation must compare a hypothesis with references rendered the same way, e.g.
``detokenize_words(tokenize_words(preprocess(ref)), lang)`` (what ``WordTokenizer.normalize`` does).

Every tokenizer in attnkit uses the same special-token ids: :data:`PAD_ID` = 0, :data:`UNK_ID` = 1,
:data:`BOS_ID` = 2, :data:`EOS_ID` = 3.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "PAD_ID",
    "UNK_ID",
    "BOS_ID",
    "EOS_ID",
    "PAD",
    "UNK",
    "BOS",
    "EOS",
    "SPECIAL_TOKENS",
    "PUNCTUATION",
    "normalize_spaces",
    "restore_case",
    "preprocess",
    "tidy_punctuation_spacing",
    "tokenize_words",
    "detokenize_words",
]

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
#: The special token strings in id order (index == id).
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, BOS, EOS)

#: Punctuation marks that :func:`preprocess` separates from the preceding word.
PUNCTUATION = ",.!?"
_FRENCH_SPACED = "!?"  # marks French typography writes after a space

_NBSP = {"\u202f": " ", "\xa0": " "}


def normalize_spaces(text: str, lowercase: bool = True) -> str:
    """Replace non-breaking spaces and optionally lower-case (steps 1–2 of :func:`preprocess`).

    This is the normalisation sub-word tokenizers use: they need no punctuation splitting.

    Args:
        text: any string (may hold tabs and newlines).
        lowercase: lower-case the text.

    Returns:
        The normalised string.
    """
    text = text.translate(str.maketrans(_NBSP))
    return text.lower() if lowercase else text


def preprocess(text: str, lowercase: bool = True) -> str:
    """Normalise text the way the course's ``preprocess_nmt`` does.

    Args:
        text: a sentence, a ``"source\\ttarget"`` line or a whole file (tabs and newlines are kept).
        lowercase: lower-case the text (the course always does).

    Returns:
        The text with non-breaking spaces replaced, optionally lower-cased, and a space inserted
        before every ``, . ! ?`` not preceded by a space. E.g. ``"Go.\\tVa !"`` ->
        ``"go .\\tva !"``, ``"Hi, Tom."`` -> ``"hi , tom ."``.
    """
    text = normalize_spaces(text, lowercase)
    out = []
    for i, char in enumerate(text):
        if i > 0 and char in PUNCTUATION and text[i - 1] != " ":
            out.append(" ")
        out.append(char)
    return "".join(out)


def tidy_punctuation_spacing(text: str) -> str:
    """Remove the spaces before ``, . ! ?`` (the inverse of :func:`preprocess`'s spacing).

    Applied to *source* sentences, in training and in translation, when
    ``DataConfig.tidy_source_punctuation`` is on: a sub-word model trained on ordinary text
    (``"I lost."``) otherwise reads the course's pre-tokenized style (``"i lost ."``) as a
    different, rarely seen input. Targets are left alone (French writes ``"Va !"``).

    Args:
        text: a sentence.

    Returns:
        The sentence with whitespace runs before those marks removed, e.g. ``"i lost ."`` ->
        ``"i lost."``, ``"wait ... what ?"`` -> ``"wait... what?"``.
    """
    out: list[str] = []
    for char in text:
        if char in PUNCTUATION:
            while out and out[-1] == " ":
                out.pop()
        out.append(char)
    return "".join(out)


def restore_case(text: str) -> str:
    """Give a sentence written all in lower case (the course's style, ``"i'm home ."``) the
    capitals ordinary text has: its first letter, and the English pronoun *I* (``i``, ``i'm``,
    ``i've``, ``i'll``, ``i'd``). Text with any capital letter is returned unchanged.

    A true-cased model reads ``"I'm home."`` as the sentences it was trained on; the all-lower-case
    form is, to it, a rare kind of input (it translated ``"go ."`` as ``"partir."``).

    Args:
        text: a sentence.

    Returns:
        The sentence, e.g. ``"i lost ."`` -> ``"I lost ."``, ``"he's calm"`` -> ``"He's calm"``.
    """
    if not text or any(c.isupper() for c in text):
        return text
    words = text.split(" ")
    words = ["I" + w[1:] if w == "i" or w.startswith("i'") else w for w in words]
    out = " ".join(words)
    for i, char in enumerate(out):
        if char.isalpha():
            return out[:i] + char.upper() + out[i + 1 :]
    return out


def tokenize_words(line: str) -> list[str]:
    """Split a preprocessed line on spaces, dropping empty strings (from repeated spaces).

    Args:
        line: one preprocessed sentence (no tab).

    Returns:
        The list of word and punctuation tokens, e.g. ``"go ."`` -> ``["go", "."]``.
    """
    return [token for token in line.split(" ") if token]


def detokenize_words(tokens: Sequence[str], lang: str | None = None) -> str:
    """Join word tokens into display text, undoing the spaces :func:`preprocess` inserted.

    Args:
        tokens: word tokens, e.g. from :func:`tokenize_words`.
        lang: ``None`` or ``"en"`` (and any other language): remove the space before each
            ``, . ! ?``; ``"fr"``: remove it only before ``,`` and ``.`` and keep it before
            ``!`` and ``?`` as French typography does.

    Returns:
        The joined string, e.g. ``["go", "."]`` -> ``"go."``; ``["va", "!"]`` -> ``"va!"``
        (``"va !"`` with ``lang="fr"``). Case is not restored.
    """
    attached = PUNCTUATION
    if lang is not None and lang.lower().startswith("fr"):
        attached = "".join(c for c in PUNCTUATION if c not in _FRENCH_SPACED)
    out: list[str] = []
    for token in tokens:
        if out and token and all(c in attached for c in token):
            out[-1] += token
        else:
            out.append(token)
    return " ".join(out)

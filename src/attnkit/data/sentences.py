"""Rule-based sentence splitting for English and French paragraphs.

:func:`split_sentences` cuts one paragraph (one line: the caller splits lines first; a newline
inside the text is just whitespace) after a run of terminal punctuation ``. ! ? …`` (``...``
counts too) when:

* the run, together with any closing quotes or brackets attached to it (``"`` ``'`` ``”`` ``’``
  ``)`` ``]`` ``}``, and ``»`` even after a space, as French writes ``« Bonjour ! »``), is followed
  by whitespace and then an uppercase letter, a digit, an opening quote or bracket
  (``" ' “ ‘ « ( [ { ¿ ¡``) or an em dash ``—`` (French dialogue); the punctuation and closers stay
  with the sentence they end: ``He said "Go." Then left.`` -> ``['He said "Go."', 'Then left.']``;
* the run is not a single ``.`` ending an abbreviation that cannot end a sentence (see below).

So a decimal ``3.14`` (no space), ``Wait... what?`` and ``Pourquoi ? parce que`` (lowercase next)
and ``«Bonjour !» dit-il.`` stay whole, and the French space before ``? ! :`` needs no care: the
cut is after the mark, never before it.

Abbreviations (checked only for a lone ``.`` with no closer after it; the word is taken from the
last whitespace, without leading quotes or brackets, so ``(cf.`` is ``cf.``):

* *never final*: titles and words that always have something after them, e.g. ``Mr. Mrs. Dr.
  Prof. St. vs. e.g. i.e. cf.``, English and French month abbreviations ``Jan. … Dec.``,
  ``janv. … déc.``, French ``M. Mme Mlle p. (ex.) c.-à-d. av. env.``, single capital initials
  (``J. R. R. Tolkien``, ``J.-P. Sartre``) and dotted single letters (``e.g.``): no cut;
* *before a number*: ``No. Fig. Vol. pp. …`` do not cut before a digit (``Fig. 3``), but do
  before a word (``I said No. Then …``);
* *may end a sentence*: ``etc. Inc. Ltd. Co. Jr. Sr. a.m. p.m. U.S. J.-C. …`` behave like an
  ordinary word: no cut before lowercase (``3 p.m. on Monday``), a cut before uppercase
  (``…apples, pears, etc. Then we left.``). A sentence may begin after them as often as a name
  does, and a missed cut is no better than a wrong one.

``lang`` chooses the abbreviation lists: ``"en"``, ``"fr"`` or ``"auto"`` (both; the default).

This is a heuristic, not a parser: ``Plan B. Then…`` (a capital letter read as an initial) and
``the U.S. Army`` (a final-capable abbreviation before a capital) are split wrongly. The split is
lossless: every non-whitespace character of the input is in exactly one returned sentence, in
order, and each sentence is stripped of surrounding whitespace (inner whitespace is untouched).
"""

from __future__ import annotations

import re

__all__ = [
    "ENGLISH_ABBREVIATIONS",
    "FRENCH_ABBREVIATIONS",
    "split_sentences",
    "join_sentences",
]

_TERMINATORS = ".!?…"
_CLOSERS = "\"'”’)]}"
_OPENERS = "\"'“‘«„([{¿¡—"

# A run of terminal punctuation, then closing quotes/brackets attached to it, or a ``»`` after
# (non-breaking) spaces. Whitespace, if any, follows the match and is checked in code.
_CANDIDATE = re.compile(rf"[{re.escape(_TERMINATORS)}]+(?:[{re.escape(_CLOSERS)}]|\s*»)*")
# Capital initials: "J", "J.R.R", "J.-P" (the word without its final period).
_INITIALS = re.compile(r"[A-Z](?:\.-?[A-Z])*")
# Dotted single letters: "e.g", "i.e", "c.-à-d" (the word without its final period).
_DOTTED_LETTERS = re.compile(r"[^\W\d_](?:\.-?[^\W\d_])+")
# The first non-space character at or after a position (group 1; None at the end of the text).
_NEXT_CHAR = re.compile(r"\s*(\S)?")

# Abbreviations are written without their final period. Lowercase ones also match with a capital
# first letter ("Cf.", "Etc.") at the start of a sentence.
_EN_NEVER_FINAL = {
    "Mr", "Mrs", "Ms", "Mx", "Messrs", "Dr", "Prof", "St", "Mt", "Rev", "Hon", "Gen", "Col",
    "Capt", "Lt", "Sgt", "Gov", "Sen", "Pres", "Supt", "vs", "e.g", "i.e", "cf", "viz", "approx",
    "al", "Ave", "Blvd", "Rd",
    "Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep", "Sept", "Oct", "Nov", "Dec",
}  # fmt: skip
_EN_BEFORE_NUMBER = {
    "No", "Nos", "no", "nos", "Fig", "Figs", "fig", "figs", "Vol", "vol", "p", "pp", "Art", "Ch",
    "ch", "Eq", "Eqs", "Sec", "Tab", "ca",
}  # fmt: skip
_EN_MAY_END = {
    "etc", "Inc", "Ltd", "Co", "Corp", "Jr", "Sr", "a.m", "p.m", "U.S", "U.S.A", "U.K", "U.N",
    "D.C",
}  # fmt: skip

_FR_NEVER_FINAL = {
    "M", "MM", "Mme", "Mmes", "Mlle", "Mlles", "Mgr", "Dr", "Pr", "St", "Ste", "Vve", "p", "ex",
    "c.-à-d", "c-à-d", "cf", "av", "apr", "env", "bd", "boul", "qqn", "qqch",
    "janv", "févr", "fév", "avr", "juil", "sept", "oct", "nov", "déc",
}  # fmt: skip
_FR_BEFORE_NUMBER = {"n", "no", "No", "fig", "vol", "chap", "art", "Art", "éd", "t", "ch"}
_FR_MAY_END = {"etc", "J.-C", "hab", "Cie", "S.A"}

#: English abbreviations the splitter knows (without their final period), for reference.
ENGLISH_ABBREVIATIONS: frozenset[str] = frozenset(_EN_NEVER_FINAL | _EN_BEFORE_NUMBER | _EN_MAY_END)
#: French abbreviations the splitter knows (without their final period), for reference.
FRENCH_ABBREVIATIONS: frozenset[str] = frozenset(_FR_NEVER_FINAL | _FR_BEFORE_NUMBER | _FR_MAY_END)


def _with_capitals(words: set[str]) -> frozenset[str]:
    """Add the capitalised form of each lowercase abbreviation (``cf`` -> ``Cf``)."""
    return frozenset(words | {w[0].upper() + w[1:] for w in words if w[0].islower()})


_LISTS: dict[str, tuple[frozenset[str], frozenset[str], frozenset[str]]] = {
    "en": (
        _with_capitals(_EN_NEVER_FINAL),
        frozenset(_EN_BEFORE_NUMBER),
        _with_capitals(_EN_MAY_END),
    ),
    "fr": (
        _with_capitals(_FR_NEVER_FINAL),
        frozenset(_FR_BEFORE_NUMBER),
        _with_capitals(_FR_MAY_END),
    ),
}
_LISTS["auto"] = (
    _LISTS["en"][0] | _LISTS["fr"][0],
    _LISTS["en"][1] | _LISTS["fr"][1],
    _LISTS["en"][2] | _LISTS["fr"][2],
)


def _lists_for(lang: str) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    key = lang.lower()
    if key != "auto":
        key = key[:2]
    if key not in _LISTS:
        raise ValueError(f'lang must be "auto", "en" or "fr", got {lang!r}')
    return _LISTS[key]


def _is_boundary(text: str, match: re.Match[str], lists: tuple[frozenset[str], ...]) -> bool:
    """Whether the punctuation run ``match`` ends a sentence (the text goes on after it)."""
    end = match.end()
    if end == len(text) or not text[end].isspace():
        return False
    nxt = _NEXT_CHAR.match(text, end).group(1)
    if nxt is None:
        return True
    if not (nxt.isupper() or nxt.isdigit() or nxt in _OPENERS):
        return False
    if match.group() != ".":
        return True  # ! ? … ... and runs with closers always end a sentence here
    start = match.start()
    word_start = start
    while word_start > 0 and not text[word_start - 1].isspace():
        word_start -= 1
    word = text[word_start:start].lstrip(_OPENERS)
    if not word:
        return True
    never_final, before_number, may_end = lists
    if word in may_end:
        return True
    if word in never_final:
        return False
    if word in before_number:
        return not nxt.isdigit()
    return not (_INITIALS.fullmatch(word) or _DOTTED_LETTERS.fullmatch(word))


def split_sentences(text: str, lang: str = "auto") -> list[str]:
    """Split a paragraph into sentences (see the module docstring for the rules).

    Args:
        text: one paragraph; newlines in it count as ordinary whitespace.
        lang: ``"en"``, ``"fr"`` or ``"auto"`` (both): which abbreviation lists to use. Longer
            codes are read by their first two letters (``"fra"``, ``"en_US"``).

    Returns:
        The sentences, in order, each stripped of surrounding whitespace, none empty; ``[]`` for
        empty or whitespace-only text. E.g. ``"I don't know. Do you?"`` ->
        ``["I don't know.", "Do you?"]``; ``"Mr. Smith left at 3 p.m. on Monday."`` -> one.

    Raises:
        ValueError: ``lang`` is not English, French or ``"auto"``.
    """
    lists = _lists_for(lang)
    sentences: list[str] = []
    start = 0
    for match in _CANDIDATE.finditer(text):
        if _is_boundary(text, match, lists):
            sentences.append(text[start : match.end()])
            start = match.end()
    sentences.append(text[start:])
    return [s.strip() for s in sentences if s.strip()]


def join_sentences(parts: list[str]) -> str:
    """Join sentences with a single space (the inverse of :func:`split_sentences`, up to spacing).

    Args:
        parts: sentences, e.g. from :func:`split_sentences`.

    Returns:
        ``" ".join(parts)``.
    """
    return " ".join(parts)

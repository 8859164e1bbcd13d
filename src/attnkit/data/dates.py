"""The bundled offline corpus: dates written by people -> ISO 8601.

``generate_dates`` draws dates uniformly from 1900-01-01 .. 2099-12-31 and writes each in one of
the formats below (drawn uniformly), e.g. for 10 March 1987 (a Tuesday):

=====================================  ============================================
English                                French and numeric
=====================================  ============================================
``tuesday 10 march 1987``              ``mardi 10 mars 1987``
``tuesday , march 10 , 1987``          ``10 mars 1987``
``march 10 , 1987``                    ``le 10 mars 1987``
``march 10th , 1987``                  ``le mardi 10 mars 1987``
``10 march 1987``                      ``10 / 03 / 1987`` (always day / month / year)
``1987 march 10``                      ``10 . 03 . 1987`` (always day . month . year)
``the 10th of march 1987``             ``1987 / 03 / 10`` (always year / month / day)
``tuesday the 10th of march 1987``
``10 mar 1987``
``mar 10 , 1987``
``tue mar 10 1987``
=====================================  ============================================

Conventions: everything is lower case; punctuation on the source side is separated by spaces so
a word-level tokenizer sees ``,`` ``/`` ``.`` as their own tokens; French writes the first of the
month ``1er`` and keeps its accents (``février``, ``août``, ``décembre``); the numeric formats
each have one fixed field order (listed above), so ``03 / 10 / 1987`` is always the 3rd of
October; years are always written with four digits (two-digit years would be ambiguous over
1900–2099). Weekdays are the true weekdays of the dates. The target is the plain ISO date
``1987-03-10`` (a sub-word tokenizer with ``split_digits=True`` suits it; a word-level one would
see one word per date).
"""

from __future__ import annotations

import datetime
import random

__all__ = ["DATE_FORMATS", "generate_dates", "format_date"]

_MONTHS_EN = (
    "january february march april may june july august september october november december"
).split()
_MONTHS_FR = (
    "janvier février mars avril mai juin juillet août septembre octobre novembre décembre"
).split()
_WEEKDAYS_EN = "monday tuesday wednesday thursday friday saturday sunday".split()
_WEEKDAYS_FR = "lundi mardi mercredi jeudi vendredi samedi dimanche".split()

#: Source-side formats; fields: wd/wd3 (English weekday, abbreviated), jour (French weekday),
#: month/mon (English month, abbreviated), mois (French month), d (day), ord (10th), d_fr (1er, 2),
#: dd/mm (two digits), y (four digits).
DATE_FORMATS: tuple[str, ...] = (
    "{wd} {d} {month} {y}",
    "{wd} , {month} {d} , {y}",
    "{month} {d} , {y}",
    "{month} {ord} , {y}",
    "{d} {month} {y}",
    "{y} {month} {d}",
    "the {ord} of {month} {y}",
    "{wd} the {ord} of {month} {y}",
    "{d} {mon} {y}",
    "{mon} {d} , {y}",
    "{wd3} {mon} {d} {y}",
    "{jour} {d_fr} {mois} {y}",
    "{d_fr} {mois} {y}",
    "le {d_fr} {mois} {y}",
    "le {jour} {d_fr} {mois} {y}",
    "{dd} / {mm} / {y}",
    "{dd} . {mm} . {y}",
    "{y} / {mm} / {dd}",
)

_FIRST = datetime.date(1900, 1, 1).toordinal()
_LAST = datetime.date(2099, 12, 31).toordinal()


def _ordinal(day: int) -> str:
    if 10 <= day % 100 <= 20:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def format_date(date: datetime.date, template: str) -> str:
    """Write ``date`` with one of :data:`DATE_FORMATS` (or any template using the same fields)."""
    month, weekday = date.month - 1, date.weekday()
    return template.format(
        wd=_WEEKDAYS_EN[weekday],
        wd3=_WEEKDAYS_EN[weekday][:3],
        jour=_WEEKDAYS_FR[weekday],
        month=_MONTHS_EN[month],
        mon=_MONTHS_EN[month][:3],
        mois=_MONTHS_FR[month],
        d=date.day,
        ord=_ordinal(date.day),
        d_fr="1er" if date.day == 1 else date.day,
        dd=f"{date.day:02d}",
        mm=f"{date.month:02d}",
        y=f"{date.year:04d}",
    )


def generate_dates(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Generate ``n`` (human-written date, ISO date) pairs, deterministically by ``seed``.

    Args:
        n: number of pairs (dates are drawn with replacement, so a few may repeat).
        seed: seed of the ``random.Random`` generator.

    Returns:
        Pairs like ``("tuesday 10 march 1987", "1987-03-10")``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        date = datetime.date.fromordinal(rng.randint(_FIRST, _LAST))
        template = DATE_FORMATS[rng.randrange(len(DATE_FORMATS))]
        pairs.append((format_date(date, template), date.isoformat()))
    return pairs

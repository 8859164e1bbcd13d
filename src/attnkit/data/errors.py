"""The error raised by :mod:`attnkit.data` for bad data (files, corpora, tokenizer folders)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["DataError", "AdvisedError", "advise"]


class DataError(ValueError):
    """Bad data: a missing or malformed corpus file, a failed download, an unreadable tokenizer.

    A subclass of :class:`ValueError`, so callers that catch ``ValueError`` also catch it. The
    message is one line that names the file (and line number where there is one) and the fix.
    """


class AdvisedError(DataError):
    """A :class:`DataError` whose message is ``"{problem}; {fix}"``, where the fix names what
    one caller can do (``pass convert=True``, ``--label-column``) and another caller replaces it
    with its own advice (:func:`advise`), e.g. the flag of the command that was typed."""

    def __init__(self, problem: str, fix: str) -> None:
        self.problem, self.fix = problem, fix
        super().__init__(f"{problem}; {fix}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # picklable despite the signature
        return type(self), (self.problem, self.fix)


@contextmanager
def advise(kind: type[AdvisedError], fix: str) -> Iterator[None]:
    """Inside the block, a ``kind`` error is raised again with ``fix`` as its advice."""
    try:
        yield
    except kind as err:
        raise type(err)(err.problem, fix) from None

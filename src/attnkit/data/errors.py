"""The error raised by :mod:`attnkit.data` for bad data (files, corpora, tokenizer folders)."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """Bad data: a missing or malformed corpus file, a failed download, an unreadable tokenizer.

    A subclass of :class:`ValueError`, so callers that catch ``ValueError`` also catch it. The
    message is one line that names the file (and line number where there is one) and the fix.
    """

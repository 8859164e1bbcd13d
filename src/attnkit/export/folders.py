"""Where an export is written: refuse an ``--out`` that would lose data, write beside it, swap in.

:func:`check_out_folder` runs before any work and refuses a file, a folder that is not an earlier
export of the same format (an :class:`ExportLayout`), or the source folder itself (or one holding
it); :func:`staged_folder` gives an empty folder beside ``--out`` that replaces it only when the
export completed, and leaves nothing behind when it failed. Used by the CTranslate2 and the ONNX
exports.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

__all__ = ["ExportLayout", "check_out_folder", "staged_folder"]


@dataclass(frozen=True)
class ExportLayout:
    """What an export folder of one format holds, to recognise an earlier export.

    Attributes:
        name: the format in messages (``CTranslate2``).
        marks: files every export of the format holds.
        written: name patterns (``fnmatch``) of everything an export writes at its top level.
    """

    name: str
    marks: tuple[str, ...]
    written: tuple[str, ...]


def _listing(names: Sequence[str], limit: int = 4) -> str:
    """``"a, b, c, ..."``: the first ``limit`` names."""
    return ", ".join([*names[:limit], "..."] if len(names) > limit else names)


def _refuse_source_inside(out: Path, sources: Sequence[str | Path]) -> None:
    """FileExistsError when ``out`` is one of ``sources`` or a folder holding one (replacing
    it would delete the source)."""
    where = out.resolve()
    for source in sources:
        held = Path(source).resolve()
        if where == held or where in held.parents:
            what = "is" if where == held else "holds"
            raise FileExistsError(
                f"--out {out} {what} the folder being exported ({source}); choose a new folder "
                "for the export"
            )


def check_out_folder(
    out: str | Path, layout: ExportLayout, *, sources: Sequence[str | Path] = ()
) -> None:
    """Raise a one-line OSError unless ``out`` may receive an export of ``layout``'s format.

    Accepted: a path that does not exist yet (under folders, not files), an empty folder, or an
    earlier export of the same format (it holds ``layout.marks`` and nothing an export does not
    write), which the new export replaces. Refused: a file, any other folder, and ``sources``
    (the run or model folder exported) or a folder holding one of them.
    """
    out = _real(out)
    _refuse_source_inside(out, sources)
    if os.path.lexists(out) and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file, not a folder; choose a new folder")
    if not out.is_dir():
        for parent in out.parents:
            if os.path.lexists(parent) and not parent.is_dir():
                raise NotADirectoryError(f"--out {out}: {parent} is a file, not a folder")
        return
    names = sorted(entry.name for entry in out.iterdir())
    if not names:
        return
    if not all((out / mark).is_file() for mark in layout.marks):
        raise FileExistsError(
            f"--out {out} is a folder that is not a {layout.name} export (it holds "
            f"{_listing(names)}); choose a new folder or remove it"
        )
    foreign = [n for n in names if not any(fnmatch(n, p) for p in layout.written)]
    if foreign:
        raise FileExistsError(
            f"--out {out} is a {layout.name} export that also holds {_listing(foreign)}, which "
            "replacing it would delete; move them away or choose a new folder"
        )


def _sibling(out: Path, suffix: str) -> Path:
    """A new, empty folder beside ``out`` with a name no other folder has."""
    while True:
        path = out.with_name(f".{out.name}.{secrets.token_hex(4)}{suffix}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is moved aside first and deleted after."""
    if not os.path.lexists(out):
        tmp.rename(out)
        return
    aside = _sibling(out, ".old")
    out.rename(aside / out.name)
    try:
        tmp.rename(out)
    except BaseException:
        (aside / out.name).rename(out)
        aside.rmdir()
        raise
    shutil.rmtree(aside)


def _real(out: str | Path) -> Path:
    """The folder ``out`` names, as the check and the swap both use it: symlinks followed and
    ``..`` resolved on the real path (``link/..`` is the link target's parent), so what is
    checked is what is replaced; a symlinked ``--out`` keeps its link and gets a new target."""
    return Path(os.path.realpath(out))


@contextlib.contextmanager
def staged_folder(
    out: str | Path, layout: ExportLayout, *, sources: Sequence[str | Path] = ()
) -> Iterator[Path]:
    """An empty temporary folder beside ``out`` to write an export of ``layout`` into.

    When the ``with`` block ends normally the folder replaces ``out``, after
    :func:`check_out_folder` is asked again (the export may have taken minutes, and ``out``
    may have changed meanwhile); when it raises, the folder is deleted and ``out`` is untouched.
    Either way nothing is left behind (nor the parent folders it made).
    """
    out = _real(out)  # "." and ".." resolved: the folder has a name
    created = [p for p in (out.parent, *out.parent.parents) if not os.path.lexists(p)]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(out, ".tmp")
    done = False
    try:
        yield tmp
        check_out_folder(out, layout, sources=sources)
        _swap_in(tmp, out)
        done = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after the swap
        for parent in [] if done else created:  # innermost first; only while still empty
            with contextlib.suppress(OSError):
                parent.rmdir()

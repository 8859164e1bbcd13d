"""Execute the tutorials (jupytext percent-format ``.py`` files) and turn them into Markdown pages.

The documentation site renders each tutorial *with its outputs*: this module runs it in a Jupyter
kernel (jupytext reads the ``.py``, nbclient executes it; an exception in any cell fails), keeps
the executed notebook in a cache, and converts it to a Markdown page plus PNG files for its
figures. The Markdown goes through the same Python-Markdown pipeline as every other page, so
formulas (KaTeX, served locally), links (checked by ``mkdocs build --strict``) and code blocks
look and behave the same everywhere.

Cache: ``build/docs/notebooks/<lang>/<name>.ipynb`` with ``<name>.json`` beside it holding the key
(hashes of the tutorial, of every file of ``src/attnkit`` and the full-size switch) and the
seconds the execution took. A tutorial is executed again when one of them changes.

Command line (also what ``make docs`` runs before ``mkdocs build``)::

    python scripts/docs/notebooks.py                 # execute every tutorial not cached yet
    python scripts/docs/notebooks.py en/01 zh/01     # only those (prefix match)
    python scripts/docs/notebooks.py --force         # ignore the cache
    python scripts/docs/notebooks.py --list          # print the cached timings

``ATTNKIT_TUTORIAL_FULL=1`` is passed on to the tutorials (full-size runs) and is part of the key.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TUTORIALS = ROOT / "docs" / "tutorials"
LANGUAGES = ("en", "zh")
CACHE = ROOT / "build" / "docs" / "notebooks"
#: Seconds one cell may run before the execution is declared failed.
CELL_TIMEOUT = 900

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# A cell's last value that is only an object's default repr (``<... at 0x7f...>``, or a list of
# them, e.g. what ``ax.legend()`` returns): noise on a page, so not shown.
_MAGIC = re.compile(r"^%matplotlib .*\n?", re.M)
_OBJECT_REPR = re.compile(r"^\[?(<[^<>]* at 0x[0-9a-f]+>(, )?)+\]?$")
# A link from a tutorial (docs/tutorials/<lang>/) to a library file, written so that it also
# works when the .py file is opened in Jupyter or a repository browser.
_SOURCE_LINK = re.compile(r"\]\(\.\./\.\./\.\./src/(attnkit/[\w/]+)\.py(#[\w-]+)?\)")
_BENCHMARK_LINK = re.compile(r"\]\(\.\./\.\./\.\./benchmarks/(RESULTS|PROFILE)\.md(#[\w-]+)?\)")


def _site_links(markdown: str) -> str:
    """Links that work in the repository, rewritten to the site's pages."""
    markdown = _SOURCE_LINK.sub(r"](../../source/\1.md\2)", markdown)
    return _BENCHMARK_LINK.sub(
        lambda m: f"](../../benchmarks/{m.group(1).lower()}.md{m.group(2) or ''})", markdown
    )


@dataclass(frozen=True)
class Tutorial:
    """One tutorial file: ``docs/tutorials/<lang>/<name>.py``."""

    lang: str
    name: str

    @property
    def path(self) -> Path:
        return TUTORIALS / self.lang / f"{self.name}.py"

    @property
    def key(self) -> str:
        return f"{self.lang}/{self.name}"

    @property
    def cached(self) -> Path:
        return CACHE / self.lang / f"{self.name}.ipynb"

    @property
    def meta(self) -> Path:
        return CACHE / self.lang / f"{self.name}.json"


def tutorials() -> list[Tutorial]:
    """Every tutorial, English first, in file-name order."""
    return [
        Tutorial(lang, p.stem)
        for lang in LANGUAGES
        for p in sorted((TUTORIALS / lang).glob("[0-9][0-9]-*.py"))
    ]


def select(patterns: list[str] | None) -> list[Tutorial]:
    """The tutorials whose ``lang/name`` starts with one of ``patterns`` (all for None)."""
    every = tutorials()
    if patterns is None:
        return every
    chosen = [t for t in every if any(t.key.startswith(p) for p in patterns)]
    unknown = [p for p in patterns if not any(t.key.startswith(p) for t in every)]
    if unknown:
        names = ", ".join(t.key for t in every)
        raise SystemExit(f"no tutorial matches {unknown}; tutorials: {names}")
    return chosen


def _full() -> bool:
    return os.environ.get("ATTNKIT_TUTORIAL_FULL", "") not in ("", "0")


def library_digest() -> str:
    """A hash of every file under ``src/attnkit``: outputs depend on the library too."""
    h = hashlib.sha256()
    for path in sorted((ROOT / "src" / "attnkit").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(ROOT)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def source_key(tutorial: Tutorial) -> str:
    """A hash of the tutorial file and the full-size switch."""
    h = hashlib.sha256(tutorial.path.read_bytes())
    h.update(b"full" if _full() else b"quick")
    return h.hexdigest()


def _meta(tutorial: Tutorial) -> dict:
    if not (tutorial.cached.exists() and tutorial.meta.exists()):
        return {}
    return json.loads(tutorial.meta.read_text(encoding="utf-8"))


def is_fresh(tutorial: Tutorial, library: str) -> bool:
    """Cached, from this very tutorial file and library."""
    meta = _meta(tutorial)
    return meta.get("source") == source_key(tutorial) and meta.get("library") == library


def execute(tutorial: Tutorial, library: str) -> float:
    """Run ``tutorial`` in a fresh kernel from the repository root; cache the result.

    Returns:
        the seconds the execution took (kernel start included).

    Raises:
        nbclient.exceptions.CellExecutionError: a cell raised; the message names the cell.
    """
    import jupytext
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    nb = jupytext.read(tutorial.path)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    # ipykernel's own kernel, run by this very interpreter: never a "python3" kernel that a
    # user-level Jupyter installation may point at another environment.
    specs = KernelSpecManager(kernel_dirs=[], ensure_native_kernel=True)
    client = NotebookClient(
        nb,
        km=KernelManager(kernel_name="python3", kernel_spec_manager=specs),
        timeout=CELL_TIMEOUT,
        allow_errors=False,
        resources={"metadata": {"path": str(ROOT)}},
    )
    start = time.perf_counter()
    # The kernel's temporary files (the runs a tutorial trains to show) go to a folder removed
    # afterwards: a kernel shut down by nbclient does not always run its atexit handlers.
    with tempfile.TemporaryDirectory(prefix="attnkit-docs-") as scratch:
        client.execute(env={**os.environ, "TMPDIR": scratch})
    seconds = time.perf_counter() - start
    tutorial.cached.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, tutorial.cached)
    meta = {
        "source": source_key(tutorial),
        "library": library,
        "seconds": round(seconds, 1),
        "full": _full(),
    }
    tutorial.meta.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return seconds


def ensure_executed(
    chosen: list[Tutorial], force: bool = False, log=print
) -> dict[str, float | None]:
    """Execute the chosen tutorials that are not cached (all with ``force``).

    Returns:
        seconds per executed tutorial (None: taken from the cache).
    """
    library = library_digest()
    done: dict[str, float | None] = {}
    for t in chosen:
        if not force and is_fresh(t, library):
            done[t.key] = None
            continue
        log(f"executing tutorial {t.key} ...")
        seconds = execute(t, library)
        log(f"executed tutorial {t.key} in {seconds:.1f} s")
        done[t.key] = seconds
    return done


def load(tutorial: Tutorial):
    """The tutorial as a notebook, and whether it holds outputs.

    The cached executed notebook is used when it was made from this very tutorial file (the
    library may have changed since: :func:`ensure_executed` decides what to run again);
    otherwise the source without outputs.
    """
    import jupytext
    import nbformat

    if _meta(tutorial).get("source") == source_key(tutorial):
        return nbformat.read(tutorial.cached, as_version=4), True
    return jupytext.read(tutorial.path), False


# ----------------------------------------------------------------------------- to Markdown
def _fence(text: str, lang: str = "") -> str:
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return f"{ticks}{lang}\n{text.rstrip()}\n{ticks}"


def _output_block(body: str) -> str:
    return f'<div class="nb-output" markdown>\n\n{body}\n\n</div>'


def _flush_stream(stream: list[str], parts: list[str]) -> None:
    text = _ANSI.sub("", "".join(stream)).rstrip()
    if text:
        parts.append(_output_block(_fence(text, "text")))
    stream.clear()


def _outputs(outputs: list, name: str, images: dict[str, bytes]) -> list[str]:
    """Markdown for a code cell's outputs; consecutive stream outputs become one text block."""
    parts: list[str] = []
    stream: list[str] = []
    for out in outputs:
        kind = out.get("output_type")
        if kind == "stream":
            stream.append(out.get("text", ""))
            continue
        _flush_stream(stream, parts)
        if kind == "error":  # only with allow_errors, which the build never sets
            raise RuntimeError(f"{name}: a cell raised {out.get('ename')}")
        data = out.get("data", {})
        if "image/png" in data:
            n = len(images) + 1
            path = f"figures/{name}-{n}.png"
            images[path] = base64.b64decode(data["image/png"])
            alt = f"Figure {n} of {name}, produced by the code above"
            parts.append(_output_block(f"![{alt}]({path})"))
        elif "text/markdown" in data:
            parts.append(_output_block(data["text/markdown"]))
        elif "text/plain" in data and not _OBJECT_REPR.match(data["text/plain"]):
            parts.append(_output_block(_fence(_ANSI.sub("", data["text/plain"]), "text")))
    _flush_stream(stream, parts)
    return parts


def to_markdown(nb, name: str, executed: bool) -> tuple[str, dict[str, bytes]]:
    """One Markdown page (and its figures) from a notebook.

    Markdown cells are copied (links to ``../../../src/attnkit/*.py`` and
    ``../../../benchmarks/*.md`` become links to the site's pages), code cells become Python
    blocks, text outputs become text blocks and PNG outputs become image files
    ``figures/<name>-<n>.png`` next to the page.

    Returns:
        ``(markdown, {relative image path: PNG bytes})``.
    """
    parts: list[str] = []
    images: dict[str, bytes] = {}
    if not executed:
        parts.append(
            '!!! note "Outputs not shown"\n    This page was built without running the '
            "tutorial (a partial build); `make docs` builds it with every output."
        )
    for cell in nb.cells:
        source = cell.source.strip("\n")
        if cell.cell_type == "markdown":
            parts.append(_site_links(source))
            continue
        if cell.cell_type != "code" or "remove-cell" in cell.metadata.get("tags", []):
            continue
        source = _MAGIC.sub("", source).strip("\n")  # notebook plumbing, not the lesson
        if source:
            parts.append(_fence(source, "python"))
        parts += _outputs(cell.get("outputs", []), name, images)
    return "\n\n".join(parts) + "\n", images


# ----------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tutorials", nargs="*", help="prefixes like en/01 (default: all)")
    parser.add_argument("--force", action="store_true", help="execute even if cached")
    parser.add_argument("--list", action="store_true", help="print the cached timings")
    args = parser.parse_args(argv)
    chosen = select(args.tutorials or None)
    if args.list:
        total = 0.0
        for t in chosen:
            if t.meta.exists():
                seconds = json.loads(t.meta.read_text(encoding="utf-8"))["seconds"]
                total += seconds
                print(f"{t.key:40s} {seconds:7.1f} s")
            else:
                print(f"{t.key:40s}       - (not executed)")
        print(f"{'total':40s} {total:7.1f} s")
        return 0
    start = time.perf_counter()
    done = ensure_executed(chosen, force=args.force)
    ran = sum(1 for s in done.values() if s is not None)
    print(
        f"{ran} tutorial(s) executed, {len(done) - ran} cached, "
        f"{time.perf_counter() - start:.0f} s in all"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

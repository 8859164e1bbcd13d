"""MkDocs hooks of the attnkit site (``hooks:`` in ``mkdocs.yml``).

They add the pages that are generated, never written by hand:

* ``tutorials/<lang>/<name>.md`` (+ ``figures/*.png``) from the executed tutorials
  (:mod:`notebooks`); which tutorials are executed is set by ``ATTNKIT_DOCS_EXECUTE``:
  ``all`` (default: every tutorial, cached ones re-used), ``none``, or comma-separated prefixes
  like ``en/01,zh/01`` (the others are shown from the cache if fresh, else without outputs);
* ``reference/cli.md`` from the argparse parsers (:mod:`cli_reference`);
* ``benchmarks/results.md`` and ``benchmarks/profile.md`` from ``benchmarks/*.md``;
* ``source/attnkit/**.md``: every library file as a highlighted page with line numbers, the
  target of the tutorials' "implemented in" links (the site works offline, so it cannot link
  to a repository host).

They also turn the Sphinx roles of the docstrings (``:func:`~attnkit.x.y```) into plain code in
the API reference.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from pathlib import Path

from mkdocs.structure.files import File, Files

sys.path.insert(0, str(Path(__file__).resolve().parent))

import notebooks  # noqa: E402
from cli_reference import cli_reference  # noqa: E402

log = logging.getLogger("mkdocs.hooks.attnkit")
ROOT = notebooks.ROOT

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|exc|obj):<code>(~?)([\w.]+)</code>")
_SKIP_PARTS = {"__pycache__"}


def _execute_patterns() -> list[str] | None:
    """None: all tutorials; []: none; else prefixes."""
    value = os.environ.get("ATTNKIT_DOCS_EXECUTE", "all").strip()
    if value in ("", "all"):
        return None
    if value == "none":
        return []
    return [p.strip() for p in value.split(",") if p.strip()]


def _add(files: Files, config, path: str, content: str | bytes) -> None:
    existing = files.get_file_from_path(path)
    if existing is not None:
        files.remove(existing)
    files.append(File.generated(config, path, content=content))


def _tutorial_pages(files: Files, config) -> None:
    patterns = _execute_patterns()
    every = notebooks.tutorials()
    wanted = every if patterns is None else (notebooks.select(patterns) if patterns else [])
    start = time.perf_counter()
    notebooks.ensure_executed(wanted, log=log.info)
    if wanted:
        log.info("tutorials ready in %.0f s", time.perf_counter() - start)
    for t in every:
        nb, executed = notebooks.load(t)
        markdown, images = notebooks.to_markdown(nb, t.name, executed)
        _add(files, config, f"tutorials/{t.lang}/{t.name}.md", markdown)
        for rel, data in images.items():
            _add(files, config, f"tutorials/{t.lang}/{rel}", data)


def _benchmark_pages(files: Files, config) -> None:
    for name in ("RESULTS", "PROFILE"):
        text = (ROOT / "benchmarks" / f"{name}.md").read_text(encoding="utf-8")
        _add(files, config, f"benchmarks/{name.lower()}.md", text)


def _source_pages(files: Files, config) -> None:
    package = ROOT / "src" / "attnkit"
    for path in sorted(package.rglob("*.py")):
        if _SKIP_PARTS & set(path.parts):
            continue
        rel = path.relative_to(package.parent)  # attnkit/...
        code = path.read_text(encoding="utf-8")
        ticks = "````" if "```" in code else "```"
        page = f'# `src/{rel.as_posix()}`\n\n{ticks}python linenums="1"\n{code.rstrip()}\n{ticks}\n'
        _add(files, config, f"source/{rel.with_suffix('.md').as_posix()}", page)


def _plain_role(match: re.Match[str]) -> str:
    short, name = match.groups()
    return f"<code>{name.rsplit('.', 1)[-1] if short else name}</code>"


def on_files(files: Files, config) -> Files:
    _tutorial_pages(files, config)
    _add(files, config, "reference/cli.md", cli_reference())
    _benchmark_pages(files, config)
    _source_pages(files, config)
    return files


def on_page_content(html: str, page, config, files) -> str:
    if page.file.src_uri.startswith("reference/api/"):
        html = _ROLE.sub(_plain_role, html)
    return html

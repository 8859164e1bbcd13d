"""The documentation site: a strict offline build, and three pages in a real browser.

The site is built once per session into a temporary folder with ``mkdocs build --strict``,
executing only the first English tutorial (the other tutorials come from the cache of an
earlier ``make docs`` if it is fresh, else without outputs) — or ``site/`` is used as it is when
it is newer than everything it is built from. ``make docs`` (run by CI after the tests)
executes every tutorial.

The browser test serves the site on 127.0.0.1 and drives Debian's chromium
(``apt-get install chromium``) with Playwright, as ``tests/viz/test_report.py`` does; it is
skipped, with the reason, when either is missing. It fails on any console error or warning,
any failed request and any request that leaves 127.0.0.1: the pages must work offline.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.browser import chromium_page

ROOT = Path(__file__).resolve().parents[2]
FIGURE = "tutorials/en/figures/01-attention-cues-1.png"
SOURCES = ("docs", "scripts/docs", "src/attnkit", "benchmarks", "mkdocs.yml")


def _newest_source() -> float:
    newest = 0.0
    for name in SOURCES:
        path = ROOT / name
        files = [path] if path.is_file() else (p for p in path.rglob("*") if p.is_file())
        newest = max([newest, *(p.stat().st_mtime for p in files)])
    return newest


def _fresh_site() -> Path | None:
    site = ROOT / "site"
    index, figure = site / "index.html", site / FIGURE
    if index.is_file() and figure.is_file() and index.stat().st_mtime > _newest_source():
        return site
    return None


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install '.[docs]')")
    fresh = _fresh_site()
    if fresh is not None:
        return fresh
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "ATTNKIT_DOCS_EXECUTE": "en/01", "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-6000:]}"
    return out


def test_site_has_every_part(site: Path) -> None:
    for page in (
        "index.html",
        "getting-started/index.html",
        "tutorials/index.html",
        "zh/index.html",
        "tutorials/en/07-transformer/index.html",
        "tutorials/zh/07-transformer/index.html",
        "howto/own-data/index.html",
        "howto/distributed/index.html",
        "reference/cli/index.html",
        "reference/api/attention/index.html",
        "benchmarks/results/index.html",
        "ARCHITECTURE/index.html",
        "source/attnkit/attention/functional/index.html",
        FIGURE,
        "assets/katex/katex.min.js",
    ):
        assert (site / page).is_file(), page
    cli = (site / "reference/cli/index.html").read_text(encoding="utf-8")
    for command in ("attnkit train", "attnkit translate", "attnkit train-vit", "attnkit average"):
        assert f"<code>{command}</code>" in cli, command
    api = (site / "reference/api/attention/index.html").read_text(encoding="utf-8")
    assert "masked_softmax" in api and "MultiHeadAttention" in api
    # The tutorial links into the code became links to the site's source pages.
    tutorial = (site / "tutorials/en/01-attention-cues/index.html").read_text(encoding="utf-8")
    assert 'href="../../../source/attnkit/attention/functional/"' in tutorial


def test_pages_load_nothing_from_the_network(site: Path) -> None:
    external = re.compile(r'<(?:script|img|link|iframe)\b[^>]*(?:src|href)="(?:https?:)?//', re.I)
    for page in site.rglob("*.html"):
        match = external.search(page.read_text(encoding="utf-8"))
        assert match is None, f"{page.relative_to(site)}: {match.group(0)}"
    for css in site.rglob("*.css"):
        assert not re.search(r"url\((['\"]?)(https?:)?//", css.read_text(encoding="utf-8")), css


@pytest.fixture
def served(site: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_three_pages_in_chromium(served: str) -> None:
    with chromium_page(1280, 900) as (page, problems):
        page.on(
            "request",
            lambda r: (
                None
                if r.url.startswith((served, "data:", "blob:"))
                else problems.append(f"request off the machine: {r.url}")
            ),
        )

        # 1. Home: the navigation holds every section and the eight tutorials.
        page.goto(f"{served}/")
        nav = page.locator("nav.md-nav--primary")
        labels = " ".join(nav.all_text_contents())
        for section in ("Getting started", "Tutorials", "中文教程", "How-to guides"):
            assert section in labels, section
        for title in ("Attention cues", "Multi-head attention", "Vision Transformer"):
            assert title in labels, title
        page.locator("nav.md-nav--primary a", has_text="1. Attention cues").first.click()
        page.wait_for_url(re.compile(r"/tutorials/en/01-attention-cues/$"))

        # 2. A tutorial: formulas typeset by the local KaTeX, figures produced by the code.
        page.wait_for_selector(".arithmatex .katex")
        assert page.locator(".arithmatex .katex").count() >= 5
        assert page.locator(".katex-error").count() == 0
        display = page.locator(".arithmatex .katex-display").first
        assert "∑" in display.text_content()  # the pooling formula
        figure = page.locator(f'img[src$="{FIGURE.rsplit("/", 1)[1]}"]')
        figure.scroll_into_view_if_needed()
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=figure.element_handle()
        )
        width = figure.evaluate("img => img.naturalWidth")
        assert width > 100
        fonts = page.evaluate("document.fonts.check('16px KaTeX_Main')")
        assert fonts, "KaTeX's fonts did not load"

        # 3. The generated command-line reference, and the search box (works offline).
        page.goto(f"{served}/reference/cli/")
        assert page.locator("h2#attnkit-train").count() == 1
        assert page.locator("h2#attnkit-train-vit").count() == 1
        page.locator("label.md-search__icon, .md-search__input").first.click()
        page.locator(".md-search__input").fill("masked softmax")
        page.wait_for_selector(".md-search-result__item")
        shot = page.screenshot(full_page=False)
    assert problems == []
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_module_of_every_package_has_an_api_page() -> None:
    """Each module of attnkit's packages is rendered on some page of the API reference (the
    command line has its own reference; the benchmark harness is documented in benchmarks/)."""
    pages = "\n".join(
        p.read_text(encoding="utf-8") for p in (ROOT / "docs/reference/api").glob("*.md")
    )
    documented = set(re.findall(r"^::: (attnkit[\w.]*)$", pages, flags=re.M))
    missing = []
    for package in sorted((ROOT / "src/attnkit").iterdir()):
        if not (package / "__init__.py").is_file() or package.name in ("cli", "bench"):
            continue
        for module in sorted(package.glob("*.py")):
            name = f"attnkit.{package.name}.{module.stem}"
            if module.stem != "__init__" and name not in documented:
                missing.append(name)
    assert not missing, f"no `::: NAME` on any docs/reference/api/*.md page for {missing}"

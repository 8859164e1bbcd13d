"""The tutorials' sources: both languages, the same code, the parts every tutorial has.

Cheap checks on the ``.py`` files (nothing is executed here: ``make docs`` and
``tests/docs/test_site.py`` execute them). Needs jupytext (the ``docs`` extra).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext", reason="the docs extra is not installed")

ROOT = Path(__file__).resolve().parents[2]
TUTORIALS = ROOT / "docs" / "tutorials"
NAMES = sorted(p.stem for p in (TUTORIALS / "en").glob("[0-9][0-9]-*.py"))
HEADINGS = {
    "en": ("**What you will learn**", "## Exercises"),
    "zh": ("**你将学到**", "## 练习"),
}
LINK = re.compile(r"\]\((\.\./\.\./\.\./[^)#]+)(#[^)]*)?\)")


def cells(lang: str, name: str) -> list:
    return jupytext.read(TUTORIALS / lang / f"{name}.py").cells


def test_the_nine_tutorials_exist_in_both_languages() -> None:
    assert len(NAMES) == 9, NAMES
    assert [n[:2] for n in NAMES] == [f"{i:02d}" for i in range(1, 10)]
    zh = sorted(p.stem for p in (TUTORIALS / "zh").glob("[0-9][0-9]-*.py"))
    assert zh == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_chinese_tutorial_has_the_same_code(name: str) -> None:
    en = [c for c in cells("en", name) if c.cell_type == "code"]
    zh = [c for c in cells("zh", name) if c.cell_type == "code"]
    assert [c.source for c in zh] == [c.source for c in en]
    en_md = [c for c in cells("en", name) if c.cell_type == "markdown"]
    zh_md = [c for c in cells("zh", name) if c.cell_type == "markdown"]
    assert len(zh_md) == len(en_md)
    # The prose is the reader's language, not a copy of the English.
    assert all(re.search(r"[\u4e00-\u9fff]", c.source) for c in zh_md)


@pytest.mark.parametrize("lang", sorted(HEADINGS))
@pytest.mark.parametrize("name", NAMES)
def test_tutorial_parts(lang: str, name: str) -> None:
    path = TUTORIALS / lang / f"{name}.py"
    text = "\n".join(c.source for c in cells(lang, name) if c.cell_type == "markdown")
    learn, exercises = HEADINGS[lang]
    assert text.lstrip().startswith(f"# {int(name[:2])}. "), "a numbered title first"
    assert learn in text and exercises in text
    assert "$$" in text, "at least one displayed formula"
    # Links into the repository (the build turns them into site pages) point at real files.
    links = [m.group(1) for m in LINK.finditer(text)]
    assert any(link.startswith("../../../src/attnkit/") for link in links)
    for link in links:
        assert (path.parent / link).resolve().is_file(), link
    source = path.read_text(encoding="utf-8")
    assert "ATTNKIT_TUTORIAL_FULL" in source, "the full-size switch"
    assert "# %matplotlib inline" in source, "figures are shown when executed"


def test_every_tutorial_is_in_the_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for lang in HEADINGS:
        for name in NAMES:
            assert f"tutorials/{lang}/{name}.md" in nav

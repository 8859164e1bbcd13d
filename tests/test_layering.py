"""The dependency rule of docs/ARCHITECTURE.md, enforced: a package of ``src/attnkit`` imports only
from packages below it. Every import is read with ``ast`` (module level, inside functions and under
``TYPE_CHECKING`` alike), so an upward import cannot hide in a function body."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "attnkit"

#: Bottom to top. A package may import its own modules and any package on a lower level.
LEVELS: list[tuple[str, ...]] = [
    ("version", "files", "config", "hardware"),
    ("attention",),
    ("layers",),
    ("models",),
    ("data",),
    ("decoding",),
    ("evaluation",),
    ("viz",),
    ("training",),
    ("pretrained",),
    ("__init__",),  # the public API of `import attnkit`: the library, no task and no CLI
    ("translation", "vision", "lm", "textclass"),  # tasks: one folder each
    ("serve", "export"),
    ("bench",),
    ("cli", "__main__"),
]
#: Tasks are peers and do not import each other, except where one builds on another.
PEER_IMPORTS: dict[str, set[str]] = {"textclass": {"lm"}}

LEVEL_OF = {name: i for i, names in enumerate(LEVELS) for name in names}


def component(module: str) -> str:
    """``attnkit.training.runs`` -> ``training``; ``attnkit`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path, root: Path = SRC) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path = SRC) -> list[tuple[int, str]]:
    """``(line, module)`` of every ``attnkit`` import in a file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = module_name(path, root)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "attnkit":  # `from attnkit import x`: x is a module or a name
                found += [(node.lineno, f"attnkit.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, target))
    return [(line, m) for line, m in found if m == "attnkit" or m.startswith("attnkit.")]


def violations(root: Path = SRC) -> list[str]:
    """One line per upward (or sideways) import: file, line, and the rule it breaks."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        mine = component(module_name(path, root))
        if mine not in LEVEL_OF:
            problems.append(f"{path}: package {mine!r} has no level in LEVELS; add it")
            continue
        for line, target in imports_of(path, root):
            theirs = component(target)
            if theirs == mine:
                continue
            if theirs not in LEVEL_OF:
                problems.append(f"{path}:{line}: imports {target}, a package with no level")
                continue
            low, high = LEVEL_OF[theirs], LEVEL_OF[mine]
            if low < high or theirs in PEER_IMPORTS.get(mine, set()):
                continue
            how = "a peer" if low == high else "above it"
            problems.append(
                f"{path.relative_to(root.parent)}:{line}: {mine} imports {target}, {how}; "
                f"a package imports only from lower levels (tests/test_layering.py LEVELS)"
            )
    return problems


def test_no_upward_imports() -> None:
    assert violations() == []


def test_every_package_has_a_level() -> None:
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in SRC.glob("*.py")}
    assert (packages | modules) - set(LEVEL_OF) == set()


@pytest.mark.parametrize(
    ("where", "line", "expect"),
    [
        (
            "models/planted.py",
            "from attnkit.training.trainer import Trainer",
            "models imports attnkit.training.trainer, above it",
        ),
        (
            "viz/planted.py",
            "def f():\n    from attnkit.translation import run\n",
            "viz imports attnkit.translation, above it",
        ),
        (
            "attention/planted.py",
            "from ..layers import blocks",
            "attention imports attnkit.layers, above it",
        ),
        (
            "translation/planted.py",
            "import attnkit.vision.run",
            "translation imports attnkit.vision.run, a peer",
        ),
        ("data/planted.py", "from attnkit import cli", "data imports attnkit.cli, above it"),
    ],
)
def test_a_planted_upward_import_fails(tmp_path: Path, where: str, line: str, expect: str) -> None:
    root = tmp_path / "attnkit"
    for name in ("models", "viz", "attention", "translation", "data", "layers", "training"):
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / where).write_text(line + "\n")
    found = violations(root)
    assert len(found) == 1 and expect in found[0], found
    assert where.split("/")[0] + "/planted.py:" in found[0]  # names the file and the line


def test_a_downward_import_passes(tmp_path: Path) -> None:
    root = tmp_path / "attnkit"
    (root / "translation").mkdir(parents=True)
    (root / "translation" / "run.py").write_text(
        "from attnkit.training.runs import train_run\nfrom ..models import Transformer\n"
    )
    assert violations(root) == []

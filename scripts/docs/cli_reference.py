"""The command-line reference page, generated from the argparse parsers.

Walks :func:`attnkit.cli.build_parser` and every subcommand (nested ones too, e.g.
``attnkit bench attention``), and writes each one's summary, usage line and a table of its
arguments with their help and defaults. Nothing is copied by hand: a new option appears in the
reference the next time the site is built.

Usage: ``python scripts/docs/cli_reference.py [OUT.md]`` (default: print to stdout); the
documentation build calls :func:`cli_reference` from ``scripts/docs/hooks.py``.
"""

from __future__ import annotations

import argparse
import html
import os
import sys
from collections.abc import Iterator

_SUPPRESS = argparse.SUPPRESS


def _subcommands(
    parser: argparse.ArgumentParser,
) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each direct subcommand, aliases skipped."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {a.dest: a.help or "" for a in action._choices_actions}
        seen: set[int] = set()
        for name, sub in action.choices.items():
            if id(sub) in seen:
                continue
            seen.add(id(sub))
            yield name, helps.get(name, ""), sub


def _cell(text: str) -> str:
    return html.escape(" ".join(text.split()), quote=False).replace("|", "\\|")


def _expanded_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if not action.help or action.help == _SUPPRESS:
        return ""
    return parser._get_formatter()._expand_help(action)


def _argument_rows(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
            continue
        if action.help == _SUPPRESS:
            continue
        if action.option_strings:
            names = ", ".join(action.option_strings)
            takes_value = action.nargs != 0
            metavar = action.metavar or (
                "{" + ",".join(map(str, action.choices)) + "}"
                if action.choices
                else action.dest.upper()
            )
            if isinstance(metavar, tuple):
                metavar = " ".join(metavar)
            shown = f"{names} {metavar}" if takes_value else names
        else:
            shown = action.metavar or action.dest
            if action.nargs in ("*", "+", "?"):
                shown = f"{shown} ({'optional' if action.nargs in ('*', '?') else 'one or more'})"
        default = action.default
        if default in (None, _SUPPRESS, False):
            default_text = ""
        else:
            default_text = f"`{default}`" if not isinstance(default, list) or default else ""
        choices = ""
        if action.choices and not isinstance(action.choices, dict):
            choices = " Choices: " + ", ".join(f"`{c}`" for c in action.choices) + "."
        rows.append(
            f"| `{_cell(shown)}` | {_cell(_expanded_help(parser, action))}{choices} "
            f"| {default_text} |"
        )
    return rows


def _section(path: list[str], summary: str, parser: argparse.ArgumentParser) -> list[str]:
    title = " ".join(path)
    anchor = "-".join(path)
    out = [f"## `{title}` {{ #{anchor} }}", ""]
    if summary:
        out += [_cell(summary), ""]
    if parser.description and parser.description != summary:
        out += [html.escape(parser.description, quote=False), ""]
    usage = parser.format_usage().strip()
    out += ["```text", usage, "```", ""]
    rows = _argument_rows(parser)
    if rows:
        out += ["| argument | description | default |", "| --- | --- | --- |", *rows, ""]
    if parser.epilog:
        out += [html.escape(parser.epilog, quote=False), ""]
    return out


def _walk(
    path: list[str], summary: str, parser: argparse.ArgumentParser
) -> Iterator[tuple[list[str], str, argparse.ArgumentParser]]:
    yield path, summary, parser
    for name, help_text, sub in _subcommands(parser):
        yield from _walk([*path, name], help_text, sub)


def cli_reference() -> str:
    """The Markdown of the whole reference."""
    from attnkit.cli import build_parser

    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # usage lines wrapped the same on every machine
    try:
        root = build_parser()
        commands = list(_walk(["attnkit"], "", root))
        return _render(commands)
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns


def _render(commands: list[tuple[list[str], str, argparse.ArgumentParser]]) -> str:
    lines = [
        "# Command-line reference",
        "",
        "Generated from the argparse parsers (`attnkit.cli.build_parser()`) when the site is "
        "built, so it always matches the installed `attnkit`; `attnkit COMMAND --help` prints "
        "the same.",
        "",
        "| command | what it does |",
        "| --- | --- |",
    ]
    for path, summary, _ in commands[1:]:
        lines.append(f"| [`{' '.join(path)}`](#{'-'.join(path)}) | {_cell(summary)} |")
    lines.append("")
    for path, summary, parser in commands:
        lines += _section(path, summary or (parser.description or ""), parser)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = cli_reference()
    if args:
        with open(args[0], "w", encoding="utf-8") as f:
            f.write(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

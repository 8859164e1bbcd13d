"""The ``attnkit`` command: thin subcommands over the library.

Each ``attnkit.cli.<topic>`` module registers its subcommands; library errors become one line on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

from attnkit.version import __version__

__all__ = ["main", "build_parser"]

_TOPICS = (
    "translate",
    "viz",
    "vision",
    "lm",
    "textclass",
    "pretrained",
    "export",
    "serve",
    "bench",
)


_MISSING_VALUE = re.compile(r"argument (\S+): expected one argument$")


def _dash_value_hint(message: str, given: Sequence[str]) -> str:
    """For "--flag: expected one argument" when the next word starts with '-' (``--time-budget
    -10s``: argparse reads it as an option), how to pass it; else ""."""
    found = _MISSING_VALUE.match(message)
    if found is None:
        return ""
    flags = found.group(1).split("/")
    from attnkit.cli.options import names_flag

    for typed, value in zip(given, given[1:], strict=False):
        if value.startswith("-") and any(names_flag(typed, flag) for flag in flags):
            return f" (got {value!r}: a value that starts with '-' is written {typed}={value})"
    return ""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the message and where to look, not the usage block."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def, override]
        self._given = list(sys.argv[1:] if args is None else args)  # for error()'s hints
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        message += _dash_value_hint(message, getattr(self, "_given", ()))
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


#: The extra that installs each optional package (pyproject.toml).
_EXTRAS = {
    "ctranslate2": "export",
    "onnx": "export",
    "onnxruntime": "export",
    "fastapi": "serve",
    "uvicorn": "serve",
    "httpx": "serve",
    "sklearn": "vision",
    "PIL": "vision",
    "tokenizers": "pretrained",
}


def _names_an_extra(err: ImportError) -> bool:
    """An optional package is missing (or attnkit's message already says what to install)."""
    missing = isinstance(err, ModuleNotFoundError) and (err.name or "").split(".")[0] in _EXTRAS
    return missing or "pip install" in str(err)


def missing_package_message(err: ImportError) -> str:
    """One line for an optional package that is not installed: the message attnkit gave it
    (which names the extra), or the package and the extra that installs it."""
    package = (err.name or "").split(".")[0]
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if package in _EXTRAS and "pip install" not in text:
        return f"{text}; install it with pip install 'attnkit[{_EXTRAS[package]}]'"
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="attnkit",
        description="Attention and the Transformer: train, translate, evaluate, look inside.",
    )
    parser.add_argument("--version", action="version", version=f"attnkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import importlib

    for topic in _TOPICS:
        try:
            module = importlib.import_module(f"attnkit.cli.{topic}")
        except ModuleNotFoundError as err:
            if err.name == f"attnkit.cli.{topic}":
                continue  # that part of the CLI is not installed in this build
            raise
        module.register(sub)
    parser.set_defaults(_subcommands=sub.choices)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 success, 2 bad input or failure, 130 Ctrl-C)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # reported by the subcommand's parser, whose options the user was typing
            command = args._subcommands.get(args.command) if args.command else None
            (command or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as stop:  # a parse error (2, message printed) or --help/--version (0)
        return 0 if stop.code is None else stop.code if isinstance(stop.code, int) else 2
    args.argv = argv  # the command line as given, for relaunching under torchrun
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("attnkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`attnkit translate ... | head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
        return 141
    except (ValueError, OSError, RuntimeError, ImportError) as err:
        if args.verbose or (isinstance(err, ImportError) and not _names_an_extra(err)):
            raise  # (an ImportError inside attnkit is a bug: its traceback is wanted)
        if isinstance(err, ImportError):
            message = missing_package_message(err)
        elif isinstance(err, OSError) and err.filename is not None and err.strerror:
            message = f"{err.filename}: {err.strerror}"  # not "[Errno 20] ...: PosixPath(...)"
        else:
            text = str(err).strip()
            message = text.splitlines()[0] if text else type(err).__name__
        print(f"attnkit {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Options shared by several subcommands (one definition, one check)."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = [
    "positive_int",
    "refuse_run_kind",
    "check_input_file",
    "nonnegative_int",
    "nonnegative_float",
    "positive_float",
    "probability",
    "port_number",
    "add_checkpoint_option",
    "add_device_option",
    "add_threads_option",
    "apply_threads",
    "parse_duration",
    "add_run_options",
    "run_flags",
    "resume_overrides",
    "progress_wanted",
    "input_chunks",
    "text_chunks",
    "input_lines",
]


def add_checkpoint_option(parser: Any) -> None:
    """``--checkpoint NAME``: which checkpoint of a run to load (see ``find_checkpoint``)."""
    parser.add_argument(
        "--checkpoint",
        default="best",
        help="best, last, a name under RUN/checkpoints (e.g. averaged), or a folder",
    )


def _number(
    convert: Callable[[str], Any], ok: Callable[[Any], bool], kind: str, wanted: str
) -> Callable[[str], Any]:
    """An argparse type: ``convert`` the text and check it with ``ok`` (one-line errors)."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if not ok(value):  # (a float comparison also rejects nan)
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value

    return parse


#: A whole number >= 1 (counts, sizes, beams).
positive_int = _number(int, lambda v: v >= 1, "a whole number >= 1", ">= 1")
#: A whole number >= 0 (how many samples to print, 0 for none).
nonnegative_int = _number(int, lambda v: v >= 0, "a whole number >= 0", ">= 0")
#: A number > 0 (learning rates).
positive_float = _number(float, lambda v: v > 0, "a number > 0", "> 0")
#: A number >= 0 (temperatures, waiting times).
nonnegative_float = _number(float, lambda v: v >= 0, "a number >= 0", ">= 0")
#: A number in (0, 1] (nucleus sampling).
probability = _number(float, lambda v: 0 < v <= 1, "a number in (0, 1]", "in (0, 1]")
#: A TCP port, 1-65535.
port_number = _number(int, lambda v: 1 <= v <= 65535, "a port number", "a port in 1-65535")


_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def device_name(text: str) -> str:
    """Validate a ``--device`` value at parse time: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"invalid device {text!r}; use auto, cpu, cuda or cuda:N (e.g. cuda:1)"
        )
    return text


def add_device_option(parser: Any, default: str | None = "auto", note: str = "") -> None:
    """``--device``: where the model runs (checked when the command line is parsed).

    Args:
        parser: the subcommand's parser.
        default: the default device; None leaves it to the run's config (training commands).
        note: appended to the help text (e.g. which engine the option applies to).
    """
    shown = "the run's train.device" if default is None else default
    parser.add_argument(
        "--device",
        default=default,
        type=device_name,
        help=f"auto (CUDA when available, else the CPU), cpu, cuda or cuda:N (default: {shown})"
        + (f"; {note}" if note else ""),
    )


def add_threads_option(parser: Any) -> None:
    """``--threads N``: PyTorch's intra-op CPU threads for this command."""
    parser.add_argument(
        "--threads",
        type=positive_int,
        help="PyTorch CPU threads (default: one per core); on a machine whose cores are busy "
        "with other programs, 1 is often much faster (OpenMP threads wait for each other)",
    )


def apply_threads(args: argparse.Namespace, default: int | None = None) -> None:
    """Set ``torch.set_num_threads`` from ``args.threads`` (or ``default`` when it is unset)."""
    threads = args.threads if args.threads is not None else default
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``20m``, ``1.5h`` -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}; use e.g. 90s, 20m or 1h")
    value, unit = float(match.group(1)), match.group(2) or "s"
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be longer than 0, got {text!r}")
    return value * {"s": 1, "m": 60, "h": 3600}[unit]


def add_run_options(parser: Any, *, set_example: str, budget_example: str = "20m") -> None:
    """The options every training command shares: ``--run --config --set --epochs
    --time-budget --device --threads --seed --resume --nproc --no-progress``.

    Args:
        parser: the subcommand's parser.
        set_example: an example of ``--set`` for the help text (``model.num_layers=2``).
        budget_example: an example duration for ``--time-budget``.
    """
    parser.add_argument("--config", help="TOML/JSON file with the run's config sections")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help=f"override a setting, e.g. --set {set_example}",
    )
    parser.add_argument("--epochs", type=positive_int)
    parser.add_argument(
        "--time-budget",
        type=parse_duration,
        metavar="DURATION",
        help=f"stop training after this long (e.g. {budget_example}) and evaluate; with "
        "--resume: the whole run's training time, earlier sessions included",
    )
    add_device_option(parser, default=None)
    add_threads_option(parser)
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --run exactly (its data, model and batches stay; --epochs, "
        "--time-budget, --device, --eval-every and --set train.KEY may change)",
    )
    parser.add_argument(
        "--nproc",
        type=positive_int,
        default=1,
        help="launch N local processes with torchrun (DDP)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_flags(args: argparse.Namespace, **more: str) -> dict[str, Any]:
    """``{"section.key": value}`` of the shared training flags (and ``more``: flag name ->
    ``section.key``), for :func:`attnkit.training.runs.resolve_config`."""
    names = {
        "epochs": "train.epochs",
        "time_budget": "train.time_budget",
        "device": "train.device",
        "seed": "train.seed",
        **more,
    }
    return {path: getattr(args, flag, None) for flag, path in names.items()}


def _typed(args: argparse.Namespace, flag: str) -> bool:
    """Whether ``flag`` (e.g. ``--data``) was written on the command line (``args.argv``), whole,
    abbreviated as argparse allows, or as ``--flag=VALUE``; also when its value is set though
    the command line is unknown (a library caller's Namespace)."""
    argv = getattr(args, "argv", None)
    if argv is None:
        return getattr(args, flag[2:].replace("-", "_"), None) not in (None, False)
    for token in argv:
        if token == "--":
            break
        name = token.split("=", 1)[0]
        if name.startswith("--") and len(name) > 2 and flag.startswith(name):
            return True
    return False


def resume_overrides(args: argparse.Namespace, *, fixed: Sequence[str] = ()) -> dict[str, Any]:
    """Train settings given on a ``--resume`` command line (flags and ``--set train.KEY=VALUE``).

    Args:
        args: the parsed command line.
        fixed: names of flags of this command that a resume may not change (an error if given,
            with a default value too: the run keeps its data, model and batches); ``--config``
            and ``--seed`` never may.
    """
    from attnkit.config import ConfigError, apply_overrides

    given = [
        flag
        for flag in (f"--{name.replace('_', '-')}" for name in (*fixed, "config", "seed"))
        if _typed(args, flag)
    ]
    if given:
        raise ConfigError(
            f"--resume continues the run as it was: it cannot change {', '.join(given)}; "
            "start a new run (another --run folder) for that"
        )
    sets = apply_overrides({}, args.set)
    if set(sets) - {"train"}:
        raise ConfigError(
            f"--resume can only change train settings, got --set for "
            f"{sorted(set(sets) - {'train'})}"
        )
    overrides = dict(sets.get("train", {}))
    for flag in ("epochs", "time_budget", "device", "eval_every"):  # those the command has
        if getattr(args, flag, None) is not None:
            overrides[flag] = getattr(args, flag)
    return overrides


def progress_wanted(args: argparse.Namespace) -> bool:
    """A progress bar unless ``--no-progress`` or stderr is not a terminal."""
    return not args.no_progress and sys.stderr.isatty()


def input_lines(stream: Any, name: str = "stdin") -> Iterator[str]:
    """The lines of a text or binary stream as they come, without their line ends (``\\n``,
    ``\\r\\n``); bytes are decoded as UTF-8 line by line (a byte-order mark at the start is
    dropped).

    Raises:
        ValueError: a line that is not UTF-8, naming ``name`` and the line number.
    """
    binary = getattr(stream, "buffer", None)
    for number, line in enumerate(binary if binary is not None else stream, 1):
        if isinstance(line, bytes):
            if number == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"{name} line {number}: bytes that are not UTF-8 ({err.reason} at byte "
                    f"{err.start}); convert the input to UTF-8 (e.g. iconv -t UTF-8)"
                ) from None
        yield line.rstrip("\r\n")


CHUNK_LINES = 256
"""Lines of stdin read and answered together by translate, embed and predict."""


def input_chunks(
    texts: Sequence[str], chunk_lines: int = CHUNK_LINES, stream: Any = None, name: str = "stdin"
) -> Iterator[list[str]]:
    """The texts given as arguments, or else the lines of ``stream`` (default: stdin), in
    chunks of ``chunk_lines``.

    Lines are read as they come (memory does not grow with the input) and kept as they are,
    blank ones included, so output line N always belongs to input line N.

    Raises:
        ValueError: no arguments and stdin is a terminal; a line that is not UTF-8.
    """
    if texts:
        yield list(texts)
        return
    if stream is None:
        stream = sys.stdin
        if stream is None or stream.isatty():
            raise ValueError("no input given: pass texts as arguments or pipe lines on stdin")
    chunk: list[str] = []
    for line in input_lines(stream, name):
        chunk.append(line)
        if len(chunk) == chunk_lines:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def refuse_run_kind(run: str, kind: str, command: str, accepted: str) -> NoReturn:
    """Raise the one-line error for a run ``command`` does not take: what the run is and what the
    command does accept (``accepted``, e.g. "translation and language-model runs")."""
    from attnkit.config import ConfigError
    from attnkit.training.runfolder import describe_kind

    raise ConfigError(f"{run} is {describe_kind(kind)}; attnkit {command} takes {accepted}")


def check_input_file(path: str | Path, flag: str) -> None:
    """A one-line ValueError naming ``flag`` when ``path`` is missing or is a folder."""
    if Path(path).is_dir():
        raise ValueError(f"{flag} {path}: is a folder; give a text file (one text per line)")
    if not Path(path).is_file():
        raise ValueError(f"{flag} {path}: no such file")


def text_chunks(texts: Sequence[str], file: str | None) -> Iterator[list[str]]:
    """The texts of a command that reads arguments, ``--file`` or stdin, in that order of
    precedence, in chunks read as they come (blank lines kept: output line N is input line N).

    Raises:
        ValueError: texts and ``--file`` both given; ``--file`` is missing or a folder; nothing
            given and stdin is a terminal.
    """
    if texts and file:
        raise ValueError(
            f"texts given both as arguments ({len(texts)}) and with --file {file}; use one"
        )
    if texts:
        yield list(texts)
    elif file:
        check_input_file(file, "--file")
        with open(file, "rb") as stream:
            yield from input_chunks([], stream=stream, name=f"--file {file}")
    else:
        if sys.stdin is None or sys.stdin.isatty():
            raise ValueError("no texts given: pass them as arguments, --file, or lines on stdin")
        yield from input_chunks([])

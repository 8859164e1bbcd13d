"""Options shared by several subcommands (one definition, one check)."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

log = logging.getLogger(__name__)

__all__ = [
    "interrupted",
    "check_engine_options",
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
    "names_flag",
    "input_lines",
]


def add_checkpoint_option(parser: Any) -> None:
    """``--checkpoint NAME``: which checkpoint of a run to load (see ``find_checkpoint``)."""
    parser.add_argument(
        "--checkpoint",
        default="best",
        help="best, last, a name under RUN/checkpoints (e.g. averaged, written by `attnkit "
        "average` for translation runs), or a checkpoint folder",
    )


#: What each exporting engine is made with, for :func:`check_engine_options`' advice.
_EXPORT_COMMANDS = {
    "ctranslate2": "attnkit export --format ctranslate2",
    "onnxruntime": "attnkit export --format onnx",
}


def check_engine_options(
    engine: str,
    *,
    checkpoint: str | None = "best",
    quantize: str | None = None,
    device: str = "cpu",
) -> None:
    """Refuse, in one line, options that only the attnkit engine reads: an exported model
    (``--engine ctranslate2`` / ``onnxruntime``) holds one checkpoint and its own precision,
    both chosen when exporting, and onnxruntime runs on the CPU here."""
    if engine == "attnkit":
        return
    export = _EXPORT_COMMANDS.get(engine, "attnkit export")
    if checkpoint not in (None, "best"):
        raise ValueError(
            f"--checkpoint is for --engine attnkit; an export for {engine} holds one checkpoint "
            f"(choose it when exporting: {export} --checkpoint NAME)"
        )
    if quantize:
        how = f"{export} --quantization int8" if engine == "ctranslate2" else "the attnkit engine"
        raise ValueError(f"--quantize is for --engine attnkit; for {engine} use {how}")
    if engine == "onnxruntime" and device not in ("cpu", "auto"):
        raise ValueError(
            f"--device {device}: --engine onnxruntime runs on the CPU here; use --device cpu "
            "or --engine attnkit"
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
        help="CPU threads (PyTorch's, or the ctranslate2/onnxruntime engine's where the command "
        "has --engine; default: one per core); on a machine whose cores are busy "
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
        help="continue the run in --run exactly: its data, model and batches stay (the starting "
        "command may be repeated); --epochs, --time-budget, --device and --set train.KEY "
        "(patience, keep_best, ...) may change",
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


def names_flag(token: str, flag: str) -> bool:
    """Whether a command-line word (``--time-b`` or ``--time-budget=5m``) is ``flag`` written
    whole or abbreviated as argparse allows."""
    name = token.split("=", 1)[0]
    return name.startswith("--") and len(name) > 2 and flag.startswith(name)


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
        if names_flag(token, flag):
            return True
    return False


def _stored_config(run: str | Path) -> dict[str, Any] | None:
    """The ``config`` sections of ``run``'s config.json, or None when there is none to read
    (the resume then fails with its own message)."""
    from attnkit.training.runfolder import read_run_config

    if not (Path(run) / "config.json").is_file():
        return None
    try:
        return read_run_config(run)
    except ValueError:
        return None


def _lookup(config: dict[str, Any], path: str) -> Any:
    node: Any = config
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _run_has(config: dict[str, Any], path: str) -> str:
    """How an error names a run's stored value: "the run has 3000" (or none, or no such key)."""
    *sections, key = path.split(".")
    table = _lookup(config, ".".join(sections)) if sections else config
    if not isinstance(table, dict) or key not in table:
        return "the run has no such setting"
    value = table[key]
    return "the run has none" if value is None else f"the run has {value!r}"


def _same(given: Any, stored: Any) -> bool:
    """A flag's value and the run's stored one are the same (paths compared resolved)."""
    if given == stored or str(given) == str(stored):
        return True
    if isinstance(given, str) and isinstance(stored, str):
        return Path(given).expanduser().resolve() == Path(stored).expanduser().resolve()
    return False


#: Where config.json keeps a flag's value for :func:`resume_overrides`: ``section.key``, a
#: ``(section.key, convert)`` pair when it keeps ``convert(value)``, or None (not comparable).
Fixed = str | tuple[str, Callable[[Any], Any]] | None


def resume_overrides(
    args: argparse.Namespace, run_dir: str | Path, *, fixed: Mapping[str, Fixed] | None = None
) -> dict[str, Any] | None:
    """Train settings given on a ``--resume`` command line (flags and ``--set train.KEY=VALUE``);
    None for a new run (no ``--resume``).

    The command that started a run may be given again with ``--resume``: a flag or ``--set``
    that the run cannot change is accepted when it has the run's stored value and is an error
    when it differs (it would otherwise be ignored).

    Args:
        args: the parsed command line.
        run_dir: the run folder being resumed.
        fixed: flags of this command (flag name -> the ``section.key`` it sets in config.json,
            or ``(section.key, convert)`` where config.json keeps ``convert(value)`` (e.g.
            ``--regression`` -> ``model.problem``), or None where it cannot be compared: a
            warning says it is not read again); those
            of resumable train settings (``--eval-every``) are overrides, the others may not
            change; ``--seed`` and ``--config`` never may.
    """
    from attnkit.config import ConfigError, apply_overrides
    from attnkit.training.runfolder import RESUMABLE_TRAIN_FIELDS

    if not args.resume:
        return None
    stored = _stored_config(run_dir)
    resumable = {f"train.{name}" for name in RESUMABLE_TRAIN_FIELDS}
    changed, unread = [], []
    for name, where in {**(fixed or {}), "seed": "train.seed", "config": None}.items():
        flag = f"--{name.replace('_', '-')}"
        path, convert = where if isinstance(where, tuple) else (where, None)
        if not _typed(args, flag) or path in resumable:
            continue  # (a resumable setting: an override below)
        value = getattr(args, name) if convert is None else convert(getattr(args, name))
        if path is None:
            unread.append(flag)
        elif stored is not None and not _same(value, _lookup(stored, path)):
            changed.append(f"{flag} ({_run_has(stored, path)})")
    sets = apply_overrides({}, args.set)
    overrides = dict(sets.get("train", {}))
    if stored is not None:  # (no run to compare with: the resume fails with its own message)
        for section, values in sets.items():
            for key, value in values.items() if isinstance(values, dict) else [("", values)]:
                name = f"{section}.{key}".rstrip(".")
                if section == "train" and key in RESUMABLE_TRAIN_FIELDS:
                    continue  # a change a resume may make
                if not _same(value, _lookup(stored, name)):
                    changed.append(f"--set {name} ({_run_has(stored, name)})")
                if section == "train":
                    del overrides[key]  # the run's own value (or refused): nothing to change
    if changed:
        raise ConfigError(
            f"--resume continues the run as it was: it cannot change {', '.join(changed)}; "
            "start a new run (another --run folder) for that"
        )
    if unread and os.environ.get("RANK", "0") == "0":  # once under torchrun
        log.warning(
            "%s: not read again on --resume (the run keeps the settings it started with)",
            ", ".join(unread),
        )
    for flag in ("epochs", "time_budget", "device", "eval_every"):  # those the command has
        if getattr(args, flag, None) is not None:
            overrides[flag] = getattr(args, flag)
    return overrides


def interrupted(result: Any, command: str, run_dir: str | Path) -> bool:
    """Whether a training run stopped on Ctrl-C/SIGTERM; if so, says (stderr) that its
    checkpoint is saved and how to continue. The command then exits with 130."""
    if result.stopped_because != "interrupted":
        return False
    print(
        f"interrupted: checkpoint saved; continue with: attnkit {command} --run {run_dir} --resume",
        file=sys.stderr,
    )
    return True


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

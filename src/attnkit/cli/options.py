"""Options shared by several subcommands (one definition, one check)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_checkpoint_option", "add_threads_option", "apply_threads"]


def add_checkpoint_option(parser: Any) -> None:
    """``--checkpoint NAME``: which checkpoint of a run to load (see ``find_checkpoint``)."""
    parser.add_argument(
        "--checkpoint", default="best",
        help="best, last, a name under RUN/checkpoints (e.g. averaged), or a folder")


def add_threads_option(parser: Any) -> None:
    """``--threads N``: PyTorch's intra-op CPU threads for this command."""
    parser.add_argument(
        "--threads", type=int,
        help="PyTorch CPU threads (default: one per core); on a machine whose cores are busy "
        "with other programs, 1 is often much faster (OpenMP threads wait for each other)")


def apply_threads(args: argparse.Namespace, default: int | None = None) -> None:
    """Set ``torch.set_num_threads`` from ``args.threads`` (or ``default`` when it is unset)."""
    threads = args.threads if args.threads is not None else default
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)

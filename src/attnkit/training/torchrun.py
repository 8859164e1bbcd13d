"""torchrun, ended in a line instead of a traceback: ``python -m attnkit.training.torchrun ARGS``.

``--nproc N`` runs torchrun (``torch.distributed.run``) with the arguments it takes. torchrun
itself ends with a Python traceback of its own internals in two ordinary cases:

* Ctrl-C (or SIGTERM from a scheduler): the agent raises ``SignalException``; the workers have
  already saved a checkpoint and stopped, and the launcher says how to resume;
* a worker failed: ``ChildFailedError``, whose message is the useful part (torchrun's summary
  naming the failed rank, its exit code and signal).

Here the first ends with status 128 + the signal number (130 for Ctrl-C) and no traceback, and
the second prints the summary alone and ends with status 1, as torchrun does. Anything else
(a bad torchrun option, a bug) keeps its traceback.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run torchrun with ``argv`` (default: this process's arguments); return its status.

    Args:
        argv: torchrun's command line without the program name.

    Returns:
        0 when every worker succeeded; 1 when one failed (torchrun's summary is printed on
        stderr); 128 + N after signal N reached torchrun (130 for Ctrl-C).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun_main

    try:
        torchrun_main(argv)
    except SignalException as exc:
        return 128 + int(exc.sigval)
    except ChildFailedError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

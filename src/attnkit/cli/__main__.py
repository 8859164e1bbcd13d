"""``python -m attnkit.cli`` (used by torchrun relaunches)."""

import sys

from attnkit.cli import main
from attnkit.training.launch import under_torchrun

status = main()
if under_torchrun():  # a gloo thread must not outlive the interpreter: see exit_worker
    from attnkit.training.distributed import exit_worker

    exit_worker(status)
sys.exit(status)

"""Test-wide settings.

Tests run with one intra-op thread: the models are tiny, so threads buy little, and when several
processes share the CPU (pytest-xdist workers, a busy CI box) OpenMP's spinning threads can slow
each other down many times over.
"""

import torch

torch.set_num_threads(1)

"""A helper of the detection tests (importable: the folder is on sys.path)."""

import contextlib

import torch


@contextlib.contextmanager
def one_thread():
    """Train on one thread. NOTE: on a shared, loaded 2-core machine the 2-thread OpenMP
    barriers made these small training loops ~50x slower (0.15 s vs 8.7 s per step)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)

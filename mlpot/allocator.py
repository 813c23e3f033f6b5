"""The CPU memory allocator of a training or MD process: keep large blocks in the heap.

glibc's malloc serves every block above its mmap threshold (at most 32 MiB) with a fresh
``mmap`` and gives it back with ``munmap`` when it is freed, and returns the top of the heap
to the system above its trim threshold. A training step allocates and frees the same large
tensors every step (a batch's descriptor Jacobians, activations and their gradients), so each
step maps new pages, and the kernel zeroes every page on first touch. Measured on the mlearn
recipe (three seeds trained together, 128 terms, batches of four 64-atom cells, one thread):
about 270,000 minor page faults per second, half of the CPU time in the kernel, and 8.6 s
per epoch; with :func:`tune_cpu_allocator`, no page faults after the first steps and 3.75 s
per epoch (docs/accuracy.md). MD calls repeat the same pattern (README.md, "glibc").

:func:`tune_cpu_allocator` turns ``mmap`` allocation off for the process (``M_MMAP_MAX`` = 0)
and raises the trim threshold to 1 GiB, so freed blocks stay in the heap and the next step
reuses them; it also exports ``MALLOC_MMAP_MAX_`` and ``MALLOC_TRIM_THRESHOLD_``, so that the
worker processes this process starts (``--jobs``, spawned) begin with the same settings. The
cost: the heap keeps what the process freed below its top until the process ends, so its
resident memory stays near its peak. The ``mlpot`` command and the training scripts call it
at start; a library user opts in by calling it. ``MLPOT_MALLOC=default`` leaves the allocator
alone, and a ``MALLOC_MMAP_MAX_`` or ``MALLOC_TRIM_THRESHOLD_`` already in the environment (read
by glibc at process start) is kept.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import MutableMapping

__all__ = ["tune_cpu_allocator"]

# mallopt(3) parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
TRIM_THRESHOLD = 1 << 30  # bytes; mallopt takes an int


def tune_cpu_allocator(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Keep large blocks in glibc's heap for this process and the processes it starts.

    Args:
        environ: the environment to read the opt-out from and to export the settings to.

    Returns:
        whether the settings were applied to this process (False off Linux/glibc, with
        ``MLPOT_MALLOC=default``, or where the environment already sets both).
    """
    if environ.get("MLPOT_MALLOC", "").lower() in ("default", "off", "0", "no"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # another C library (musl): its allocator, its rules
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    applied = False
    for name, parameter, value in (("MALLOC_MMAP_MAX_", _M_MMAP_MAX, 0),
                                   ("MALLOC_TRIM_THRESHOLD_", _M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        if name in environ:
            continue  # the user's own setting, applied by glibc at start
        applied |= mallopt(parameter, value) == 1
        environ[name] = str(value)
    return applied

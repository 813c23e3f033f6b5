"""Worker processes for grids and searches that stop when the process that started them stops.

``mlpot ablate --jobs N`` and ``mlpot search --jobs N`` train in spawned worker processes. A
plain :class:`~concurrent.futures.ProcessPoolExecutor` leaves its workers running when its
parent is killed (``kill``, a batch scheduler's SIGTERM at the end of a job's time, an
out-of-memory kill): the orphans keep training and writing checkpoints into the very run
folders that the resumed grid then trains again, two writers on one run. Here each worker
watches its parent and exits as soon as the parent is gone; what it was training resumes from
its last checkpoint, which is written atomically.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

__all__ = ["PARENT_POLL_S", "worker_pool"]

#: Seconds between a worker's checks that its parent is alive: how long an orphan lives at most.
PARENT_POLL_S = 2.0


def worker_pool(jobs: int, max_tasks_per_child: int | None = None) -> ProcessPoolExecutor:
    """A pool of ``jobs`` spawned worker processes (spawn: no inherited threads or CUDA
    state), each of which exits when the calling process dies.

    Args:
        jobs: worker processes.
        max_tasks_per_child: tasks after which a worker is replaced by a fresh one (``1``:
            each task's peak memory is its own); ``None``: workers live as long as the pool.
    """
    return ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"),
                               max_tasks_per_child=max_tasks_per_child,
                               initializer=_exit_with_parent, initargs=(os.getpid(), PARENT_POLL_S))


def _exit_with_parent(parent_pid: int, poll_s: float) -> None:
    """In a worker: start a daemon thread that ends the process once ``parent_pid`` is gone.

    A dead parent's children are re-parented (to init or a subreaper), so ``os.getppid()``
    changes; that is the test, rather than signalling the pid, which may be reused."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(1)  # no clean-up to run: checkpoints are atomic, the parent's resume retries the run

    threading.Thread(target=watch, name="mlpot-exit-with-parent", daemon=True).start()

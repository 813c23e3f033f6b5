"""Worker processes exit when the process that started them dies (mlpot.workers).

An orphaned training worker would keep writing checkpoints into the run folders that the
resumed grid trains again; here the parent is killed with SIGKILL (no clean-up of its own
runs) and its worker must be gone within a few polls."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mlpot.workers import PARENT_POLL_S, worker_pool

# The parent: starts a pool, submits a task that writes its pid and sleeps, then waits forever.
PARENT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from mlpot.workers import worker_pool
    from tests.test_workers import sleeper

    pool = worker_pool(1)
    pool.submit(sleeper, sys.argv[1])
    time.sleep(600)
""")


def sleeper(pid_file: str) -> None:
    """A worker's task: say who it is, then outlive any test."""
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(600)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its new parent) counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().split(") ")[-1].startswith("Z"))


def _wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and /proc: POSIX only")
def test_worker_exits_when_its_parent_is_killed(tmp_path):
    pid_file = tmp_path / "worker.pid"
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(pid_file)], cwd=root, env=env)
    try:
        assert _wait_for(lambda: pid_file.is_file() and pid_file.read_text(), 60), "the worker never started"
        worker = int(pid_file.read_text())
        assert _alive(worker)
        time.sleep(2 * PARENT_POLL_S)
        assert _alive(worker), "the worker exited while its parent was alive"
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert _wait_for(lambda: not _alive(worker), 5 * PARENT_POLL_S), \
            f"worker {worker} still runs {5 * PARENT_POLL_S:.0f} s after its parent was killed"
    finally:
        parent.kill()
        if pid_file.is_file() and pid_file.read_text() and _alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_pool_runs_tasks_and_replaces_workers():
    """The pool is an ordinary executor: results come back, max_tasks_per_child=1 gives a fresh
    worker per task."""
    with worker_pool(1, max_tasks_per_child=1) as pool:
        pids = [pool.submit(os.getpid).result(timeout=60) for _ in range(2)]
    assert os.getpid() not in pids
    assert pids[0] != pids[1]

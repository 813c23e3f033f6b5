"""Which code produced a result: mlpot's version and, in a git checkout, its commit.

A trained model's errors depend on the code as much as on its seed (a run trained again at
another commit, or in another stack, can stop at another epoch), so measured results record
the code beside them. An installed wheel has no git metadata: its commit is ``None``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch

__all__ = ["code_version"]


def code_version(source: Path | None = None) -> dict[str, object]:
    """``{"mlpot", "torch", "git_commit", "git_dirty"}`` for the package at ``source`` (mlpot's
    own folder by default). ``git_commit`` is the checkout's HEAD (40 hex digits) and
    ``git_dirty`` whether tracked files differ from it; both ``None`` outside a git checkout
    or without git."""
    from . import __version__

    folder = Path(__file__).resolve().parent if source is None else Path(source)
    commit, dirty = None, None
    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode == 0:
            commit = head.stdout.strip()
            status = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10)
            dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):  # no git on this machine: the version alone
        pass
    return {"mlpot": __version__, "torch": torch.__version__, "git_commit": commit, "git_dirty": dirty}

"""Writes that never leave a half-written file behind.

Every file mlpot writes that a user could lose (models, checkpoints, splits, HDF5 stores,
descriptor caches, exports) goes through :func:`atomic_path`: the content is written to a
temporary file beside the target and renamed onto it only when complete, so an
interruption (an error, ``kill -9``, a full disk) leaves either the old file or the new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_path", "atomic_write_text", "atomic_torch_save", "file_sha256"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block ends
    without an error, delete it otherwise.

    The temporary name is hidden (a leading dot) and carries the process id, so concurrent
    writers (ranks, ablation workers) never share one. Whatever the block writes there
    (``torch.save``, ``h5py.File(tmp, "w")``, ...) must be closed before the block ends.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`atomic_path`)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB blocks: a large data file is
    identified without being held in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

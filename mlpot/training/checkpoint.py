"""Training checkpoints: everything needed to continue a run bit for bit.

A checkpoint is one ``torch.save`` archive of tensors and plain Python values (no pickled
objects), so it loads with ``weights_only=True``. It holds the model state, optimiser,
schedule and EMA state, the epoch, the best validation loss and early-stopping counter,
the metrics history, the resolved config, the descriptor scaling settings, and the random
number generator states (torch CPU and CUDA, numpy's legacy global generator, Python's
``random``). Files are written to a temporary name and renamed, so a crash while saving
never leaves a half-written ``last.pt``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io.files import atomic_torch_save
from ..io.model_file import read_torch_file

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state", "saved_files_note"]

#: The files of a run that a stopped run leaves for the user (checkpoints and the model).
RUN_FILES = ("last.pt", "best.pt", "model.pt")

FORMAT = "mlpot-checkpoint"
VERSION = 1

_REQUIRED = ("model", "optimizer", "schedule", "epoch", "best_val_loss", "bad_epochs",
             "history", "config", "rng")


class CheckpointError(ValueError):
    """A checkpoint file is missing pieces, corrupt, or not a checkpoint; names the file."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors and plain values) to ``path`` atomically.

    Args:
        path: e.g. ``run/last.pt``.
        state: must hold the keys ``model`` (state dict), ``optimizer``, ``schedule``,
            ``epoch`` (completed epochs), ``best_val_loss``, ``bad_epochs``, ``history``
            (list of metric rows), ``config`` (resolved, as a dict) and ``rng``
            (:func:`rng_state`); ``ema`` and ``scaling`` are optional.
    """
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {missing}")
    path = Path(path)
    payload = {"format": FORMAT, "version": VERSION, **state}
    atomic_torch_save(payload, path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        CheckpointError: naming ``path`` if it is corrupt, not a checkpoint, newer than
            this mlpot, or missing a required entry.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    payload = read_torch_file(path, "mlpot training checkpoint", CheckpointError, map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an mlpot training checkpoint (a torch archive without the "
                              f"'{FORMAT}' header)")
    if not isinstance(payload.get("version"), int) or payload["version"] > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {payload.get('version')} is newer than "
                              f"this mlpot supports ({VERSION})")
    missing = [k for k in _REQUIRED if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: checkpoint is missing {missing}")
    return payload


def saved_files_note(folder: str | os.PathLike) -> str:
    """Which of :data:`RUN_FILES` ``folder`` holds, for the message of a stopped run: the
    files named there exist (a fresh run removes stale ones before it starts)."""
    folder = Path(folder)
    names = [name for name in RUN_FILES if (folder / name).is_file()]
    if not names:
        return f"no checkpoint or model was saved in {folder} (no epoch had completed)"
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + f" and {names[-1]}"
    return f"{listed} in {folder} hold the last epochs that completed"


def rng_state(cuda: bool = False) -> dict[str, Any]:
    """Current states of the torch CPU (and CUDA) generators, numpy's global generator and
    Python's ``random``, as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if cuda and torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generator states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

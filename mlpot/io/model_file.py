"""The model file: one ``torch.save`` archive of plain types and tensors.

Holds the format name and version, the descriptor (its ``kind`` and resolved parameters), the network config, the scaling
settings, the state dict (weights, scaling statistics, reference energies, energy scale),
the elements, the units and free-form metadata. It loads with ``weights_only=True`` (no
pickled code runs). A file written by a newer mlpot format is refused with a clear message;
older versions would be migrated here, in :func:`_migrate`, never inside model classes.

:func:`read_torch_file` is the one way mlpot opens a ``torch.save`` file it did not just
write (models, checkpoints, descriptor caches): tensors and plain values only, and errors
that say what the file is not, never torch's advice to retry with ``weights_only=False``.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..config import to_dict
from ..device import resolve_device, resolve_dtype
from .files import atomic_torch_save

__all__ = ["FORMAT", "FORMAT_VERSION", "save_model", "load_model", "ModelFileError", "read_torch_file"]

FORMAT = "mlpot-model"
FORMAT_VERSION = 1
UNITS = {"energy": "eV", "length": "Å", "forces": "eV/Å", "stress": "eV/Å³"}


class ModelFileError(ValueError):
    """The file is not an mlpot model, is corrupt, or needs a newer mlpot."""


def read_torch_file(path: str | os.PathLike, what: str, error: type[Exception] = ModelFileError,
                    map_location: str | torch.device = "cpu") -> Any:
    """The payload of a ``torch.save`` file, unpickled with ``weights_only=True``.

    Only tensors and plain Python values are rebuilt; a file that asks for anything else (a
    class, a function call such as ``os.system``) is refused before any of it runs.

    Args:
        path: the file (it must exist).
        what: what the caller expected, for messages: e.g. ``"mlpot model file"``.
        error: the exception raised, with one line: "PATH: not a readable WHAT: why".
        map_location: where tensors are loaded.

    Raises:
        ``error``: the file is empty, not a torch archive (text, a pickle, a TorchScript
        export, a foreign zip), truncated or corrupt, or holds objects other than plain data.
    """
    path = Path(path)
    prefix = f"{path}: not a readable {what}"
    if path.stat().st_size == 0:
        raise error(f"{prefix}: the file is empty (0 bytes)")
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"PK\x03\x04":  # torch.save has written zip archives since torch 1.6
        raise error(f"{prefix}: not a torch archive")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError):
        # The zip's central directory sits at its end: a cut-off copy loses it.
        raise error(f"{prefix}: truncated or corrupt (its zip archive is incomplete)") from None
    if any(name.endswith("/constants.pkl") for name in names):
        raise error(f"{prefix}: it is a TorchScript module (e.g. from mlpot export); load that with "
                    "torch.jit.load")
    if not any(name.endswith("/data.pkl") for name in names):
        raise error(f"{prefix}: a zip archive that torch.save did not write")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # torch's own text advises weights_only=False, i.e. running the file's code: never pass it on.
        raise error(f"{prefix}: it holds pickled Python objects other than tensors and plain values, "
                    "which mlpot refuses to load (nothing in the file was run)") from None
    except Exception as exc:  # torch raises RuntimeError, OSError, EOFError, ... for damaged members
        raise error(f"{prefix}: truncated or corrupt ({type(exc).__name__} while reading it)") from None


def save_model(model, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> None:
    """Write ``model`` (a :class:`~mlpot.models.Potential`) to ``path`` atomically."""
    scaler = model.descriptor.scaler
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "elements": list(model.elements),
        "descriptor": {"kind": model.descriptor.kind, **model.descriptor.config_dict()},
        "network": to_dict(model.config),
        "scaling": None if scaler is None else {"mode": scaler.mode, "s_min": scaler.s_min, "s_max": scaler.s_max},
        "units": dict(UNITS),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": dict(metadata or {}),
    }
    atomic_torch_save(payload, path)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu",
               dtype: torch.dtype | None = None):
    """Load a model saved by :func:`save_model`, in eval mode, on ``device``.

    Args:
        path: the model file.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available).
        dtype: cast floating parameters (default: the dtype the model was saved in).
    """
    from ..config import from_dict
    from ..descriptors import descriptor_from_dict
    from ..models import NetworkConfig, Potential

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such model file: {path}")
    if not path.is_file():
        raise ModelFileError(f"{path}: not a readable mlpot model file: it is a directory")
    payload = read_torch_file(path, "mlpot model file")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not an mlpot model file (a torch archive without the '{FORMAT}' "
                             "header; mlpot train and mlpot.save write model files)")
    version = payload.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model file format version {version} is newer than this mlpot supports "
            f"({FORMAT_VERSION}); upgrade mlpot to load it")
    payload = _migrate(payload)
    model = Potential(descriptor_from_dict(payload["descriptor"]),
                      from_dict(NetworkConfig, payload["network"], "network"))
    if payload["scaling"] is not None:
        sc = payload["scaling"]
        model.descriptor.empty_scaler(sc["mode"], sc["s_min"], sc["s_max"])
    saved_dtype = next(v.dtype for k, v in payload["state_dict"].items() if k.startswith("networks."))
    model = model.to(dtype=saved_dtype)
    model.load_state_dict(payload["state_dict"])
    model.metadata = payload.get("metadata", {})
    model = model.to(device=resolve_device(device))
    if dtype is not None:
        model = model.to(dtype=resolve_dtype(dtype))
    return model.eval()


def _migrate(payload: dict) -> dict:
    """Upgrade older file versions to the current layout (none exist yet)."""
    return payload

"""The model file: one ``torch.save`` archive of plain types and tensors.

Holds the format name and version, the descriptor (its ``kind`` and resolved parameters), the network config, the scaling
settings, the state dict (weights, scaling statistics, reference energies, energy scale),
the elements, the units and free-form metadata. It loads with ``weights_only=True`` (no
pickled code runs). A file written by a newer mlpot format is refused with a clear message;
older versions would be migrated here, in :func:`_migrate`, never inside model classes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..config import to_dict
from ..device import resolve_device, resolve_dtype
from .files import atomic_torch_save

__all__ = ["FORMAT", "FORMAT_VERSION", "save_model", "load_model", "ModelFileError"]

FORMAT = "mlpot-model"
FORMAT_VERSION = 1
UNITS = {"energy": "eV", "length": "Å", "forces": "eV/Å", "stress": "eV/Å³"}


class ModelFileError(ValueError):
    """The file is not an mlpot model, is corrupt, or needs a newer mlpot."""


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
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise ModelFileError(f"{path}: not a readable mlpot model file ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not an mlpot model file (no '{FORMAT}' header)")
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

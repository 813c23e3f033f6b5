"""ASE calculator for mlpot models (single models and ensembles).

Properties: ``energy``, ``free_energy`` (eV), ``forces`` (eV/Å), ``stress`` (eV/Å³, Voigt,
periodic cells only) and ``energies`` (per atom, eV). With an ensemble, also
``energy_std`` (eV) and ``forces_std`` (N, 3) eV/Å: the spread of the members, a cheap
uncertainty estimate.

The neighbour list is built with a Verlet skin (pairs to r_c + skin) and reused while no
atom has moved more than skin/2 since the last build and the cell, periodicity and atoms
are unchanged: pairs beyond r_c contribute exact zeros, so results equal a fresh build.

A structure whose descriptors leave the training range (per element and feature, as n2p2
checks) triggers an :class:`ExtrapolationWarning`; counts accumulate in
:attr:`MLPotCalculator.extrapolation`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import replace
from typing import Sequence

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from .data import collate
from .device import resolve_device, resolve_dtype

__all__ = ["MLPotCalculator", "ExtrapolationWarning"]


class ExtrapolationWarning(UserWarning):
    """Descriptors outside the range seen in training: predictions are extrapolations."""


class MLPotCalculator(Calculator):
    """ASE calculator backed by one mlpot model or an ensemble of them.

    Args:
        model: a model file path or a :class:`~mlpot.models.Potential` (or a list: ensemble).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        dtype: ``torch.float32``/``torch.float64`` or their names (``"float64"``); default: the
            model's own dtype.
        skin: Verlet skin of the neighbour list, Å (0 rebuilds every call).
        extrapolation: ``"warn"`` (default), ``"ignore"`` or ``"error"``.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies",
                              "energy_std", "forces_std"]

    def __init__(self, model, device: str | torch.device = "auto", dtype: torch.dtype | str | None = None,
                 skin: float = 1.0, extrapolation: str = "warn", **kwargs):
        super().__init__(**kwargs)
        if extrapolation not in ("warn", "ignore", "error"):
            raise ValueError(f"extrapolation must be 'warn', 'ignore' or 'error', got {extrapolation!r}")
        if not skin >= 0:
            raise ValueError(f"skin must be >= 0 Å, got {skin}")
        self.device = resolve_device(device)
        members = model if isinstance(model, (list, tuple)) else [model]
        if not members:
            raise ValueError("an ensemble needs at least one model")
        dtype = None if dtype is None else resolve_dtype(dtype)
        self.models = [self._load(m, dtype) for m in members]
        elements = {m.elements for m in self.models}
        if len(elements) != 1:
            raise ValueError(f"ensemble members disagree on elements: {sorted(elements)}")
        self.dtype = self.models[0].dtype
        self.cutoff = max(m.cutoff for m in self.models)
        self.skin = float(skin)
        self.extrapolation_mode = extrapolation
        self.extrapolation = {"calls": 0, "structures": 0, "atoms": 0}
        self.neighbour_builds = 0
        self._cache: dict | None = None

    @classmethod
    def from_ensemble(cls, models: Sequence, **kwargs) -> "MLPotCalculator":
        """An ensemble calculator: mean predictions and their standard deviation."""
        return cls(list(models), **kwargs)

    def _load(self, model, dtype):
        if isinstance(model, (str, os.PathLike)):
            from .io import load_model

            model = load_model(model, device=self.device, dtype=dtype)
        else:
            model = model.to(device=self.device, dtype=dtype) if dtype else model.to(device=self.device)
        return model.eval()

    # ------------------------------------------------------------------ neighbour list
    def _batch(self, atoms):
        """The structure as a batch, reusing the cached pair list when it is still valid."""
        batch = collate([atoms], dtype=self.dtype, device=self.device, labels=False)
        c = self._cache
        valid = (
            c is not None
            and c["numbers"].shape == atoms.numbers.shape
            and np.array_equal(c["numbers"], atoms.numbers)
            and np.array_equal(c["pbc"], atoms.pbc)
            and np.array_equal(c["cell"], atoms.cell.array)
            and np.max(np.linalg.norm(atoms.positions - c["positions"], axis=1), initial=0.0) <= 0.5 * self.skin
        )
        if not valid:
            listed = batch.with_neighbours(self.cutoff + self.skin)
            self._cache = {"numbers": atoms.numbers.copy(), "pbc": atoms.pbc.copy(),
                           "cell": atoms.cell.array.copy(), "positions": atoms.positions.copy(),
                           "edge_index": listed.edge_index, "edge_shift": listed.edge_shift}
            self.neighbour_builds += 1
            return listed
        return replace(batch, edge_index=c["edge_index"], edge_shift=c["edge_shift"],
                       cutoff=self.cutoff + self.skin)

    # ------------------------------------------------------------------ ASE interface
    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        want_stress = "stress" in properties
        if want_stress and not atoms.pbc.all():
            raise PropertyNotImplementedError("stress needs a cell periodic in all three directions")
        batch = self._batch(atoms)
        outputs = []
        for model in self.models:
            with torch.enable_grad():
                out = model(batch, forces=True, stress=want_stress, create_graph=False,
                            descriptors=True)
            outputs.append({k: v.detach().to("cpu", torch.float64).numpy() for k, v in out.items()})
            self._check_extrapolation(model, out["descriptors"], batch)
        energy = np.array([o["energy"][0] for o in outputs])
        forces = np.stack([o["forces"] for o in outputs])
        self.results = {
            "energy": float(energy.mean()),
            "free_energy": float(energy.mean()),
            "forces": forces.mean(axis=0),
            "energies": np.mean([o["atomic_energies"] for o in outputs], axis=0),
        }
        if want_stress:
            self.results["stress"] = full_3x3_to_voigt_6_stress(np.mean([o["stress"][0] for o in outputs], axis=0))
        if len(self.models) > 1:
            self.results["energy_std"] = float(energy.std())
            self.results["forces_std"] = forces.std(axis=0)

    def _check_extrapolation(self, model, descriptors, batch) -> None:
        scaler = model.descriptor.scaler
        if self.extrapolation_mode == "ignore" or scaler is None:
            return
        species = model.descriptor.species(batch.numbers)
        outside = scaler.extrapolating(descriptors, species)
        n_out = int(outside.sum())
        self.extrapolation["calls"] += 1
        if n_out == 0:
            return
        self.extrapolation["structures"] += 1
        self.extrapolation["atoms"] += n_out
        message = (f"{n_out} of {len(species)} atoms have descriptors outside the training range: "
                   "the prediction is an extrapolation")
        if self.extrapolation_mode == "error":
            raise ValueError(message)
        warnings.warn(message, ExtrapolationWarning, stacklevel=3)

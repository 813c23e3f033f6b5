"""ASE calculator for mlpot models (single models and ensembles).

Properties: ``energy``, ``free_energy`` (eV), ``forces`` (eV/Å), ``stress`` (eV/Å³, Voigt,
periodic cells only) and ``energies`` (per atom, eV). With an ensemble, also
``energy_std`` (eV) and ``forces_std`` (N, 3) eV/Å: the spread of the members, a cheap
uncertainty estimate.

The neighbour list is built with a Verlet skin (pairs to r_c + skin) and reused while no
atom has moved more than skin/2 since the last build and the cell, periodicity and atoms
are unchanged: pairs beyond r_c contribute exact zeros, so results equal a fresh build.

A structure whose descriptors leave the training range (per element and feature, as n2p2
checks) by more than a margin is an extrapolation. The margin is a fraction of each
feature's training range (``extrapolation_margin``, default 0.25): the training minimum and
maximum are the extremes of a finite sample, and new frames of the same distribution step
slightly past them all the time. Calibration on ethanol (a model trained on 900 GFN2-xTB
frames, 200 frames of independent trajectories at the same temperatures): margin 0 flags
35 of the 200 frames, 0.1 flags 12, 0.25 flags 4 (their force errors: 1.0, 1.9, 2.5 and 15 ×
the median frame's) and 0.5 flags 1 (the worst-predicted frame); a molecule compressed by
10 % lies beyond the range by 1.4 × the range.

A calculator warns once (an :class:`ExtrapolationWarning` pointing at the caller's line,
not ASE's) and counts every case in :attr:`MLPotCalculator.extrapolation`;
:meth:`MLPotCalculator.extrapolation_summary` sums them up.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import replace
from typing import Sequence

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from .data import collate
from .device import resolve_device, resolve_dtype
from .models.ensemble import range_checked_committee

__all__ = ["MLPotCalculator", "ExtrapolationWarning", "DEFAULT_EXTRAPOLATION_MARGIN"]

#: Default ``extrapolation_margin``: how far (in units of a feature's training range) a
#: descriptor may lie beyond that range before a structure counts as an extrapolation
#: (calibration in the module docstring).
DEFAULT_EXTRAPOLATION_MARGIN = 0.25


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
        extrapolation: ``"warn"`` (default: once per calculator, every case counted),
            ``"ignore"`` or ``"error"``.
        extrapolation_margin: a descriptor counts as outside the training range when it lies
            beyond the training minimum or maximum by more than this fraction of the
            feature's training range (max − min); 0 is n2p2's strict check.

    Attributes:
        extrapolation: counts: ``calls`` (structures evaluated), ``structures`` (of them
            extrapolations), ``atoms`` (atoms outside, summed over those structures) and
            ``max_excess`` (the largest excess seen, in units of the feature's range).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies",
                              "energy_std", "forces_std"]

    def __init__(self, model, device: str | torch.device = "auto", dtype: torch.dtype | str | None = None,
                 skin: float = 1.0, extrapolation: str = "warn",
                 extrapolation_margin: float = DEFAULT_EXTRAPOLATION_MARGIN, **kwargs):
        super().__init__(**kwargs)
        if extrapolation not in ("warn", "ignore", "error"):
            raise ValueError(f"extrapolation must be 'warn', 'ignore' or 'error', got {extrapolation!r}")
        if not extrapolation_margin >= 0:
            raise ValueError(f"extrapolation_margin must be >= 0, got {extrapolation_margin}")
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
        self.extrapolation_margin = float(extrapolation_margin)
        self.extrapolation = {"calls": 0, "structures": 0, "atoms": 0, "max_excess": 0.0}
        self._warned = False
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
        mean, excess = range_checked_committee(self.models, batch, stress=want_stress,
                                               check_range=self.extrapolation_mode != "ignore")
        if excess is not None:
            self._check_extrapolation(excess)
        mean = {k: v.to("cpu", torch.float64).numpy() for k, v in mean.items()}
        self.results = {"energy": float(mean["energy"][0]), "free_energy": float(mean["energy"][0]),
                        "forces": mean["forces"], "energies": mean["atomic_energies"]}
        if want_stress:
            self.results["stress"] = full_3x3_to_voigt_6_stress(mean["stress"][0])
        if len(self.models) > 1:
            self.results["energy_std"] = float(mean["energy_std"][0])
            self.results["forces_std"] = mean["forces_std"]

    def _check_extrapolation(self, excess: torch.Tensor) -> None:
        """Count (and warn once about, or raise on) atoms whose ``excess`` (N,) is above the margin."""
        n_out = int((excess > self.extrapolation_margin).sum())
        counts = self.extrapolation
        counts["calls"] += 1
        if n_out == 0:
            return
        counts["structures"] += 1
        counts["atoms"] += n_out
        worst = float(excess.max())
        counts["max_excess"] = max(counts["max_excess"], worst)
        message = (f"{n_out} of {len(excess)} atoms have descriptors beyond the training range by more than "
                   f"{self.extrapolation_margin:g} × the feature's range (up to {worst:.3g} ×): the prediction "
                   "is an extrapolation")
        if self.extrapolation_mode == "error":
            raise ValueError(message)
        if not self._warned:
            self._warned = True
            warnings.warn(f"{message}. This calculator warns once; calc.extrapolation counts every case "
                          "and calc.extrapolation_summary() sums them up.", ExtrapolationWarning,
                          stacklevel=_caller_stacklevel())

    def extrapolation_summary(self) -> str:
        """One line: how many evaluated structures were extrapolations, e.g. for the end of a run."""
        c = self.extrapolation
        if self.extrapolation_mode == "ignore":
            return "extrapolation: not checked (extrapolation='ignore')"
        text = (f"extrapolation: {c['structures']} of {c['calls']} structures had descriptors beyond the "
                f"training range by more than {self.extrapolation_margin:g} × a feature's range")
        if c["structures"]:
            text += f" ({c['atoms']} atoms in all; largest excess {c['max_excess']:.3g} × the range)"
        return text


def _caller_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside mlpot, ASE, numpy, scipy and torch, as
    seen from the function that calls ``warnings.warn``: the warning then names the user's
    line (``atoms.get_forces()``, ``dyn.run(...)``), not ASE's internals."""
    import ase

    skip = tuple(os.path.dirname(m.__file__) + os.sep for m in (sys.modules[__package__], ase, np, torch))
    skip += tuple(os.path.dirname(sys.modules[name].__file__) + os.sep
                  for name in ("scipy",) if name in sys.modules)
    frame, level = sys._getframe(2), 2  # level 1: the caller of warnings.warn; 2: its caller
    while frame is not None and frame.f_code.co_filename.startswith(skip):
        frame, level = frame.f_back, level + 1
    return level

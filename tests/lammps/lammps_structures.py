"""Models and structures shared by the LAMMPS tests (tests/io/test_export_lammps.py,
tests/lammps/test_lammps_plugin.py): a Si potential and a water (H, O) potential with
radial and angular terms, plain or residual + stochastic-depth networks, fitted scaling."""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from structures_for_tests import water_box

from mlpot.data import collate
from mlpot.descriptors import SymmetryFunctionSpec
from mlpot.models import NetworkConfig, Potential

# Angular terms with a shorter cutoff than the radial ones (the angular pair filter), a
# radial grid, and for water a restricted term (per-element feature layouts).
SI_SPEC = {
    "elements": ["Si"], "cutoff": 4.6, "cutoff_function": "poly2",
    "radial": [{"grid": {"count": 5, "mode": "shift", "r_lower": 1.5}}],
    "angular": [{"kind": "G4", "eta": 0.05, "zetas": [1, 4], "lambdas": [-1, 1], "cutoff": 4.0}],
}
WATER_SPEC = {
    "elements": ["H", "O"], "cutoff": 4.5, "cutoff_function": "cos",
    "radial": [{"grid": {"count": 4, "mode": "shift", "r_lower": 0.7}},
               {"eta": 1.0, "centre": "H", "neighbour": "O", "cutoff": 4.0}],
    "angular": [{"kind": "G4", "eta": 0.1, "zetas": [1, 4], "lambdas": [-1, 1], "cutoff": 3.5},
                {"kind": "G5", "eta": 0.3, "zeta": 2, "lambda": 1, "cutoff": 3.5}],
}


def silicon(seed: int = 0, repeat: int = 2) -> Atoms:
    """Rattled diamond Si, the cubic cell repeated ``repeat`` times per axis (8·repeat³ atoms)."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(repeat)
    atoms.rattle(0.08, seed=seed)
    return atoms


def silicon_primitive(seed: int = 0) -> Atoms:
    """Two-atom triclinic Si cell (3.84 Å vectors): the cutoff reaches several images."""
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.rattle(0.05, seed=seed)
    return atoms


def water(seed: int = 0) -> Atoms:
    """Eight rattled water molecules in a 6 Å triclinic cell (LAMMPS's orientation)."""
    return water_box(seed)


def make_model(kind: str = "si", block: str = "plain", survival: float = 1.0,
               dtype: torch.dtype = torch.float64) -> Potential:
    """A seeded potential for ``kind`` "si" or "water" with scaling and references fitted
    to synthetic labels (only their magnitudes matter)."""
    torch.manual_seed(0)
    spec = SI_SPEC if kind == "si" else WATER_SPEC
    network = NetworkConfig(depth=3, width=12, block=block, survival=survival, activation="tanh")
    model = Potential(SymmetryFunctionSpec.from_dict(spec), network).double()
    make = silicon if kind == "si" else water
    structures = [make(seed) for seed in range(3)]
    for k, a in enumerate(structures):
        a.calc = SinglePointCalculator(a, energy=-4.0 * len(a) + k,
                                       forces=np.random.default_rng(k).normal(size=(len(a), 3)))
    model.fit_to_data([collate(structures, cutoff=model.cutoff)])
    return model.to(dtype).eval()

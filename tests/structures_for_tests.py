"""Small seeded test structures shared by the descriptor and neighbour tests."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import bulk, molecule


def ethanol() -> Atoms:
    return molecule("CH3CH2OH")


def water_box(seed: int = 0) -> Atoms:
    """Eight rattled water molecules in a small triclinic periodic cell (H, O)."""
    rng = np.random.default_rng(seed)
    cell = np.array([[6.2, 0.0, 0.0], [0.7, 6.0, 0.0], [0.3, -0.4, 5.8]])
    atoms = Atoms(cell=cell, pbc=True)
    for k in range(8):
        w = molecule("H2O")
        w.rotate(rng.uniform(0, 360), rng.normal(size=3))
        w.translate(np.array([k % 2, (k // 2) % 2, k // 4]) @ cell / 2 + rng.normal(0, 0.2, 3))
        atoms += w
    atoms.rattle(0.05, seed=seed)
    return atoms


def nacl_crystal() -> Atoms:
    """Rattled rock-salt NaCl, a small periodic binary crystal."""
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    atoms.rattle(0.1, seed=3)
    return atoms


def sic_tiny_cell() -> Atoms:
    """Zincblende SiC primitive cell (2 atoms): the cutoff spans many images."""
    atoms = bulk("SiC", "zincblende", a=4.36)
    atoms.rattle(0.05, seed=4)
    return atoms


def slab() -> Atoms:
    """A periodic-in-plane, open-along-z structure (mixed periodicity)."""
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat((2, 2, 1))
    atoms.pbc = [True, True, False]
    atoms.rattle(0.05, seed=5)
    return atoms

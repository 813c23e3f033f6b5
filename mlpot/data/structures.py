"""Labelled structures: ASE ``Atoms`` carrying reference energy, forces and stress.

mlpot keeps the user's structures as plain :class:`ase.Atoms`; reference labels live in a
:class:`~ase.calculators.singlepoint.SinglePointCalculator` attached to each structure, which
is what ``ase.io`` does when it reads labelled files. So ``atoms.get_potential_energy()``
works, ``ase.io.write`` keeps the labels, and nothing mlpot-specific leaks into user code.

Units: positions and cell in Å, energy in eV, forces in eV/Å, stress in eV/Å³ with ASE's
sign convention (stress = (1/V) ∂E/∂ε, so a compressed cell has a negative diagonal).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import chemical_symbols
from ase.stress import full_3x3_to_voigt_6_stress, voigt_6_to_full_3x3_stress

__all__ = ["DataError", "Labels", "labelled_atoms", "get_labels", "validate_structure", "element_symbols",
           "MIN_DISTANCE", "MAX_COORDINATE"]

#: Closest two atoms (or an atom and a periodic image) may be, Å. Real structures keep atoms
#: further apart than ~0.5 Å (H2: 0.74 Å); closer means duplicated atoms or a unit error, and
#: gives descriptors with singular derivatives.
MIN_DISTANCE = 0.1
#: Largest |coordinate|, Å (100 µm). Anything beyond is a unit or file error, and such values
#: break neighbour-list binning (a SIGFPE in vesin, overflow in k-d trees).
MAX_COORDINATE = 1e6


class DataError(ValueError):
    """A dataset or a structure in it is malformed; the message names the file and item."""


@dataclass(frozen=True)
class Labels:
    """Reference labels of one structure; ``None`` where the source has no such label.

    Attributes:
        energy: total energy, eV.
        forces: (n_atoms, 3) eV/Å.
        stress: (3, 3) eV/Å³, ASE sign convention.
    """

    energy: float | None
    forces: np.ndarray | None
    stress: np.ndarray | None


def labelled_atoms(
    numbers,
    positions,
    cell=None,
    pbc=False,
    energy: float | None = None,
    forces=None,
    stress=None,
    info: dict | None = None,
) -> Atoms:
    """Build a validated :class:`ase.Atoms` with its labels attached.

    Args:
        numbers: (n_atoms,) atomic numbers or chemical symbols.
        positions: (n_atoms, 3) Cartesian positions, Å.
        cell: (3, 3) lattice vectors as rows, Å; ``None`` for an open system.
        pbc: periodicity, a bool or three bools.
        energy: total energy, eV.
        forces: (n_atoms, 3), eV/Å.
        stress: (3, 3) or Voigt (6,) in ASE order (xx yy zz yz xz xy), eV/Å³.
        info: extra metadata stored in ``atoms.info``.

    Raises:
        DataError: if any array has the wrong shape or a non-finite value.
    """
    positions = np.asarray(positions, dtype=np.float64)
    numbers = list(numbers) if not isinstance(numbers, np.ndarray) else numbers
    if positions.shape != (len(numbers), 3):
        raise DataError(
            f"positions must have shape (n_atoms, 3) = ({len(numbers)}, 3), "
            f"got {positions.shape}"
        )
    if len(numbers) and isinstance(numbers[0], str):
        try:
            atoms = Atoms(symbols=numbers, positions=positions, cell=cell, pbc=pbc)
        except KeyError as exc:
            raise DataError(f"unknown element symbol {exc.args[0]!r}") from None
    else:
        atoms = Atoms(numbers=np.asarray(numbers, dtype=int), positions=positions,
                      cell=cell, pbc=pbc)
    if info:
        atoms.info.update(info)
    results: dict = {}
    if energy is not None:
        results["energy"] = float(energy)
        results["free_energy"] = float(energy)
    if forces is not None:
        results["forces"] = _check_forces(forces, len(atoms))
    if stress is not None:
        results["stress"] = full_3x3_to_voigt_6_stress(_check_stress(stress))
    if results:
        atoms.calc = SinglePointCalculator(atoms, **results)
    validate_structure(atoms)
    return atoms


def get_labels(atoms: Atoms) -> Labels:
    """Return the reference labels attached to ``atoms`` (``None`` where absent)."""
    results = atoms.calc.results if atoms.calc is not None else {}
    energy = results.get("energy", results.get("free_energy"))
    forces = results.get("forces")
    stress = results.get("stress")
    return Labels(
        energy=None if energy is None else float(energy),
        forces=None if forces is None else np.asarray(forces, dtype=np.float64),
        stress=None if stress is None else _check_stress(stress),
    )


def element_symbols(structures: Iterable[Atoms]) -> list[str]:
    """The chemical symbols present in ``structures``, in order of atomic number: the element
    order of a descriptor or model built for them (``["H", "O"]`` for water)."""
    numbers = {int(z) for atoms in structures for z in atoms.numbers}
    return [chemical_symbols[z] for z in sorted(numbers)]


def validate_structure(atoms: Atoms, where: str = "", min_distance: float = MIN_DISTANCE) -> None:
    """Check one structure and raise :class:`DataError` naming the first problem found.

    Checks: known elements, finite coordinates within ±:data:`MAX_COORDINATE` Å, a
    non-degenerate cell along periodic directions, no two atoms (or periodic images)
    closer than ``min_distance`` Å, and labels of the right shape with finite values.

    Args:
        atoms: the structure.
        where: prefix for the message, e.g. ``"train.xyz, structure 12"``.
        min_distance: Å; ``0`` skips the distance check.
    """
    prefix = f"{where}: " if where else ""
    numbers = atoms.numbers
    if len(numbers) == 0:
        raise DataError(f"{prefix}structure has no atoms")
    bad = (numbers < 1) | (numbers > 118)
    if bad.any():
        idx = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{prefix}unknown element (atomic number {numbers[idx]}) at atom {idx}"
        )
    _check_coordinates(atoms.positions, prefix)
    cell = atoms.cell.array
    if not np.isfinite(cell).all():
        raise DataError(f"{prefix}cell contains NaN/inf")
    if atoms.pbc.any():
        periodic = cell[atoms.pbc]
        # Volume (or area/length) spanned by the periodic vectors: Gram determinant.
        gram = np.linalg.det(periodic @ periodic.T)
        scale = np.prod(np.sum(periodic**2, axis=1)) if len(periodic) else 1.0
        if not gram > 1e-12 * max(scale, 1e-300):
            raise DataError(
                f"{prefix}zero-volume (degenerate) cell along periodic directions "
                f"{atoms.pbc.tolist()}: {cell.tolist()}"
            )
    if min_distance > 0:
        _check_distances(atoms, min_distance, prefix)
    labels = get_labels(atoms)
    if labels.energy is not None and not np.isfinite(labels.energy):
        raise DataError(f"{prefix}energy is {labels.energy}")
    if labels.forces is not None:
        _check_forces(labels.forces, len(atoms), prefix)
    if labels.stress is not None and not np.isfinite(labels.stress).all():
        raise DataError(f"{prefix}stress contains NaN/inf")


def _check_coordinates(positions: np.ndarray, prefix: str) -> None:
    """Finite (n, 3) positions within ±:data:`MAX_COORDINATE` Å."""
    # Whole-array reductions first: per-row ones over 3 columns are slow in numpy, and this
    # runs on every calculator call.
    if not np.isfinite(positions).all():
        idx = int(np.flatnonzero(~np.isfinite(positions).all(axis=1))[0])
        raise DataError(f"{prefix}non-finite (NaN/inf) coordinates at atom {idx}")
    if np.abs(positions).max() > MAX_COORDINATE:
        idx = int(np.flatnonzero(np.abs(positions).max(axis=1) > MAX_COORDINATE)[0])
        raise DataError(f"{prefix}atom {idx} at {positions[idx].tolist()} Å lies beyond ±{MAX_COORDINATE:g} Å "
                        "(a unit or file error?)")


def _check_distances(atoms: Atoms, min_distance: float, prefix: str) -> None:
    """Raise naming the first pair of atoms (periodic images included) closer than ``min_distance``.

    The atoms are wrapped into the cell and joined by copies, shifted by one lattice vector,
    of those within ``min_distance`` of a periodic face; every close pair is then a close
    pair of these points, found by :func:`_close_pair`. ~0.3 ms for 1000 atoms (the
    calculator validates every structure it is given, so this sits on the MD path)."""
    pbc = np.asarray(atoms.pbc, dtype=bool)
    positions = np.asarray(atoms.positions, dtype=np.float64)
    index = np.arange(len(positions))
    if len(positions) < 2 and not pbc.any():
        return
    if pbc.any():
        cell = np.asarray(atoms.cell.complete())  # unit vectors along open axes: invertible
        inverse = np.linalg.inv(cell)
        frac = positions @ inverse
        frac[:, pbc] -= np.floor(frac[:, pbc])
        heights = 1.0 / np.sqrt((inverse**2).sum(axis=0))  # spacings of the lattice planes, Å
        thin = pbc & (heights < 2 * min_distance)
        if thin.any():  # an atom is then this close to its own image
            raise DataError(f"{prefix}the cell is only {heights[thin].min():.3g} Å thick along a periodic "
                            f"direction: every atom is closer than {min_distance} Å to its own image")
        positions, index = _with_face_images(frac, cell, pbc, min_distance / heights)
    pair = _close_pair(positions, min_distance)
    if pair is not None:
        p, q = pair
        i, j = sorted((int(index[p]), int(index[q])))
        image = "" if (p < len(atoms) and q < len(atoms)) else " (through the periodic boundary)"
        raise DataError(f"{prefix}atoms {i} and {j} are {np.linalg.norm(positions[p] - positions[q]):.3g} Å "
                        f"apart{image}, closer than {min_distance} Å: duplicated atoms?")


#: Unit vector (1, e, π)/norm: transcendental ratios, so no crystal's planes lie normal to it.
_SWEEP = np.array([1.0, np.e, np.pi]) / np.linalg.norm([1.0, np.e, np.pi])


def _close_pair(points: np.ndarray, distance: float) -> tuple[int, int] | None:
    """Two rows of ``points`` (m, 3) closer than ``distance``, or ``None``.

    Sweep and prune along a direction no lattice has (crystal planes normal to a Cartesian
    axis would put whole planes within ``distance``): only points within ``distance`` of
    each other along it are compared (a few per point in condensed matter), all in numpy. A
    set that crowds many points into one such slab (a pathological input) goes to a k-d tree."""
    x = points @ _SWEEP
    order = np.argsort(x, kind="stable")
    x = x[order]
    counts = np.searchsorted(x, x + distance, side="left") - np.arange(len(x)) - 1
    total = int(counts.sum())
    if total > 10 * len(x) + 10_000:
        from scipy.spatial import cKDTree

        pairs = cKDTree(points).query_pairs(distance, output_type="ndarray")
        return (int(pairs[0, 0]), int(pairs[0, 1])) if len(pairs) else None
    first = np.repeat(np.arange(len(x)), counts)
    # Candidate k of point i is i + 1 + (its rank among i's candidates).
    second = first + 1 + np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    d = points[order[second]] - points[order[first]]
    close = np.flatnonzero(d[:, 0] ** 2 + d[:, 1] ** 2 + d[:, 2] ** 2 < distance**2)
    return (int(order[first[close[0]]]), int(order[second[close[0]]])) if len(close) else None


def _with_face_images(frac: np.ndarray, cell: np.ndarray, pbc: np.ndarray, margin: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Cartesian positions of the wrapped atoms followed by their images across the periodic
    faces they lie within ``margin`` (fractional, per axis) of; and each point's atom index."""
    import itertools

    low, high = (frac < margin) & pbc, (frac > 1.0 - margin) & pbc
    side = low | high
    near = np.flatnonzero(side[:, 0] | side[:, 1] | side[:, 2])
    if not len(near):
        return frac @ cell, np.arange(len(frac))
    steps = [(-1, 0, 1) if periodic else (0,) for periodic in pbc]
    shifts = np.array([shift for shift in itertools.product(*steps) if any(shift)])  # (S, 3)
    # An atom near the lower face pairs with one near the upper face shifted by -1: shift +1
    # along an axis only atoms near its lower face, -1 those near its upper face.
    ok = (shifts == 0)[None] | ((shifts == 1)[None] & low[near][:, None]) | ((shifts == -1)[None] & high[near][:, None])
    allowed = ok[:, :, 0] & ok[:, :, 1] & ok[:, :, 2]  # (m, S)
    rows, which = np.nonzero(allowed)
    images = frac[near[rows]] + shifts[which]
    return np.concatenate([frac, images]) @ cell, np.concatenate([np.arange(len(frac)), near[rows]])


def _check_forces(forces, n_atoms: int, prefix: str = "") -> np.ndarray:
    forces = np.asarray(forces, dtype=np.float64)
    if forces.shape != (n_atoms, 3):
        raise DataError(
            f"{prefix}forces have shape {forces.shape}, expected ({n_atoms}, 3)"
        )
    if not np.isfinite(forces).all():
        raise DataError(f"{prefix}forces contain NaN/inf")
    return forces


def _check_stress(stress) -> np.ndarray:
    stress = np.asarray(stress, dtype=np.float64)
    if stress.shape == (6,):
        return voigt_6_to_full_3x3_stress(stress)
    if stress.shape == (3, 3):
        return stress
    raise DataError(f"stress must have shape (3, 3) or Voigt (6,), got {stress.shape}")

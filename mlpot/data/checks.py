"""Checks of a whole dataset, beyond what one structure can show.

- :func:`check_xyz_frames`: the atom counts in the frame headers of (extended) XYZ text,
  before ASE parses it. ASE trusts a count line: one that claims 3·10⁹ atoms makes it read
  3·10⁹ lines, which hangs every command on a file of a few bytes.
- :func:`check_labels`: the reference labels of a training set before training. One label
  at 1e30 (a unit mix-up, a corrupt record) otherwise trains quietly into a useless model
  with weights of 1e28. Labels must be finite, within physical bounds
  (:class:`LabelLimits`), and not absurdly far from the rest of the set (a robust z-score:
  distance from the median in units of the scaled median absolute deviation).

Units: eV, eV/atom, eV/Å, eV/Å³.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from ase import Atoms

from .structures import DataError, get_labels

__all__ = ["LabelLimits", "check_labels", "check_xyz_frames"]

#: Fewest characters an atom line of an XYZ frame can take: a symbol and three numbers.
_MIN_ATOM_LINE = len("H 0 0 0")
#: Scale of a normal distribution's standard deviation in median absolute deviations.
_MAD_TO_SIGMA = 1.4826


def check_xyz_frames(lines: Iterable[str | bytes], size: int, where: str) -> None:
    """Raise :class:`DataError` if a frame's count line claims more atoms than the text holds.

    Walks the frames as ASE's extxyz reader does (a count line, a comment line, that many
    atom lines; a blank line ends the file) without parsing the atom lines' values: linear
    in the file's length, and a count that cannot fit into what is left of the file fails at
    once. The atom lines of one frame must have equal numbers of columns.

    Args:
        lines: the text's lines with their line ends (a file opened in binary or text mode).
        size: the length of the whole text, in the units of ``len(line)`` (bytes or characters).
        where: the file, for the message.

    Raises:
        DataError: naming ``where`` and the line: the count line's, or the atom line whose
        column count differs from its frame's first.
    """
    it = iter(lines)
    lineno = consumed = 0
    for header in it:
        lineno += 1
        consumed += len(header)
        if not header.strip():
            return  # ASE stops reading at a blank line
        try:
            n_atoms = int(header)
        except ValueError:
            return  # not a count line (VEC lines, another format): the reader reports it
        if n_atoms < 0:
            raise DataError(f"{where}, line {lineno}: negative atom count {n_atoms} in an XYZ frame header")
        left = size - consumed
        if n_atoms * _MIN_ATOM_LINE > left:
            raise DataError(f"{where}, line {lineno}: the XYZ frame header claims {n_atoms} atoms, but the "
                            f"{left} characters after it hold at most {left // _MIN_ATOM_LINE} atom lines "
                            "(corrupt or truncated file)")
        start, columns = lineno, None
        for k in range(n_atoms + 1):  # the comment line, then the atom lines
            line = next(it, None)
            if line is None:
                raise DataError(f"{where}, line {start}: the XYZ frame header claims {n_atoms} atoms, but the "
                                f"file ends after {max(k - 1, 0)} of them (truncated file)")
            lineno += 1
            consumed += len(line)
            if k:
                columns = _same_columns(line, columns, start, lineno, where)


def _same_columns(line: str | bytes, columns: int | None, start: int, lineno: int, where: str) -> int:
    """The column count of an atom line, which must equal that of the frame's first
    (``columns``; ASE splits every atom line on whitespace into the declared columns)."""
    count = len(line.split())
    if columns is not None and count != columns:
        raise DataError(f"{where}, line {lineno}: {count} columns, but the frame's first atom line "
                        f"(line {start + 2}) has {columns} (a cut-off line or a wrong column count)")
    return count


@dataclass(frozen=True)
class LabelLimits:
    """What :func:`check_labels` accepts.

    Attributes:
        energy_per_atom: largest |E| / n_atoms, eV/atom. All-electron total energies of the
            heaviest elements stay below ~2·10⁶ eV/atom.
        force: largest |force component|, eV/Å.
        stress: largest |stress component|, eV/Å³ (10³ eV/Å³ ≈ 1.6·10⁵ GPa).
        robust_z: largest distance from the set's median, in robust standard deviations
            (1.4826 × the median absolute deviation): of the per-atom energy after the
            per-element reference energies are fitted out, and of each force component.
            Normal scatter stays below ~10 and legitimate tails (strained cells, surfaces,
            hot MD frames) below ~100; a unit mix-up or a corrupt value lies far beyond.
        energy_scale_floor: smallest robust energy spread, eV/atom, used when the set's is
            smaller (e.g. copies of one structure), so tiny spreads do not flag everything.
        force_scale_floor: the same for forces, eV/Å.
    """

    energy_per_atom: float = 1e7
    force: float = 1e4
    stress: float = 1e3
    robust_z: float = 1e3
    energy_scale_floor: float = 1e-2
    force_scale_floor: float = 1e-1


def check_labels(structures: Sequence[Atoms], where: str, limits: LabelLimits = LabelLimits()) -> None:
    """Refuse a training set with a label no model should be trained on.

    Args:
        structures: labelled structures (a list or :class:`~mlpot.data.H5Dataset`).
        where: the dataset, for the message (e.g. its path).
        limits: the bounds (see :class:`LabelLimits`).

    Raises:
        DataError: naming ``where``, the structure index, the label and its value, and the
        config switch ``training.check_labels: false`` for labels that are meant.
    """
    energies, counts, forces, force_owner = [], [], [], []
    elements: dict[int, int] = {}
    for k, atoms in enumerate(structures):
        labels = get_labels(atoms)
        here = f"{where}, structure {k}"
        if labels.energy is not None:
            per_atom = labels.energy / len(atoms)
            _bounded(per_atom, limits.energy_per_atom, f"{here}: energy per atom (total {labels.energy:.6g} eV)",
                     "eV/atom")
            energies.append((k, labels.energy, len(atoms)))
            counts.append(np.bincount([elements.setdefault(int(z), len(elements)) for z in atoms.numbers],
                                      minlength=len(elements)))
        if labels.forces is not None:
            _bounded(labels.forces, limits.force, f"{here}: force component", "eV/Å")
            forces.append(labels.forces.ravel())
            force_owner.append(np.full(labels.forces.size, k))
        if labels.stress is not None:
            _bounded(labels.stress, limits.stress, f"{here}: stress component", "eV/Å³")
    if energies:
        _check_energy_outliers(energies, counts, len(elements), where, limits)
    if forces:
        _check_force_outliers(np.concatenate(forces), np.concatenate(force_owner), where, limits)


def _bounded(values, bound: float, what: str, unit: str) -> None:
    """Raise unless every value is finite and within ±``bound``."""
    values = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(values) | (np.abs(values) > bound)
    if bad.any():
        value = float(values.flat[int(np.flatnonzero(bad)[0])])
        reason = "not finite" if not np.isfinite(value) else f"beyond the physical bound ±{bound:g} {unit}"
        raise DataError(f"{what} is {value:.6g} {unit}, {reason}; fix the label, or set "
                        "training.check_labels: false to train on it anyway")


def _check_energy_outliers(energies: list, counts: list, n_elements: int, where: str,
                           limits: LabelLimits) -> None:
    """Robust z-score of each per-atom energy after fitting per-element reference energies.

    The fit is repeated without the flagged structures until they stay the same, so one
    wild value cannot drag the references (and hide itself) before it is found."""
    index = np.array([k for k, _, _ in energies])
    n_atoms = np.array([n for _, _, n in energies], dtype=np.float64)
    per_atom = np.array([e for _, e, _ in energies]) / n_atoms
    composition = np.stack([np.pad(c, (0, n_elements - len(c))) for c in counts]) / n_atoms[:, None]
    keep = np.ones(len(per_atom), dtype=bool)
    for _ in range(5):
        refs = np.linalg.lstsq(composition[keep], per_atom[keep], rcond=None)[0]
        residual = per_atom - composition @ refs
        centre = np.median(residual[keep])
        scale = max(_MAD_TO_SIGMA * np.median(np.abs(residual[keep] - centre)), limits.energy_scale_floor)
        z = np.abs(residual - centre) / scale
        flagged = z > limits.robust_z
        if np.array_equal(~flagged, keep) or flagged.all():
            break
        keep = ~flagged
    if flagged.any():
        j = int(np.argmax(z))
        raise DataError(f"{where}, structure {int(index[j])}: energy {per_atom[j] * n_atoms[j]:.6g} eV "
                        f"({residual[j]:+.4g} eV/atom from the per-element fit) lies {z[j]:.3g} robust standard "
                        f"deviations ({scale:.3g} eV/atom) from the rest of the set (limit {limits.robust_z:g}); "
                        "fix the label, or set training.check_labels: false to train on it anyway")


def _check_force_outliers(components: np.ndarray, owner: np.ndarray, where: str, limits: LabelLimits) -> None:
    """Robust z-score of each force component against all components of the set."""
    centre = np.median(components)
    scale = max(_MAD_TO_SIGMA * np.median(np.abs(components - centre)), limits.force_scale_floor)
    z = np.abs(components - centre) / scale
    j = int(np.argmax(z))
    if z[j] > limits.robust_z:
        raise DataError(f"{where}, structure {int(owner[j])}: force component {components[j]:.6g} eV/Å lies "
                        f"{z[j]:.3g} robust standard deviations ({scale:.3g} eV/Å) from the rest of the set "
                        f"(limit {limits.robust_z:g}); fix the label, or set training.check_labels: false to "
                        "train on it anyway")

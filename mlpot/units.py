"""Unit conversions at the edges of mlpot.

Everything inside mlpot uses ASE's units: eV, Å, eV/Å, eV/Å³. Readers of files in other
units multiply by these factors on the way in (and writers divide on the way out), so the
factors are defined once, from :mod:`ase.units`, and nowhere else.
"""

from __future__ import annotations

from ase import units as _ase_units

#: 1 Bohr in Å.
BOHR: float = float(_ase_units.Bohr)
#: 1 Hartree in eV.
HARTREE: float = float(_ase_units.Hartree)
#: 1 kcal/mol (per particle) in eV.
KCAL_PER_MOL: float = float(_ase_units.kcal / _ase_units.mol)
#: 1 GPa in eV/Å³.
GPA: float = float(_ase_units.GPa)
#: 1 kbar (= 0.1 GPa, VASP's stress unit) in eV/Å³.
KBAR: float = 0.1 * GPA

#: Named (length, energy) unit systems accepted by readers, as factors to (Å, eV).
UNIT_SYSTEMS: dict[str, tuple[float, float]] = {
    "angstrom_ev": (1.0, 1.0),
    "bohr_hartree": (BOHR, HARTREE),
}


def unit_factors(units: str | tuple[float, float]) -> tuple[float, float]:
    """Return (length factor to Å, energy factor to eV) for a named system or a pair.

    Args:
        units: ``"angstrom_ev"``, ``"bohr_hartree"`` or an explicit ``(length, energy)``
            pair of multiplicative factors.
    """
    if isinstance(units, str):
        try:
            return UNIT_SYSTEMS[units]
        except KeyError:
            raise ValueError(
                f"unknown unit system {units!r}; expected one of {sorted(UNIT_SYSTEMS)} "
                "or a (length_to_angstrom, energy_to_ev) pair"
            ) from None
    length, energy = (float(x) for x in units)
    if not (length > 0 and energy > 0):
        raise ValueError(f"unit factors must be positive, got {units!r}")
    return length, energy

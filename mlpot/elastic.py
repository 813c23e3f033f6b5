"""Cubic elastic constants from strained cells and their stresses (model or reference).

The mlearn data sets hold, per element, an "Elastic" group: the equilibrium cell strained
along each normal and shear mode (Si, Mo, Ge: by ±2 % … ±10 %; Li: by ±0.5 % and ±1 %, one
shear pair incomplete), with DFT stresses. On those very
structures the constants follow by central differences: with the strain of each cell taken
from its lattice against the unstrained reference cell (the element-wise median of the
group's lattices: each mode moves only its own entries), the column k of C is
(σ(+) − σ(−)) / (ε_k(+) − ε_k(−)) for the pair strained by ±``amplitude`` along Voigt
component k. For a cubic crystal

    C11 = ⟨C_kk⟩_{k=1..3},  C12 = ⟨C_jk⟩_{j≠k≤3},  C44 = ⟨C_kk⟩_{k=4..6},  B = (C11 + 2 C12)/3.

Voigt order xx, yy, zz, yz, xz, xy; shear strains are engineering strains (γ = 2ε); stress
in ASE's convention (positive in tension), so C > 0 for a stable crystal. Results in GPa.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms

from .units import GPA

__all__ = ["voigt_strain", "reference_cell", "elastic_constants", "strain_amplitudes", "bulk_modulus_from_pressure",
           "model_stresses", "cubic_properties"]


def reference_cell(cells: Sequence[np.ndarray]) -> np.ndarray:
    """(3, 3) unstrained cell of a set of cells each strained along one mode: the
    element-wise median (every mode leaves most entries at their reference value)."""
    return np.median(np.stack([np.asarray(c, dtype=float) for c in cells]), axis=0)


def voigt_strain(cell: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(6,) small strain of ``cell`` against ``reference`` (rows are lattice vectors, Å):
    ε = sym(F) − I with cell = reference · Fᵀ, in Voigt order with engineering shear."""
    deformation = np.linalg.solve(np.asarray(reference, dtype=float), np.asarray(cell, dtype=float)).T
    eps = 0.5 * (deformation + deformation.T) - np.eye(3)
    return np.array([eps[0, 0], eps[1, 1], eps[2, 2], 2 * eps[1, 2], 2 * eps[0, 2], 2 * eps[0, 1]])


def elastic_constants(structures: Sequence[Atoms], stresses: np.ndarray, amplitude: float = 0.02,
                      tolerance: float = 0.25, partial: bool = False) -> dict[str, float]:
    """C11, C12, C44 and B (GPa) of a cubic crystal from strained cells.

    Each Voigt column of the stiffness comes from the central difference of the pair of
    cells strained by ±``amplitude`` along that component; the cubic constants are the
    means over the three normal (C11, C12) and the three shear (C44) columns.

    Args:
        structures: the strained cells (e.g. the mlearn "Elastic" group), each along one mode.
        stresses: (n, 6) their stresses, Voigt, eV/Å³, ASE sign (model predictions or labels).
        amplitude: the strain of the central difference (the pair at ±amplitude is used).
        tolerance: relative window around ``amplitude`` in which a cell's strain counts.
        partial: average over the components that have a ± pair (a cubic crystal's
            components of one kind are equivalent), for data that lack some pairs (mlearn
            Li has no −1 % yz shear); at least one normal and one shear pair are needed.

    Raises:
        ValueError: a Voigt component has no ± pair at ``amplitude`` (with ``partial``: no
            normal or no shear component has one), naming the components that lack it.
    """
    stresses = np.asarray(stresses, dtype=float)
    if stresses.shape != (len(structures), 6):
        raise ValueError(f"stresses must be (n, 6) Voigt for {len(structures)} structures, got {stresses.shape}")
    strains = _cell_strains(structures)
    columns = np.full((6, 6), np.nan)
    for k in range(6):
        pair = {}
        for strain, stress in zip(strains, stresses):
            main = int(np.argmax(np.abs(strain)))
            # Shear amplitudes are engineering strains of twice the tensor component.
            size = amplitude * (2.0 if k >= 3 else 1.0)
            if main == k and abs(abs(strain[k]) - size) <= tolerance * size:
                pair[np.sign(strain[k])] = (strain[k], stress)
        if set(pair) == {-1.0, 1.0}:
            (e_plus, s_plus), (e_minus, s_minus) = pair[1.0], pair[-1.0]
            columns[:, k] = (s_plus - s_minus) / (e_plus - e_minus)
    paired = ~np.isnan(columns[0])
    missing = [k + 1 for k in range(6) if not paired[k]]
    normal, shear = [k for k in range(3) if paired[k]], [k for k in range(3, 6) if paired[k]]
    if missing and (not partial or not normal or not shear):
        raise ValueError(f"no ±{amplitude:g} pair of cells strained along Voigt component(s) {missing}")
    c = columns / GPA  # eV/Å³ → GPa
    c11 = float(np.mean([c[k, k] for k in normal]))
    c12 = float(np.mean([c[j, k] for k in normal for j in range(3) if j != k]))
    c44 = float(np.mean([c[k, k] for k in shear]))
    return {"C11": c11, "C12": c12, "C44": c44, "B": (c11 + 2 * c12) / 3}


def strain_amplitudes(structures: Sequence[Atoms], decimals: int = 4) -> list[float]:
    """The distinct magnitudes of the normal strains of a set of strained cells (each along
    one mode), ascending: the amplitudes :func:`elastic_constants` can take."""
    strains = _cell_strains(structures)
    main = np.argmax(np.abs(strains), axis=1)
    values = {round(float(abs(e[k])), decimals) for e, k in zip(strains, main) if k < 3 and abs(e[k]) > 0}
    return sorted(values)


def _cell_strains(structures: Sequence[Atoms]) -> np.ndarray:
    """(n, 6) Voigt strain of each cell against the group's reference cell."""
    reference = reference_cell([a.cell.array for a in structures])
    return np.stack([voigt_strain(a.cell.array, reference) for a in structures])


def bulk_modulus_from_pressure(pressure_plus: float, pressure_minus: float, strain: float) -> float:
    """B = −V dP/dV (GPa) by a central difference of the pressures (eV/Å³) of a cell scaled
    isotropically by 1 ± ``strain`` (volume 1 ± 3 strain to first order)."""
    volume_plus, volume_minus = (1 + strain) ** 3, (1 - strain) ** 3
    return float(-(pressure_plus - pressure_minus) / (volume_plus - volume_minus) / GPA)


def model_stresses(model, structures: Sequence[Atoms], batch_size: int = 16) -> np.ndarray:
    """(S, 6) Voigt stresses (eV/Å³, ASE sign) of a potential on periodic ``structures``,
    computed in the model's precision, ``batch_size`` structures at a time."""
    import torch
    from ase.stress import full_3x3_to_voigt_6_stress

    from .data import collate

    rows = []
    for lo in range(0, len(structures), batch_size):
        batch = collate(structures[lo:lo + batch_size], cutoff=model.cutoff, dtype=torch.float64, labels=False)
        out = model(batch, forces=False, stress=True)["stress"].detach().cpu().double().numpy()
        rows.extend(full_3x3_to_voigt_6_stress(s) for s in out)
    return np.stack(rows)


def cubic_properties(model, elastic_structures: Sequence[Atoms], strains: Sequence[float] = (0.0025, 0.02),
                     amplitude: float = 0.02, partial: bool = False) -> dict:
    """A potential's cubic elastic constants beside the reference's, and the bulk modulus of
    the ideal cell, GPa.

    Args:
        model: a :class:`~mlpot.models.Potential` (or a committee, :class:`~mlpot.models.Ensemble`).
        elastic_structures: the strained cells of one crystal (an mlearn "Elastic" group),
            labelled with reference stresses.
        strains: isotropic strains ±s of the ideal (reference) cell for the bulk modulus from
            the pressure; a bulk modulus that changes with s shows a curved energy surface.
        amplitude: the strain of the central differences of :func:`elastic_constants`.
        partial: :func:`elastic_constants`'s, for data that lack some ± pairs.

    Returns:
        ``{"elastic_model": {C11, C12, C44, B}, "elastic_reference": {...},
        "B_ideal_<s>": B at ±s, ...}``.
    """
    structures = list(elastic_structures)
    reference = np.stack([a.get_stress() for a in structures])
    result = {"elastic_model": elastic_constants(structures, model_stresses(model, structures), amplitude,
                                                 partial=partial),
              "elastic_reference": elastic_constants(structures, reference, amplitude, partial=partial)}
    ideal_cell = reference_cell([a.cell.array for a in structures])
    nearest = min(structures, key=lambda a: np.abs(a.cell.array - ideal_cell).max())
    for strain in strains:
        scaled = []
        for sign in (1, -1):
            atoms = nearest.copy()
            atoms.calc = None
            atoms.set_cell(ideal_cell * (1 + sign * strain), scale_atoms=True)
            scaled.append(atoms)
        p_plus, p_minus = (-s[:3].mean() for s in model_stresses(model, scaled))
        result[f"B_ideal_{strain:g}"] = bulk_modulus_from_pressure(p_plus, p_minus, strain)
    return result

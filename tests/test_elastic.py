"""Elastic constants by central differences (mlpot.elastic), against a linear-elastic
crystal built by hand and against DFT values of the mlearn data."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from mlpot.elastic import bulk_modulus_from_pressure, elastic_constants, strain_amplitudes, voigt_strain
from mlpot.units import GPA


def cubic_stiffness(c11, c12, c44):
    c = np.zeros((6, 6))
    c[:3, :3] = c12
    np.fill_diagonal(c[:3, :3], c11)
    c[3:, 3:] = np.eye(3) * c44
    return c * GPA  # eV/Å³


def strained_set(stiffness, a=5.4, amplitudes=(-0.04, -0.02, 0.02, 0.04), seed=0):
    """Cells strained along each Voigt mode (shear as engineering strain), stress = C ε."""
    reference = np.eye(3) * 2 * a
    cells, stresses = [], []
    for k in range(6):
        for s in amplitudes:
            eps = np.zeros((3, 3))
            if k < 3:
                eps[k, k] = s
            else:
                i, j = [(1, 2), (0, 2), (0, 1)][k - 3]
                eps[i, j] = eps[j, i] = s  # tensor shear s: engineering strain 2s
            cell = reference @ (np.eye(3) + eps).T
            cells.append(Atoms("Si", positions=[[0, 0, 0]], cell=cell, pbc=True))
            stresses.append(stiffness @ voigt_strain(cell, reference))
    order = np.random.default_rng(seed).permutation(len(cells))
    return [cells[i] for i in order], np.array(stresses)[order]


def test_recovers_a_linear_elastic_crystal():
    structures, stresses = strained_set(cubic_stiffness(160.0, 60.0, 80.0))
    c = elastic_constants(structures, stresses)
    assert c["C11"] == pytest.approx(160.0, rel=1e-10)
    assert c["C12"] == pytest.approx(60.0, rel=1e-10)
    assert c["C44"] == pytest.approx(80.0, rel=1e-10)
    assert c["B"] == pytest.approx((160.0 + 120.0) / 3, rel=1e-10)


def test_missing_mode_is_named():
    structures, stresses = strained_set(cubic_stiffness(160.0, 60.0, 80.0), amplitudes=(0.02, 0.04))
    with pytest.raises(ValueError, match="no ±0.02 pair"):
        elastic_constants(structures, stresses)


def test_partial_averages_the_modes_that_have_a_pair():
    """mlearn Li lacks the −1 % yz shear: the cubic constants then come from the modes that
    have both cells (exact for a cubic crystal); a whole kind of mode missing still fails."""
    structures, stresses = strained_set(cubic_stiffness(160.0, 60.0, 80.0), amplitudes=(-0.01, -0.005, 0.005, 0.01))
    assert strain_amplitudes(structures) == [0.005, 0.01]
    yz = [k for k, a in enumerate(structures) if voigt_strain(a.cell.array, np.eye(3) * 10.8)[3] < -0.015]
    keep = [k for k in range(len(structures)) if k not in yz]
    structures, stresses = [structures[k] for k in keep], stresses[keep]
    with pytest.raises(ValueError, match=r"component\(s\) \[4\]"):
        elastic_constants(structures, stresses, amplitude=0.01)
    c = elastic_constants(structures, stresses, amplitude=0.01, partial=True)
    assert (c["C11"], c["C12"], c["C44"]) == pytest.approx((160.0, 60.0, 80.0), rel=1e-10)
    normal_only = [k for k, a in enumerate(structures) if np.argmax(np.abs(voigt_strain(a.cell.array, np.eye(3) * 10.8))) < 3]
    with pytest.raises(ValueError, match="no ±0.01 pair"):
        elastic_constants([structures[k] for k in normal_only], stresses[normal_only], amplitude=0.01, partial=True)


def test_bulk_modulus_of_a_linear_pressure():
    b, v0, strain = 90.0, 1.0, 0.0025
    pressure = lambda v: -b * GPA * (v - v0) / v0  # noqa: E731
    got = bulk_modulus_from_pressure(pressure((1 + strain) ** 3), pressure((1 - strain) ** 3), strain)
    assert got == pytest.approx(b, rel=1e-12)


def test_dft_elastic_constants_of_mlearn_si(shared_datasets):
    from mlpot.data import read

    structures = [a for a in read(shared_datasets / "mlearn" / "Si" / "training.json", format="mlearn")
                  if a.info.get("group") == "Elastic"]
    c = elastic_constants(structures, np.stack([a.get_stress() for a in structures]))
    # PBE silicon: C11 ≈ 153 GPa, C12 ≈ 57 GPa (e.g. Materials Project mp-149), B ≈ 89 GPa.
    assert c["C11"] == pytest.approx(153, rel=0.03) and c["C12"] == pytest.approx(57, rel=0.05)
    assert c["B"] == pytest.approx(89, rel=0.03)


class EMTAsModel:
    """ASE's EMT behind the model interface cubic_properties uses (a batch in, stress out):
    an independent potential whose elastic constants ASE computes by itself."""

    cutoff = 6.0

    def __call__(self, batch, forces=False, stress=True):
        import torch
        from ase.calculators.emt import EMT

        out = []
        for k in range(batch.n_systems):
            rows = batch.system_idx == k
            atoms = Atoms(numbers=batch.numbers[rows].numpy(), positions=batch.positions[rows].numpy(),
                          cell=batch.cell[k].numpy(), pbc=True)
            atoms.calc = EMT()
            out.append(atoms.get_stress(voigt=False))
        return {"stress": torch.as_tensor(np.array(out))}


def emt_elastic_set(a=3.59):
    """Cu fcc strained by ±2 % and ±4 % along each Voigt mode, EMT stresses as the reference."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    reference = bulk("Cu", "fcc", a=a, cubic=True)
    out = []
    for k in range(6):
        for s in (-0.04, -0.02, 0.02, 0.04):
            eps = np.zeros((3, 3))
            if k < 3:
                eps[k, k] = s
            else:
                i, j = [(1, 2), (0, 2), (0, 1)][k - 3]
                eps[i, j] = eps[j, i] = s / 2  # engineering shear strain s
            atoms = reference.copy()
            atoms.set_cell(reference.cell.array @ (np.eye(3) + eps).T, scale_atoms=True)
            atoms.calc = EMT()
            atoms.calc = SinglePointCalculator(atoms, stress=atoms.get_stress())
            out.append(atoms)
    return out


def test_cubic_properties_of_a_potential_against_ase():
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.eos import EquationOfState

    from mlpot.elastic import cubic_properties

    structures = emt_elastic_set()
    got = cubic_properties(EMTAsModel(), structures)
    for key in ("C11", "C12", "C44", "B"):  # the same potential on the same cells
        assert got["elastic_model"][key] == pytest.approx(got["elastic_reference"][key], rel=1e-9)
    assert got["elastic_model"]["C11"] > got["elastic_model"]["C12"] > 0
    # The bulk modulus from the ideal cell's pressure against ASE's equation-of-state fit of
    # EMT energies around the same cell (EMT Cu at a = 3.59 Å is close to its minimum).
    volumes, energies = [], []
    for x in np.linspace(0.97, 1.03, 9):
        atoms = bulk("Cu", "fcc", a=3.59 * x, cubic=True)
        atoms.calc = EMT()
        volumes.append(atoms.get_volume())
        energies.append(atoms.get_potential_energy())
    eos = EquationOfState(volumes, energies, eos="birchmurnaghan")
    _, _, b_eos = eos.fit()
    assert got["B_ideal_0.0025"] == pytest.approx(b_eos / GPA, rel=0.05)
    assert got["B_ideal_0.02"] == pytest.approx(got["B_ideal_0.0025"], rel=0.1)

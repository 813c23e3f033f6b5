"""mlpot.observables, each checked against an independent computation: the EOS bulk modulus
of EMT copper against the curvature of E(V) at its minimum, the vacancy formation energy
against a hand relaxation with scipy, and g(r) against the known shells of perfect crystals,
against ase.geometry.rdf and against an ideal gas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.geometry.rdf import get_rdf
from scipy.optimize import minimize, minimize_scalar

from mlpot.calculator import MLPotCalculator
from mlpot.descriptors import SymmetryFunctionSpec
from mlpot.models import NetworkConfig, Potential
from mlpot.observables import (
    coordination_number,
    equation_of_state,
    nvt_frames,
    radial_distribution,
    rdf_difference,
    vacancy_formation_energy,
)
from mlpot.units import GPA

pytestmark = pytest.mark.usefixtures("one_thread")


def emt_energy_per_volume(volume: float) -> float:
    """EMT energy (eV) of the one-atom fcc Cu cell of ``volume`` Å³ (a³/4)."""
    atoms = bulk("Cu", "fcc", a=(4 * volume) ** (1 / 3))
    atoms.calc = EMT()
    return atoms.get_potential_energy()


@pytest.fixture(scope="module")
def emt_minimum() -> float:
    """V₀ of EMT Cu (Å³ per atom) by a bounded scalar minimisation."""
    return minimize_scalar(emt_energy_per_volume, bounds=(10.0, 14.0), method="bounded",
                           options={"xatol": 1e-8}).x


def test_eos_bulk_modulus_is_the_curvature_of_e_of_v(emt_minimum):
    """B = V d²E/dV² at V₀ by a central second difference agrees with the Birch–Murnaghan fit."""
    v0, h = emt_minimum, 1e-3 * emt_minimum
    curvature = (emt_energy_per_volume(v0 + h) - 2 * emt_energy_per_volume(v0) + emt_energy_per_volume(v0 - h)) / h**2
    b_hand = v0 * curvature / GPA
    start = bulk("Cu", "fcc", a=3.65)  # off the minimum: the fit must find it
    result = equation_of_state(EMT(), start)
    assert result["v0_a3"] == pytest.approx(v0, rel=1e-4)
    assert result["bulk_modulus_gpa"] == pytest.approx(b_hand, rel=0.01)
    assert result["e0_ev"] == pytest.approx(emt_energy_per_volume(v0), abs=1e-5)
    assert result["scale0"] ** 3 * start.get_volume() == pytest.approx(result["v0_a3"])
    assert len(result["volume_a3"]) == len(result["energy_ev"]) == 9 and result["fit_error"] is None


def test_eos_of_a_model_equals_that_of_its_calculator_and_reports_a_missing_minimum():
    torch.manual_seed(0)
    model = Potential(SymmetryFunctionSpec.default(["Cu"], cutoff=4.0), NetworkConfig(depth=1, width=4)).double()
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    direct = equation_of_state(model, atoms, strains=np.linspace(-0.02, 0.02, 5))
    wrapped = equation_of_state(MLPotCalculator(model, device="cpu"), atoms, strains=np.linspace(-0.02, 0.02, 5))
    assert direct["energy_ev"] == pytest.approx(wrapped["energy_ev"], abs=1e-12)
    # An untrained network does not bind the crystal: no fit, and a reason instead of an error.
    assert direct["bulk_modulus_gpa"] is None and direct["fit_error"]


def test_vacancy_formation_energy_against_a_hand_relaxation(emt_minimum):
    a0 = (4 * emt_minimum) ** (1 / 3)
    cell = bulk("Cu", "fcc", a=a0, cubic=True)
    result = vacancy_formation_energy(EMT(), cell, supercell=(2, 2, 2), fmax=1e-4, steps=500)

    # By hand: the perfect 32-atom crystal, and the 31-atom cell relaxed with scipy's L-BFGS.
    perfect = cell.repeat((2, 2, 2))
    perfect.calc = EMT()
    e_bulk = perfect.get_potential_energy()
    vacancy = perfect.copy()
    del vacancy[0]
    vacancy.calc = EMT()
    e_unrelaxed = vacancy.get_potential_energy()

    def energy_and_gradient(x):
        vacancy.positions = x.reshape(-1, 3)
        return vacancy.get_potential_energy(), -vacancy.get_forces().ravel()

    relaxed = minimize(energy_and_gradient, vacancy.positions.ravel(), jac=True, method="L-BFGS-B",
                       options={"gtol": 1e-7, "ftol": 1e-14, "maxiter": 2000})
    assert result["n_atoms"] == 32 and result["converged"]
    assert result["unrelaxed_ev"] == pytest.approx(e_unrelaxed - 31 / 32 * e_bulk, abs=1e-10)
    assert result["formation_energy_ev"] == pytest.approx(relaxed.fun - 31 / 32 * e_bulk, abs=1e-4)
    assert 0 < result["formation_energy_ev"] < result["unrelaxed_ev"]
    unrelaxed_only = vacancy_formation_energy(EMT(), cell, supercell=(2, 2, 2), steps=0)
    assert unrelaxed_only["formation_energy_ev"] == pytest.approx(result["unrelaxed_ev"], abs=1e-12)


def test_rdf_of_a_perfect_crystal_has_its_shells_and_coordination():
    """fcc Cu: 12 neighbours at a/√2, 6 at a, 24 at a√(3/2), from a 4-atom cell (r_max beyond
    half the cell: every image counts)."""
    a = 3.61  # its shells off the bin edges
    crystal = bulk("Cu", "fcc", a=a, cubic=True)
    r, g = radial_distribution([crystal], r_max=5.0, bins=500)
    g = g["all"]
    peaks = r[g > 0]
    shells = np.array([a / np.sqrt(2), a, a * np.sqrt(1.5)])
    assert len(peaks) == 3 and np.abs(peaks - shells).max() <= 0.005 + 1e-12
    rho = len(crystal) / crystal.get_volume()
    for r_cut, neighbours in ((3.0, 12), (4.0, 18), (4.8, 42)):
        assert coordination_number(r, g, rho, r_cut) == pytest.approx(neighbours)
    # The same g(r) as ASE's on a cell large enough for ASE's minimum-image requirement.
    large = crystal.repeat((3, 3, 3))
    ours = radial_distribution([large], r_max=5.0, bins=100)[1]["all"]
    theirs, _ = get_rdf(large, 5.0, 100)
    assert ours == pytest.approx(theirs, abs=1e-9)


def test_partial_rdf_of_rock_salt():
    a = 5.65
    crystal = bulk("NaCl", "rocksalt", a=a, cubic=True)
    r, g = radial_distribution([crystal], r_max=4.5, bins=450, pairs=[("Na", "Cl"), ("Na", "Na"), ("Cl", "Na")])
    rho = 4 / crystal.get_volume()  # of each species
    assert coordination_number(r, g["Na-Cl"], rho, 3.5) == pytest.approx(6)
    assert coordination_number(r, g["Na-Na"], rho, 3.5) == pytest.approx(0)
    assert coordination_number(r, g["Na-Na"], rho, 4.5) == pytest.approx(12)
    assert g["Na-Cl"] == pytest.approx(g["Cl-Na"])  # g_AB = g_BA
    assert r[g["Na-Cl"] > 0][0] == pytest.approx(a / 2, abs=0.005)


def test_rdf_of_an_ideal_gas_is_one():
    rng = np.random.default_rng(0)
    frames = [Atoms("Ar500", positions=rng.uniform(0, 12.0, (500, 3)), cell=[12.0] * 3, pbc=True)
              for _ in range(4)]
    r, g = radial_distribution(frames, r_max=5.0, bins=10)
    far = g["all"][r > 2.0]
    assert np.abs(far - 1).max() < 0.05 and abs(far.mean() - 1) < 0.01


def test_rdf_difference():
    g = np.array([0.0, 1.0, 3.0, 1.0])
    assert rdf_difference(g, g) == 0.0
    assert rdf_difference(g, g + 0.5) == pytest.approx(0.5)
    assert rdf_difference(g, np.zeros(4)) == pytest.approx(np.sqrt(11 / 4))
    with pytest.raises(ValueError, match="different bins"):
        rdf_difference(g, g[:3])


def test_nvt_frames_sample_every_replica():
    torch.manual_seed(0)
    model = Potential(SymmetryFunctionSpec.default(["Cu"], cutoff=4.0), NetworkConfig(depth=1, width=4)).double()
    model.energy_scale.fill_(0.0)  # force-free: only the thermostat acts
    starts = [bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2)) for _ in range(2)]
    frames = nvt_frames(model, starts, temperature_K=300, timestep_fs=1.0, steps=20, every=5, equilibrate=5)
    assert len(frames) == 2 * 4 and all(len(f) == 32 for f in frames)
    assert not np.allclose(frames[0].positions, frames[1].positions)  # distinct velocity seeds

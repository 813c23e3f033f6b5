"""The ASE calculator: derivatives against ASE's numerical ones, neighbour-list reuse,
ensembles, extrapolation warnings and bad input."""

import warnings

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet
from structures_for_tests import water_box
from test_models import make_model

import mlpot
from mlpot.calculator import ExtrapolationWarning, MLPotCalculator
from mlpot.models import NetworkConfig


@pytest.fixture(scope="module")
def model():
    return make_model(NetworkConfig(depth=2, width=10, block="residual"))


def test_forces_and_stress_equal_ase_numerical_derivatives(model):
    atoms = water_box(seed=7)
    atoms.calc = MLPotCalculator(model, device="cpu", extrapolation="ignore")
    forces = atoms.get_forces()
    some = [0, 1, 2, 10, 23]  # a few atoms of both elements keep the FD loop short
    numerical = calculate_numerical_forces(atoms, eps=1e-5, iatoms=some)
    np.testing.assert_allclose(forces[some], numerical, rtol=1e-6, atol=1e-8)
    stress = atoms.get_stress()
    numerical_stress = calculate_numerical_stress(atoms, eps=1e-6)
    np.testing.assert_allclose(stress, numerical_stress, rtol=1e-5, atol=1e-9)
    assert atoms.get_potential_energies().sum() == pytest.approx(atoms.get_potential_energy(), rel=1e-12)


def test_neighbour_list_reuse_matches_fresh_build_along_md(model):
    atoms = water_box(seed=8)
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    reused = MLPotCalculator(model, device="cpu", skin=0.6, extrapolation="ignore")
    atoms.calc = reused
    fresh = MLPotCalculator(model, device="cpu", skin=0.0, extrapolation="ignore")
    # The untrained model's forces are large: a short step keeps the trajectory sane.
    dyn = VelocityVerlet(atoms, timestep=0.1 * units.fs)
    for _ in range(12):
        dyn.run(5)
        probe = atoms.copy()
        probe.calc = fresh
        np.testing.assert_allclose(atoms.get_forces(), probe.get_forces(), rtol=1e-10, atol=1e-12)
        assert atoms.get_potential_energy() == pytest.approx(probe.get_potential_energy(), rel=1e-12)
    # 72 force calls (60 MD steps + 12 probes): the list was rebuilt only a few times,
    # while the skin-free calculator rebuilt at every one of its 12 calls.
    assert 1 <= reused.neighbour_builds <= 12 and fresh.neighbour_builds == 12


def test_open_structure_has_no_stress(model):
    atoms = water_box(seed=1)[:9]
    atoms.pbc, atoms.cell = False, [0, 0, 0]
    atoms.calc = MLPotCalculator(model, device="cpu", extrapolation="ignore")
    atoms.get_forces()
    from ase.calculators.calculator import PropertyNotImplementedError

    with pytest.raises(PropertyNotImplementedError, match="periodic"):
        atoms.get_stress()


def test_ensemble_mean_and_spread():
    members = [make_model(NetworkConfig(depth=2, width=8), seed=s) for s in range(3)]
    atoms = water_box(seed=2)
    calc = MLPotCalculator.from_ensemble(members, device="cpu", extrapolation="ignore")
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    singles = []
    for m in members:
        a = atoms.copy()
        a.calc = MLPotCalculator(m, device="cpu", extrapolation="ignore")
        singles.append(a.get_potential_energy())
    assert energy == pytest.approx(np.mean(singles), rel=1e-12)
    assert calc.results["energy_std"] == pytest.approx(np.std(singles), rel=1e-10)
    assert calc.results["forces_std"].shape == (len(atoms), 3) and calc.results["forces_std"].max() > 0


def test_extrapolation_is_warned_and_counted(model):
    atoms = water_box(seed=3)
    atoms.positions[:3] *= 0.7  # squeeze one molecule far below training distances
    atoms.calc = MLPotCalculator(model, device="cpu")
    with pytest.warns(ExtrapolationWarning, match="outside the training range"):
        atoms.get_potential_energy()
    assert atoms.calc.extrapolation["structures"] == 1 and atoms.calc.extrapolation["atoms"] >= 1
    strict = MLPotCalculator(model, device="cpu", extrapolation="error")
    with pytest.raises(ValueError, match="outside the training range"):
        strict.get_potential_energy(atoms)


def test_in_range_structure_does_not_warn(model):
    atoms = water_box(seed=0)  # one of the structures the scaling was fitted on
    atoms.calc = MLPotCalculator(model, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExtrapolationWarning)
        atoms.get_potential_energy()


def test_unknown_element_and_bad_arguments(model):
    atoms = bulk("Cu", "fcc", 3.6)
    atoms.calc = MLPotCalculator(model, device="cpu")
    with pytest.raises(ValueError, match=r"\['Cu'\] not known"):
        atoms.get_potential_energy()
    with pytest.raises(ValueError, match="skin"):
        MLPotCalculator(model, device="cpu", skin=-1)
    with pytest.raises(ValueError, match="extrapolation"):
        MLPotCalculator(model, device="cpu", extrapolation="loud")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            MLPotCalculator(model, device="cuda")


def test_model_file_path_and_float32(tmp_path, model):
    path = tmp_path / "m.pt"
    mlpot.save(model, path)
    atoms = water_box(seed=0)
    atoms.calc = MLPotCalculator(str(path), device="cpu", dtype=torch.float32)
    e32 = atoms.get_potential_energy()
    atoms.calc = MLPotCalculator(str(path), device="cpu")
    e64 = atoms.get_potential_energy()
    assert e32 == pytest.approx(e64, rel=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_cuda_matches_cpu(model):
    atoms = water_box(seed=4)
    atoms.calc = MLPotCalculator(model, device="cpu", extrapolation="ignore")
    f_cpu = atoms.get_forces()
    atoms.calc = MLPotCalculator(make_model(NetworkConfig(depth=2, width=10, block="residual")), device="cuda",
                                 extrapolation="ignore")
    np.testing.assert_allclose(atoms.get_forces(), f_cpu, rtol=1e-9, atol=1e-10)

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
    # tanh: an untrained network's bounded output keeps the forces of the short MD
    # moderate (with SiLU, the default, two atoms of the water box collide within 60 steps).
    return make_model(NetworkConfig(depth=2, width=10, block="residual", activation="tanh"))


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


def test_extrapolation_is_warned_once_counted_and_summarised(model):
    atoms = water_box(seed=3)
    atoms.positions[:3] *= 0.7  # squeeze one molecule far below training distances
    calc = MLPotCalculator(model, device="cpu")
    atoms.calc = calc
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        atoms.get_potential_energy()  # the line the warning must name
        line = _this_line() - 1
        for _ in range(3):  # more extrapolating structures: counted, not warned again
            atoms.positions[0] += 0.01
            atoms.get_forces()
    found = [w for w in caught if issubclass(w.category, ExtrapolationWarning)]
    assert len(found) == 1, [str(w.message) for w in caught]
    assert "beyond the training range" in str(found[0].message) and "warns once" in str(found[0].message)
    # The warning names this test's line, not ASE's or mlpot's internals.
    assert found[0].filename == __file__ and found[0].lineno == line
    counts = calc.extrapolation
    assert counts["calls"] == 4 and counts["structures"] == 4 and counts["atoms"] >= 4
    assert counts["max_excess"] > calc.extrapolation_margin
    assert calc.extrapolation_summary().startswith("extrapolation: 4 of 4 structures")
    strict = MLPotCalculator(model, device="cpu", extrapolation="error")
    with pytest.raises(ValueError, match="beyond the training range"):
        strict.get_potential_energy(atoms)
    quiet = MLPotCalculator(model, device="cpu", extrapolation="ignore")
    quiet.get_potential_energy(atoms)
    assert quiet.extrapolation["calls"] == 0 and "not checked" in quiet.extrapolation_summary()


def _this_line() -> int:
    import inspect

    return inspect.currentframe().f_back.f_lineno


def test_extrapolation_margin_is_relative_to_each_feature_range(model):
    """A structure a little past the training range counts only below its excess; the
    excess is measured in units of each feature's training range."""
    from mlpot.data import collate

    atoms = water_box(seed=3)
    atoms.positions *= 0.97  # 3 % denser than every training box
    batch = collate([atoms], cutoff=model.cutoff, dtype=model.dtype)
    with torch.enable_grad():
        g = model(batch, forces=True, descriptors=True)["descriptors"]
    excess = model.range_excess(g, batch.numbers)
    worst = float(excess.max())
    assert worst > 0
    # By hand for the worst atom: max over features of the distance beyond [min, max] / (max − min).
    k = int(excess.argmax())
    sc = model.descriptor.scaler
    e = int(model.descriptor.species(batch.numbers)[k])
    lo, hi, x = sc.train_min[e], sc.train_max[e], g[k].detach()
    span = hi - lo
    used = span > 0
    by_hand = (torch.clamp(torch.maximum(lo - x, x - hi), min=0)[used] / span[used]).max()
    assert worst == pytest.approx(float(by_hand), rel=1e-12)
    for margin, flagged in ((0.0, True), (0.5 * worst, True), (1.01 * worst, False)):
        calc = MLPotCalculator(model, device="cpu", extrapolation_margin=margin)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExtrapolationWarning)
            calc.get_potential_energy(atoms)
        assert (calc.extrapolation["structures"] == 1) is flagged, margin
    with pytest.raises(ValueError, match="extrapolation_margin"):
        MLPotCalculator(model, device="cpu", extrapolation_margin=-0.1)


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


@pytest.mark.parametrize("name, dtype", [("float64", torch.float64), ("float32", torch.float32),
                                         ("double", torch.float64), ("torch.float32", torch.float32)])
def test_dtype_names_are_accepted(tmp_path, model, name, dtype):
    """The names users type work wherever a dtype is asked for: the calculator (from a model
    or a file) and mlpot.load."""
    path = tmp_path / "m.pt"
    mlpot.save(model, path)
    assert MLPotCalculator(model, device="cpu", dtype=name).dtype == dtype
    assert MLPotCalculator(str(path), device="cpu", dtype=name).dtype == dtype
    assert mlpot.load(path, dtype=name).dtype == dtype
    atoms = water_box(seed=0)
    atoms.calc = MLPotCalculator(str(path), device="cpu", dtype=name)
    assert np.isfinite(atoms.get_potential_energy())
    with pytest.raises(ValueError, match="float16"):
        MLPotCalculator(model, device="cpu", dtype="float16")
    with pytest.raises(ValueError, match="float16"):
        mlpot.load(path, dtype="float16")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_cuda_matches_cpu(model):
    atoms = water_box(seed=4)
    atoms.calc = MLPotCalculator(model, device="cpu", extrapolation="ignore")
    f_cpu = atoms.get_forces()
    atoms.calc = MLPotCalculator(make_model(NetworkConfig(depth=2, width=10, block="residual")), device="cuda",
                                 extrapolation="ignore")
    np.testing.assert_allclose(atoms.get_forces(), f_cpu, rtol=1e-9, atol=1e-10)

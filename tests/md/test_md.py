"""Batched MD engine against ASE's integrators, and its thermostat and replicas."""

import numpy as np
import pytest
import torch
from ase import units
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet

from mlpot.calculator import MLPotCalculator
from mlpot.md import BatchedMD, Thermostat
from mlpot.models import NetworkConfig
from structures_for_tests import water_box
from test_models import make_model


@pytest.fixture(scope="module")
def model():
    return make_model(NetworkConfig(depth=2, width=10, activation="silu"))


def start(seed):
    atoms = water_box(seed=seed)[:12]  # four molecules keep the many MD steps cheap
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(seed))
    return atoms


def test_batched_nve_matches_ase_velocity_verlet(model):
    atoms = start(0)
    ase_atoms = atoms.copy()
    ase_atoms.calc = MLPotCalculator(model, device="cpu", skin=0.0, extrapolation="ignore")
    dyn = VelocityVerlet(ase_atoms, timestep=0.1 * units.fs)
    engine = BatchedMD(model, [atoms], ensemble="nve", timestep_fs=0.1, skin=0.5)
    for _ in range(5):
        dyn.run(8)
        engine.run(8)
        got = engine.to_atoms()[0]
        np.testing.assert_allclose(got.positions, ase_atoms.positions, rtol=0, atol=1e-10)
        np.testing.assert_allclose(got.get_velocities(), ase_atoms.get_velocities(), rtol=0, atol=1e-10)
        assert float(engine.potential_energy()[0]) == pytest.approx(ase_atoms.get_potential_energy(), abs=1e-9)
        # ASE integrates momenta, the engine velocities: rounding differs at ~1e-12.
        assert float(engine.temperature()[0]) == pytest.approx(ase_atoms.get_temperature(), rel=1e-7)


def test_replicas_are_independent(model):
    structures = [start(s) for s in range(3)]
    together = BatchedMD(model, structures, ensemble="nve", timestep_fs=0.1)
    together.run(10)
    for k, atoms in enumerate(structures):
        alone = BatchedMD(model, [atoms], ensemble="nve", timestep_fs=0.1)
        alone.run(10)
        np.testing.assert_allclose(together.to_atoms()[k].positions, alone.to_atoms()[0].positions,
                                   rtol=0, atol=1e-10)


def test_langevin_reaches_target_temperature_per_replica():
    # Zero weights give zero forces: the velocities then follow an exact Ornstein–Uhlenbeck
    # process whose stationary temperature is each replica's own bath temperature.
    model = make_model(NetworkConfig(depth=1, width=4))
    with torch.no_grad():
        for p in model.networks.parameters():
            p.zero_()
    structures = [start(s) for s in range(2)]
    # Strong friction (velocity correlation time 0.5 fs = 10 steps): the 300 steps after
    # burn-in hold ~30 independent samples of 36 degrees of freedom each, so the mean
    # temperature is within ~4% (1σ) of the bath; 15% is a 3.5σ bound.
    engine = BatchedMD(model, structures, ensemble="nvt", timestep_fs=0.05,
                       thermostat=Thermostat(temperature_K=[200.0, 800.0], friction_per_fs=2.0, seed=1))
    temps = []
    engine.run(400, callback=lambda e: temps.append(e.temperature().cpu().numpy()), every=1)
    mean = np.mean(temps[100:], axis=0)
    assert mean[0] == pytest.approx(200, rel=0.15) and mean[1] == pytest.approx(800, rel=0.15)
    assert mean[1] > 2.5 * mean[0]


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="unknown ensemble"):
        BatchedMD(model, [start(0)], ensemble="npt-ish")
    with pytest.raises(ValueError, match="timestep"):
        BatchedMD(model, [start(0)], timestep_fs=0.0)
    with pytest.raises(ValueError, match="friction"):
        Thermostat(friction_per_fs=-1.0)
    with pytest.raises(ValueError, match="temperature"):
        Thermostat(temperature_K=[300.0, -1.0])
    assert Thermostat(temperature_K=[300, 600]).temperature_K == (300.0, 600.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_cuda_engine_matches_cpu(model):
    atoms = start(0)
    cpu = BatchedMD(model, [atoms], timestep_fs=0.1)
    cpu.run(20)
    gpu = BatchedMD(make_model(NetworkConfig(depth=2, width=10, activation="silu")).to("cuda"), [atoms], timestep_fs=0.1)
    gpu.run(20)
    assert gpu.state.positions.is_cuda
    np.testing.assert_allclose(gpu.to_atoms()[0].positions, cpu.to_atoms()[0].positions, atol=1e-8)

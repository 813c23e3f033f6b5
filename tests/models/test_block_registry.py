"""The block registry: a new hidden-block variant registered from this file alone builds a
potential with exact (finite-difference) forces and trains end to end; duplicate names and
incomplete classes are refused."""

from __future__ import annotations

from dataclasses import replace

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from torch import nn

import mlpot
from mlpot.ablation.grid import count_parameters
from mlpot.data import collate
from mlpot.descriptors import SymmetryFunctionSpec
from mlpot.models import BLOCKS, NetworkConfig, Potential, register_block
from mlpot.models.blocks import activation
from mlpot.models.init import initialise_linear
from mlpot.testing import assert_gradient_matches_fd
from mlpot.training import TrainConfig, train
from structures_for_tests import water_box

pytestmark = pytest.mark.usefixtures("one_thread")


class GatedResidualBlock(nn.Module):
    """h' = P h + sigmoid(V h + c) ⊙ σ(W h + b): a residual branch with a learned gate."""

    def __init__(self, d_in: int, d_out: int, act: str, init: str, zero_init: bool = False,
                 survival: float = 1.0):
        super().__init__()
        self.linear, self.gate = nn.Linear(d_in, d_out), nn.Linear(d_in, d_out)
        self.act = activation(act)
        initialise_linear(self.linear, init, act)
        initialise_linear(self.gate, init, "sigmoid")
        self.project = nn.Identity() if d_in == d_out else nn.Linear(d_in, d_out, bias=False)

    @staticmethod
    def n_parameters(d_in: int, d_out: int) -> int:
        return 2 * (d_in * d_out + d_out) + (d_in * d_out if d_in != d_out else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(x) + torch.sigmoid(self.gate(x)) * self.act(self.linear(x))


@pytest.fixture()
def gated() -> str:
    """Registers the gated block for one test and removes it afterwards."""
    register_block("gated")(GatedResidualBlock)
    yield "gated"
    del BLOCKS["gated"]


def test_new_block_gives_fd_forces_and_its_parameter_count(gated):
    torch.manual_seed(0)
    spec = SymmetryFunctionSpec.from_dict({
        "elements": ["H", "O"], "cutoff": 4.0, "cutoff_function": "poly2",
        "radial": [{"grid": {"count": 4, "mode": "shift", "r_lower": 0.8}}],
        "angular": [{"kind": "G4", "eta": 0.1, "zetas": [1, 4], "lambdas": [-1, 1]}]})
    config = NetworkConfig(hidden=(10, 10, 6), block=gated, activation="silu")
    model = Potential(spec, config).double().eval()
    assert all(type(b) is GatedResidualBlock for b in model.networks.network("O").blocks)
    assert model.n_parameters() == count_parameters(model.networks.n_features, config)
    batch = collate([water_box(seed=1)[:12]]).with_neighbours(model.cutoff + 0.5)  # skin covers FD steps

    def energy(pos: torch.Tensor) -> torch.Tensor:
        return model(replace(batch, positions=pos), forces=False)["energy"].sum()

    assert_gradient_matches_fd(energy, batch.positions, step=1e-5, rtol=1e-7)


def test_new_block_trains_end_to_end(gated, tmp_path):
    rng = np.random.default_rng(0)
    structures = []
    for _ in range(12):  # rattled 4-atom Cu/Au cells labelled by EMT
        atoms = bulk("Cu", "fcc", a=3.75, cubic=True)
        atoms.numbers[rng.permutation(4)[: rng.integers(1, 4)]] = 79
        atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
        atoms.calc = EMT()
        atoms.get_forces()
        structures.append(atoms)
    ase.io.write(tmp_path / "train.extxyz", structures)
    config = TrainConfig.from_dict({
        "data": {"train": str(tmp_path / "train.extxyz"), "val_fraction": 0.25},
        "descriptor": {"cutoff": 4.0, "cutoff_function": "poly2",
                       "radial": [{"grid": {"count": 4, "mode": "shift", "r_lower": 1.5}}]},
        "model": {"depth": 2, "width": 8, "block": gated},
        "training": {"epochs": 2, "batch_size": 4, "dtype": "float64"},
    })
    result = train(config, tmp_path / "run", progress=False, log=lambda line: None)
    assert np.isfinite(result["best_val_loss"]) and result["best_epoch"] in (1, 2)
    model = mlpot.load(tmp_path / "run" / "model.pt")
    assert model.config.block == gated
    out = model(collate(structures[:2]))
    assert torch.isfinite(out["forces"]).all()


def test_duplicate_and_incomplete_blocks_are_refused(gated):
    with pytest.raises(ValueError, match="block 'gated' is already registered"):
        register_block("gated")(GatedResidualBlock)
    with pytest.raises(ValueError, match="block 'plain' is already registered"):
        register_block("plain")(GatedResidualBlock)

    class NoCount(nn.Module):
        pass

    with pytest.raises(TypeError, match="n_parameters"):
        register_block("no_count")(NoCount)
    assert "no_count" not in BLOCKS


def test_unregistered_block_is_unknown():
    assert "gated" not in BLOCKS  # the fixture removed it
    with pytest.raises(ValueError, match="model.block 'gated' unknown"):
        NetworkConfig(block="gated")

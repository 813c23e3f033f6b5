"""The descriptor seam: a new descriptor kind, registered from this file alone, is a model
descriptor like the symmetry functions — FD-exact forces, rotation invariance, a YAML
``descriptor: {kind: ...}`` section, training and evaluation through the CLI, and a model
file that loads it back."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import ase.io
import numpy as np
import pytest
import torch
import yaml
from ase.build import bulk
from ase.calculators.emt import EMT

import mlpot
from mlpot.cli import main
from mlpot.config import ConfigError
from mlpot.data import collate
from mlpot.descriptors import DESCRIPTORS, Descriptor, DescriptorConfig, register_descriptor
from mlpot.models import NetworkConfig, Potential
from mlpot.testing import assert_gradient_matches_fd, random_rotation
from mlpot.training import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

KIND = "bessel_test"


# --------------------------------------------------------------------------- the new kind
@dataclass(frozen=True)
class BesselConfig(DescriptorConfig):
    """``descriptor: {kind: bessel_test, cutoff: 4.0, n_basis: 6}``."""

    kind: str = KIND
    elements: tuple[str, ...] | None = None
    cutoff: float = 4.0
    n_basis: int = 6

    def build(self, elements):
        return BesselDescriptor(self.elements or tuple(elements), self.cutoff, self.n_basis)


class BesselDescriptor(Descriptor):
    """Σ_{j ∈ e} sin(nπ r_ij / r_c) / r_ij · f_c(r_ij), n = 1..K, per neighbour element e
    (the radial basis of NequIP and MACE as a two-body descriptor)."""

    def __init__(self, elements, cutoff: float, n_basis: int):
        super().__init__(elements, cutoff)
        self.n_basis = n_basis
        self.register_buffer("frequency", torch.arange(1, n_basis + 1, dtype=torch.float64) * math.pi / cutoff,
                             persistent=False)

    @property
    def n_features_per_element(self) -> list[int]:
        return [self.n_elements * self.n_basis] * self.n_elements

    def compute_from_vectors(self, vec, species, edge_index, n_atoms, create_graph=False):
        r = torch.linalg.vector_norm(vec, dim=1, keepdim=True)
        inside = r < self.cutoff
        envelope = torch.where(inside, 0.5 * (torch.cos(math.pi * r / self.cutoff) + 1.0), torch.zeros_like(r))
        basis = torch.sin(self.frequency.to(r.dtype) * r) / r * envelope  # (P, K)
        rows = edge_index[0] * self.n_elements + species[edge_index[1]]
        out = basis.new_zeros(n_atoms * self.n_elements, self.n_basis).index_add_(0, rows, basis)
        return out.view(n_atoms, self.n_elements * self.n_basis)

    def config_dict(self) -> dict:
        return {"elements": list(self.elements), "cutoff": self.cutoff, "n_basis": self.n_basis}


@pytest.fixture
def bessel_kind():
    register_descriptor(KIND, BesselConfig)(BesselDescriptor)
    yield
    DESCRIPTORS.pop(KIND)


# --------------------------------------------------------------------------- tests
def cu_au(n: int, seed: int):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((1, 1, 2))
        atoms.numbers[rng.permutation(len(atoms))[:3]] = 79
        atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
        atoms.calc = EMT()
        atoms.get_forces()
        out.append(atoms)
    return out


def test_registry_rejects_duplicates_and_unknown_kinds(bessel_kind):
    with pytest.raises(ValueError, match="already registered"):
        register_descriptor(KIND, BesselConfig)(BesselDescriptor)
    with pytest.raises(ConfigError, match=r"descriptor\.kind: unknown descriptor kind 'nope'"):
        TrainConfig.from_dict({"data": {"train": "x"}, "descriptor": {"kind": "nope"}})
    with pytest.raises(ConfigError, match=r"descriptor\.n_basi\b"):
        TrainConfig.from_dict({"data": {"train": "x"}, "descriptor": {"kind": KIND, "n_basi": 3}})


def test_new_kind_gives_fd_exact_forces_and_invariant_energy(bessel_kind):
    torch.manual_seed(0)
    model = Potential(BesselConfig(cutoff=3.5, n_basis=4).build(["Cu", "Au"]),
                      NetworkConfig(depth=2, width=8)).double()
    atoms = cu_au(1, seed=3)[0]
    batch = collate([atoms], cutoff=model.cutoff, dtype=torch.float64, labels=False)

    def energy(positions):  # the pair list stays valid for the small steps of the check
        return model(replace(batch, positions=positions), forces=False)["energy"].sum()

    out = model(batch, forces=True)
    x = batch.positions.detach().clone()
    assert_gradient_matches_fd(energy, x, step=1e-5, rtol=1e-6, atol=1e-8)
    rotated = atoms.copy()
    rotation = random_rotation(7)
    rotated.set_cell(atoms.cell @ rotation.T, scale_atoms=False)
    rotated.positions = atoms.positions @ rotation.T
    out_rot = model(collate([rotated], cutoff=model.cutoff, dtype=torch.float64, labels=False), forces=True)
    assert torch.allclose(out_rot["energy"], out["energy"], rtol=0, atol=1e-10)
    assert torch.allclose(out_rot["forces"], out["forces"] @ torch.as_tensor(rotation.T), atol=1e-9)


def test_new_kind_trains_from_yaml_through_the_cli(bessel_kind, tmp_path, capsys):
    ase.io.write(tmp_path / "train.extxyz", cu_au(12, seed=0))
    ase.io.write(tmp_path / "test.extxyz", cu_au(4, seed=1))
    config = {
        "data": {"train": "train.extxyz", "test": "test.extxyz", "val_fraction": 0.25},
        "descriptor": {"kind": KIND, "cutoff": 4.0, "n_basis": 5},
        "model": {"depth": 2, "width": 8},
        "training": {"epochs": 3, "batch_size": 4, "dtype": "float64"},
    }
    path = tmp_path / "bessel.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 0
    log = capsys.readouterr().out
    assert "descriptor cache" in log and "no pair Jacobian" in log  # the cache policy says why it recomputes
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["descriptor"] == {"kind": KIND, "elements": None, "cutoff": 4.0, "n_basis": 5}

    model = mlpot.load(tmp_path / "run" / "model.pt")
    assert isinstance(model.descriptor, BesselDescriptor) and model.descriptor.n_basis == 5
    assert model.descriptor.scaler is not None
    structures = cu_au(2, seed=5)
    calc = mlpot.MLPotCalculator(model, device="cpu")
    for atoms in structures:
        atoms.calc = calc
        assert np.isfinite(atoms.get_potential_energy())
    assert main(["evaluate", str(tmp_path / "run" / "model.pt"), str(tmp_path / "test.extxyz"), "--json"]) == 0
    assert '"force_rmse_mev_per_a"' in capsys.readouterr().out

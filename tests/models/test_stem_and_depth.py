"""Residual networks with a plain stem (no projections) and stochastic depth drawn per
structure: all atoms of a structure drop the same blocks, in lone potentials, from cached
descriptors and in model stacks; eval mode is exactly the deterministic network."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch
from structures_for_tests import water_box

import mlpot
from mlpot.ablation.grid import count_parameters, matched_hidden
from mlpot.config import ConfigError, from_dict
from mlpot.data import collate
from mlpot.descriptors import SymmetryFunctionSpec
from mlpot.models import NetworkConfig, Potential
from mlpot.models.blocks import PlainBlock, ResidualBlock
from mlpot.models.mlp import block_survival
from mlpot.testing import assert_gradient_matches_fd
from mlpot.training.stack import ModelStack

SPEC = {
    "elements": ["H", "O"], "cutoff": 4.0, "cutoff_function": "poly2",
    "radial": [{"grid": {"count": 4, "mode": "shift", "r_lower": 0.8}}],
    "angular": [{"kind": "G4", "eta": 0.1, "zetas": [1, 4], "lambdas": [-1, 1]}],
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_model(network: NetworkConfig, seed: int = 0) -> Potential:
    from ase.calculators.singlepoint import SinglePointCalculator

    torch.manual_seed(seed)
    model = Potential(SymmetryFunctionSpec.from_dict(SPEC), network).double()
    structures = [water_box(seed=s) for s in range(3)]
    for k, a in enumerate(structures):
        a.calc = SinglePointCalculator(a, energy=-10.0 * len(a) + k,
                                       forces=np.random.default_rng(k).normal(size=(len(a), 3)))
    model.fit_to_data([collate(structures, cutoff=model.cutoff)])
    return model.eval()


def small_batch(n: int = 4, atoms: int = 12):
    return collate([water_box(seed=10 + s)[:atoms] for s in range(n)])


# ---------------------------------------------------------------------------- stem
def test_stem_network_has_no_projection_and_its_parameter_count():
    stem = NetworkConfig(depth=3, width=12, block="residual", stem=True)
    model = make_model(stem)
    blocks = model.networks.network("O").blocks
    assert type(blocks[0]) is PlainBlock
    assert all(type(b) is ResidualBlock and b.project is None for b in blocks[1:])
    assert not any("project" in k for k in model.state_dict())
    n_features = model.networks.n_features
    assert model.n_parameters() == count_parameters(n_features, stem)
    # Without a stem the first block carries a d_in × width projection on top.
    plain_first = NetworkConfig(depth=3, width=12, block="residual")
    assert count_parameters(n_features, plain_first) - count_parameters(n_features, stem) == sum(n_features) * 12
    assert count_parameters(n_features, plain_first) == make_model(plain_first).n_parameters()


def test_stem_network_forces_are_the_fd_gradient():
    model = make_model(NetworkConfig(depth=3, width=10, block="residual", stem=True, activation="silu"))
    batch = collate([water_box(seed=1)[:12]]).with_neighbours(model.cutoff + 0.5)

    def energy(pos):
        return model(replace(batch, positions=pos), forces=False)["energy"].sum()

    assert_gradient_matches_fd(energy, batch.positions, step=1e-5, rtol=1e-7)


def test_stem_config_checks_and_yaml_key():
    with pytest.raises(ValueError, match="model.stem .*needs block: residual"):
        NetworkConfig(block="plain", stem=True)
    with pytest.raises(ValueError, match="model.stem needs equal hidden widths"):
        NetworkConfig(hidden=(16, 16, 8), block="residual", stem=True)
    cfg = from_dict(NetworkConfig, {"depth": 2, "width": 8, "block": "residual", "stem": True}, "model")
    assert cfg.stem
    with pytest.raises(ConfigError, match=r"^model.stem .*block: plain"):
        from_dict(NetworkConfig, {"stem": True}, "model")


def test_n2p2_layers_refuse_a_stem_network():
    model = make_model(NetworkConfig(depth=2, width=8, block="residual", stem=True))
    with pytest.raises(ValueError, match="hidden block 1 is a ResidualBlock, not a plain block"):
        model.networks.network("H").linear_layers()


def test_stem_model_file_round_trip_and_files_without_the_key(tmp_path):
    model = make_model(NetworkConfig(depth=3, width=8, block="residual", stem=True))
    path = tmp_path / "stem.pt"
    mlpot.save(model, path)
    loaded = mlpot.load(path)
    assert loaded.config == model.config and loaded.config.stem
    batch = small_batch(2)
    assert torch.equal(model(batch)["forces"], loaded(batch)["forces"])
    # A file written before the option (no "stem" key, projection weights) still loads.
    old = make_model(NetworkConfig(depth=3, width=8, block="residual"))
    mlpot.save(old, path)
    payload = torch.load(path, weights_only=True)
    del payload["network"]["stem"]
    assert any("project" in k for k in payload["state_dict"])
    torch.save(payload, path)
    loaded = mlpot.load(path)
    assert not loaded.config.stem
    assert torch.equal(old(batch)["energy"], loaded(batch)["energy"])


def test_matched_widths_of_a_stem_network_stay_equal():
    base = NetworkConfig(block="residual", stem=True)
    n_features = [40, 40]
    target = count_parameters(n_features, NetworkConfig(depth=2, width=64))
    hidden, n = matched_hidden(n_features, 4, target, base, tolerance=0.05)
    assert len(set(hidden)) == 1 and len(hidden) == 4
    assert n == count_parameters(n_features, replace(base, hidden=hidden))
    assert abs(n - target) <= 0.05 * target


# ---------------------------------------------------------------------------- stochastic depth
SD = NetworkConfig(depth=4, width=8, block="residual", survival=0.3)


def _fixed_mask(model, mask: torch.Tensor, monkeypatch) -> None:
    """Make ``model`` draw ``mask`` (B, n_blocks) instead of random numbers."""
    monkeypatch.setattr(model, "draw_depth_mask", lambda n, device, dtype: mask.to(device, dtype))


def _combination_energies(model, batch, monkeypatch) -> dict[tuple, torch.Tensor]:
    """Training-mode energies (B,) with every structure dropping the same blocks, for every
    subset of blocks."""
    n_blocks = len(block_survival(model.config))
    out = {}
    with monkeypatch.context() as m:
        for combo in itertools.product((0.0, 1.0), repeat=n_blocks):
            _fixed_mask(model, torch.tensor(combo).expand(batch.n_systems, n_blocks), m)
            out[combo] = model(batch, forces=False)["energy"].detach()
    return out


def test_all_atoms_of_a_structure_drop_the_same_blocks(monkeypatch):
    model = make_model(SD).train()
    batch = small_batch(4)
    combos = _combination_energies(model, batch, monkeypatch)
    seen = set()
    for seed in range(6):
        torch.manual_seed(seed)
        energy = model(batch, forces=False)["energy"].detach()
        for b in range(batch.n_systems):
            # Each structure's energy is that of one truncated network for all its atoms
            # (a per-atom draw would mix truncations and match none of them).
            matches = [c for c, e in combos.items() if abs(float(e[b] - energy[b])) < 1e-9]
            assert matches, f"structure {b} (seed {seed}) matches no per-structure choice of blocks"
            seen.add(matches[0])
    assert len(seen) > 2  # the draws differ between structures and steps


def test_cached_descriptor_path_draws_the_same_per_structure_mask():
    model = make_model(SD).train()
    batch = small_batch(3).with_neighbours(model.cutoff)
    raw, jac = model.descriptor.jacobian(batch.positions, model.descriptor.species(batch.numbers),
                                         batch.cell, batch.system_idx, batch.edge_index, batch.edge_shift)
    torch.manual_seed(3)
    direct = model(batch, forces=True)
    torch.manual_seed(2)
    other = model(batch, forces=False)["energy"]
    torch.manual_seed(3)
    cached = model.forward_from_descriptors(batch, raw, jac, forces=True)
    torch.testing.assert_close(cached["energy"], direct["energy"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cached["forces"], direct["forces"], rtol=1e-9, atol=1e-10)
    assert not torch.equal(other, direct["energy"])  # the draws matter: the check is not vacuous


def test_eval_is_the_deterministic_network_and_draws_nothing():
    batch = small_batch(3)
    sd, det = make_model(SD, seed=4), make_model(replace(SD, survival=1.0), seed=4)
    state = torch.get_rng_state()
    a, b = sd.eval()(batch, stress=True), det.eval()(batch, stress=True)
    assert torch.equal(torch.get_rng_state(), state)
    for key in ("energy", "forces", "stress"):
        assert torch.equal(a[key], b[key])
    e_eval = det(batch, forces=False)["energy"]
    det.train()  # survival 1: identity in training too, without random numbers
    e_train = det(batch, forces=False)["energy"]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(e_train, e_eval)
    assert sd.draw_depth_mask(3, torch.device("cpu"), torch.float64) is None


def test_training_forces_are_the_fd_gradient_of_the_drawn_energy():
    model = make_model(replace(SD, activation="silu")).train()
    batch = small_batch(2).with_neighbours(model.cutoff + 0.5)  # skin covers FD steps

    def energy(pos):
        torch.manual_seed(11)  # the same draw at every displacement
        return model(replace(batch, positions=pos), forces=False)["energy"].sum()

    assert_gradient_matches_fd(energy, batch.positions, step=1e-5, rtol=1e-7)
    torch.manual_seed(11)
    forces = model(batch, create_graph=False)["forces"]
    pos = batch.positions.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(energy(pos), pos)
    torch.testing.assert_close(forces, -g, rtol=1e-12, atol=1e-12)


def _stack_and_members(config: NetworkConfig):
    members = [make_model(config, seed=s).train() for s in (0, 1)]
    return ModelStack(members).train(), members


def test_model_stack_applies_each_structures_mask_like_a_lone_model(monkeypatch):
    stack, members = _stack_and_members(SD)
    batch = small_batch(4)
    owner = torch.tensor([0, 0, 1, 1])
    mask = torch.tensor([[1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 1]], dtype=torch.float64)
    _fixed_mask(stack, mask, monkeypatch)
    with stack.assign(owner[batch.system_idx]):
        stacked = stack(batch)
    for m, model in enumerate(members):
        rows = (owner == m).nonzero().squeeze(1).tolist()
        part = collate([water_box(seed=10 + s)[:12] for s in rows])
        _fixed_mask(model, mask[rows], monkeypatch)
        lone = model(part)
        torch.testing.assert_close(stacked["energy"][rows], lone["energy"], rtol=1e-12, atol=1e-10)
        atoms = (owner[batch.system_idx] == m).nonzero().squeeze(1)
        torch.testing.assert_close(stacked["forces"][atoms], lone["forces"], rtol=1e-10, atol=1e-10)


def test_model_stack_with_stochastic_depth_takes_training_steps():
    stack, _ = _stack_and_members(replace(SD, stem=True))
    batch = small_batch(4)
    owner = torch.tensor([0, 1, 0, 1]).sort().values
    optimiser = torch.optim.Adam(stack.parameters(), lr=1e-3)
    torch.manual_seed(0)
    for _ in range(3):
        with stack.assign(owner[batch.system_idx]):
            out = stack(batch)
        loss = out["energy"].pow(2).mean() + out["forces"].pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in stack.parameters() if p.grad is not None)
        optimiser.step()

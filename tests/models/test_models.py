"""Atomic networks and the potential: physics (FD forces/stress, invariance, extensivity),
depth variants, stochastic depth, checkpointing and model files."""

import numpy as np
import pytest
import torch
from structures_for_tests import water_box

import mlpot
from mlpot.data import collate
from mlpot.descriptors import SymmetryFunctionSpec
from mlpot.io import ModelFileError
from mlpot.models import INITS, NetworkConfig, Potential
from mlpot.testing import assert_gradient_matches_fd, random_rotation, stress_by_strain_fd

SPEC = {
    "elements": ["H", "O"], "cutoff": 4.0, "cutoff_function": "poly2",
    "radial": [{"grid": {"count": 4, "mode": "shift", "r_lower": 0.8}}],
    "angular": [{"kind": "G4", "eta": 0.1, "zetas": [1, 4], "lambdas": [-1, 1]},
                {"kind": "G5", "eta": 0.3, "zeta": 2, "lambda": 1}],
}


def make_model(network: NetworkConfig | None = None, seed: int = 0, fit: bool = True) -> Potential:
    torch.manual_seed(seed)
    model = Potential(SymmetryFunctionSpec.from_dict(SPEC),
                      network or NetworkConfig(depth=3, width=12, block="residual")).double()
    if fit:  # synthetic labels: only the fitted scaling/reference energies matter here
        from ase.calculators.singlepoint import SinglePointCalculator

        structures = [water_box(seed=s) for s in range(3)]
        for k, a in enumerate(structures):
            a.calc = SinglePointCalculator(a, energy=-10.0 * len(a) + k,
                                           forces=np.random.default_rng(k).normal(size=(len(a), 3)))
        model.fit_to_data([collate(structures, cutoff=model.cutoff)])
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return make_model()


def energy_of(model, atoms):
    return model(collate([atoms]), forces=False)["energy"][0].item()


def test_forces_are_minus_fd_gradient_of_energy(model):
    atoms = water_box(seed=4)[:15]
    batch = collate([atoms]).with_neighbours(model.cutoff + 0.5)  # skin covers FD steps

    def energy(pos):
        from dataclasses import replace

        return model(replace(batch, positions=pos), forces=False)["energy"].sum()

    assert_gradient_matches_fd(energy, batch.positions, step=1e-5, rtol=1e-7)
    forces = model(batch)["forces"]
    pos = batch.positions.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(energy(pos), pos)
    torch.testing.assert_close(forces, -g)


def test_stress_is_fd_strain_derivative_over_volume(model):
    atoms = water_box(seed=5)
    out = model(collate([atoms]), stress=True)
    fd = stress_by_strain_fd(lambda a: energy_of(model, a), atoms, step=1e-6)
    np.testing.assert_allclose(out["stress"][0].detach().numpy(), fd, rtol=1e-6, atol=1e-9)


def test_open_structure_has_nan_stress_and_net_force_zero(model):
    mol = water_box(seed=1)[:9]
    mol.pbc, mol.cell = False, [0, 0, 0]
    out = model(collate([mol]), stress=True)
    assert torch.isnan(out["stress"]).all()
    torch.testing.assert_close(out["forces"].sum(0), torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0)


def test_energy_is_extensive(model):
    atoms = water_box(seed=2)
    e1 = energy_of(model, atoms)
    e8 = energy_of(model, atoms.repeat((2, 2, 2)))
    assert e8 == pytest.approx(8 * e1, rel=1e-10)


def test_rotation_and_permutation(model):
    atoms = water_box(seed=3)
    out = model(collate([atoms]))
    rot = random_rotation(11)
    moved = atoms.copy()
    moved.positions = atoms.positions @ rot.T
    moved.cell = atoms.cell.array @ rot.T
    out_rot = model(collate([moved]))
    torch.testing.assert_close(out_rot["energy"], out["energy"], rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(out_rot["forces"], out["forces"] @ torch.as_tensor(rot).T, rtol=1e-9, atol=1e-10)
    perm = np.random.default_rng(0).permutation(len(atoms))
    out_perm = model(collate([atoms[perm]]))
    torch.testing.assert_close(out_perm["energy"], out["energy"], rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(out_perm["forces"], out["forces"][perm], rtol=1e-9, atol=1e-10)


def test_batch_predictions_equal_single_structure_predictions(model):
    open_molecule = water_box(seed=9)[:6]
    open_molecule.pbc, open_molecule.cell = False, [0, 0, 0]
    structures = [water_box(seed=s) for s in range(3)] + [open_molecule]
    batched = model(collate(structures), stress=False)
    for k, atoms in enumerate(structures):
        single = model(collate([atoms]))
        torch.testing.assert_close(batched["energy"][k], single["energy"][0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("block", ["plain", "residual"])
@pytest.mark.parametrize("depth", [1, 2, 4, 8, 16])
def test_every_depth_builds_and_trains_one_step(block, depth):
    model = make_model(NetworkConfig(depth=depth, width=8, block=block, activation="silu")).train()
    batch = collate([water_box(seed=0)])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    out = model(batch)
    loss = out["energy"].pow(2).mean() + out["forces"].pow(2).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert len(model.networks.network("H").blocks) == depth


@pytest.mark.parametrize("init", sorted(INITS))
@pytest.mark.parametrize("activation", ["tanh", "shifted_softplus", "silu", "celu", "gelu"])
def test_every_init_and_activation_gives_finite_forces(init, activation):
    model = make_model(NetworkConfig(depth=3, width=8, init=init, activation=activation), fit=False)
    out = model(collate([water_box(seed=0)]))
    assert torch.isfinite(out["energy"]).all() and torch.isfinite(out["forces"]).all()


def test_zero_init_residual_blocks_start_as_identity():
    model = make_model(NetworkConfig(hidden=(12, 12, 12), block="residual", zero_init_residual=True), fit=False)
    net = model.networks.network("H")
    x = torch.randn(5, 12, dtype=torch.float64)
    for block in list(net.blocks)[1:]:  # equal widths: identity skip
        torch.testing.assert_close(block(x), x)


def test_linear_layers_are_the_plain_network_in_evaluation_order():
    model = make_model(NetworkConfig(hidden=(6, 5), layer_activations=("tanh", "silu")), fit=False)
    net = model.networks.network("O")
    layers = net.linear_layers()
    d_in = model.networks.n_features[model.elements.index("O")]
    assert [tuple(layer.weight.shape) for layer in layers] == [(6, d_in), (5, 6), (1, 5)]
    x = torch.randn(7, d_in, dtype=torch.float64)
    h = torch.nn.functional.silu(layers[1](torch.tanh(layers[0](x))))
    assert torch.equal(layers[2](h).squeeze(-1), net(x))
    with pytest.raises(ValueError, match="ResidualBlock, not a plain block"):
        make_model(fit=False).networks.network("H").linear_layers()
    with pytest.raises(KeyError, match="'Cu'"):
        model.networks.network("Cu")


def test_stochastic_depth_is_random_in_training_and_exact_in_eval():
    model = make_model(NetworkConfig(depth=6, width=12, block="residual", survival=0.5))
    batch = collate([water_box(seed=0)])
    model.eval()
    e1, e2 = model(batch, forces=False)["energy"], model(batch, forces=False)["energy"]
    assert torch.equal(e1, e2)
    model.train()
    torch.manual_seed(0)
    samples = torch.stack([model(batch, forces=False)["energy"] for _ in range(4)])
    assert samples.std() > 0
    survival = [b.drop.survival for b in model.networks.network("H").blocks]
    assert survival == pytest.approx([1 - k / 6 * 0.5 for k in range(1, 7)])


def test_gradient_checkpointing_gives_identical_force_gradients():
    grads = []
    for checkpointing in (False, True):
        model = make_model(NetworkConfig(depth=4, width=8, block="residual", checkpointing=checkpointing)).train()
        out = model(collate([water_box(seed=0)]))
        (out["forces"].pow(2).sum()).backward()  # double backward through the blocks
        # The readout bias does not move forces: its gradient is None; compare the rest.
        grads.append(torch.cat([p.grad.flatten() for p in model.networks.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-14)


def test_save_load_round_trip(tmp_path, model):
    path = tmp_path / "model.pt"
    mlpot.save(model, path, metadata={"note": "test"})
    loaded = mlpot.load(path)
    batch = collate([water_box(seed=6)])
    a, b = model(batch, stress=True), loaded(batch, stress=True)
    for key in ("energy", "forces", "stress"):
        assert torch.equal(a[key], b[key])
    assert loaded.metadata == {"note": "test"}
    assert not loaded.training


def test_a_tanh_model_file_loads_as_tanh_under_the_silu_default(tmp_path):
    """The default activation is SiLU; a file written with tanh keeps tanh (the file stores it)."""
    assert NetworkConfig().activation == "silu"
    tanh = make_model(NetworkConfig(depth=2, width=8, activation="tanh"))
    mlpot.save(tanh, tmp_path / "tanh.pt")
    loaded = mlpot.load(tmp_path / "tanh.pt")
    assert loaded.config.activation == "tanh"
    batch = collate([water_box(seed=6)])
    assert torch.equal(tanh(batch)["energy"], loaded(batch)["energy"])


def test_model_file_errors(tmp_path, model):
    with pytest.raises(FileNotFoundError, match="no such model file"):
        mlpot.load(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00not a model" * 10)
    with pytest.raises(ModelFileError, match="not a readable mlpot model file"):
        mlpot.load(corrupt)
    newer = tmp_path / "newer.pt"
    mlpot.save(model, newer)
    payload = torch.load(newer, weights_only=True)
    payload["version"] = 99
    torch.save(payload, newer)
    with pytest.raises(ModelFileError, match="version 99 is newer"):
        mlpot.load(newer)


def test_bad_network_config():
    with pytest.raises(ValueError, match="model.block"):
        NetworkConfig(block="dense")
    with pytest.raises(ValueError, match="stochastic depth"):
        NetworkConfig(survival=0.8, block="plain")
    with pytest.raises(ValueError, match="model.init"):
        NetworkConfig(init="glorot")
    with pytest.raises(ValueError, match="model.hidden"):
        NetworkConfig(hidden=(16, 0))


def test_unknown_element_in_structure_is_named(model):
    from ase.build import bulk

    with pytest.raises(ValueError, match=r"\['Cu'\] not known"):
        model(collate([bulk("Cu", "fcc", 3.6)]))


def test_stress_training_on_a_mixed_open_and_periodic_batch_has_finite_gradients(model):
    open_molecule = water_box(seed=9)[:6]
    open_molecule.pbc, open_molecule.cell = False, [0, 0, 0]
    batch = collate([water_box(seed=1), open_molecule])
    trainable = make_model(NetworkConfig(depth=2, width=8)).train()
    out = trainable(batch, stress=True, create_graph=True)
    assert torch.isnan(out["stress"][1]).all() and torch.isfinite(out["stress"][0]).all()
    loss = out["stress"][0].pow(2).sum() + out["forces"].pow(2).sum()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in trainable.parameters() if p.grad is not None)


def test_chunked_evaluation_equals_one_graph():
    """Centres evaluated in groups (inference) give the energies, forces, stress and
    descriptors of one graph; a group boundary falls inside each structure."""
    model = make_model()
    model.descriptor.kernel = "torch"  # the compiled kernel evaluates one group
    structures = [water_box(seed=4), water_box(seed=5)[:10]]
    for s in structures[1:]:
        s.pbc = False
    batch = collate(structures, cutoff=model.cutoff, labels=False)
    from mlpot.neighbours import edge_vectors

    vec = edge_vectors(batch.positions, batch.cell, batch.system_idx, batch.edge_index, batch.edge_shift)
    starts = model._chunk_starts(batch, 300, vec)
    assert len(starts) > 4  # several groups
    whole = model(batch, forces=True, stress=True, descriptors=True, chunk_size=None)
    grouped = model(batch, forces=True, stress=True, descriptors=True, chunk_size=300)
    for key in ("energy", "atomic_energies", "forces", "descriptors"):
        torch.testing.assert_close(grouped[key], whole[key], rtol=1e-12, atol=1e-12)
    periodic = batch.pbc.all(dim=1)
    torch.testing.assert_close(grouped["stress"][periodic], whole["stress"][periodic], rtol=1e-12, atol=1e-14)
    assert torch.isnan(grouped["stress"][~periodic]).all()

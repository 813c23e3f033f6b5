"""Training parts: masked loss, pre-collated batches, checkpoints, schedule and EMA."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from mlpot.data import collate, labelled_atoms
from mlpot.descriptors import SymmetryFunctionSpec
from mlpot.models import NetworkConfig, Potential
from mlpot.training import CheckpointError, ErrorAccumulator, load_checkpoint, save_checkpoint
from mlpot.training.checkpoint import rng_state, set_rng_state
from mlpot.training.config import LossConfig, ScheduleConfig
from mlpot.training.data import BatchStore, concatenate, select
from mlpot.training.loss import loss_from_metrics, loss_terms
from mlpot.training.optim import EMA, LRSchedule


def labelled(atoms, rng, energy=True, forces=True, stress=True):
    n = len(atoms)
    periodic = bool(atoms.pbc.all())
    return labelled_atoms(
        atoms.numbers, atoms.positions, atoms.cell.array if atoms.pbc.any() else None, atoms.pbc,
        energy=float(rng.normal(-3 * n, 1)) if energy else None,
        forces=rng.normal(0, 1, (n, 3)) if forces else None,
        stress=rng.normal(0, 0.01, 6) if stress and periodic else None)


@pytest.fixture(scope="module")
def mixed():
    """Periodic, small-cell and open structures with some labels missing."""
    rng = np.random.default_rng(0)
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    cu.rattle(0.05, seed=1)
    cuau = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((1, 1, 2))
    cuau.numbers[::3] = 79
    cuau.rattle(0.05, seed=2)
    tiny = bulk("Au", "fcc", a=4.08)  # 1 atom: many periodic images
    cluster = molecule("H2O")
    cluster.numbers[:] = [29, 79, 29]
    cluster.positions *= 2.0
    return [labelled(cu, rng), labelled(cuau, rng, energy=False), labelled(tiny, rng, forces=False),
            labelled(cluster, rng, stress=False), labelled(cu.copy(), rng, stress=False)]


def fake_predictions(batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    energy = torch.randn(batch.n_systems, generator=g, dtype=torch.float64, requires_grad=True)
    forces = torch.randn(batch.positions.shape, generator=g, dtype=torch.float64, requires_grad=True)
    stress = torch.randn(batch.n_systems, 3, 3, generator=g, dtype=torch.float64) * 0.01
    stress = torch.where(batch.pbc.all(1).view(-1, 1, 1), stress, torch.nan).requires_grad_(True)
    return {"energy": energy, "forces": forces, "stress": stress}


# ---------------------------------------------------------------------- loss
def test_loss_means_over_labelled_items_only(mixed):
    batch = collate(mixed)
    pred = fake_predictions(batch)
    t = batch.targets
    weights = LossConfig(energy_weight=1.0, forces_weight=10.0, stress_weight=100.0)
    terms = loss_terms(pred, batch, weights)
    has_e = t.has_energy.numpy()
    e = ((pred["energy"] - t.energy) / batch.n_atoms).detach().numpy()[has_e]
    atom_f = t.has_forces[batch.system_idx].numpy()
    f = (pred["forces"] - t.forces).detach().numpy()[atom_f]
    has_s = (t.has_stress & batch.pbc.all(1)).numpy()
    s = (pred["stress"] - t.stress).detach().numpy()[has_s]
    assert not has_e.all() and not atom_f.all() and not has_s.all()  # the masks matter
    np.testing.assert_allclose(terms["energy"].item(), np.mean(e**2))
    np.testing.assert_allclose(terms["forces"].item(), np.mean(f**2))
    np.testing.assert_allclose(terms["stress"].item(), np.mean(s**2))
    np.testing.assert_allclose(terms["total"].item(), np.mean(e**2) + 10 * np.mean(f**2) + 100 * np.mean(s**2))
    terms["total"].backward()
    for name in ("energy", "forces", "stress"):
        grad = pred[name].grad
        assert torch.isfinite(grad).all(), name
    # Unlabelled items get exactly zero gradient.
    assert (pred["energy"].grad[~t.has_energy] == 0).all()
    assert (pred["forces"].grad[~t.has_forces[batch.system_idx]] == 0).all()


def test_loss_without_any_label_is_zero(mixed):
    rng = np.random.default_rng(1)
    batch = collate([labelled(mixed[0], rng, energy=False, forces=False, stress=False)])
    terms = loss_terms(fake_predictions(batch), batch, LossConfig(stress_weight=1.0))
    assert all(v.item() == 0.0 for v in terms.values())


def test_zero_weight_terms_are_left_out(mixed):
    batch = collate(mixed)
    pred = fake_predictions(batch)
    del pred["forces"]
    terms = loss_terms(pred, batch, LossConfig(energy_weight=1.0, forces_weight=0.0))
    assert set(terms) == {"energy", "total"}


def test_dataset_loss_matches_batch_loss(mixed):
    """One batch holding the whole set: the metric-based loss equals the training loss."""
    batch = collate(mixed)
    pred = {k: v.detach() for k, v in fake_predictions(batch, seed=3).items()}
    weights = LossConfig(energy_weight=2.0, forces_weight=5.0, stress_weight=50.0)
    acc = ErrorAccumulator()
    acc.update(pred, batch)
    np.testing.assert_allclose(loss_from_metrics(acc.result(), weights),
                               loss_terms(pred, batch, weights)["total"].item(), rtol=1e-12)


# ---------------------------------------------------------------------- pre-collated batches
def assert_batches_equal(a, b):
    for name in ("positions", "numbers", "system_idx", "cell", "pbc", "n_atoms", "edge_index", "edge_shift"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.cutoff == b.cutoff
    for name in ("energy", "forces", "stress", "has_energy", "has_forces", "has_stress"):
        x, y = getattr(a.targets, name), getattr(b.targets, name)
        assert torch.equal(torch.nan_to_num(x, 1e300), torch.nan_to_num(y, 1e300)), name


@pytest.mark.parametrize("indices", [[0, 1, 2, 3, 4], [3], [4, 0, 2], [1, 1, 3], [2, 4]])
def test_select_equals_collate_of_the_subset(mixed, indices):
    full = collate(mixed, cutoff=4.0)
    assert_batches_equal(select(full, indices), collate([mixed[k] for k in indices], cutoff=4.0))


def test_concatenate_equals_one_collate(mixed):
    parts = [collate(mixed[:2], cutoff=4.0), collate(mixed[2:3], cutoff=4.0), collate(mixed[3:], cutoff=4.0)]
    assert_batches_equal(concatenate(parts), collate(mixed, cutoff=4.0))


def test_store_builds_pairs_once(mixed, monkeypatch):
    store = BatchStore(mixed, cutoff=4.0, chunk=2)
    assert len(store) == len(mixed)

    def no_more_pairs(*args, **kwargs):
        raise AssertionError("neighbour list rebuilt")

    monkeypatch.setattr("mlpot.neighbours.neighbour_pairs", no_more_pairs)
    monkeypatch.setattr("mlpot.neighbours.pairs.structure_pairs", no_more_pairs)
    batches = list(store.batches(torch.tensor([4, 2, 0, 1, 3]), batch_size=2))
    assert [b.n_systems for b in batches] == [2, 2, 1]
    monkeypatch.undo()
    assert_batches_equal(batches[0], collate([mixed[4], mixed[2]], cutoff=4.0))


def test_stored_batch_gives_the_same_energies_and_forces(mixed):
    spec = SymmetryFunctionSpec.default(["Cu", "Au"], cutoff=4.0)
    torch.manual_seed(0)
    model = Potential(spec, NetworkConfig(depth=1, width=4)).double()
    store = BatchStore(mixed, cutoff=model.cutoff)
    a = model(store.batch([3, 1]), forces=True)
    b = model(collate([mixed[3], mixed[1]]), forces=True)
    torch.testing.assert_close(a["energy"], b["energy"], rtol=0, atol=1e-12)
    torch.testing.assert_close(a["forces"], b["forces"], rtol=0, atol=1e-12)


# ---------------------------------------------------------------------- checkpoints
def small_state():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2).double()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net(torch.randn(4, 3, dtype=torch.float64)).sum().backward()
    opt.step()
    return net, opt, {
        "model": net.state_dict(), "optimizer": opt.state_dict(), "schedule": {"step_count": 3},
        "ema": None, "epoch": 2, "best_val_loss": 0.5, "bad_epochs": 1,
        "history": [{"epoch": 1, "val_loss": 0.7, "val_stress_rmse_gpa": None}],
        "config": {"data": {"train": "x"}}, "rng": rng_state(),
    }


def test_checkpoint_round_trip(tmp_path):
    net, opt, state = small_state()
    path = tmp_path / "last.pt"
    save_checkpoint(path, state)
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically, no leftovers
    loaded = load_checkpoint(path)
    for k, v in net.state_dict().items():
        assert torch.equal(loaded["model"][k], v)
    net2 = torch.nn.Linear(3, 2).double()
    opt2 = torch.optim.Adam(net2.parameters(), lr=1e-2)
    opt2.load_state_dict(loaded["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert loaded["history"] == state["history"] and loaded["epoch"] == 2


def test_rng_state_restores_every_generator():
    state = rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(state)
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert first[2] == second[2]


@pytest.mark.parametrize("content", [b"not a checkpoint at all", b"PK\x03\x04truncated zip"])
def test_corrupt_checkpoint_names_the_file(tmp_path, content):
    path = tmp_path / "last.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="last.pt"):
        load_checkpoint(path)


def test_truncated_and_foreign_checkpoints(tmp_path):
    _, _, state = small_state()
    path = tmp_path / "last.pt"
    save_checkpoint(path, state)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not an mlpot training checkpoint"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


# ---------------------------------------------------------------------- schedule and EMA
def lrs(config, epochs=6, steps=4, val_losses=None):
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = LRSchedule(opt, config, base_lr=1.0, epochs=epochs, steps_per_epoch=steps)
    out = []
    for e in range(epochs):
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            sched.step()
        sched.epoch_end(val_losses[e] if val_losses else 1.0)
    return out, sched


def test_warmup_is_linear_per_step():
    out, _ = lrs(ScheduleConfig(warmup_epochs=2), epochs=3)
    np.testing.assert_allclose(out[:8], np.arange(1, 9) / 8)
    assert out[8:] == [1.0] * 4


def test_plateau_cuts_after_patience():
    out, _ = lrs(ScheduleConfig(name="plateau", patience=1, factor=0.5), epochs=6, steps=1,
                 val_losses=[1.0, 0.5, 0.6, 0.6, 0.6, 0.6])
    # epoch 3 and 4 without improvement (> patience 1) → halved from epoch 5 on.
    assert out == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5]


def test_cosine_and_exponential():
    out, _ = lrs(ScheduleConfig(name="cosine", min_lr=0.1), epochs=5, steps=1)
    assert out[0] == 1.0 and out[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 4 / 5)))
    assert all(a > b for a, b in zip(out, out[1:]))
    out, _ = lrs(ScheduleConfig(name="exponential", gamma=0.5), epochs=3, steps=1)
    assert out == [1.0, 0.5, 0.25]


def test_schedule_state_round_trip():
    _, sched = lrs(ScheduleConfig(name="plateau", patience=0, warmup_epochs=1), val_losses=[3, 2, 2, 2, 1, 1])
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1.0)
    other = LRSchedule(opt, ScheduleConfig(name="plateau", patience=0, warmup_epochs=1), 1.0, 6, 4)
    other.load_state_dict(sched.state_dict())
    assert other.lr == sched.lr and opt.param_groups[0]["lr"] == sched.lr < 1.0


def test_ema_average_and_swap():
    net = torch.nn.Linear(2, 1).double()
    ema = EMA(net, decay=0.5)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    ema.update(net)  # first update: d = min(0.5, 1/10) = 0.1
    for k, v in ema.shadow.items():
        torch.testing.assert_close(v, start[k] + 0.9)
    trained = {k: v.clone() for k, v in net.state_dict().items()}
    ema.swap(net)
    torch.testing.assert_close(net.weight, start["weight"] + 0.9)
    ema.swap(net)
    for k, v in net.state_dict().items():
        assert torch.equal(v, trained[k])


def test_epoch_line_shows_training_errors_without_a_validation_set():
    from mlpot.training.report import epoch_summary
    row = {"epoch": 3, "lr": 1e-3, "wall_s": 0.5, "train_loss": 2.0, "val_loss": None,
           "train_energy_rmse_mev_per_atom": 4.25, "train_force_rmse_mev_per_a": 120.0,
           "val_energy_rmse_mev_per_atom": None, "val_force_rmse_mev_per_a": None}
    line = epoch_summary(row, 10, improved=True)
    assert "train RMSE E 4.25 meV/atom, F 120.0 meV/Å (no validation set)" in line
    assert "val RMSE" not in line and " val " not in line and line.endswith("*")
    row.update(val_loss=1.5, val_energy_rmse_mev_per_atom=5.5, val_force_rmse_mev_per_a=130.0)
    line = epoch_summary(row, 10, improved=False)
    assert "val 1.5000e+00" in line and "val RMSE E 5.50 meV/atom, F 130.0 meV/Å" in line
    assert "train RMSE" not in line

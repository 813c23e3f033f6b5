"""loss.energy_size_exponent: the energy term against a hand-written reference (alone and with
group weights), its equivalences (q = 0 is the default bit for bit, q = 2 is the total-energy
loss, one size makes q irrelevant), the stacked members and the data-parallel shards against
the whole-batch loss, the config checks, and short runs (lone and many-model) that train on
it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.calculators.emt import EMT
from test_group_weights import check_member_losses, hand_built, predictions, select, weighted, with_loss
from test_many import assert_same_run, rows
from test_training_run import config, emt_structures

from mlpot.data import collate
from mlpot.training import TrainConfig, train
from mlpot.training.config import ConfigError, LossConfig
from mlpot.training.distributed import _label_counts
from mlpot.training.loss import loss_terms
from mlpot.training.many import train_many

pytestmark = pytest.mark.usefixtures("one_thread")


def sized(q: float, **extra) -> LossConfig:
    return LossConfig(energy_weight=1.0, forces_weight=10.0, stress_weight=100.0, energy_size_exponent=q, **extra)


def hand_energy_term(raw, pred_energy, q, w=None):
    """Σ w·n^q·(ΔE/n)² / Σ w·n^q over the structures, written out."""
    w = [1.0] * len(raw) if w is None else w
    num = sum(wb * r["n"] ** q * ((e - r["energy"]) / r["n"]) ** 2 for r, e, wb in zip(raw, pred_energy, w))
    return num / sum(wb * r["n"] ** q for r, wb in zip(raw, w))


@pytest.mark.parametrize("q", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("w", [None, [2.0, 0.5, 1.5, 3.0]])
def test_energy_term_equals_the_hand_reference(q, w):
    structures, raw = hand_built()  # 2, 3, 2 and 1 atoms
    batch = collate(structures) if w is None else weighted(collate(structures), w)
    pred_np, pred = predictions(raw)
    terms = loss_terms(pred, batch, sized(q))
    assert terms["energy"].item() == pytest.approx(hand_energy_term(raw, pred_np["energy"], q, w), rel=1e-12)
    # Only the energy term changes: forces and stress are those of q = 0.
    plain = loss_terms(pred, batch, sized(0.0))
    assert terms["forces"].item() == pytest.approx(plain["forces"].item(), rel=1e-14)
    assert terms["stress"].item() == pytest.approx(plain["stress"].item(), rel=1e-14)
    assert terms["energy"].item() != pytest.approx(plain["energy"].item(), rel=1e-6)


def test_q2_is_the_total_energy_loss_and_q0_the_default():
    structures, raw = hand_built()
    batch = collate(structures)
    pred_np, pred = predictions(raw)
    total = sum((e - r["energy"]) ** 2 for r, e in zip(raw, pred_np["energy"])) / sum(r["n"] ** 2 for r in raw)
    assert loss_terms(pred, batch, sized(2.0))["energy"].item() == pytest.approx(total, rel=1e-12)
    default = LossConfig(energy_weight=1.0, forces_weight=10.0, stress_weight=100.0)
    for key, value in loss_terms(pred, batch, default).items():
        assert torch.equal(value, loss_terms(pred, batch, sized(0.0))[key])


def test_one_size_makes_the_exponent_irrelevant():
    structures = emt_structures(5, seed=2)  # all of 4 atoms
    batch = collate(structures, cutoff=3.0)
    energy = batch.targets.energy + torch.linspace(-0.2, 0.3, 5, dtype=torch.float64)
    pred = {"energy": energy, "forces": batch.targets.forces, "stress": batch.targets.stress}
    values = [loss_terms(pred, batch, sized(q))["energy"].item() for q in (0.0, 1.0, 2.0)]
    assert values == pytest.approx([values[0]] * 3, rel=1e-13) and values[0] > 0


@pytest.mark.parametrize("w", [None, [2.0, 0.5, 1.5, 3.0]])
def test_members_equal_each_lone_loss(w):
    check_member_losses(sized(1.0), w)


def test_shard_counts_add_up_to_the_global_loss():
    """The data-parallel rescaling (local weighted count / global weighted count) with the
    energy rows weighted by size, with and without group weights."""
    structures, raw = hand_built()
    _, pred = predictions(raw)
    pred = {k: v.detach() for k, v in pred.items()}
    loss, q = sized(1.5), 1.5
    for whole in (collate(structures, cutoff=3.0), weighted(collate(structures, cutoff=3.0), [0.2, 0.5, 1.5, 0.3])):
        expected = loss_terms(pred, whole, loss)["total"]
        shards = [torch.tensor([0, 2]), torch.tensor([1, 3])]
        batches = [select(whole, s) for s in shards]
        counts = sum(_label_counts(b, q) for b in batches)
        total = 0.0
        for s, b in zip(shards, batches):
            atoms = torch.isin(whole.system_idx, s)
            terms = loss_terms({"energy": pred["energy"][s], "forces": pred["forces"][atoms],
                                "stress": pred["stress"][s]}, b, loss)
            local = _label_counts(b, q)
            total = total + sum(cw * terms[k] * local[i] / counts[i] for i, (k, cw) in
                                enumerate((("energy", 1.0), ("forces", 10.0), ("stress", 100.0))))
        torch.testing.assert_close(total, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("value, message", [
    (-0.5, r"loss\.energy_size_exponent: must be a number in \[0, 2\]"),
    (2.5, r"loss\.energy_size_exponent: must be a number in \[0, 2\]"),
    (float("nan"), r"loss\.energy_size_exponent: must be a number in \[0, 2\]"),
    (True, r"loss\.energy_size_exponent: must be a number in \[0, 2\]"),
    ("1", r"loss\.energy_size_exponent: must be a number in \[0, 2\]"),
])
def test_bad_exponents_are_refused_by_name(value, message):
    with pytest.raises(ConfigError, match=message):
        LossConfig(energy_size_exponent=value)


def test_exponent_without_an_energy_term_is_refused():
    with pytest.raises(ConfigError, match=r"loss\.energy_size_exponent: shapes the energy term, which is not in "
                                          r"the loss \(loss\.energy_weight is 0\)"):
        LossConfig(energy_weight=0.0, forces_weight=1.0, energy_size_exponent=1.0)


def test_annealed_weights_keep_the_exponent():
    loss = LossConfig(energy_weight=1.0, forces_weight=1.0, forces_weight_start=100.0, energy_size_exponent=1.0)
    assert loss.weights_at(0.5).energy_size_exponent == 1.0


# ---------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """EMT cells of 4 atoms and of 8 (doubled along x), so that the exponent matters."""
    import ase.io

    structures = emt_structures(12, seed=5)
    for atoms in structures[::2]:
        doubled = atoms.repeat((2, 1, 1))
        doubled.positions += np.random.default_rng(len(doubled)).normal(0, 0.05, doubled.positions.shape)
        doubled.calc = EMT()
        doubled.get_stress()
        structures.append(doubled)
    folder = tmp_path_factory.mktemp("energy-size")
    ase.io.write(folder / "train.extxyz", structures)
    return folder


def test_many_models_train_the_sized_loss_as_a_lone_run(dataset, tmp_path):
    cfg = with_loss(config(dataset, epochs=2), energy_size_exponent=2.0)
    train_many([cfg], [tmp_path / "many"], progress=False, log=lambda _: None)
    train(cfg, tmp_path / "lone", progress=False, log=lambda _: None)
    assert_same_run(tmp_path / "many", tmp_path / "lone")
    assert TrainConfig.from_yaml(tmp_path / "lone" / "config.yaml") == cfg
    # The exponent reached the loss: the per-structure run trains on another loss from the first step.
    train(with_loss(cfg, energy_size_exponent=0.0), tmp_path / "per-structure", progress=False, log=lambda _: None)
    sized_loss, plain_loss = (float(rows(tmp_path / name / "metrics.csv")[0]["train_loss"])
                              for name in ("lone", "per-structure"))
    assert sized_loss != pytest.approx(plain_loss, rel=1e-4)

"""Per-structure loss weights by group (loss.weight_by, loss.group_weights): the weighted
loss against a numpy reference, its equivalences, the batches that carry the weights, the
run-time checks and short end-to-end runs (lone and many-model)."""

from __future__ import annotations

import json
from dataclasses import replace

import ase.io
import numpy as np
import pytest
import torch
from test_many import assert_same_run, rows
from test_training_run import config, emt_structures

from mlpot.data import collate, labelled_atoms
from mlpot.training import TrainConfig, train
from mlpot.training.config import LossConfig
from mlpot.training.data import BatchStore, concatenate, select
from mlpot.training.distributed import _label_counts
from mlpot.training.loss import loss_from_metrics, loss_terms
from mlpot.training.many import train_many
from mlpot.training.stack_loop import member_loss, term_weights

pytestmark = pytest.mark.usefixtures("one_thread")

WEIGHTS = LossConfig(energy_weight=1.0, forces_weight=10.0, stress_weight=100.0)


def hand_built():
    """Four small structures with their raw labels: periodic with every label, periodic
    without stress, open (no stress possible), periodic without forces."""
    rng = np.random.default_rng(7)
    spec = [(2, True, True, True), (3, True, True, False), (2, False, True, False), (1, True, False, True)]
    structures, raw = [], []
    for n, periodic, forces, stress in spec:
        cell = np.diag([3.0, 3.2, 3.4]) if periodic else None
        positions = rng.uniform(0, 3, (n, 3)) if periodic else np.arange(n * 3, dtype=float).reshape(n, 3) * 0.7
        s = rng.normal(0, 0.01, (3, 3))
        label = {"n": n, "periodic": periodic, "energy": float(rng.normal(-3 * n, 1)),
                 "forces": rng.normal(0, 1, (n, 3)) if forces else None, "stress": (s + s.T) / 2 if stress else None}
        structures.append(labelled_atoms([29] * n, positions, cell, periodic, energy=label["energy"],
                                         forces=label["forces"], stress=label["stress"]))
        raw.append(label)
    return structures, raw


def predictions(raw, seed=0):
    """Random predictions as numpy arrays (NaN stress for the open structure, as the model
    gives) and as leaf tensors that take gradients."""
    rng = np.random.default_rng(seed)
    energy = np.array([r["energy"] + rng.normal(0, 0.3) for r in raw])
    forces = rng.normal(0, 1, (sum(r["n"] for r in raw), 3))
    stress = rng.normal(0, 0.01, (len(raw), 3, 3))
    stress[[not r["periodic"] for r in raw]] = np.nan
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in
               (("energy", energy), ("forces", forces), ("stress", stress))}
    return {"energy": energy, "forces": forces, "stress": stress}, tensors


def weighted(batch, w):
    return replace(batch, targets=replace(batch.targets, weight=torch.tensor(w, dtype=torch.float64)))


def numpy_reference(raw, pred, w):
    """Σ w·err² / Σ w of each term, written out from the raw labels."""
    num, den = {"energy": 0.0, "forces": 0.0, "stress": 0.0}, {"energy": 0.0, "forces": 0.0, "stress": 0.0}
    atom = 0
    for b, (r, wb) in enumerate(zip(raw, w)):
        e = (pred["energy"][b] - r["energy"]) / r["n"]
        num["energy"] += wb * e**2
        den["energy"] += wb
        if r["forces"] is not None:
            f = pred["forces"][atom:atom + r["n"]] - r["forces"]
            num["forces"] += wb * np.sum(f**2)
            den["forces"] += wb * f.size
        if r["stress"] is not None and r["periodic"]:
            s = pred["stress"][b] - r["stress"]
            num["stress"] += wb * np.sum(s**2)
            den["stress"] += wb * 9
        atom += r["n"]
    return {k: num[k] / den[k] for k in num}


# ---------------------------------------------------------------------- the loss
def test_weighted_loss_equals_the_numpy_reference():
    structures, raw = hand_built()
    w = [2.0, 0.5, 1.5, 3.0]
    batch = weighted(collate(structures), w)
    pred_np, pred = predictions(raw)
    terms = loss_terms(pred, batch, WEIGHTS)
    ref = numpy_reference(raw, pred_np, w)
    for key in ("energy", "forces", "stress"):
        np.testing.assert_allclose(terms[key].item(), ref[key], rtol=1e-12, err_msg=key)
    np.testing.assert_allclose(terms["total"].item(), ref["energy"] + 10 * ref["forces"] + 100 * ref["stress"],
                               rtol=1e-12)
    # The weights matter: the unweighted loss of the same batch is another number.
    unweighted = loss_terms(pred, collate(structures), WEIGHTS)["total"].item()
    assert abs(unweighted - terms["total"].item()) > 1e-6 * unweighted


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_weights_of_one_give_the_unweighted_loss(dtype):
    structures, raw = hand_built()
    plain = collate(structures, dtype=dtype)
    ones = replace(plain, targets=replace(plain.targets, weight=torch.ones(len(raw), dtype=dtype)))
    _, pred = predictions(raw)
    pred = {k: v.detach().to(dtype) for k, v in pred.items()}
    a, b = loss_terms(pred, plain, WEIGHTS), loss_terms(pred, ones, WEIGHTS)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # bit for bit: the same elements, summed alike


def test_zero_weight_removes_a_structure():
    structures, raw = hand_built()
    batch = weighted(collate(structures), [2.0, 0.0, 1.5, 3.0])
    _, pred = predictions(raw)
    terms = loss_terms(pred, batch, WEIGHTS)
    terms["total"].backward()
    atoms_of_1 = batch.system_idx == 1
    assert pred["energy"].grad[1] == 0 and (pred["forces"].grad[atoms_of_1] == 0).all()
    assert (pred["stress"].grad[1] == 0).all()
    assert pred["energy"].grad[0] != 0 and (pred["forces"].grad[~atoms_of_1] != 0).any()
    # The same loss as the batch without structure 1, and no NaN from a garbage prediction there.
    rest = select(collate(structures, cutoff=3.0), [0, 2, 3])
    rest = weighted(rest, [2.0, 1.5, 3.0])
    keep = [0, 2, 3]
    sub = {"energy": pred["energy"].detach()[keep], "forces": pred["forces"].detach()[~atoms_of_1],
           "stress": pred["stress"].detach()[keep]}
    torch.testing.assert_close(loss_terms(sub, rest, WEIGHTS)["total"], terms["total"].detach(), rtol=1e-12, atol=0)
    garbage = {k: v.detach().clone() for k, v in pred.items()}
    garbage["energy"][1] = torch.nan
    garbage["forces"][atoms_of_1] = torch.inf
    torch.testing.assert_close(loss_terms(garbage, batch, WEIGHTS)["total"], terms["total"].detach())


def test_fractional_weights_without_labels_give_zero_not_nan():
    structures, raw = hand_built()
    batch = weighted(collate(structures), [0.1, 0.2, 0.0, 0.0])
    _, pred = predictions(raw)
    terms = loss_terms(pred, batch, WEIGHTS)
    assert torch.isfinite(terms["total"])
    # Only structure 0 has a weighted stress: the mean is its own, not divided by max(0.1, 1).
    s = (pred["stress"][0] - batch.targets.stress[0]).detach()
    torch.testing.assert_close(terms["stress"].detach(), (s**2).mean(), rtol=1e-12, atol=0)
    none = weighted(collate(structures), [0.0, 0.0, 1.0, 0.0])  # the open structure: no stress label
    stress = loss_terms(pred, none, WEIGHTS)["stress"]
    assert stress.item() == 0.0
    stress.backward()
    assert torch.isfinite(pred["stress"].grad).all()


def test_member_loss_weights_each_members_structures_like_a_lone_loss():
    check_member_losses(WEIGHTS, [2.0, 0.5, 1.5, 3.0])


def check_member_losses(loss: LossConfig, w: list[float] | None = None) -> None:
    """:func:`member_loss` of a two-member stack over :func:`hand_built` (with structure
    weights ``w``), called with ``loss`` and as the stacked loop calls it (the epoch's term
    weights, the loss's shape apart), equals each member's lone loss."""
    structures, raw = hand_built()
    batch = collate(structures, cutoff=3.0)
    batch = batch if w is None else weighted(batch, w)
    _, pred = predictions(raw)
    pred = {k: v.detach() for k, v in pred.items()}
    member = torch.tensor([1, 0, 1, 0])
    for stacked in (member_loss(pred, batch, loss, member, 2),
                    member_loss(pred, batch, term_weights(loss), member, 2, loss)):
        assert_members_equal_lone_losses(stacked, pred, batch, member, loss)


def assert_members_equal_lone_losses(stacked, pred, batch, member, weights):
    """Each member's terms of ``stacked`` (:func:`member_loss`) equal :func:`loss_terms` of
    that member's structures alone."""
    for m in range(int(member.max()) + 1):
        idx = torch.nonzero(member == m).squeeze(1)
        atoms = torch.isin(batch.system_idx, idx)
        lone = loss_terms({"energy": pred["energy"][idx], "forces": pred["forces"][atoms],
                           "stress": pred["stress"][idx]}, select(batch, idx), weights)
        for key in lone:
            torch.testing.assert_close(stacked[key][m], lone[key], rtol=1e-12, atol=1e-300)


def test_shard_counts_of_weighted_loss_add_up_to_the_global_loss():
    """The distributed rescaling (local weighted count / global weighted count)."""
    structures, raw = hand_built()
    w = [0.2, 0.5, 1.5, 0.3]
    whole = weighted(collate(structures, cutoff=3.0), w)
    _, pred = predictions(raw)
    pred = {k: v.detach() for k, v in pred.items()}
    expected = loss_terms(pred, whole, WEIGHTS)["total"]
    shards = [torch.tensor([0, 2]), torch.tensor([1, 3])]
    batches = [select(whole, s) for s in shards]
    counts = sum(_label_counts(b) for b in batches)
    total = 0.0
    for s, b in zip(shards, batches):
        atoms = torch.isin(whole.system_idx, s)
        terms = loss_terms({"energy": pred["energy"][s], "forces": pred["forces"][atoms],
                            "stress": pred["stress"][s]}, b, WEIGHTS)
        local = _label_counts(b)
        total = total + sum(cw * terms[k] * local[i] / counts[i] for i, (k, cw) in
                            enumerate((("energy", 1.0), ("forces", 10.0), ("stress", 100.0))))
    torch.testing.assert_close(total, expected, rtol=1e-12, atol=0)


def test_metric_loss_stays_unweighted():
    assert loss_from_metrics({"energy_rmse_mev_per_atom": 2.0}, LossConfig(weight_by="group",
                                                                         group_weights={"Surface": 5.0})) == \
        loss_from_metrics({"energy_rmse_mev_per_atom": 2.0}, LossConfig())


# ---------------------------------------------------------------------- batches carry the weights
def test_store_select_concatenate_and_move_carry_weights():
    structures, _ = hand_built()
    w = [2.0, 0.5, 1.5, 3.0]
    store = BatchStore(structures, cutoff=3.0, chunk=3, weights=w)  # two chunks, concatenated
    assert torch.equal(store.data.targets.weight, torch.tensor(w, dtype=torch.float64))
    sub = store.batch([3, 1, 1])
    assert torch.equal(sub.targets.weight, torch.tensor([3.0, 0.5, 0.5], dtype=torch.float64))
    assert sub.to(dtype=torch.float32).targets.weight.dtype == torch.float32
    cached, _, _ = store.cached_batch([2, 0])
    assert cached.targets.weight.tolist() == [1.5, 2.0]
    parts = [select(store.data, [0, 1]), select(store.data, [2, 3])]
    assert torch.equal(concatenate(parts).targets.weight, store.data.targets.weight)
    plain = BatchStore(structures, cutoff=3.0)
    assert plain.data.targets.weight is None and plain.batch([0, 1]).targets.weight is None
    with pytest.raises(ValueError, match="some batches have structure weights"):
        concatenate([parts[0], plain.batch([2])])
    with pytest.raises(ValueError, match="3 structure weights for 4 structures"):
        BatchStore(structures, cutoff=3.0, weights=w[:3])


# ---------------------------------------------------------------------- run-time checks
def grouped():
    structures = hand_built()[0]
    for k, atoms in enumerate(structures):
        atoms.info["group"] = ["AIMD-NVT", "Surface"][k % 2]
    return structures


def test_structure_weights_from_the_groups():
    loss = LossConfig(weight_by="group", group_weights={"Surface": 4.0})
    weights, labels = loss.structure_weights(grouped(), "train.json")
    assert weights == [1.0, 4.0, 1.0, 4.0] and labels == ["AIMD-NVT", "Surface"] * 2
    assert LossConfig().structure_weights(grouped(), "train.json") is None


def test_missing_info_key_names_structure_file_and_key():
    structures = grouped()
    del structures[2].info["group"]
    with pytest.raises(ValueError, match=r"loss.weight_by: structure 2 of train.json has no info\['group'\]"):
        LossConfig(weight_by="group").structure_weights(structures, "train.json")


def test_unknown_group_label_lists_the_groups_present():
    loss = LossConfig(weight_by="group", group_weights={"Surfaces": 4.0})
    with pytest.raises(ValueError, match=r"\['Surfaces'\].*groups there are \['AIMD-NVT', 'Surface'\]"):
        loss.structure_weights(grouped(), "train.json")


def test_training_split_of_zero_weight_is_refused():
    loss = LossConfig(weight_by="group", group_weights={"Surface": 0.0})
    assert loss.structure_weights(grouped(), "train.json", train=[0, 1])[0] == [1.0, 0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="every training structure weighs zero"):
        loss.structure_weights(grouped(), "train.json", train=[1, 3])


# ---------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def grouped_dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grouped")
    structures = emt_structures(20, seed=2)
    for k, atoms in enumerate(structures):
        atoms.info["group"] = "Surface" if k % 4 == 0 else "AIMD-NVT"
    ase.io.write(folder / "train.extxyz", structures)
    return folder


def with_loss(cfg: TrainConfig, **loss) -> TrainConfig:
    d = cfg.to_dict()
    return TrainConfig.from_dict({**d, "loss": {**d["loss"], **loss}})


def test_training_with_group_weights_runs_and_reports_the_groups(grouped_dataset, tmp_path):
    cfg = with_loss(config(grouped_dataset, epochs=2), weight_by="group", group_weights={"Surface": 5.0})
    lines = []
    result = train(cfg, tmp_path / "run", progress=False, log=lines.append)
    assert result["epochs"] == 2 and np.isfinite(result["best_val_loss"])
    line = next(x for x in lines if x.startswith("loss weights"))
    n_train = len(json.loads((tmp_path / "run" / "split.json").read_text())["train"])
    counts = [int(x.split("× ")[1]) for x in line.split(": ", 1)[1].split(", ")]
    assert "info['group']" in line and "AIMD-NVT 1 ×" in line and "Surface 5 ×" in line and sum(counts) == n_train
    assert TrainConfig.from_yaml(tmp_path / "run" / "config.yaml") == cfg


def test_training_refuses_a_typo_before_writing(grouped_dataset, tmp_path):
    cfg = with_loss(config(grouped_dataset, epochs=1), weight_by="group", group_weights={"surface": 5.0})
    with pytest.raises(ValueError, match=r"groups there are \['AIMD-NVT', 'Surface'\]"):
        train(cfg, tmp_path / "run", progress=False, log=lambda _: None)
    missing = with_loss(config(grouped_dataset, epochs=1), weight_by="kind")
    with pytest.raises(ValueError, match=r"structure 0 of .*train.extxyz has no info\['kind'\]"):
        train(missing, tmp_path / "run", progress=False, log=lambda _: None)
    assert not (tmp_path / "run").exists()


def test_many_models_honour_the_weights_as_a_lone_run(grouped_dataset, tmp_path):
    cfg = with_loss(config(grouped_dataset, epochs=2), weight_by="group", group_weights={"Surface": 5.0})
    lines = []
    train_many([cfg], [tmp_path / "many"], progress=False, log=lines.append)
    train(cfg, tmp_path / "lone", progress=False, log=lambda _: None)
    assert_same_run(tmp_path / "many", tmp_path / "lone")
    assert any("Surface 5 ×" in x for x in lines)
    # The weights reached both: the unweighted run trains on another loss from the first step.
    train(with_loss(cfg, weight_by=None, group_weights={}), tmp_path / "plain", progress=False, log=lambda _: None)
    weighted_loss, plain_loss = (float(rows(tmp_path / name / "metrics.csv")[0]["train_loss"]) for name in ("lone", "plain"))
    assert weighted_loss != pytest.approx(plain_loss, rel=1e-3)


def test_two_processes_equal_one_with_fractional_weights(grouped_dataset, tmp_path):
    """Data-parallel: the shards' weighted counts (sums of weights, some below 1) rescale the
    shard losses to the global batch's weighted loss."""
    from test_distributed import assert_same_weights, run_distributed
    from test_distributed import config as ddp_config

    cfg = ddp_config(grouped_dataset, batch_size=15)  # 16 training structures: a last batch of one
    cfg["loss"].update(weight_by="group", group_weights={"AIMD-NVT": 0.3, "Surface": 0.2})
    run_distributed(cfg, tmp_path / "ddp")
    train(TrainConfig.from_dict(cfg), tmp_path / "single", progress=False, log=lambda _: None)
    ddp, single = (torch.load(tmp_path / name / "last.pt", weights_only=False) for name in ("ddp", "single"))
    assert_same_weights(ddp["model"], single["model"], 1e-10)
    for ra, rb in zip(rows(tmp_path / "ddp" / "metrics.csv"), rows(tmp_path / "single" / "metrics.csv")):
        assert float(ra["train_loss"]) == pytest.approx(float(rb["train_loss"]), rel=1e-9)

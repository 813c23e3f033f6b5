"""Many models trained as one (mlpot.training.many): each member is its lone run."""

from __future__ import annotations

import csv
from dataclasses import replace

import ase.io
import pytest
import torch

from mlpot.training import train
from mlpot.training.many import check_stackable, train_many
from test_training_run import config, emt_structures

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("many")
    ase.io.write(folder / "train.extxyz", emt_structures(30, seed=0))
    ase.io.write(folder / "test.extxyz", emt_structures(6, seed=1))
    return folder


def members(dataset, epochs=(3, 3, 2)):
    """Two seeds on one split (one with EMA and clipping), and a third on another split
    with fewer epochs (it leaves the stack early)."""
    configs = [config(dataset, epochs=epochs[0], seed=0, ema_decay=0.9, grad_clip=1.0),
               config(dataset, epochs=epochs[1], seed=1),
               config(dataset, epochs=epochs[2], seed=2)]
    configs[2] = replace(configs[2], data=replace(configs[2].data, split_seed=5, test=str(dataset / "test.extxyz")))
    return configs


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def assert_same_run(a, b, rtol=1e-6):
    ra, rb = rows(a / "metrics.csv"), rows(b / "metrics.csv")
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb):
        for key in ("train_loss", "val_loss", "val_force_rmse_mev_per_a", "lr", "grad_norm/total",
                    "grad_norm/Cu.blocks.0.linear.weight"):
            if "" in (x[key], y[key]):  # no validation set: both runs leave the val columns empty
                assert x[key] == y[key], (key, x["epoch"])
                continue
            assert float(x[key]) == pytest.approx(float(y[key]), rel=rtol), (key, x["epoch"])
    wa, wb = weights(a / "model.pt"), weights(b / "model.pt")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=rtol, atol=1e-9)


def test_each_member_equals_its_lone_run(dataset, tmp_path):
    configs = members(dataset)
    results = train_many(configs, [tmp_path / f"many{k}" for k in range(3)], progress=False, log=lambda _: None)
    for k, c in enumerate(configs):
        lone = train(c, tmp_path / f"lone{k}", progress=False, log=lambda _: None)
        assert_same_run(tmp_path / f"many{k}", tmp_path / f"lone{k}")
        assert results[k]["epochs"] == lone["epochs"] == c.training.epochs
        assert results[k]["best_epoch"] == lone["best_epoch"] and results[k]["error"] is None
    assert results[2]["test"]["force_rmse_mev_per_a"] == pytest.approx(lone["test"]["force_rmse_mev_per_a"], rel=1e-6)
    assert {p.name for p in (tmp_path / "many0").iterdir()} >= {"config.yaml", "split.json", "metrics.csv",
                                                               "last.pt", "best.pt", "model.pt", "grad_init.json"}


def test_members_without_a_validation_set_equal_their_lone_runs(dataset, tmp_path):
    """The mlearn recipe trains its seeds together with data.val_fraction 0: each member
    selects on its own training loss, as its lone run does."""
    configs = [config(dataset, epochs=3, seed=s) for s in (0, 1)]
    configs = [replace(c, data=replace(c.data, val_fraction=0.0)) for c in configs]
    results = train_many(configs, [tmp_path / f"many{k}" for k in range(2)], progress=False, log=lambda _: None)
    for k, c in enumerate(configs):
        lone = train(c, tmp_path / f"lone{k}", progress=False, log=lambda _: None)
        assert [r["val_loss"] for r in rows(tmp_path / f"many{k}" / "metrics.csv")] == ["", "", ""]
        assert_same_run(tmp_path / f"many{k}", tmp_path / f"lone{k}")
        assert results[k]["best_epoch"] == lone["best_epoch"]
        assert results[k]["best_val_loss"] == pytest.approx(lone["best_val_loss"], rel=1e-6)


def test_resume_continues_every_member_and_a_lone_run_resumes_one(dataset, tmp_path):
    short = [replace(c, training=replace(c.training, epochs=2)) for c in members(dataset)]
    full = members(dataset, epochs=(4, 4, 3))
    train_many(short, [tmp_path / f"r{k}" for k in range(3)], progress=False, log=lambda _: None)
    train_many(full, [tmp_path / f"r{k}" for k in range(3)], resume=True, progress=False, log=lambda _: None)
    train_many(full, [tmp_path / f"u{k}" for k in range(3)], progress=False, log=lambda _: None)
    for k in range(3):
        assert_same_run(tmp_path / f"r{k}", tmp_path / f"u{k}", rtol=1e-12)
    # A member's checkpoint is a lone run's: `mlpot train --resume` continues it.
    longer = replace(full[1], training=replace(full[1].training, epochs=5))
    result = train(longer, tmp_path / "r1", resume=True, progress=False, log=lambda _: None)
    assert result["epochs"] == 5 and len(rows(tmp_path / "r1" / "metrics.csv")) == 5


def test_configs_of_another_shape_are_refused(dataset):
    a = config(dataset)
    b = replace(a, model=replace(a.model, width=16))
    check_stackable([a, replace(a, training=replace(a.training, seed=3))])
    with pytest.raises(ValueError, match=r"config 1 differs from config 0 in \['model.width'\]"):
        check_stackable([a, b])
    with pytest.raises(ValueError, match="2 configs but 1 output folders"):
        train_many([a, a], ["x"])

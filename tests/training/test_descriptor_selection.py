"""``descriptor.select``: symmetry functions chosen from a candidate pool on the training split,
in a lone run and in models trained together."""

from __future__ import annotations

import ase.io
import pytest
import torch

import mlpot
from mlpot.config import ConfigError
from mlpot.data import load_split
from mlpot.descriptors.selection import select_on_structures
from mlpot.training import TrainConfig, build_model, train
from mlpot.training.many import train_many
from test_training_run import emt_structures

pytestmark = pytest.mark.usefixtures("one_thread")

POOL = {"cutoff": 4.0, "cutoff_function": "poly2",
        "radial": [{"grid": {"count": 8, "mode": "shift", "r_lower": 1.5}},
                   {"grid": {"count": 4, "mode": "center", "r_lower": 1.5}}],
        "angular": [{"kind": "G4", "zetas": [1, 4], "lambdas": [-1, 1], "eta": 0.05}]}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    ase.io.write(folder / "train.extxyz", emt_structures(20, seed=1))
    return folder


def config(dataset, select=None, **training) -> TrainConfig:
    return TrainConfig.from_dict({
        "data": {"train": str(dataset / "train.extxyz"), "val_fraction": 0.25},
        "descriptor": {**POOL, **({"select": select} if select else {})},
        "model": {"depth": 1, "width": 8},
        "training": {"epochs": 2, "batch_size": 5, "dtype": "float64", **training},
    })


def test_select_section_is_checked():
    with pytest.raises(ConfigError, match="select.count must be >= 1"):
        TrainConfig.from_dict({"data": {"train": "x.extxyz"}, "descriptor": {**POOL, "select": {"count": 0}}})
    with pytest.raises(ConfigError, match=r"descriptor\.select"):
        TrainConfig.from_dict({"data": {"train": "x.extxyz"},
                               "descriptor": {**POOL, "select": {"count": 3, "how": "cur"}}})
    # Naming the elements checks the candidate pool at once; the choice waits for the data.
    cfg = TrainConfig.from_dict({"data": {"train": "x.extxyz"},
                                 "descriptor": {**POOL, "elements": ["Cu", "Au"], "select": {"count": 3}}})
    with pytest.raises(ConfigError, match="chosen on the training structures"):
        cfg.build_descriptor(["Cu", "Au"])


def test_training_keeps_the_terms_chosen_on_the_training_split(dataset, tmp_path):
    cfg = config(dataset, select={"count": 6, "method": "cur"})
    train(cfg, tmp_path / "run", progress=False, log=lambda _: None)
    model = mlpot.load(tmp_path / "run" / "model.pt")
    pool = config(dataset).build_descriptor(["Cu", "Au"])
    assert set(pool.n_features.values()) == {12 * 2 + 4 * 3}  # 12 radial per neighbour, 4 angular per pair
    assert model.descriptor.n_features == {"Cu": 6, "Au": 6}

    structures = ase.io.read(dataset / "train.extxyz", ":")
    train_idx = load_split(tmp_path / "run" / "split.json").train
    want = select_on_structures(pool.spec, [structures[k] for k in train_idx], 6, "cur")
    assert model.spec == want
    # Deterministic: the same choice again (what every rank and every resume relies on).
    again = build_model(cfg, ["Cu", "Au"], [structures[k] for k in train_idx])
    assert again.spec == want


def test_models_trained_together_share_the_choice(dataset, tmp_path):
    configs = [config(dataset, select={"count": 5, "method": "fps"}, seed=s) for s in (0, 1)]
    results = train_many(configs, [tmp_path / "a", tmp_path / "b"], progress=False, log=lambda _: None)
    assert not any(r.get("error") for r in results)
    lone = tmp_path / "lone"
    train(configs[1], lone, progress=False, log=lambda _: None)
    together, alone = mlpot.load(tmp_path / "b" / "model.pt"), mlpot.load(lone / "model.pt")
    assert together.spec == alone.spec and together.descriptor.n_features == {"Cu": 5, "Au": 5}
    for key, value in alone.state_dict().items():
        torch.testing.assert_close(together.state_dict()[key], value, rtol=1e-6, atol=1e-9, msg=key)  # as test_many: same to rounding


def test_members_with_other_splits_are_refused(dataset, tmp_path):
    configs = [config(dataset, select={"count": 5}),
               TrainConfig.from_dict({**config(dataset, select={"count": 5}).to_dict(),
                                      "data": {"train": str(dataset / "train.extxyz"), "val_fraction": 0.25,
                                               "split_seed": 7}})]
    with pytest.raises(ValueError, match="splits differ"):
        train_many(configs, [tmp_path / "a", tmp_path / "b"], progress=False, log=lambda _: None)


def test_balance_by_reaches_the_selection(dataset):
    cfg = config(dataset, select={"count": 6, "method": "cur", "balance_by": "group"})
    assert cfg.descriptor.select.balance_by == "group"
    structures = ase.io.read(dataset / "train.extxyz", ":")
    with pytest.raises(ValueError, match=r"select.balance_by: 20 training structure\(s\) have no info\['group'\]"):
        build_model(cfg, ["Cu", "Au"], structures)
    for k, atoms in enumerate(structures):
        atoms.info["group"] = "few" if k < 3 else "many"
    pool = config(dataset).build_descriptor(["Cu", "Au"])
    model = build_model(cfg, ["Cu", "Au"], structures)
    assert model.spec == select_on_structures(pool.spec, structures, 6, "cur", balance_by="group")

"""Configs with one more section (ablation, search): read from a file with overrides, data
paths beside the file, written back and read again unchanged."""

from __future__ import annotations

import pytest
import yaml

from mlpot.ablation import load_ablation
from mlpot.config import ConfigError
from mlpot.search import load_search
from mlpot.training.extended_config import read_extended

BASE = {
    "data": {"train": "train.extxyz", "val_fraction": 0.2},
    "descriptor": {"cutoff": 4.0, "radial": [{"grid": {"count": 4, "mode": "shift", "r_lower": 1.5}}]},
    "model": {"width": 8},
    "training": {"epochs": 2},
}


def write(folder, **section):
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({**BASE, **section}))
    (folder / "train.extxyz").write_text("")  # only its existence is looked at here
    return path


def test_the_section_and_its_overrides_are_split_from_the_training_config(tmp_path, monkeypatch):
    path = write(tmp_path, search={"trials": 4, "space": {"depth": {"int": [1, 3]}}})
    monkeypatch.chdir(tmp_path.parent)  # the data path resolves beside the file, not here
    base, section, ours = read_extended(path, "search", ["training.epochs=7", "search.trials=9"])
    assert base.training.epochs == 7 and base.data.train == str(tmp_path / "train.extxyz")
    assert section == {"trials": 4, "space": {"depth": {"int": [1, 3]}}} and ours == ["search.trials=9"]
    with pytest.raises(ConfigError, match="training.epoch"):
        read_extended(path, "search", ["training.epoch=7"])
    with pytest.raises(ConfigError, match="ablation: missing; an ablation config"):
        read_extended(path, "ablation")


@pytest.mark.parametrize("section, load", [
    ("ablation", load_ablation),
    ("search", load_search),
])
def test_a_saved_setup_reads_back_the_same(tmp_path, section, load):
    content = {"ablation": {"depths": [1, 2], "widths": [8], "folds": 2},
               "search": {"trials": 4, "space": {"depth": {"int": [1, 3]}}}}[section]
    setup = load(write(tmp_path, **{section: content}), [f"{section}.seed=3" if section == "search"
                                                         else "ablation.seeds=[3]", "training.epochs=5"])
    setup.save(tmp_path / "saved.yaml")
    again = load(tmp_path / "saved.yaml")
    assert again == setup and again.to_dict()[section] == setup.to_dict()[section]
    assert again.base.training.epochs == 5
    assert (again.search.seed == 3) if section == "search" else (list(again.ablation.seeds) == [3])

"""scripts/bench_models.py: every case is timed, ensembles count their members' weights, and
the default structure is the element's cubic crystal."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch
from ase.io import write
from scripts_for_tests import load_script
from structures_for_tests import water_box
from test_models import make_model

from mlpot.descriptors import SymmetryFunctionSpec
from mlpot.io import save_model
from mlpot.models import NetworkConfig, Potential


def test_bench_models_times_each_case_and_counts_ensemble_weights(tmp_path, monkeypatch, capsys):
    bench = load_script("bench_models")
    small, wide = tmp_path / "small.pt", tmp_path / "wide.pt"
    save_model(make_model(NetworkConfig(depth=2, width=8)), small)
    save_model(make_model(NetworkConfig(depth=2, width=24)), wide)
    write(tmp_path / "box.xyz", water_box(seed=1))
    monkeypatch.setattr(sys, "argv", ["bench_models.py", str(small), str(wide), f"{small},{wide}",
                                      "--structure", str(tmp_path / "box.xyz"), "--calls", "2",
                                      "--warmup", "1", "--rounds", "2"])
    assert bench.main() == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:4] == [f"# case 1: {small}", f"# case 2: {wide}", f"# case 3: {small},{wide}"]
    rows = [line.split() for line in lines[5:]]
    assert [row[0] for row in rows] == ["1", "2", "3"]
    models, weights = [int(row[1]) for row in rows], [int(row[2]) for row in rows]
    assert models == [1, 1, 2] and weights[2] == weights[0] + weights[1] and weights[1] > weights[0]
    assert float(rows[0][4]) == 1.0  # the first case is the reference of the ratios
    assert all(float(row[3]) > 0 for row in rows)


def test_bench_models_default_structure_is_the_cubic_crystal():
    bench = load_script("bench_models")
    atoms = bench.structure(SimpleNamespace(structure=None, repeat=2), "Si")
    assert len(atoms) == 64 and atoms.cell.orthorhombic


def test_bench_models_refuses_a_case_that_does_not_know_the_structure(tmp_path, monkeypatch, capsys):
    """Every case runs on one structure: a model of other elements is named before any timing."""
    bench = load_script("bench_models")
    water = tmp_path / "water.pt"
    save_model(make_model(NetworkConfig(depth=2, width=8)), water)
    torch.manual_seed(0)
    silicon = tmp_path / "si.pt"
    save_model(Potential(SymmetryFunctionSpec.default(["Si"], cutoff=4.0), NetworkConfig(depth=2, width=8)).double(),
               silicon)
    write(tmp_path / "box.xyz", water_box(seed=1))
    monkeypatch.setattr(sys, "argv", ["bench_models.py", str(water), str(silicon),
                                      "--structure", str(tmp_path / "box.xyz"), "--calls", "1", "--warmup", "0",
                                      "--rounds", "1"])
    with pytest.raises(SystemExit) as exit_info:
        bench.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"case 2 ({silicon}) does not know ['H', 'O']" in err

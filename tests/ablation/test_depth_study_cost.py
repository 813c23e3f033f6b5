"""scripts/depth_study_cost.py (``python scripts/depth_study.py cost``): the rows of a cost pass
from known times, a real pass over a tiny grid, and its way into results.json and ``plan``."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from scripts_for_tests import load_script


@pytest.fixture(scope="module")
def cost():
    return load_script("depth_study_cost")


@pytest.fixture(scope="module")
def study():
    return load_script("depth_study")


def fake_pass(cost) -> dict:
    """A cost.json of three cells timed over 3 rounds on 4 atoms, times chosen so that every
    number is exact: plain d2 is the reference; plain d4 takes twice its time in every round."""
    networks = {(v, d): {"variant": v, "depth": d, "width": 8, "hidden": [8] * d, "n_params": 100}
                for v, d in (("plain", 2), ("plain", 4), ("residual_stem", 4))}
    ref_infer, ref_train = [4e-6, 8e-6, 6e-6], [2e-6, 1e-6, 4e-6]  # medians 6e-6, 2e-6 s
    times = {("plain", 2, "inference"): ref_infer, ("plain", 2, "training"): ref_train,
             ("plain", 4, "inference"): [2 * t for t in ref_infer], ("plain", 4, "training"): [2 * t for t in ref_train],
             ("residual_stem", 4, "inference"): [4e-6, 4e-6, 4e-6], ("residual_stem", 4, "training"): [1e-6, 4e-6, 6e-6]}
    return {"study": "si-2.5k", "dataset": "si", "budget": "2.5k", "reference": {"variant": "plain", "depth": 2},
            "protocol": {"rounds": 3, "torch": "x", "threads": 1, "batch": {"atoms": 4}},
            "cells": cost.summarise(networks, times, atoms=4)}


def test_rows_give_median_per_atom_and_ratios_to_plain_2(cost):
    rows = {(r["variant"], r["depth"]): r for r in fake_pass(cost)["cells"]}
    ref, deep, residual = rows["plain", 2], rows["plain", 4], rows["residual_stem", 4]
    assert ref["infer_us_per_atom"] == pytest.approx(1.5) and ref["train_us_per_atom"] == pytest.approx(0.5)
    assert (ref["infer_ratio"], ref["train_ratio"]) == (1.0, 1.0)
    assert deep["infer_ratio"] == pytest.approx(2.0) and deep["train_ratio"] == pytest.approx(2.0)
    assert deep["train_ratio_range"] == pytest.approx([2.0, 2.0])  # twice the reference in every round
    # Ratio of medians (4/6 and 4/2), and the range of the per-round ratios (4/8 … 4/4; 1/2 … 4/1).
    assert residual["infer_ratio"] == pytest.approx(2 / 3) and residual["train_ratio"] == pytest.approx(2.0)
    assert residual["infer_ratio_range"] == pytest.approx([0.5, 1.0])
    assert residual["train_ratio_range"] == pytest.approx([0.5, 4.0])
    assert residual["train_us_per_atom_rounds"] == pytest.approx([0.25, 1.0, 1.5])


def test_a_pass_over_a_tiny_grid(cost, tmp_path, one_thread):
    """A real pass: every cell timed, the reference's ratios 1, the protocol recorded."""
    import ase.io
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from mlpot.ablation import expand_grid, load_ablation

    frames = []
    for seed in range(6):
        atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
        atoms.rattle(0.05, seed=seed)
        atoms.calc = EMT()
        atoms.get_forces()
        frames.append(atoms)
    ase.io.write(tmp_path / "train.extxyz", frames)
    config = {"data": {"train": str(tmp_path / "train.extxyz"), "val_fraction": 0.2},
              "descriptor": {"cutoff": 4.0, "radial": [{"grid": {"count": 3, "mode": "shift", "r_lower": 1.5}}]},
              "model": {"width": 6}, "training": {"batch_size": 3, "dtype": "float64", "device": "cpu"},
              "ablation": {"depths": [1, 2, 3], "widths": [6], "variants": ["plain", "residual"], "folds": 2}}
    setup = load_ablation(config)
    runs = expand_grid(setup, setup.base.build_descriptor(["Cu"]).n_features_per_element)
    lines = []
    path = cost.run_cost(tmp_path / "si-2.5k", "si-2.5k", config, runs, rounds=2, threads=1, log=lines.append)
    document = json.loads(path.read_text())
    assert (document["study"], document["dataset"], document["budget"]) == ("si-2.5k", "si", "2.5k")
    assert sorted((c["variant"], c["depth"]) for c in document["cells"]) == sorted(
        (v, d) for v in ("plain", "residual") for d in (1, 2, 3))
    ref = next(c for c in document["cells"] if (c["variant"], c["depth"]) == ("plain", 2))
    assert (ref["infer_ratio"], ref["train_ratio"]) == (1.0, 1.0)
    for c in document["cells"]:
        assert c["infer_us_per_atom"] > 0 and c["train_ratio"] > 0 and len(c["train_us_per_atom_rounds"]) == 2
    p = document["protocol"]
    assert (p["rounds"], p["threads"], p["batch"]["structures"], p["batch"]["atoms"]) == (2, 1, 3, 12)
    assert p["torch"] and p["device"] == "cpu" and p["descriptor_cache"] == "memory"
    assert not list(path.parent.glob(".*tmp*"))  # written atomically: no temporary file left
    assert lines[-1] == f"written to {path}"


def test_collect_puts_the_cost_pass_into_results_and_plan_says_so(cost, study, tmp_path, monkeypatch, capsys):
    runs_dir = tmp_path / "runs"
    (runs_dir / "si-2.5k").mkdir(parents=True)
    (runs_dir / "si-2.5k" / "cost.json").write_text(json.dumps(fake_pass(cost)))
    one = ("si-2.5k", {"train": "unused", "format": "mlearn", "read_options": {}}, "2.5k")
    two = ("mo-2.5k", {"train": "unused", "format": "mlearn", "read_options": {}}, "2.5k")
    study.collect(runs_dir, [one, two], tmp_path / "results.json")
    document = json.loads((tmp_path / "results.json").read_text())
    assert len(document["cost"]) == 1  # mo-2.5k has no cost pass
    entry = document["cost"][0]
    assert (entry["study"], entry["dataset"], entry["budget"]) == ("si-2.5k", "si", "2.5k")
    assert entry["reference"] == {"variant": "plain", "depth": 2} and entry["protocol"]["rounds"] == 3
    deep = next(c for c in entry["cells"] if (c["variant"], c["depth"]) == ("plain", 4))
    assert deep["train_ratio"] == pytest.approx(2.0) and deep["infer_us_per_atom"] == pytest.approx(3.0)
    assert not any(k.endswith("_rounds") for c in entry["cells"] for k in c)  # per-round times stay in cost.json
    assert document["runs"] == []  # the per-run rows are collected as before (none here)

    monkeypatch.setattr(study, "studies", lambda selected: [one, two])
    # mo-2.5k's runs are only in results.json (its runs folder lost): plan says so.
    document["runs"] = [{"dataset": "mo", "budget": "2.5k", "variant": "plain", "depth": 2, "lr": 1e-3}]
    (tmp_path / "results.json").write_text(json.dumps(document))
    study.plan(SimpleNamespace(runs=runs_dir, studies=None, out=tmp_path / "results.json", replicas=10, ps=50.0))
    out = capsys.readouterr().out
    assert "si-2.5k" in out and "cost pass done (3 rounds" in out
    # fake_pass timed fewer cells than the design has: plan says to run it again.
    assert f"of {len(study.CELLS)} cells: run `cost` again" in out
    mo = [line for line in out.splitlines() if "mo-2.5k" in line][0]
    assert mo.endswith("cost pass not run") and "its runs are only in results.json" in mo
    assert "only in" not in [line for line in out.splitlines() if "si-2.5k" in line][0]


def test_cost_subcommand_passes_the_studys_grid(study, tmp_path, monkeypatch):
    import depth_study_cost

    one = ("si-2.5k", {"x": 1}, "2.5k")
    monkeypatch.setattr(study, "studies", lambda selected: [one])
    monkeypatch.setattr(study, "stage_config", lambda runs, name, data, budget, stage, lr: {"stage": stage, "lr": lr})
    # The ablation grid also holds plain networks of the residual-only depths: not timed.
    kept, deep_plain = SimpleNamespace(variant="residual_stem", depth=32), SimpleNamespace(variant="plain", depth=32)
    monkeypatch.setattr(study, "grid", lambda config: [kept, deep_plain])
    calls = []
    monkeypatch.setattr(depth_study_cost, "run_cost", lambda *a, **k: calls.append(a))
    monkeypatch.setattr("sys.argv", ["depth_study.py", "cost", "--rounds", "5", "--runs", str(tmp_path),
                                     "--archive", str(tmp_path / "archive")])
    assert study.main() == 0
    assert calls == [(tmp_path / "si-2.5k", "si-2.5k", {"stage": "full", "lr": study.COST_LR}, [kept], 5, 1)]


def test_training_time_left_counts_the_full_stage_per_member_epoch(cost):
    # Two screen runs of 150 epochs at 60 s (0.4 s/epoch) and a stack of five full-stage
    # members that each report their share of the stack's epochs (mlpot.training.many):
    # 90 s over 300 epochs, 0.3 s per member-epoch. The 11 runs left cost 11 members' epochs,
    # however they are stacked.
    screen = [{"train_wall_s": 60.0, "epochs": 150} for _ in range(2)]
    full = [{"train_wall_s": 90.0, "epochs": 300} for _ in range(5)]
    lone, stacked, hours = cost.training_hours_left(screen, full, 10, 11, 150, 1000.0)
    assert (lone, stacked) == (pytest.approx(0.4), pytest.approx(0.3))
    assert hours == pytest.approx((10 * 150 * 0.4 + 11 * 300 * 0.3) / 3600)
    # Until a full run exists, the guessed length at the lone rate.
    lone, stacked, guess = cost.training_hours_left(screen, [], 0, 5, 150, 1000.0)
    assert stacked is None and guess == pytest.approx(5 * 1000.0 * 0.4 / 3600)
    # A full stage without its screen runs on disk (restored from the archive) prices both by its members.
    lone, stacked, hours = cost.training_hours_left([], full, 4, 5, 150, 1000.0)
    assert lone == stacked == pytest.approx(0.3) and hours == pytest.approx((4 * 150 + 5 * 300) * 0.3 / 3600)

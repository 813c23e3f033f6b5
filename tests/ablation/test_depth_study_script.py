"""scripts/depth_study.py: its bookkeeping on synthetic results (the choice of each cell's
learning rate, the convergence flag, the rows of results.json and the recommendation with
its paired difference); training itself is mlpot.ablation's and tested there."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from scripts_for_tests import load_script


@pytest.fixture(scope="module")
def study():
    return load_script("depth_study")


def result(depth=2, variant="plain", fold=0, seed=0, epochs=300, best=200, force=150.0):
    return {"name": f"d{depth:02d}_{variant}_f{fold}_s{seed}", "depth": depth, "width": 32, "hidden": [32] * depth,
            "variant": variant, "activation": "silu", "seed": seed, "fold": fold, "n_parameters_model": 2337,
            "epochs": epochs, "best_epoch": best, "train_wall_s": 60.0,
            "val": {"energy_rmse_mev_per_atom": 5.0, "force_rmse_mev_per_a": force},
            "test": {"energy_rmse_mev_per_atom": 6.0, "energy_mae_mev_per_atom": 4.0,
                     "force_rmse_mev_per_a": force, "force_mae_mev_per_a": force * 0.6, "stress_rmse_gpa": None},
            "external_test": None, "inference_us_per_atom": 40.0, "train_step_peak_mib": 12.0,
            "train_step_peak_checkpointed_mib": 8.0}


def test_convergence_flag_and_per_atom_cost(study):
    capped = study.MAX_EPOCHS
    late = study.run_row(result(epochs=capped, best=capped - 5), "si", "2.5k", 1e-3, train_atoms=1000)
    early = study.run_row(result(epochs=capped, best=int(0.8 * capped)), "si", "2.5k", 1e-3, train_atoms=1000)
    stopped = study.run_row(result(epochs=400, best=399), "si", "2.5k", 1e-3, train_atoms=1000)
    assert (late["converged"], early["converged"], stopped["converged"]) == (False, True, True)
    assert late["train_us_per_atom"] == pytest.approx(1e6 * 60.0 / (capped * 1000))
    for key in ("dataset", "budget", "depth", "width", "variant", "seed", "fold", "n_params", "epochs_run",
                "best_epoch", "converged", "lr", "val_energy_rmse_mev_per_atom", "val_force_rmse_mev_per_a",
                "test_energy_rmse_mev_per_atom", "test_force_rmse_mev_per_a", "train_us_per_atom",
                "infer_us_per_atom", "peak_activation_mib"):
        assert key in stopped, key
    # A run measured before the split by training range has none; one measured since, its own.
    assert stopped["test_force_rmse_beyond_range_mev_per_a"] is None and stopped["test_structures_beyond_range"] is None
    split = {"excess": 0.2, "beyond": [4, 9], "force_rmse_beyond_mev_per_a": 410.0, "force_rmse_inside_mev_per_a": 220.0}
    row = study.run_row({**result(), "extrapolation": {"test": split, "external_test": None}}, "mo", "2.5k", 1e-3, 900)
    assert (row["test_structures_beyond_range"], row["test_force_rmse_beyond_range_mev_per_a"],
            row["test_force_rmse_inside_range_mev_per_a"]) == (2, 410.0, 220.0)


def _screened(folder, loss: float) -> None:
    """A finished screening run whose best validation loss is ``loss``."""
    from mlpot.ablation.runner import _RESULT_VERSION

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.csv").write_text(f"epoch,val_loss\n1,{loss * 2}\n2,{loss}\n3,nan\n")
    (folder / "result.json").write_text(json.dumps({"version": _RESULT_VERSION, "test": {}}))


def test_each_cell_takes_the_rate_of_lowest_validation_loss(study, tmp_path, monkeypatch):
    """The best of the screened rates, once the best is not the end of what was screened:
    a cell at an end is due the next rate out (half a decade), and one at the end of every
    rate allowed is an edge."""
    monkeypatch.setattr(study.rates_screen, "LRS", (3e-4, 1e-3, 3e-3))
    runs = [SimpleNamespace(name=f"d{d:02d}_plain_f0_s0", variant="plain", depth=d, fold=0, seed=0) for d in (1, 2, 3)]
    losses = {(1, 3e-4): 0.5, (1, 1e-3): 0.2, (1, 3e-3): 0.4, (2, 3e-4): 0.3, (2, 1e-3): 0.6, (2, 3e-3): 0.9,
              (3, 3e-4): 0.9, (3, 1e-3): 0.5, (3, 3e-3): 0.1}
    for (depth, lr), loss in losses.items():
        _screened(tmp_path / f"lr-{lr:g}" / "runs" / f"d{depth:02d}_plain_f0_s0", loss)
    assert study.rates_screen.chosen_rates(tmp_path, runs) == {("plain", 1): 1e-3}
    assert study.rates_screen.pending_rates(tmp_path, runs) == {("plain", 2): 1e-4, ("plain", 3): 3e-2}
    # Beyond the low end the loss rises again: 3e-4 is a minimum. Beyond the high end it
    # keeps falling, to the last rate allowed: an edge, reported.
    _screened(tmp_path / "lr-0.0001" / "runs" / "d02_plain_f0_s0", 0.35)
    _screened(tmp_path / "lr-0.03" / "runs" / "d03_plain_f0_s0", 0.08)
    assert study.rates_screen.pending_rates(tmp_path, runs) == {("plain", 3): 1e-1}
    _screened(tmp_path / "lr-0.1" / "runs" / "d03_plain_f0_s0", 0.07)
    rates = study.rates_screen.chosen_rates(tmp_path, runs)
    assert rates == {("plain", 1): 1e-3, ("plain", 2): 3e-4, ("plain", 3): 1e-1}
    assert study.rates_screen.edge_rates(rates) == [("plain", 3)]
    # A cell whose screen of the base rates is unfinished has no rate yet.
    (tmp_path / "lr-0.003" / "runs" / "d02_plain_f0_s0" / "result.json").unlink()
    assert ("plain", 2) not in study.rates_screen.chosen_rates(tmp_path, runs)


def fake_stages(study, monkeypatch, tmp_path, runs: list, fake_run_ablation) -> SimpleNamespace:
    """run_stage on a fixed grid ``runs`` with ``fake_run_ablation`` in place of training: each
    stage config is just its rate and stage. Returns run_stage's ``args``."""
    monkeypatch.setattr(study, "grid", lambda config: runs)
    monkeypatch.setattr(study, "stage_config", lambda r, n, d, b, stage, lr: {"lr": lr, "stage": stage})
    monkeypatch.setattr("mlpot.ablation.config.load_ablation", lambda config: config)
    monkeypatch.setattr("mlpot.ablation.runner.run_ablation", fake_run_ablation)
    return SimpleNamespace(runs=tmp_path, jobs=1, threads=1, out=tmp_path / "results.json")


def test_lr_stage_extends_the_screen_of_cells_at_an_end_and_full_trains_at_the_rate_found(study, tmp_path,
                                                                                          monkeypatch):
    """The lr stage screens every cell at LRS, then only the cells whose best rate is an end
    of what they have screened one step further, until each has a minimum (or reaches the
    last rate allowed); rates.json records the choices, and the full stage trains each cell
    at its rate; a full-stage run at a rate the cell no longer has is left out of every
    later stage (full_runs, cell_runs)."""
    import depth_study_md

    monkeypatch.setattr(study.rates_screen, "LRS", (3e-4, 1e-3, 3e-3))
    runs = [SimpleNamespace(name=f"d{d:02d}_plain_f0_s0", variant="plain", depth=d, fold=0, seed=0) for d in (1, 2)]
    # Validation loss of each cell against the rate: depth 1 best at 1e-3, depth 2 at 3e-5.
    best = {1: 1e-3, 2: 3e-5}
    calls = []

    def fake_run_ablation(config, out_dir, only, **kw):
        calls.append((out_dir.name, sorted(only)))
        from mlpot.ablation.runner import _RESULT_VERSION

        for name in only:
            depth = int(name[1:3])
            _screened(out_dir / "runs" / name, 0.1 + abs(math.log10(config["lr"] / best[depth])))
            if config["stage"] == "full":
                (out_dir / "runs" / name / "result.json").write_text(
                    json.dumps({**result(depth=depth), "version": _RESULT_VERSION}))

    args = fake_stages(study, monkeypatch, tmp_path, runs, fake_run_ablation)
    assert study.run_stage(args, "si-25k", {}, "25k", "lr") is True
    names = ["d01_plain_f0_s0", "d02_plain_f0_s0"]
    assert calls == [("lr-0.0003", names), ("lr-0.001", names), ("lr-0.003", names),
                     ("lr-0.0001", ["d02_plain_f0_s0"]), ("lr-3e-05", ["d02_plain_f0_s0"])]
    document = json.loads((tmp_path / "si-25k" / "rates.json").read_text())
    chosen = {(c["variant"], c["depth"]): c["lr"] for c in document["cells"]}
    assert chosen == {("plain", 1): 1e-3, ("plain", 2): 3e-5}
    assert sorted(document["cells"][1]["val_loss"]) == sorted(["3e-05", "0.0001", "0.0003", "0.001", "0.003"])
    # Again: nothing left to screen.
    calls.clear()
    assert study.run_stage(args, "si-25k", {}, "25k", "lr") is True
    assert [c for c in calls if c[1]] == [(f"lr-{lr:g}", names) for lr in (3e-4, 1e-3, 3e-3)]

    calls.clear()
    monkeypatch.setattr(study, "PAIRS", ((0, 0),))
    assert study.run_stage(args, "si-25k", {}, "25k", "full") is True
    assert calls == [("full-lr3e-05", ["d02_plain_f0_s0"]), ("full-lr0.001", ["d01_plain_f0_s0"])]

    # A run of depth 2 at 3e-4 (trained before its screen was extended) is superseded.
    from mlpot.ablation.runner import _RESULT_VERSION
    run_dir = tmp_path / "si-25k" / "full-lr0.0003" / "runs" / "d02_plain_f0_s0"
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(json.dumps({**result(depth=2), "version": _RESULT_VERSION}))
    found = depth_study_md.full_runs(tmp_path / "si-25k")
    assert sorted((lr, r["depth"]) for lr, _, r in found) == [(3e-5, 2), (1e-3, 1)]
    assert [d.parent.parent.name for _, d in depth_study_md.cell_runs(tmp_path / "si-25k")[("plain", 2)]] == \
        ["full-lr3e-05"]
    (tmp_path / "si-25k" / "rates.json").unlink()  # a study without the file: every run counts
    assert len(depth_study_md.full_runs(tmp_path / "si-25k")) == 3


def minimum_at_3e3(calls: list):
    """A fake run_ablation whose runs reach their lowest validation loss at 3e-3, inside the
    screened grid (so no cell is screened beyond it); each call's run names go to ``calls``."""
    def fake_run_ablation(config, out_dir, only, **kw):
        calls.append(sorted(only))
        for name in only:
            _screened(out_dir / "runs" / name, 0.1 + abs(math.log10(config["lr"] / 3e-3)))

    return fake_run_ablation


def test_deep_cells_are_residual_only(study, tmp_path, monkeypatch):
    """Depths 24 and 32 are cells of the residual variants alone: the ablation grid (a
    product of variants and depths) also holds plain networks of those depths, which are
    never screened nor trained."""
    assert ("residual_stem", 32) in study.CELLS and ("residual_sd_stem", 24) in study.CELLS
    assert ("plain", 24) not in study.CELLS and ("plain", 16) in study.CELLS
    assert len(study.CELLS) == len(study.DEPTHS) * len(study.VARIANTS) + 2 * (len(study.VARIANTS) - 1)
    monkeypatch.setattr(study.rates_screen, "LRS", (1e-3, 3e-3, 1e-2))
    runs = [SimpleNamespace(name=f"d24_{v}_f0_s0", variant=v, depth=24, fold=0, seed=0)
            for v in ("plain", "residual_stem")]
    calls = []
    args = fake_stages(study, monkeypatch, tmp_path, runs, minimum_at_3e3(calls))
    assert study.run_stage(args, "si-25k", {}, "25k", "lr") is True
    assert calls == [["d24_residual_stem_f0_s0"]] * 3
    calls.clear()
    monkeypatch.setattr(study, "PAIRS", ((0, 0),))
    assert study.run_stage(args, "si-25k", {}, "25k", "full") is True
    assert [c for c in calls if c] == [["d24_residual_stem_f0_s0"]]


def test_a_water_study_screens_and_trains_only_the_water_cells(study, tmp_path, monkeypatch):
    """The data-size axis: of a grid that holds every cell, a water study screens and trains
    the cells of WATER_CELLS alone, with its own (fold, seed) pairs."""
    monkeypatch.setattr(study.rates_screen, "LRS", (1e-3, 3e-3, 1e-2))
    kept, left_out = ("plain", 3), ("plain", 16)
    assert kept in study.WATER_CELLS and left_out not in study.WATER_CELLS
    runs = [SimpleNamespace(name=f"d{d:02d}_{v}_f0_s{s}", variant=v, depth=d, fold=0, seed=s)
            for v, d in (kept, left_out) for s in (0, 1)]
    calls = []
    args = fake_stages(study, monkeypatch, tmp_path, runs, minimum_at_3e3(calls))
    water = {"group_by": "trajectory"}
    assert study.run_stage(args, "water-4traj-2.5k", water, "2.5k", "lr") is True
    assert calls == [["d03_plain_f0_s0"]] * 3
    calls.clear()
    assert study.run_stage(args, "water-4traj-2.5k", water, "2.5k", "full") is True
    assert [c for c in calls if c] == [["d03_plain_f0_s0", "d03_plain_f0_s1"]]


def test_recommendation_pairs_by_fold_and_seed(study):
    rows = []
    for fold in range(3):
        for seed in range(5):
            noise = 0.3 * ((fold * 5 + seed) % 4)
            rows.append(study.run_row(result(depth=2, fold=fold, seed=seed, force=100.0 + noise), "si", "2.5k", 1e-3, 900))
            rows.append(study.run_row(result(depth=8, fold=fold, seed=seed, force=104.0 + noise), "si", "2.5k", 1e-3, 900))
            rows.append(study.run_row(result(depth=16, fold=fold, seed=seed, epochs=study.MAX_EPOCHS,
                                             best=study.MAX_EPOCHS, force=50.0), "si", "2.5k", 1e-3, 900))
    best = study.recommend(rows)["si/2.5k"]
    assert (best["variant"], best["depth"], best["runs"]) == ("plain", 2, 15)  # depth 16 never converged
    assert best["cells_compared"] == 2  # depths 2 and 8: the recommendation says how many cells it ranked
    diff = best["paired_difference_vs_runner_up"]
    assert best["runner_up"]["depth"] == 8 and diff["n"] == 15
    assert diff["mean"] == pytest.approx(-4.0) and diff["resolved"]
    json.dumps(best)  # results.json must be able to hold it


# ----------------------------------------------------------------------------- md stage, observables
def _cu_model(path, energy_scale: float):
    """A tiny Cu potential saved to ``path``: gentle (small scale) or wild (huge forces)."""
    import torch

    import mlpot
    from mlpot.descriptors import SymmetryFunctionSpec
    from mlpot.models import NetworkConfig, Potential

    torch.manual_seed(0)
    model = Potential(SymmetryFunctionSpec.default(["Cu"], cutoff=3.5), NetworkConfig(depth=1, width=4)).double()
    model.energy_scale.fill_(energy_scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    mlpot.save(model, path)


@pytest.fixture
def fake_study(tmp_path):
    """A study "si-2.5k" of two finished cells (2 runs each: a gentle and a wild potential)
    and one unfinished cell, on a held-out set of 2 small Cu crystals (ase format)."""
    import ase.io
    from ase.build import bulk

    from mlpot.ablation.runner import _RESULT_VERSION
    from mlpot.data.splits import Split

    frames = []
    for seed in range(4):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
        atoms.rattle(0.05, seed=seed)
        frames.append(atoms)
    ase.io.write(tmp_path / "train.extxyz", frames)
    ase.io.write(tmp_path / "test.extxyz", frames[:2])
    data = {"train": str(tmp_path / "train.extxyz"), "test": str(tmp_path / "test.extxyz"), "format": "ase",
            "read_options": {}}
    folder = tmp_path / "runs" / "si-2.5k" / "full-lr0.001"
    (folder / "splits").mkdir(parents=True)
    for fold in (0, 1):
        Split(train=(0, 1), val=(2,), test=(3,)).save(folder / "splits" / f"fold{fold}.json")
    cells = {("plain", 1): 1e-3, ("plain", 2): 1e4, ("residual_stem", 1): 1e-3}
    for (variant, depth), scale in cells.items():
        for fold in (0, 1) if variant == "plain" else (0,):
            r = {**result(depth=depth, variant=variant, fold=fold, force=100.0 + 10 * fold), "version": _RESULT_VERSION}
            run_dir = folder / "runs" / r["name"]
            _cu_model(run_dir / "model.pt", scale)
            (run_dir / "result.json").write_text(json.dumps(r))
    return tmp_path / "runs", ("si-2.5k", data, "2.5k")


def test_md_stage_runs_ready_cells_once_and_collect_lists_them(study, fake_study, monkeypatch, capsys, tmp_path):
    """Each ready cell runs once at each of its data set's conditions (Si: the hot one
    first, each in its own folder), is skipped when done, rerun when its rate moved, never
    overwritten by a run of another length, and listed by collect per condition."""
    import depth_study_md

    runs_dir, one = fake_study
    monkeypatch.setattr(study, "studies", lambda selected: [one])
    monkeypatch.setattr(study, "SEEDS", (0,))
    monkeypatch.setattr(study, "FOLDS", 2)
    monkeypatch.setattr(study, "PAIRS", ((0, 0), (1, 0)))
    monkeypatch.setattr(depth_study_md, "CHECK_EVERY", 5)
    observed = []
    monkeypatch.setattr(study, "cell_observables", lambda s, runs, d: observed.append(sorted(r["fold"] for r, _ in runs)))
    archived = tmp_path / "archive"
    args = SimpleNamespace(studies=None, runs=runs_dir, replicas=3, ps=0.02, threads=None, archive=archived)
    assert study.md(args) == 0
    out = capsys.readouterr().out
    assert f"0/{len(study.CELLS)} cells done, 2 ready, {len(study.CELLS) - 2} waiting" in out and "20 steps" in out
    assert out.index("3000 K, 0.02 ps") < out.index("1518 K, 0.02 ps")  # the plan, hot condition first
    assert out.index("3000 K done") < out.index("1518 K done")
    hot_dir, md_dir = runs_dir / "si-2.5k" / "md-3000K-models", runs_dir / "si-2.5k" / "md"
    for folder in (hot_dir, md_dir):  # no checkpoint left
        assert sorted(p.name for p in folder.glob("*.json")) == ["plain_d01.json", "plain_d02.json"]
    gentle, wild = (json.loads((md_dir / f"plain_d0{d}.json").read_text()) for d in (1, 2))
    # The median of two runs is the lower: fold 0 (val force RMSE 100 against 110).
    assert (gentle["fold"], gentle["seed"], gentle["temperature_k"], gentle["timestep_fs"]) == (0, 0, 1518.0, 1.0)
    # At 3000 K every model of the cell (folds 0 and 1) runs two replicas, each in its own file.
    assert sorted(p.name for p in (hot_dir / "models").iterdir()) == [
        f"plain_d0{d}_f{f}_s0.json" for d in (1, 2) for f in (0, 1)]
    hot_gentle, hot_wild = (json.loads((hot_dir / f"plain_d0{d}.json").read_text()) for d in (1, 2))
    assert hot_gentle["temperature_k"] == 3000.0 and hot_gentle["fold"] is None
    assert [(m["fold"], len(m["time_to_failure_ps"])) for m in hot_gentle["models"]] == [(0, 2), (1, 2)]
    assert hot_gentle["replicas"] == 4 and hot_gentle["models_failed"] == 0
    assert hot_wild["n_failed"] == 4 and hot_wild["models_failed"] == 2
    assert gentle["replicas"] == 3 and gentle["n_failed"] == 0 and gentle["time_to_failure_ps"] == [None] * 3
    assert wild["n_failed"] == 3 and all(0 < t <= 0.02 for t in wild["time_to_failure_ps"])
    assert len(wild["failure_reasons"]) == 3 and gentle["us_per_atom_step"] > 0
    assert observed == [[0, 1]] * 4  # each finished cell's observables, after its MD at each condition
    # ... and each cell's MD results and the representative's model archived after it.
    for folder in ("md-3000K-models", "md"):
        assert sorted(p.name for p in (archived / "si-2.5k" / folder).glob("*.json")) == [
            "plain_d01.json", "plain_d02.json"]
    assert len(list((archived / "si-2.5k" / "md-3000K-models" / "models").glob("*.json"))) == 4
    assert len(list(archived.rglob("model.pt"))) == 2

    # Resumed: the done cells are skipped, and the plan now prices the rest from them.
    stamps = {p.name: p.stat().st_mtime_ns for p in md_dir.iterdir()}
    assert depth_study_md.run_md([one], runs_dir, 2, 24, replicas=3, ps=0.02) == 0
    assert {p.name: p.stat().st_mtime_ns for p in md_dir.iterdir()} == stamps
    again = capsys.readouterr().out
    assert again.count("2/24 cells done, 0 ready") == 2 and "µs/atom-step measured" in again
    # A run of another length does not count as done, and does not overwrite the cell: refused.
    with pytest.raises(FileExistsError, match="plain_d01_f0_s0.json holds a result run otherwise"):
        depth_study_md.run_md([one], runs_dir, 2, 24, replicas=3, ps=0.01)
    assert {p.name: p.stat().st_mtime_ns for p in md_dir.iterdir()} == stamps
    # A cell whose rate moved after its MD ran: that result is stale, left out and run again.
    stale = md_dir / "plain_d01.json"
    row = json.loads(stale.read_text())
    assert row["lr"] == 1e-3
    stale.write_text(json.dumps({**row, "lr": 3e-4}))
    assert sorted((r["temperature_k"], r["depth"]) for r in depth_study_md.md_rows([one], runs_dir)) == [
        (1518.0, 2), (3000.0, 1), (3000.0, 2)]
    assert depth_study_md.run_md([one], runs_dir, 2, 24, replicas=3, ps=0.02) == 1
    assert json.loads(stale.read_text())["lr"] == 1e-3
    assert "1/24 cells done, 1 ready" in capsys.readouterr().out

    # A per-model cell whose models are not all here (the archive keeps medians) is not run.
    cells = depth_study_md.cell_runs(runs_dir / "si-2.5k")
    away = cells["plain", 1][1][1] / "model.pt"
    away.rename(away.with_suffix(".away"))
    (hot_dir / "plain_d01.json").rename(hot_dir / "plain_d01.kept")
    todo = depth_study_md.plan_md([one], runs_dir, 2, 24, replicas=3, ps=0.02)
    assert "1 without all their models here" in capsys.readouterr().out
    assert [k for (name, cond), keys in todo.items() for k in keys] == []
    away.with_suffix(".away").rename(away)
    (hot_dir / "plain_d01.kept").rename(hot_dir / "plain_d01.json")

    monkeypatch.setattr(study, "observables", lambda *a, **k: None)
    study.collect(runs_dir, [one], tmp_path / "results.json")
    document = json.loads((tmp_path / "results.json").read_text())
    assert len(document["runs"]) == 5 and len(document["md_stability"]) == 4
    assert [c["temperature_K"] for c in document["design"]["md"]["si"]] == [3000.0, 1518.0]
    row = next(r for r in document["md_stability"] if r["depth"] == 2 and r["temperature_k"] == 1518.0)
    for key in ("dataset", "budget", "variant", "depth", "width", "seed", "fold", "temperature_k", "timestep_fs",
                "replicas", "ps_per_replica", "time_to_failure_ps", "n_failed", "failure_reasons"):
        assert key in row, key
    assert (row["dataset"], row["budget"], row["n_failed"], row["ps_per_replica"]) == ("si", "2.5k", 3, 0.02)


def test_md_runs_each_variants_shallow_and_deepest_cells_first(study):
    import depth_study_md

    cells = [(v, d) for v in ("plain", "residual_stem") for d in (1, 2, 4, 8)] + [("residual_stem", 32)]
    order = sorted(cells, key=lambda k: depth_study_md.md_priority(k, cells))
    assert order[:6] == [("plain", 1), ("plain", 2), ("plain", 8), ("residual_stem", 1), ("residual_stem", 2),
                         ("residual_stem", 32)]
    assert order[6:] == [("plain", 4), ("residual_stem", 4), ("residual_stem", 8)]


def test_start_structures_prefer_the_nearest_aimd_temperature(study, monkeypatch):
    import depth_study_md
    from ase import Atoms

    temperatures = (300, 300, 1518, 3374, 1518, 843)
    frames = [Atoms("Si", cell=[3, 3, 3], pbc=True, info={"group": "AIMD-NVT", "description": f"frame {k} at {t} K"})
              for k, t in enumerate(temperatures)]
    monkeypatch.setattr("mlpot.data.read", lambda *a, **k: frames)
    data = {"test": "held-out", "format": "mlearn", "read_options": {}}
    picked = depth_study_md.start_structures(data, 1500.0, 3)
    assert [a.info["description"] for a in picked] == ["frame 2 at 1518 K", "frame 4 at 1518 K", "frame 5 at 843 K"]
    cycled = depth_study_md.start_structures(data, 1500.0, 8)
    assert len(cycled) == 8 and cycled[6] is cycled[0]  # fewer frames than replicas: reused, new velocities


def test_representative_is_the_median_validation_run(study):
    import depth_study_md

    runs = [({"val": {"force_rmse_mev_per_a": f}, "fold": k % 3, "seed": k // 3}, k) for k, f in
            enumerate((5.0, 1.0, 3.0, 4.0, 2.0))]
    assert depth_study_md.representative(runs)[1] == 2  # 1, 2, 3, 4, 5 → 3.0
    assert depth_study_md.representative(runs[:4])[1] == 2  # 1, 3, 4, 5 → lower middle 3.0


def test_crystal_observables_of_mlearn_si(study, shared_datasets):
    """On the Si data: the DFT lattice constant of the Elastic cells; an untrained network has
    no E(V) minimum, and the vacancy is then skipped rather than computed at a wrong a0."""
    import torch

    from mlpot.descriptors import SymmetryFunctionSpec
    from mlpot.models import NetworkConfig, Potential

    data = study.datasets()["si"]
    torch.manual_seed(0)
    model = Potential(SymmetryFunctionSpec.default(["Si"], cutoff=4.0), NetworkConfig(depth=1, width=4)).double()
    values = load_script("depth_study_observables").crystal_observables(model, data)
    assert values["eos_reference"]["a0_a"] == pytest.approx(5.4687, abs=1e-3)
    assert values["eos_reference"]["bulk_modulus_gpa"] == pytest.approx(values["elastic_reference"]["B"])
    assert values["eos"]["a0_a"] is None and values["eos"]["fit_error"] and values["vacancy"] is None


def test_water_rdf_against_a_cached_teacher(study, tmp_path, monkeypatch):
    """A student identical to the teacher, run by the same protocol, has the teacher's g(r)."""
    import ase.io
    import torch
    from structures_for_tests import water_box

    import mlpot
    from mlpot.descriptors import SymmetryFunctionSpec
    from mlpot.models import NetworkConfig, Potential

    torch.manual_seed(0)
    teacher = Potential(SymmetryFunctionSpec.default(["H", "O"], cutoff=3.0), NetworkConfig(depth=1, width=4)).double()
    teacher.energy_scale.fill_(1e-3)
    mlpot.save(teacher, tmp_path / "teacher.pt")
    ase.io.write(tmp_path / "test.extxyz", [water_box(0), water_box(1)])
    observables = load_script("depth_study_observables")
    monkeypatch.setattr(observables, "RDF_PROTOCOL", {**observables.RDF_PROTOCOL, "equilibrate": 2, "steps": 4,
                                                       "every": 2, "r_max": 3.0, "bins": 30})
    data = {"test": str(tmp_path / "test.extxyz"), "format": "ase", "read_options": {}}
    assert observables.teacher_path(data) == tmp_path / "teacher.pt"  # the teacher beside its data
    student = mlpot.load(tmp_path / "teacher.pt", dtype=torch.float64)
    result = observables.water_rdf(student, data, tmp_path / "runs")
    assert set(result["difference_vs_teacher"]) == {"O-O", "O-H", "H-H"}
    assert all(d == pytest.approx(0.0, abs=1e-12) for d in result["difference_vs_teacher"].values())
    cache = tmp_path / "runs" / "teacher-rdf.json"
    stamp = cache.stat().st_mtime_ns
    observables.water_rdf(student, data, tmp_path / "runs")
    assert cache.stat().st_mtime_ns == stamp  # the teacher's g(r) is computed once


def test_run_takes_each_study_through_its_stages_before_the_next(study, monkeypatch, tmp_path):
    """``run`` goes study by study: lr, full, then md on that study's finished cells,
    archiving after each stage that ran; a stage that waits (full before its screen is
    done) ends that study's turn."""
    calls = []
    triples = [("si-2.5k", {"x": 1}, "2.5k"), ("mo-2.5k", {"x": 2}, "2.5k")]
    monkeypatch.setattr(study, "studies", lambda selected: triples)
    monkeypatch.setattr(study, "plan", lambda args: None)
    monkeypatch.setattr(study, "run_stage",
                        lambda args, name, data, budget, stage: calls.append((name, stage)) or name == "si-2.5k")
    monkeypatch.setattr(study, "md", lambda args, selected=None: calls.append((selected[0][0], "md")) or 0)
    monkeypatch.setattr(study, "archive", lambda args, selected=None: calls.append((selected[0][0], "archive")) or 0)
    monkeypatch.setattr("sys.argv", ["depth_study.py", "run", "--runs", str(tmp_path / "runs"),
                                     "--archive", str(tmp_path / "archive")])
    assert study.main() == 0
    assert calls == [("si-2.5k", "lr"), ("si-2.5k", "archive"), ("si-2.5k", "full"), ("si-2.5k", "archive"),
                     ("si-2.5k", "md"), ("mo-2.5k", "lr")]


def test_full_stage_pairs_give_every_seed_once_and_cover_every_fold(study):
    seeds = [seed for _, seed in study.PAIRS]
    assert sorted(seeds) == sorted(study.SEEDS) and len(seeds) >= 5
    assert {fold for fold, _ in study.PAIRS} == set(range(study.FOLDS))


def test_md_stage_skips_water_unless_named(study, monkeypatch, capsys):
    import depth_study_md

    water = ("water-4traj-2.5k", {"group_by": "trajectory"}, "2.5k")
    si = ("si-2.5k", {"format": "mlearn"}, "2.5k")
    monkeypatch.setattr(study, "studies", lambda selected: [si, water])
    ran, checked = [], []
    monkeypatch.setattr(depth_study_md, "run_md", lambda chosen, *a, **k: ran.append([n for n, _, _ in chosen]) or 0)
    monkeypatch.setattr(study.depth_study_archive, "check_data", lambda folder, data: checked.append(folder.name))
    runs = Path("runs")
    study.md(SimpleNamespace(studies=None, runs=runs, replicas=10, ps=50.0, threads=None), [si, water])
    assert ran == [["si-2.5k"]] and "skips water-4traj-2.5k" in capsys.readouterr().out
    study.md(SimpleNamespace(studies=["water-4traj-2.5k"], runs=runs, replicas=10, ps=50.0, threads=None), [water])
    assert ran[-1] == ["water-4traj-2.5k"]
    assert checked == ["si-2.5k", "water-4traj-2.5k"]  # each study's data, before its MD


def test_every_study_trains_with_the_first_studys_recipe(study, tmp_path, monkeypatch):
    """The recipe is copied once for the whole study: a change to examples/mlearn.yaml after
    the first study started does not reach the later ones (the budgets would not compare)."""
    example = tmp_path / "mlearn.yaml"
    example.write_text("optimizer: {name: adam, lr: 1.0e-3}\n")
    monkeypatch.setattr(study, "RECIPE", example)
    runs = tmp_path / "runs"
    first = study.recipe(runs / "si-2.5k")
    example.write_text("optimizer: {name: adamw, lr: 1.0e-3, weight_decay: 3.0e-2}\n")
    later = study.recipe(runs / "si-25k")
    assert first == later == {"optimizer": {"name": "adam", "lr": 1.0e-3}}
    assert (runs / "recipe.yaml").read_text() == (runs / "si-25k" / "recipe.yaml").read_text()


def test_archive_keeps_what_a_fresh_clone_needs_and_restore_brings_it_back(study, fake_study, monkeypatch, tmp_path):
    """A session's runs folder is gone in the next clone: the committed archive must hold every
    finished run's measurements (not its metrics or checkpoints), the models the MD stage
    loads, and give back the same results.json rows after a restore."""
    import shutil

    import depth_study_archive

    from mlpot.ablation.runner import load_result

    runs_dir, one = fake_study
    monkeypatch.setattr(study, "studies", lambda selected: [one])
    monkeypatch.setattr(study, "PAIRS", ((0, 0), (1, 0)))
    monkeypatch.setattr(study, "observables", lambda *a, **k: None)
    full = runs_dir / "si-2.5k" / "full-lr0.001" / "runs"
    (full / "d01_plain_f0_s0" / "metrics.csv").write_text("epoch,val_loss\n1,0.5\n2,0.25\n3,nan\n")
    (full / "d01_plain_f0_s0" / "last.pt").write_bytes(b"a checkpoint")
    unfinished = full / "d03_plain_f0_s0"
    unfinished.mkdir()
    (unfinished / "metrics.csv").write_text("epoch,val_loss\n1,0.5\n")
    md_dir = runs_dir / "si-2.5k" / "md"
    md_dir.mkdir()
    (md_dir / "plain_d01.checkpoint.json").write_text("{}")
    before = tmp_path / "before.json"
    study.collect(runs_dir, [one], before)

    archived = tmp_path / "archive"
    args = SimpleNamespace(studies=None, runs=runs_dir, archive=archived)
    assert study.archive(args) == 0
    names = sorted(str(p.relative_to(archived)) for p in archived.rglob("*") if p.is_file())
    stage = "si-2.5k/full-lr0.001"
    assert f"{stage}/splits/fold0.json" in names and "si-2.5k/md/plain_d01.checkpoint.json" in names
    assert sum(n.endswith("result.json") for n in names) == 5  # the finished runs, not d03
    assert not any("d03_plain" in n or n.endswith(("metrics.csv", "last.pt")) for n in names)
    # Models: the representative (median validation run, here fold 0) of each complete cell only.
    assert sorted(n for n in names if n.endswith("model.pt")) == [
        f"{stage}/runs/d01_plain_f0_s0/model.pt", f"{stage}/runs/d02_plain_f0_s0/model.pt"]
    assert depth_study_archive.archive_study(runs_dir, archived, "si-2.5k", []) == 0  # nothing new

    # A fresh clone: the runs folder is gone; restore gives the runner finished runs back.
    shutil.rmtree(runs_dir)
    assert depth_study_archive.restore(archived, runs_dir) == len(names)
    assert load_result(full / "d01_plain_f0_s0") is not None and load_result(unfinished) is None
    assert study.rates_screen.best_val_loss(full / "d01_plain_f0_s0") == 0.25  # from the archive's summary
    after = tmp_path / "after.json"
    study.collect(runs_dir, [one], after)
    assert json.loads(after.read_text())["runs"] == json.loads(before.read_text())["runs"]

    # Restore never overwrites a local file, and a checkpoint of a cell that has since
    # finished is neither restored nor kept.
    (full / "d01_plain_f0_s0" / "result.json").write_text("local")
    (md_dir / "plain_d01.checkpoint.json").unlink()
    (md_dir / "plain_d01.json").write_text("{}")
    assert depth_study_archive.restore(archived, runs_dir) == 0
    assert (full / "d01_plain_f0_s0" / "result.json").read_text() == "local"
    depth_study_archive.archive_study(runs_dir, archived, "si-2.5k", [])
    assert not (archived / "si-2.5k" / "md" / "plain_d01.checkpoint.json").exists()
    assert (archived / "si-2.5k" / "md" / "plain_d01.json").is_file()


def test_a_study_refuses_data_that_changed_since_it_started(study, tmp_path):
    """The teacher's water is regenerated in every fresh clone: a study records the sha256 of
    its files when it starts, goes on while they are the same, and refuses, naming the file,
    once one differs; the record is archived with the study."""
    import hashlib

    import depth_study_archive

    train, test = tmp_path / "train.extxyz", tmp_path / "test.extxyz"
    train.write_text("frames of four trajectories\n")
    test.write_text("held-out trajectories\n")
    data = {"train": str(train), "test": str(test)}
    study_dir = tmp_path / "runs" / "water-4traj-2.5k"
    depth_study_archive.check_data(study_dir, data)
    recorded = json.loads((study_dir / "data.json").read_text())
    assert recorded["train"]["sha256"] == hashlib.sha256(train.read_bytes()).hexdigest()
    assert recorded["test"]["sha256"] == hashlib.sha256(test.read_bytes()).hexdigest()
    depth_study_archive.check_data(study_dir, data)  # unchanged: goes on
    # The same bytes at another path (another clone's ../shared) are the same data.
    moved = tmp_path / "elsewhere.extxyz"
    moved.write_bytes(train.read_bytes())
    depth_study_archive.check_data(study_dir, {**data, "train": str(moved)})

    test.write_text("held-out trajectories, regenerated differently\n")
    with pytest.raises(SystemExit, match=r"water-4traj-2\.5k: its test data changed .*test\.extxyz"):
        depth_study_archive.check_data(study_dir, data)
    with pytest.raises(SystemExit, match="its test data changed"):  # a file dropped is a change too
        depth_study_archive.check_data(study_dir, {"train": str(train)})
    assert "data.json" in depth_study_archive.STUDY_FILES


def test_plan_names_the_studies_whose_data_are_missing_and_how_to_make_them(study, tmp_path, monkeypatch):
    monkeypatch.setattr(study, "MLEARN", tmp_path / "no-mlearn")
    monkeypatch.setattr(study, "TEACHER", tmp_path / "teacher-water")
    missing = dict(study.unavailable_studies())
    assert sorted(missing) == sorted(study.ORDER)
    assert "make_teacher_water.py" in missing["water-4traj-2.5k"] and "no-mlearn" in missing["si-25k"]
    # With the teacher's 4-trajectory rung made, its two studies are available, the others not.
    teacher = tmp_path / "teacher-water"
    teacher.mkdir()
    for name in ("train-4traj.extxyz", "test.extxyz", "teacher.pt"):
        (teacher / name).write_text("")
    missing = dict(study.unavailable_studies())
    assert "water-4traj-2.5k" not in missing and "water-4traj-25k" not in missing
    assert "water-8traj-2.5k" in missing and "si-2.5k" in missing


def test_collect_keeps_the_previous_entries_of_a_study_with_nothing_on_disk(tmp_path):
    import depth_study_archive

    def row(study, **extra):
        dataset, budget = study.rsplit("-", 1)
        return {"dataset": dataset, "budget": budget, **extra}

    d2, d4 = {"variant": "plain", "depth": 2}, {"variant": "plain", "depth": 4}
    previous = {"runs": [row("si-2.5k", seed=0, **d2), row("si-2.5k", seed=1, **d2), row("si-25k", seed=9, **d2),
                         row("si-25k", seed=8, **d4)],
                "observables": [row("si-2.5k", seed=0, **d2)], "md_stability": [],
                "cost": [{"study": "si-2.5k"}, {"study": "si-25k", "old": True}]}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(previous))
    document = {"runs": [row("si-25k", seed=0, **d2)], "observables": [], "md_stability": [], "cost": []}
    lines = depth_study_archive.carry_over(path, document, ["si-2.5k", "si-25k"])
    # si-2.5k has nothing on disk: all of its previous entries are kept.
    assert [r["seed"] for r in document["runs"] if r["budget"] == "2.5k"] == [0, 1]
    assert document["observables"] == [row("si-2.5k", seed=0, **d2)]
    assert lines == ["[si-2.5k] kept from results.json, not found on disk: 2 runs, 1 observables, 1 cost",
                     "[si-25k] kept from results.json, not found on disk: 1 runs, 1 cost"]
    # si-25k's depth-2 cell on disk replaces its previous runs whole; its depth-4 cell, not
    # on disk, and its missing cost pass are kept.
    assert sorted(r["seed"] for r in document["runs"] if r["budget"] == "25k") == [0, 8]
    assert {"study": "si-25k", "old": True} in document["cost"]
    # A study not collected this time keeps every entry: collecting si-25k alone drops
    # nothing of si-2.5k.
    path.write_text(json.dumps(previous))
    document = {"runs": [row("si-25k", seed=0, **d2)], "observables": [], "md_stability": [], "cost": []}
    lines = depth_study_archive.carry_over(path, document, ["si-25k"])
    assert [r["seed"] for r in document["runs"] if r["budget"] == "2.5k"] == [0, 1]
    assert document["observables"] == [row("si-2.5k", seed=0, **d2)]
    assert {"study": "si-2.5k"} in document["cost"]
    assert lines[0] == "[si-2.5k] not collected this time: its 4 entries kept from results.json"
    # MD rows: kept per cell and temperature, and only if run as a condition of today's
    # (Si 3000 K counts every model, two replicas each; a one-model row there is stale).
    md = [row("si-25k", temperature_k=1518.0, ps_per_replica=50.0, **d4),
          row("si-25k", temperature_k=3000.0, ps_per_replica=10.0, **d4),
          row("si-25k", temperature_k=3000.0, ps_per_replica=10.0, replicas_per_model=2, **d2)]
    path.write_text(json.dumps({**previous, "md_stability": md}))
    document = {"runs": [], "observables": [], "cost": [],
                "md_stability": [row("si-25k", temperature_k=1518.0, ps_per_replica=50.0, **d2)]}
    depth_study_archive.carry_over(path, document, ["si-25k"])
    assert sorted((r["depth"], r["temperature_k"]) for r in document["md_stability"]) == [
        (2, 1518.0), (2, 3000.0), (4, 1518.0)]
    # The cells' learning rates as recorded (a lost screen's choices), per study.
    path.write_text(json.dumps({"runs": [row("si-2.5k", lr=3e-3, **d2), row("si-25k", lr=1e-3, **d2)]}))
    assert depth_study_archive.recorded_rates(path, "si-2.5k") == {("plain", 2): 3e-3}
    assert depth_study_archive.recorded_rates(tmp_path / "absent.json", "si-2.5k") == {}
    # Nothing to carry from a first collect.
    assert depth_study_archive.carry_over(tmp_path / "absent.json", {"runs": [], "observables": [],
                                                                     "md_stability": [], "cost": []}, ["si-2.5k"]) == []


def test_a_study_chooses_its_terms_once_and_refuses_another_select(study, tmp_path):
    """fixed_descriptor: descriptor.select is resolved once per study into explicit terms
    (mlpot.training.fixed_terms), a file of an older study (the terms alone) is kept and
    recorded with its config, and a recipe that now selects otherwise is refused."""
    import ase.io
    from ase.build import bulk

    from mlpot.training import TrainConfig

    frames = []
    for seed in range(4):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.rattle(0.1, seed=seed)
        frames.append(atoms)
    ase.io.write(tmp_path / "train.extxyz", frames)
    config = {"data": {"train": str(tmp_path / "train.extxyz"), "format": "ase"},
              "descriptor": {"cutoff": 4.0, "radial": [{"grid": {"count": 6, "mode": "shift", "r_lower": 1.5}}],
                             "select": {"count": 3, "method": "cur"}},
              "ablation": {"depths": [1]}}
    study_dir = tmp_path / "si-2.5k"
    chosen = study.fixed_descriptor(study_dir, config)
    expected = TrainConfig.from_dict({k: v for k, v in config.items() if k != "ablation"}).build_descriptor(
        ["Cu"], frames).spec.to_dict()
    assert chosen == expected and "select" not in chosen
    saved = study_dir / "descriptor.json"
    record = json.loads(saved.read_text())
    assert record["chosen_by"]["select"]["count"] == 3
    # A choice saved before select had its balance_by field resumes: the saved config is read
    # with today's defaults, not compared as text.
    del record["chosen_by"]["select"]["balance_by"]
    saved.write_text(json.dumps(record))
    assert study.fixed_descriptor(study_dir, config) == expected
    # An older study's file: the terms alone. They are kept, whatever a new choice would be.
    older = {**chosen, "radial": chosen["radial"][:2]}
    saved.write_text(json.dumps(older))
    assert study.fixed_descriptor(study_dir, config) == older
    assert json.loads(saved.read_text())["spec"] == older
    config["descriptor"]["select"] = {"count": 2, "method": "cur"}
    with pytest.raises(ValueError, match="chosen by another descriptor config"):
        study.fixed_descriptor(study_dir, config)
    config["descriptor"].pop("select")
    assert study.fixed_descriptor(study_dir, config) == config["descriptor"]  # nothing to choose


def test_results_json_lists_each_studys_screened_rates_and_keeps_the_others(study, tmp_path):
    """collect's "learning_rates": a study collected now from its rates.json; one not
    collected keeps what the previous results.json had; a collected study without the file
    is left out (its cells are judged by the grid's ends)."""
    cells = [{"variant": "plain", "depth": 4, "lr": 3e-4, "val_loss": {"0.0001": 0.3, "0.0003": 0.2, "0.001": 0.4}}]
    (tmp_path / "si-25k").mkdir()
    (tmp_path / "si-25k" / "rates.json").write_text(json.dumps({"cells": cells}))
    previous = tmp_path / "results.json"
    previous.write_text(json.dumps({"learning_rates": {"mo-2.5k": ["mo"], "si-25k": ["old"]}}))
    found = study.rates_screen.collected(tmp_path, ["si-25k", "si-2.5k"], previous)
    assert found == {"mo-2.5k": ["mo"], "si-25k": cells}


def test_water_studies_train_on_every_trajectory_but_the_validation_one(study, tmp_path, monkeypatch):
    """Water is tested on its held-out trajectories, not by cross-validation: one fold, five
    seeds, and the split of a 4-trajectory rung trains on 3 whole trajectories (3-fold CV
    by trajectory would train on 1 or 2, a different number per fold)."""
    import numpy as np
    from mlpot.data import random_split

    water = {"train": "train-4traj.extxyz", "test": "test.extxyz", "format": "ase", "read_options": {},
             "val_fraction": 0.1, "split_seed": 0, "group_by": "trajectory"}
    mlearn = {"train": "training.json", "test": "test.json", "format": "mlearn", "read_options": {}}
    assert study.folds(water) == 1 and study.pairs(water) == tuple((0, s) for s in study.SEEDS)
    assert study.folds(mlearn) == study.FOLDS and study.pairs(mlearn) == study.PAIRS
    # The data-size axis trains a subset of the cells, each with a plain depth-2 partner to pair with.
    assert study.cells(mlearn) == study.CELLS and set(study.cells(water)) < set(study.CELLS)
    assert ("plain", 2) in study.cells(water) and len(study.cells(water)) == len(set(study.cells(water)))
    monkeypatch.setattr(study, "teacher_descriptor", lambda data: {"kind": "symmetry_functions"})
    config = study.stage_config(tmp_path, "water-4traj-2.5k", water, "2.5k", "full", 1e-3)
    assert config["ablation"]["folds"] == 1 and config["data"]["test"] == "test.extxyz"
    # The split the runner makes for folds: 1 with a test file (mlpot.ablation.runner).
    trajectory = np.repeat(np.arange(4), 20)
    split = random_split(80, water["val_fraction"], 0.0, seed=water["split_seed"], groups=trajectory)
    train, val = set(trajectory[list(split.train)]), set(trajectory[list(split.val)])
    assert len(train) == 3 and len(val) == 1 and not train & val and len(split.test) == 0


def test_md_probe_runs_named_cells_at_its_own_condition_beside_the_study(fake_study, monkeypatch, capsys, tmp_path):
    """scripts/depth_study_md_probe.py: the md stage's protocol at another temperature, into
    md-<T>K/ (the study's md/ untouched), skipping cells done, refusing unfinished cells."""
    probe = load_script("depth_study_md_probe")
    runs_dir, one = fake_study
    monkeypatch.setattr(probe.depth_study, "studies", lambda selected: [one])
    monkeypatch.setattr(probe.depth_study, "SEEDS", (0,))
    monkeypatch.setattr(probe.depth_study, "FOLDS", 2)
    monkeypatch.setattr(probe.depth_study, "PAIRS", ((0, 0), (1, 0)))
    monkeypatch.setattr(probe.depth_study_md, "CHECK_EVERY", 5)
    table = tmp_path / "probe.json"
    argv = ["si-2.5k", "--cells", "plain:1", "plain:2", "--temperature", "3000", "--ps", "0.02", "--replicas", "2",
            "--runs", str(runs_dir), "--json", str(table)]
    assert probe.main(argv) == 0
    out_dir = runs_dir / "si-2.5k" / "md-3000K"
    assert sorted(p.name for p in out_dir.iterdir()) == ["plain_d01.json", "plain_d02.json"]
    assert not (runs_dir / "si-2.5k" / "md").exists()
    gentle, wild = json.loads(table.read_text())
    assert (gentle["temperature_k"], gentle["timestep_fs"], gentle["replicas"]) == (3000.0, 1.0, 2)
    assert gentle["n_failed"] == 0 and gentle["median_time_to_failure_ps"] is None
    assert wild["n_failed"] == 2 and 0 < wild["median_time_to_failure_ps"] <= 0.02
    assert "plain depth 2 (fold 0, seed 0): 2 of 2 replicas failed" in capsys.readouterr().out
    # Run again: both cells are done and are read, not run.
    stamps = {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir()}
    assert probe.main(argv) == 0
    assert {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir()} == stamps
    # --all-runs: every model of the cell; the median one (fold 0) is the cell's file, reused.
    assert probe.main([*argv[:2], "plain:1", *argv[4:], "--all-runs"]) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["plain_d01.json", "plain_d01_f1_s0.json", "plain_d02.json"]
    assert [(r["fold"], r["n_failed"]) for r in json.loads(table.read_text())] == [(0, 0), (1, 0)]
    assert (out_dir / "plain_d01.json").stat().st_mtime_ns == stamps["plain_d01.json"]
    # --models: the cells' runs from another ablate folder (its rate from config.yaml), into its md-<T>K/.
    import shutil

    other = tmp_path / "retrained"
    shutil.copytree(runs_dir / "si-2.5k" / "full-lr0.001", other)
    for run_dir in (other / "runs").iterdir():
        (run_dir / "config.yaml").write_text("optimizer: {name: adam, lr: 0.002}\n")
    assert probe.main([*argv[:2], "plain:1", *argv[4:], "--models", str(other)]) == 0
    assert sorted(p.name for p in (other / "md-3000K").iterdir()) == ["plain_d01_f0_s0.json", "plain_d01_f1_s0.json"]
    assert {json.loads(p.read_text())["lr"] for p in (other / "md-3000K").iterdir()} == {0.002}
    assert {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir()}["plain_d01.json"] == stamps["plain_d01.json"]
    with pytest.raises(SystemExit, match="have not finished"):
        probe.main([*argv[:2], "plain:3", *argv[4:], "--models", str(other)])
    # A run whose model is gone (the archive keeps medians only): refused before any MD, by name.
    run_dir = next(d for _, d in probe.depth_study_md.cell_runs(runs_dir / "si-2.5k")[("plain", 2)])
    (run_dir / "model.pt").rename(run_dir / "model.pt.away")
    with pytest.raises(SystemExit, match=f"1 model files are not here: .*{run_dir.name}/model.pt"):
        probe.main([*argv[:2], "plain:2", *argv[4:], "--all-runs"])
    (run_dir / "model.pt.away").rename(run_dir / "model.pt")
    # A cell with one of its two runs is not finished: refused by name.
    with pytest.raises(SystemExit, match="residual_stem"):
        probe.main([*argv[:2], "residual_stem:1", *argv[4:]])
    with pytest.raises(SystemExit):
        probe.main(["si-2.5k", "--cells", "plain", "--temperature", "3000"])

"""scripts/depth_study.py: its bookkeeping on synthetic results (the choice of each cell's
learning rate, the convergence flag, the rows of results.json and the recommendation with
its paired difference); training itself is mlpot.ablation's and tested there."""

from __future__ import annotations

import json
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


def test_each_cell_takes_the_rate_of_lowest_validation_loss(study, tmp_path, monkeypatch):
    runs = [SimpleNamespace(name=f"d{d:02d}_plain_f0_s0", variant="plain", depth=d, fold=0, seed=0) for d in (1, 2)]
    losses = {(1, 3e-4): 0.5, (1, 1e-3): 0.2, (1, 3e-3): 0.4, (2, 3e-4): 0.3, (2, 1e-3): 0.6, (2, 3e-3): 0.9}
    for (depth, lr), loss in losses.items():
        folder = tmp_path / f"lr-{lr:g}" / "runs" / f"d{depth:02d}_plain_f0_s0"
        folder.mkdir(parents=True)
        (folder / "metrics.csv").write_text(f"epoch,val_loss\n1,{loss * 2}\n2,{loss}\n3,nan\n")
    monkeypatch.setattr("mlpot.ablation.runner.load_result", lambda folder: {} if (folder / "metrics.csv").exists() else None)
    assert study.chosen_rates(tmp_path, runs) == {("plain", 1): 1e-3, ("plain", 2): 3e-4}
    # A cell whose screen is unfinished has no rate yet.
    (tmp_path / "lr-0.003" / "runs" / "d02_plain_f0_s0" / "metrics.csv").unlink()
    assert study.chosen_rates(tmp_path, runs) == {("plain", 1): 1e-3}


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
    diff = best["paired_difference_vs_runner_up"]
    assert best["runner_up"]["depth"] == 8 and diff["n"] == 15
    assert diff["mean"] == pytest.approx(-4.0) and diff["resolved"]
    json.dumps(best)  # results.json must be able to hold it

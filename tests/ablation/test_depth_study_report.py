"""scripts/depth_study_report.py (``python scripts/depth_study.py report``): figures and tables
of the depth study v2 from a synthetic results.json whose numbers are known by construction."""

from __future__ import annotations

import json
import sys

import pytest
from scripts_for_tests import load_script

PNG = b"\x89PNG\r\n\x1a\n"
DEPTHS, VARIANTS, SEEDS, FOLDS = (1, 2, 4), ("plain", "residual_stem"), (0, 1), 3
#: Test force RMSE = 100 + noise(fold, seed) + offset(cell): the noise is shared by every cell of a
#: (fold, seed), so the paired difference to plain depth 2 is exactly the offset, with no spread.
#: Multiples of 1/4: the arithmetic is exact in binary floating point.
OFFSET = {("plain", 1): 5.0, ("plain", 2): 0.0, ("plain", 4): 3.0,
          ("residual_stem", 1): 6.0, ("residual_stem", 2): 2.5, ("residual_stem", 4): -1.5}


@pytest.fixture(scope="module")
def report():
    return load_script("depth_study_report")


def noise(fold: int, seed: int) -> float:
    return 0.25 * (2 * fold + seed)


def run(dataset: str, variant: str, depth: int, fold: int, seed: int) -> dict:
    force = 100.0 + noise(fold, seed) + OFFSET[variant, depth]
    return {"dataset": dataset, "budget": "2.5k", "depth": depth, "width": 40 - 4 * depth, "hidden": [40 - 4 * depth] * depth,
            "variant": variant, "activation": "silu", "seed": seed, "fold": fold, "n_params": 2300 + depth,
            "epochs_run": 400, "best_epoch": 300, "converged": not (variant == "plain" and depth == 4 and seed == 1),
            "lr": 1e-2 if (variant, depth) == ("plain", 4) else 3e-3, "val_energy_rmse_mev_per_atom": 5.0, "val_force_rmse_mev_per_a": force,
            "test_energy_rmse_mev_per_atom": 5.0 + fold, "test_energy_mae_mev_per_atom": 4.0,
            "test_force_rmse_mev_per_a": force, "test_force_mae_mev_per_a": 0.6 * force, "test_stress_rmse_gpa": None,
            "external_test_energy_mae_mev_per_atom": None, "external_test_force_mae_mev_per_a": None,
            "train_us_per_atom": 10.0 * depth + seed, "infer_us_per_atom": 20.0 + depth,
            "peak_activation_mib": 4.0 * depth, "peak_activation_checkpointed_mib": 2.0 * depth + 1,
            "grad_init_rms": {**{f"layer {k}": 10.0 ** (-k) for k in range(1, depth + 1)}, "readout": 0.5},
            "grad_last_epoch_rms": None}


def observable(variant: str, depth: int, fold: int, seed: int) -> dict:
    scale = 1.0 + 0.01 * depth  # +1 % per hidden layer against DFT
    return {"dataset": "si", "budget": "2.5k", "variant": variant, "depth": depth, "seed": seed, "fold": fold,
            "elastic_model": {"C11": 160.0 * scale, "C12": 64.0 * scale, "C44": 76.0 * scale, "B": 96.0 * scale},
            "elastic_reference": {"C11": 160.0, "C12": 64.0, "C44": 76.0, "B": 96.0},
            "eos": {"a0_a": 5.47, "bulk_modulus_gpa": 96.0 * scale}, "eos_reference": {"a0_a": 5.47, "bulk_modulus_gpa": 96.0},
            "vacancy": None}


def md_row(variant: str, depth: int, temperature: float = 1518.0, ps: float = 50.0) -> dict:
    ttf = [None] * 8 + [12.0, 30.0] if depth == 4 else [None] * 10
    ttf = [t if t is None else t * ps / 50.0 for t in ttf]
    return {"dataset": "si", "budget": "2.5k", "variant": variant, "depth": depth, "width": 40 - 4 * depth, "seed": 0,
            "fold": 0, "temperature_k": temperature, "timestep_fs": 1.0, "replicas": 10, "ps_per_replica": ps,
            "time_to_failure_ps": ttf, "n_failed": sum(t is not None for t in ttf), "failure_reasons": [],
            "ensemble": "nvt", "us_per_atom_step": 30.0}


def document(partial: bool = False) -> dict:
    """Two studies: si-2.5k complete (observables, MD); water-4traj-2.5k without the cell
    residual d4 and with only folds 0–1 of plain d1, no MD, no observables."""
    runs = [run("si", v, d, f, s) for v in VARIANTS for d in DEPTHS for f in range(FOLDS) for s in SEEDS]
    runs += [run("water-4traj", v, d, f, s) for v in VARIANTS for d in DEPTHS for f in range(FOLDS) for s in SEEDS
             if (v, d) != ("residual_stem", 4) and not ((v, d) == ("plain", 1) and f == 2)]
    doc = {"design": {"depths": list(DEPTHS), "variants": list(VARIANTS), "budgets": {"2.5k": 32},
                      "seeds": list(SEEDS), "folds": FOLDS, "learning_rates": [3e-4, 1e-3, 3e-3, 1e-2]},
           "runs": runs}
    if not partial:
        doc["observables"] = [observable(v, d, f, s) for v in VARIANTS for d in DEPTHS for f in range(FOLDS)
                              for s in SEEDS]
        doc["md_stability"] = [md_row(v, d, *condition) for condition in ((3000.0, 10.0), (1518.0, 50.0))
                               for v in VARIANTS for d in DEPTHS]
        doc["recommendation"] = {"si/2.5k": {"variant": "residual_stem", "depth": 4, "width": 24, "activation": "silu",
                                             "runs": 6, "runner_up": {"variant": "plain", "depth": 2},
                                             "paired_difference_vs_runner_up": {"n": 6, "mean": -1.5, "se": 0.0,
                                                                                "low": -1.5, "high": -1.5,
                                                                                "resolved": True}}}
    return doc


def write(tmp_path, doc: dict):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc))
    return path


def table_row(text: str, study: str, variant: str, depth: int) -> list[str]:
    """The cells of ``study``'s table row for (variant, depth) in tables.md."""
    section = text.split(f"## {study} ")[1].split("\n## ")[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > 2 and cells[0] == variant and cells[1] == str(depth):
            return cells
    raise AssertionError(f"no row {variant} d{depth} in {study}")


def test_figures_and_tables_from_complete_results(report, tmp_path):
    out = tmp_path / "v2"
    written = report.report(write(tmp_path, document()), out, expected=["si-2.5k", "water-4traj-2.5k", "mo-2.5k"])
    names = {p.name for p in written}
    expected = {"error_vs_depth_si.png", "error_vs_depth_water-4traj.png", "paired_vs_plain2.png", "cost_vs_depth.png",
                "gradient_flow.png", "md_stability.png", "water_size.png", "observables.png", "tables.md"}
    assert names == expected
    for name in expected - {"tables.md"}:
        assert (out / name).read_bytes().startswith(PNG), name

    text = (out / "tables.md").read_text()
    # The MD table: a row per cell and condition, each with its temperature and length.
    md_lines = [line for line in text.splitlines() if line.startswith("| si-2.5k |") and "× " in line]
    assert len(md_lines) == 2 * len(VARIANTS) * len(DEPTHS)
    assert sum("| 3000 | 10 × 10.0 |" in line for line in md_lines) == len(VARIANTS) * len(DEPTHS)
    # Paired differences against plain depth 2, by hand: the offsets, with a zero-width interval.
    residual_2 = table_row(text, "si-2.5k", "residual (stem + identity blocks)", 2)
    assert residual_2[9] == "+2.50 [+2.50, +2.50] *"
    assert table_row(text, "si-2.5k", "residual (stem + identity blocks)", 4)[9] == "−1.50 [−1.50, −1.50] *"
    assert table_row(text, "si-2.5k", "plain MLP", 2)[9] == "reference"
    # The other columns: network, runs, converged, mean ± std (noise 0.25·(0…5): mean 0.625,
    # std 0.25·1.8708 = 0.468; 103.625 is exact in binary and rounds half to even), medians of the costs.
    plain_4 = table_row(text, "si-2.5k", "plain MLP", 4)
    assert plain_4[2:8] == ["24", "2304", "0.01 †", "6", "3", "6.00 ± 0.89"]
    # A cell whose screen went past the grid's end (results.json "learning_rates") is marked
    # only when its rate is still an end of what it screened.
    doc = document()
    doc["learning_rates"] = {"si-2.5k": [
        {"variant": "plain", "depth": 4, "lr": 0.01, "val_loss": {"0.0003": 3, "0.001": 2, "0.003": 1.5, "0.01": 1,
                                                                  "0.03": 1.2}},
        {"variant": "plain", "depth": 2, "lr": 0.003, "val_loss": {"0.003": 0.5, "0.01": 1}}]}
    again = (report.report(write(tmp_path, doc), tmp_path / "again") and (tmp_path / "again" / "tables.md").read_text())
    assert table_row(again, "si-2.5k", "plain MLP", 4)[4] == "0.01"  # screened on to 0.03: a minimum
    assert table_row(again, "si-2.5k", "plain MLP", 2)[4] == "0.003 †"  # the smallest it screened
    assert table_row(again, "si-2.5k", "plain MLP", 1)[4] == "0.003"  # no record: inside the grid
    assert plain_4[8] == "103.62 ± 0.47"
    assert plain_4[10:] == ["24.0", "40.5"]
    # Water: plain d1 has 4 pairs with plain d2 (folds 0–1), the offset still exact.
    assert table_row(text, "water-4traj-2.5k", "plain MLP", 1)[5:7] == ["4", "4"]
    assert table_row(text, "water-4traj-2.5k", "plain MLP", 1)[9] == "+5.00 [+5.00, +5.00] *"

    missing = text.split("## Missing")[1].split("\n## ")[0]
    assert "mo-2.5k: no runs" in missing
    assert "water-4traj-2.5k: no runs for 1 of 6 cells: residual_stem d4" in missing
    assert "water-4traj-2.5k: fewer than 6 runs: plain d1 (4)" in missing
    assert "water-4traj-2.5k: no MD stability for 5 cells" in missing
    # Complete but for the cost pass: its costs are then the per-run medians above.
    assert [m for m in missing.splitlines() if "si-2.5k" in m] == ["- si-2.5k: no cost pass (python scripts/depth_study.py cost)"]

    # MD: 2 of 10 replicas failed at depth 4; survivors counted at 50 ps: (8·50 + 12 + 30)/10 = 44.2.
    md = text.split("## MD stability")[1].split("\n## ")[0]
    assert "| si-2.5k | plain MLP | 4 | 24 | 1518 | 10 × 50.0 | 2 | 0.80 [0.49, 0.94] | 44.2 |" in md
    # Observables: +1 % per hidden layer, no spread.
    assert "| plain MLP | 4 | 6 | 4.00 ± 0.00 | 4.00 ± 0.00 | 4.00 ± 0.00 | 4.00 ± 0.00 |" in text
    assert "residual (stem + identity blocks), depth 4" in text.split("## Recommendation")[1]


def cost_pass(dataset: str, depths=DEPTHS) -> dict:
    """results.json's "cost" entry of a study: training ratio = depth / 2, inference 1 + depth / 8,
    the residual network 1.5 times the plain one's, per-round ratios ±0.25 around them."""
    cells = []
    for v in VARIANTS:
        for d in depths:
            train, infer = (d / 2) * (1.5 if v != "plain" else 1.0), 1 + (d - 2) / 8
            cells.append({"variant": v, "depth": d, "width": 40 - 4 * d, "hidden": [40 - 4 * d] * d, "n_params": 2300,
                          "train_us_per_atom": 50.0 * train, "infer_us_per_atom": 100.0 * infer,
                          "train_ratio": train, "infer_ratio": infer, "train_ratio_range": [train - 0.25, train + 0.25],
                          "infer_ratio_range": [infer - 0.25, infer + 0.25]})
    return {"study": f"{dataset}-2.5k", "dataset": dataset, "budget": "2.5k", "reference": {"variant": "plain", "depth": 2},
            "protocol": {"rounds": 7, "threads": 1, "torch": "2.x", "batch": {"structures": 4, "atoms": 255}},
            "cells": cells}


def test_the_error_beyond_the_training_range_is_paired_with_plain_2(report, tmp_path):
    """si-2.5k: plain d2's runs record 400 + fold beyond the range, plain d4's 410 + 2·fold: a
    paired difference of 10 + fold, mean 11 over the six pairs (folds 0–2, two seeds each),
    resolved; plain d1's runs have no structure beyond (—); cells measured before the split
    show —; water, where no run records it, has no such column."""
    from mlpot.ablation.stats import paired_difference

    doc = document(partial=True)
    for r in doc["runs"]:
        if r["dataset"] == "si" and r["variant"] == "plain":
            r["test_force_rmse_beyond_range_mev_per_a"] = {1: None, 2: 400.0 + r["fold"], 4: 410.0 + 2 * r["fold"]}[r["depth"]]
    report.report(write(tmp_path, doc), tmp_path / "v2")
    text = (tmp_path / "v2" / "tables.md").read_text()
    runs = [r for r in doc["runs"] if r["dataset"] == "si" and r["variant"] == "plain"]
    as_test = lambda d: [{"fold": r["fold"], "seed": r["seed"], "test": {"x": r["test_force_rmse_beyond_range_mev_per_a"]}}
                         for r in runs if r["depth"] == d]
    p = paired_difference(as_test(4), as_test(2), "x")
    assert p["n"] == 6 and p["mean"] == pytest.approx(11.0) and p["resolved"]
    assert table_row(text, "si-2.5k", "plain MLP", 4)[10] == sys.modules["depth_study_tables"].interval(p) + " (n = 6)"
    assert table_row(text, "si-2.5k", "plain MLP", 2)[10] == "reference: 401 (n = 6)"
    assert table_row(text, "si-2.5k", "plain MLP", 1)[10] == "—"
    assert table_row(text, "si-2.5k", "residual (stem + identity blocks)", 4)[10] == "—"
    assert "beyond the training range vs plain-2" in text.split("## si-2.5k")[1].split("\n## ")[0]
    assert "beyond the training range vs plain-2" not in text.split("## water-4traj-2.5k")[1].split("\n## ")[0]


def test_costs_from_the_cost_pass(report, tmp_path):
    """With a cost pass, the tables give its ratios to plain depth 2 (the water study, without
    one, keeps the per-run medians) and the figure is drawn, also for a study of a cost pass
    and no runs yet."""
    doc = document()
    doc["cost"] = [cost_pass("si"), cost_pass("mo", depths=(1, 2, 4, 8))]
    out = tmp_path / "cost"
    written = {p.name for p in report.report(write(tmp_path, doc), out)}
    assert "cost_vs_depth.png" in written and (out / "cost_vs_depth.png").read_bytes().startswith(PNG)
    text = (out / "tables.md").read_text()
    si = text.split("## si-2.5k ")[1].split("\n## ")[0]
    assert "| inference × plain-2 (cost pass) | training step × plain-2 (cost pass) |" in si
    assert table_row(text, "si-2.5k", "plain MLP", 2)[10:] == ["1.00", "1.00"]
    assert table_row(text, "si-2.5k", "plain MLP", 4)[10:] == ["1.25", "2.00"]
    assert table_row(text, "si-2.5k", "residual (stem + identity blocks)", 1)[10:] == ["0.88", "0.75"]
    assert table_row(text, "water-4traj-2.5k", "plain MLP", 2)[10:] == ["22.0", "20.5"]  # per-run medians
    missing = text.split("## Missing")[1].split("\n## ")[0]
    assert "si-2.5k: no cost pass" not in missing and "water-4traj-2.5k: no cost pass" in missing
    assert "mo-2.5k: no runs" in missing
    assert "No runs yet." in text.split("## mo-2.5k ")[1]


def test_cost_figure_points(report):
    """The cost figure's points: ratio with the per-round range as its bar; per-run medians
    with bars from the fastest to the slowest run."""
    import depth_study_cost

    points = depth_study_cost.ratio_points(cost_pass("si"), "train_ratio", "residual_stem")
    assert points == [(1, (0.75, (0.25, 0.25), 7)), (2, (1.5, (0.25, 0.25), 7)), (4, (3.0, (0.25, 0.25), 7))]
    study = report.load_studies(document())[0]
    assert depth_study_cost.run_points(study.cells(), "train_us_per_atom", "plain")[0] == (1, (10.5, (0.5, 0.5), 6))


def test_partial_results_do_not_crash(report, tmp_path):
    doc = document(partial=True)
    doc["runs"] = [r for r in doc["runs"] if r["dataset"] == "si" and (r["variant"], r["depth"]) != ("plain", 2)]
    for r in doc["runs"][:3]:
        r["grad_init_rms"], r["infer_us_per_atom"], r["test_energy_rmse_mev_per_atom"] = None, None, float("nan")
    out = tmp_path / "partial"
    names = {p.name for p in report.report(write(tmp_path, doc), out)}
    assert {"error_vs_depth_si.png", "paired_vs_plain2.png", "cost_vs_depth.png", "gradient_flow.png",
            "tables.md"} == names
    text = (out / "tables.md").read_text()
    assert "No MD stability rows" in text and "No recommendation" in text and "No observables" in text
    assert "si-2.5k: no runs for 1 of 6 cells: plain d2" in text
    assert "si-2.5k: no observables for 30 of 30 runs" in text
    assert table_row(text, "si-2.5k", "plain MLP", 4)[9] == "—"  # no reference cell: no paired difference


def test_residual_only_depths_are_expected_of_the_residual_variants_alone(report, tmp_path):
    """A design's residual_depths (24 and 32 in the study) are cells of the non-plain
    variants: missing, they are listed; no plain cell of those depths is expected."""
    doc = document()
    doc["design"]["residual_depths"] = [8]
    report.report(write(tmp_path, doc), tmp_path / "deep")
    text = (tmp_path / "deep" / "tables.md").read_text()
    assert "si-2.5k: no runs for 1 of 7 cells: residual_stem d8" in text
    assert "plain d8" not in text


def test_water_studies_are_expected_to_have_the_designs_water_cells_only(report, tmp_path):
    """The data-size axis trains a subset of the cells (design "water_cells"): a water study
    lacks only those of them it has no runs for; Si keeps the full grid."""
    doc = document()
    doc["design"]["water_cells"] = [["plain", 1], ["plain", 2], ["residual_stem", 4], ["plain", 8]]
    report.report(write(tmp_path, doc), tmp_path / "water")
    missing = (tmp_path / "water" / "tables.md").read_text().split("## Missing")[1].split("\n## ")[0]
    assert "water-4traj-2.5k: no runs for 2 of 4 cells: residual_stem d4, plain d8" in missing
    assert "water-4traj-2.5k: no MD stability for 2 cells" in missing  # plain d1, d2: the cells it has
    assert not any("si-2.5k: no runs" in line for line in missing.splitlines())


def test_water_size_axis_counts_the_frames_trained_on(report):
    """The data-size axis is in training frames: the runs' own count when results.json has
    it, else the rung's trajectories less the validation one, 20 frames each."""
    study = report.Study("water-4traj", "2.5k")
    study.runs = [run("water-4traj", "plain", 2, 0, s) for s in SEEDS]
    assert report.training_frames(study, 4) == 60
    for r, n in zip(study.runs, (180, 200)):
        r["train_structures"] = n
    assert report.training_frames(study, 12) == 190


def test_empty_results_write_only_the_tables(report, tmp_path):
    names = [p.name for p in report.report(write(tmp_path, {"design": {}, "runs": []}), tmp_path / "e", ["si-25k"])]
    assert names == ["tables.md"]
    assert "si-25k: no runs" in (tmp_path / "e" / "tables.md").read_text()


def test_report_subcommand(tmp_path, monkeypatch):
    study = load_script("depth_study")
    monkeypatch.setattr(sys, "argv", ["depth_study.py", "report", "--out", str(write(tmp_path, document())),
                                      "--figures", str(tmp_path / "figs")])
    assert study.main() == 0
    assert (tmp_path / "figs" / "tables.md").is_file() and (tmp_path / "figs" / "paired_vs_plain2.png").is_file()

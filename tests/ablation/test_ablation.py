"""Depth ablation: grid expansion, parameter matching, resume, gradient hooks, MD stability, report."""

from __future__ import annotations

import json
import math

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT

from mlpot.ablation import (
    MATCH_TOLERANCE,
    VARIANTS,
    MDStabilityConfig,
    count_parameters,
    expand_grid,
    load_ablation,
    load_result,
    matched_hidden,
    md_stability,
    run_ablation,
)
from mlpot.ablation.report import aggregate, pareto_front, render_report, write_results
from mlpot.cli import main
from mlpot.config import ConfigError
from mlpot.descriptors import SymmetryFunctionSpec
from mlpot.models import NetworkConfig, Potential
from mlpot.models.elementwise import ElementNetworks
from mlpot.training import LayerGradientMonitor, layer_norms

pytestmark = pytest.mark.usefixtures("one_thread")


def base_config(train: str = "train.extxyz", **ablation) -> dict:
    return {
        "data": {"train": train, "val_fraction": 0.2},
        "descriptor": {"cutoff": 4.0, "cutoff_function": "poly2",
                       "radial": [{"grid": {"count": 4, "mode": "shift", "r_lower": 1.5}}],
                       "angular": [{"kind": "G5", "zetas": [1], "lambdas": [-1, 1], "eta": 0.05}]},
        "model": {"width": 8},
        "optimizer": {"lr": 5e-3},
        "training": {"epochs": 2, "batch_size": 8, "dtype": "float64", "checkpoint_every": 1},
        "ablation": {"depths": [1, 2], "widths": [8], "variants": ["plain", "residual"], "folds": 2,
                     "md": {"structures": 2, "steps": 20, "check_every": 10}, "inference_repeats": 1,
                     **ablation},
    }


# ----------------------------------------------------------------------------- grid
def test_count_parameters_matches_built_networks():
    for block in ("plain", "residual"):
        for hidden in [(5,), (7, 7), (6, 9, 4), (3,) * 6]:
            cfg = NetworkConfig(hidden=hidden, block=block)
            built = ElementNetworks(["H", "C", "O"], [11, 11, 13], cfg)
            assert count_parameters([11, 11, 13], cfg) == sum(p.numel() for p in built.parameters())


def test_grid_expansion_names_and_factors():
    setup = load_ablation(base_config(widths=[8, "matched"], seeds=[0, 3], depths=[1, 2, 3],
                                      variants=["plain", "residual", "residual_sd"]))
    runs = expand_grid(setup, [20, 20])
    assert len(runs) == 3 * 2 * 2 * 2 * 3  # variants × widths × seeds × folds × depths
    assert len({r.name for r in runs}) == len(runs)
    assert {(r.variant, r.fold, r.seed) for r in runs} == {
        (v, f, s) for v in ("plain", "residual", "residual_sd") for f in (0, 1) for s in (0, 3)}
    fixed = [r for r in runs if r.width_mode == "fixed"]
    assert all(r.hidden == (8,) * r.depth for r in fixed)
    # Each run's config is the base with its network, seed and split.
    run = next(r for r in runs if r.variant == "residual_sd" and r.depth == 3 and r.seed == 3)
    cfg = run.train_config(setup, "splits/fold1.json")
    assert cfg.model.block == "residual" and cfg.model.survival == setup.ablation.survival
    assert cfg.model.hidden_sizes == run.hidden and cfg.training.seed == 3
    assert cfg.data.split_file == "splits/fold1.json" and cfg.data.test is None
    plain = next(r for r in runs if r.variant == "plain").train_config(setup, "s.json")
    assert plain.model.block == "plain" and plain.model.survival == 1.0


@pytest.mark.parametrize("block", ["plain", "residual"])
def test_parameter_matching_within_two_percent(block):
    n_features = [52, 52, 61]
    target = count_parameters(n_features, NetworkConfig(hidden=(32, 32)))
    base = NetworkConfig(block=block)
    for depth in range(1, 17):
        hidden, n = matched_hidden(n_features, depth, target, base)
        assert len(hidden) == depth
        assert abs(n - target) <= MATCH_TOLERANCE * target, (depth, hidden, n, target)
        assert n == count_parameters(n_features, NetworkConfig(hidden=hidden, block=block))


def test_parameter_matching_reports_an_impossible_budget():
    with pytest.raises(ConfigError, match="no 12-layer network has 40 parameters"):
        matched_hidden([30], 12, 40, NetworkConfig())


def test_grid_matched_runs_share_the_reference_count():
    setup = load_ablation(base_config(widths=["matched"], depths=[1, 2, 4, 8],
                                      match_reference={"depth": 2, "width": 32}))
    target = count_parameters([40], NetworkConfig(hidden=(32, 32)))
    for run in expand_grid(setup, [40]):
        assert abs(run.n_parameters - target) <= MATCH_TOLERANCE * target


def test_match_tolerance_widens_the_budget_of_stem_networks():
    """Stem networks keep equal widths, so deep ones miss a small budget by more than 2 %;
    ablation.match_tolerance lets the grid accept them, and each run reports its own count."""
    grid = {"widths": ["matched"], "depths": [12], "variants": ["residual_stem"], "match_reference": {"depth": 2, "width": 32}}
    with pytest.raises(ConfigError, match="no 12-layer network"):
        expand_grid(load_ablation(base_config(**grid)), [38])
    target = count_parameters([38], NetworkConfig(hidden=(32, 32)))
    runs = expand_grid(load_ablation(base_config(**grid, match_tolerance=0.1)), [38])
    assert runs and all(0.02 * target < abs(r.n_parameters - target) <= 0.1 * target for r in runs)
    with pytest.raises(ConfigError, match="ablation.match_tolerance"):
        load_ablation(base_config(match_tolerance=0))


def test_ablation_config_errors():
    with pytest.raises(ConfigError, match="ablation: missing"):
        load_ablation({k: v for k, v in base_config().items() if k != "ablation"})
    with pytest.raises(ConfigError, match="unknown variant 'resnet'"):
        load_ablation(base_config(variants=["resnet"]))
    with pytest.raises(ConfigError, match="ablation.dephts"):
        load_ablation(base_config(dephts=[1]))
    with pytest.raises(ConfigError, match="'matched'"):
        load_ablation(base_config(widths=[0]))
    with pytest.raises(ConfigError, match="ablation.md.min_distance"):
        load_ablation(base_config(md={"min_distance": 2.0}))
    with pytest.raises(ConfigError, match="ablation.depth"):
        load_ablation(base_config(), ["ablation.depth=[1]"])
    with pytest.raises(ConfigError, match="need a test set"):
        load_ablation(base_config(folds=1, test_fraction=0.0))
    assert set(VARIANTS) >= {"plain", "residual", "residual_sd"}


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("block", ["plain", "residual"])
def test_gradient_hooks_give_one_value_per_layer(block):
    torch.manual_seed(0)
    depth = 5
    model = Potential(SymmetryFunctionSpec.default(["Cu", "Au"], cutoff=4.0),
                      NetworkConfig(depth=depth, width=6, block=block)).double()
    x = torch.randn(7, model.descriptor.max_features, dtype=torch.float64)
    species = torch.tensor([0, 1, 0, 1, 1, 0, 0])
    with LayerGradientMonitor(model) as monitor:
        model.networks(x, species).square().sum().backward()
        norms = monitor.norms()
    assert list(norms) == [f"layer {k}" for k in range(1, depth + 1)] + ["readout"]
    # By hand: pool every element network's parameters of each layer.
    for k in range(depth):
        params = [p for n, p in model.named_parameters() if f".blocks.{k}." in n]
        assert norms[f"layer {k + 1}"] == pytest.approx(math.sqrt(sum(float(p.grad.square().sum()) for p in params)))
    readout = [p for n, p in model.named_parameters() if ".readout." in n]
    assert norms["readout"] == pytest.approx(math.sqrt(sum(float(p.grad.square().sum()) for p in readout)))
    assert all(v > 0 for v in norms.values())


def test_layer_norms_pool_metrics_columns():
    pooled = layer_norms({"Cu.blocks.0.linear.weight": 3.0, "Au.blocks.0.linear.weight": 4.0,
                          "Cu.readout.weight": 1.0, "Cu.blocks.1.linear.bias": 2.0, "total": 9.0})
    assert pooled == {"layer 1": 5.0, "layer 2": 2.0, "readout": 1.0}


# ----------------------------------------------------------------------------- MD stability
def _rattled_copper(seed):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=seed)
    return atoms


def _model(energy_scale: float):
    torch.manual_seed(0)
    model = Potential(SymmetryFunctionSpec.default(["Cu"], cutoff=4.0), NetworkConfig(depth=2, width=8)).double()
    model.energy_scale.fill_(energy_scale)
    return model


def test_md_stability_of_a_force_free_model():
    """Zero forces: free flight for 0.05 ps, nothing fails, total energy exactly conserved."""
    result = md_stability(_model(0.0), [_rattled_copper(1), _rattled_copper(2)],
                          MDStabilityConfig(steps=100, check_every=25, temperature_K=300))
    assert result["survived_fraction"] == 1.0
    assert result["mean_time_to_failure_ps"] == pytest.approx(100 * 0.5e-3)
    assert all(abs(r["drift_mev_per_atom_ps"]) < 1e-6 for r in result["replicas"])


def test_md_stability_detects_a_blow_up():
    """A random network with forces of ~10⁴ eV/Å heats the crystal far past 5 × 300 K."""
    result = md_stability(_model(1e4), [_rattled_copper(1), _rattled_copper(2)],
                          MDStabilityConfig(steps=200, check_every=10, temperature_K=300))
    assert result["survived_fraction"] == 0.0
    for rep in result["replicas"]:
        assert rep["time_to_failure_ps"] is not None and rep["time_to_failure_ps"] < 0.1
        assert rep["reason"] and rep["drift_mev_per_atom_ps"] is None


def test_md_stability_resumes_from_its_checkpoint(tmp_path):
    """A run stopped after a checkpoint continues from it: free flight (no forces, NVE) is
    deterministic, so the resumed run's records equal those of an uninterrupted one."""
    class Stop(Exception):
        pass

    config = MDStabilityConfig(steps=100, check_every=10, temperature_K=300)
    starts = [_rattled_copper(1), _rattled_copper(2)]
    whole = md_stability(_model(0.0), starts, config)
    checkpoint, lines = tmp_path / "md.json", []

    def stop_after_three(line):
        lines.append(line)
        if len(lines) == 3:
            raise Stop

    with pytest.raises(Stop):
        md_stability(_model(0.0), starts, config, checkpoint=checkpoint, checkpoint_every_s=0.0, log=stop_after_three)
    assert json.loads(checkpoint.read_text())["done"] == 30 and "0.005 of 0.05 ps, 2/2 replicas" in lines[0]
    resumed = md_stability(_model(0.0), starts, config, checkpoint=checkpoint, checkpoint_every_s=0.0,
                           log=lines.append)
    assert json.loads(checkpoint.read_text())["done"] == 100
    assert resumed["atom_steps"] == whole["atom_steps"] == 100 * 64 and resumed["us_per_atom_step"] > 0
    for a, b in zip(resumed["replicas"], whole["replicas"]):
        assert a["survived"] and a["drift_mev_per_atom_ps"] == pytest.approx(b["drift_mev_per_atom_ps"], abs=1e-12)
        assert a["max_energy_change_mev_per_atom"] == pytest.approx(b["max_energy_change_mev_per_atom"], abs=1e-12)
    # A finished checkpoint returns its result without stepping; another run's is refused.
    assert md_stability(_model(0.0), starts, config, checkpoint=checkpoint)["replicas"] == resumed["replicas"]
    with pytest.raises(ValueError, match="another MD stability run"):
        md_stability(_model(0.0), starts, MDStabilityConfig(steps=200, check_every=10), checkpoint=checkpoint)


# ----------------------------------------------------------------------------- runs and resume
@pytest.fixture(scope="module")
def emt_data(tmp_path_factory):
    rng = np.random.default_rng(0)
    out = []
    for _ in range(16):
        atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
        atoms.numbers[rng.permutation(4)[: rng.integers(1, 4)]] = 79
        atoms.positions += rng.normal(0, 0.08, atoms.positions.shape)
        atoms.calc = EMT()
        atoms.get_forces()
        out.append(atoms)
    folder = tmp_path_factory.mktemp("ablation-data")
    ase.io.write(folder / "train.extxyz", out)
    return folder / "train.extxyz"


def test_run_resume_skips_finished_and_reruns_broken(emt_data, tmp_path):
    setup = load_ablation(base_config(str(emt_data), variants=["residual"]))
    out = tmp_path / "grid"
    lines = []
    results = run_ablation(setup, out, isolate=False, log=lines.append)
    assert len(results) == 4  # 2 depths × 2 folds
    names = sorted(r["name"] for r in results)
    for r in results:
        assert r["test"]["n_structures"] == 8  # the held-out fold
        assert list(r["grad_init"]) == [f"layer {k}" for k in range(1, r["depth"] + 1)] + ["readout"]
        assert r["inference_us_per_atom"] > 0 and r["md"]["steps"] == 20
        assert r["n_parameters"] == r["n_parameters_model"]
        # Memory of one training step of this run's own network (not the shared process's).
        assert r["train_step_peak_mib"] > 0 and r["train_step_peak_checkpointed_mib"] > 0
        batch = r["train_step_batch"]  # one batch (8) of the fold's training part (5 structures)
        assert batch == {"structures": 5, "atoms": 20} and "profiler" in r["train_step_method"]
        assert set(r["outliers"]) == {"test"} and r["outliers"]["test"]["median_force_rmse_mev_per_a"] > 0
        # The fold's test half split by the training range: each held-out structure in one part.
        split = r["extrapolation"]["test"]
        assert set(split["beyond"]) <= set(json.loads((out / "splits" / f"fold{r['fold']}.json").read_text())["test"])
        assert (split["force_rmse_inside_mev_per_a"] or split["force_rmse_beyond_mev_per_a"]) > 0
    # A deeper network needs more memory per step: the column now differs between runs.
    by_depth = {d: {r["train_step_peak_mib"] for r in results if r["depth"] == d} for d in (1, 2)}
    assert min(by_depth[2]) > max(by_depth[1])
    # The two folds hold out complementary halves.
    folds = [json.loads((out / "splits" / f"fold{k}.json").read_text())["test"] for k in (0, 1)]
    assert sorted(folds[0] + folds[1]) == list(range(16))

    with pytest.raises(ValueError, match="--resume"):
        run_ablation(setup, out, isolate=False, log=lines.append)

    finished, interrupted, broken = (out / "runs" / n for n in names[:3])
    stamp = (finished / "result.json").read_text()
    (interrupted / "result.json").unlink()  # killed after its last checkpoint
    (broken / "result.json").write_text("{truncated")  # killed while writing the result
    (broken / "last.pt").write_bytes(b"not a checkpoint")
    lines.clear()
    results = run_ablation(setup, out, resume=True, isolate=False, log=lines.append)
    assert len(results) == 4
    assert "2 finished, 2 to run" in lines[0]
    assert any("ETA" in line and line.startswith("[2/2]") for line in lines)
    assert (finished / "result.json").read_text() == stamp  # not retrained
    assert "resuming from" in (interrupted / "train.log").read_text()
    assert "training this run again from the start" in (broken / "train.log").read_text()
    assert load_result(broken) is not None and load_result(interrupted) is not None

    # A larger budget extends every run that ran to its old one, from its last.pt.
    longer = load_ablation(base_config(str(emt_data), variants=["residual"]), ["training.epochs=3"])
    lines.clear()
    results = run_ablation(longer, out, resume=True, isolate=False, log=lines.append)
    assert "of which 4 extended to 3 epochs" in lines[0]
    assert sorted(r["epochs"] for r in results) == [3] * 4
    assert "resuming from" in (finished / "train.log").read_text()

    # A changed base config cannot resume this folder.
    changed = load_ablation(base_config(str(emt_data), variants=["residual"]), ["optimizer.lr=0.1"])
    with pytest.raises(ValueError, match="differs"):
        run_ablation(changed, out, resume=True, isolate=False, log=lines.append)


def test_vectorized_grid_equals_one_by_one(emt_data, tmp_path):
    """The folds and seeds of a grid point trained together (the default) give each run the
    results of its lone training (ablation.vectorize: false)."""
    results, lines = {}, []
    for vectorize in (True, False):
        setup = load_ablation(base_config(str(emt_data), variants=["residual"], depths=[2], seeds=[0, 1],
                                          vectorize=vectorize, md={"steps": 0}))
        results[vectorize] = {r["name"]: r for r in run_ablation(setup, tmp_path / str(vectorize), isolate=False,
                                                                 log=lines.append)}
        if vectorize:  # one group of 4 runs: its runs finish together, so every line says ETA 0 s
            reported = [line for line in lines if line.startswith("[")]
            assert len(reported) == 4 and all("ETA 0 s" in line for line in reported), reported
    assert len(results[True]) == 4 and results[True].keys() == results[False].keys()
    for name, together in results[True].items():
        alone = results[False][name]
        assert together["trained_together"] == 4 and alone["trained_together"] == 1
        assert together["code"]["mlpot"] and together["code"].keys() == {"mlpot", "torch", "git_commit", "git_dirty"}
        for key in ("energy_rmse_mev_per_atom", "force_rmse_mev_per_a"):
            assert together["test"][key] == pytest.approx(alone["test"][key], rel=1e-6)
        assert together["best_epoch"] == alone["best_epoch"]


def test_cli_ablate_and_report_in_subprocesses(emt_data, tmp_path, capsys):
    """Two runs at a time in worker processes, then the report from the CLI."""
    config = tmp_path / "ablation.yaml"
    import yaml

    config.write_text(yaml.safe_dump(base_config(str(emt_data), variants=["plain"], depths=[1, 3])))
    out = tmp_path / "out"
    assert main(["ablate", str(config), "--out", str(out), "--jobs", "2"]) == 0
    for name in ("report.md", "results.csv", "results.json", "error_vs_depth.png", "gradient_norms.png",
                 "pareto.png", "learning_curves.png", "md_stability.png"):
        assert (out / name).is_file(), name
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert len(runs) == 4 and all(r["process_peak_rss_mib"] > 10 and r["train_step_peak_mib"] > 0 for r in runs)
    printed = capsys.readouterr().out
    assert "[4/4]" in printed and "ETA 0 s" in printed
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    assert "| plain w8 | 3 |" in (out / "report.md").read_text()
    assert main(["report", str(tmp_path / "missing")]) == 2


# ----------------------------------------------------------------------------- report
def _synthetic_run(variant, depth, fold, f_rmse, us):
    return {"version": 1, "name": f"d{depth:02d}_{variant}_w16_xavier_uniform_tanh_f{fold}_s0",
            "group": f"d{depth:02d}_{variant}_w16_xavier_uniform_tanh", "depth": depth, "variant": variant,
            "width_mode": "fixed", "width": 16, "hidden": [16] * depth, "init": "xavier_uniform",
            "activation": "tanh", "fold": fold, "seed": 0, "n_parameters": 100 * depth, "epochs": 10,
            "train_wall_s": 5.0 * depth,
            "test": {"energy_rmse_mev_per_atom": f_rmse / 100, "energy_mae_mev_per_atom": f_rmse / 150,
                     "force_rmse_mev_per_a": f_rmse, "force_mae_mev_per_a": f_rmse / 1.5, "stress_rmse_gpa": None},
            "external_test": None, "inference_us_per_atom": us, "peak_memory_mib": 300.0,
            "grad_init": {**{f"layer {k}": 10.0 ** -k for k in range(1, depth + 1)}, "readout": 1.0},
            "grad_last_epoch": {"layer 1": 0.5, "readout": 1.0},
            "layer_parameters": {**{f"layer {k}": 16 * 16 + 16 for k in range(1, depth + 1)}, "readout": 17},
            "md": {"steps": 100, "timestep_fs": 0.5, "ensemble": "nve", "temperature_K": 300,
                   "survived_fraction": 1.0 if depth < 4 else 0.5, "mean_time_to_failure_ps": 0.05,
                   "mean_abs_drift_mev_per_atom_ps": 0.1 * depth}}


def test_report_from_a_synthetic_results_table(tmp_path):
    # Fold noise of ±4 meV/Å that every configuration shares (so pairs cancel it), plus a
    # configuration-specific wobble that only the residual depth-2 runs have.
    runs = [_synthetic_run(v, d, f, 100.0 - 10 * d + 4 * f + (5 if v == "plain" else 0)
                           + (6 * f - 3 if (v, d) == ("residual", 2) else 0), 10.0 + d + 0.5 * f)
            for v in ("plain", "residual") for d in (1, 2, 4) for f in (0, 1, 2)]
    runs[0]["outliers"] = {"external_test": {"structures": [{"index": 180, "force_rmse_mev_per_a": 944.0,
                                                             "energy_error_mev_per_atom": 3.0}],
                                             "median_force_rmse_mev_per_a": 63.0,
                                             "median_energy_error_mev_per_atom": 1.0}}
    for r in runs[1:]:
        r["outliers"] = {"external_test": {"structures": [], "median_force_rmse_mev_per_a": 60.0,
                                           "median_energy_error_mev_per_atom": 1.0}}
    groups = write_results(tmp_path, runs)
    assert len(groups) == 6
    g = next(g for g in groups if g["variant"] == "plain" and g["depth"] == 2)
    assert g["test_force_rmse_mev_per_a"] == pytest.approx(89.0)  # mean of 85, 89, 93
    assert g["test_force_rmse_mev_per_a_std"] == pytest.approx(np.std([85, 89, 93], ddof=1))
    assert g["n_runs"] == 3 and g["grad_init"]["layer 2"] == pytest.approx(0.01)
    assert g["inference_us_per_atom_median"] == 12.5 and g["inference_us_per_atom_max"] == 13.0
    assert g["process_peak_rss_mib"] == 300.0  # results written before the rename still read
    path = render_report(tmp_path, title="Synthetic")
    text = path.read_text()
    assert text.startswith("# Synthetic")
    assert "| plain w16 | 2 | 2×16 | 200 | 3 | 0.89 ± 0.04 |" in text
    # Ranking by a named metric with paired differences: the shared fold noise cancels (plain
    # d4 is 5 meV/Å worse on every fold); residual d2's own wobble widens its interval.
    assert "Ranked by the mean test force RMSE (meV/Å)" in text
    assert "| 2 | plain w16 | 4 | 69.00 ± 4.00 | +5.00 ± 0.00 | [+5.00, +5.00] | 3 | worse |" in text
    assert "| 3 | residual w16 | 2 | 87.00 ± 10.00 | +23.00 ± 3.46 | [+8.10, +37.90] | 3 | worse |" in text
    assert "Lowest mean test force RMSE (meV/Å): **residual w16, depth 4**" in text
    assert "| structure | flagged by |" in text and "| 180 | 1 of 18 runs | 944 · 944 | 60 | 3.0 |" in text
    assert "step MiB" in text and "RSS MiB" in text
    assert "| plain w16 | 4 | 0.50 |" in text  # MD survival column
    for png in ("error_vs_depth.png", "gradient_norms.png", "pareto.png", "md_stability.png"):
        assert (tmp_path / png).stat().st_size > 1000
    assert not (tmp_path / "learning_curves.png").exists()  # no run folders: no curves
    csv_rows = (tmp_path / "results.csv").read_text().splitlines()
    assert len(csv_rows) == 1 + len(runs)


def test_unresolved_differences_are_reported_as_such(tmp_path):
    """Two configurations whose paired differences change sign across folds are not ranked
    apart: the report says 'not resolved'."""
    wobble = {"plain": [1.0, -1.0, 1.0, -0.5], "residual": [-1.0, 1.0, -1.0, 1.0]}
    runs = [_synthetic_run(v, 2, f, 80.0 + f + wobble[v][f], 12.0) for v in ("plain", "residual") for f in range(4)]
    write_results(tmp_path, runs)
    text = render_report(tmp_path).read_text()
    # residual has the lower mean (81.5 vs 81.625), but the paired differences change sign.
    assert "| 2 | plain w16 | 2 | 81.62 ± 1.38 | +0.12 ± 1.09 | [-3.34, +3.59] | 4 | **not resolved** |" in text
    assert "**residual w16, depth 2**; not resolved from plain w16 d2." in text


# ----------------------------------------------------------------------------- statistics
def test_paired_difference_interval():
    from scipy.stats import t

    from mlpot.ablation.stats import paired_difference

    def runs(values):
        return [{"fold": k, "seed": 0, "test": {"force_rmse_mev_per_a": v}} for k, v in enumerate(values)]

    a, b = [10.0, 12.0, 11.0, 15.0], [9.0, 9.5, 10.0, 12.0]
    d = np.subtract(a, b)
    out = paired_difference(runs(a), runs(b), "force_rmse_mev_per_a")
    se = d.std(ddof=1) / 2
    assert out["n"] == 4 and out["mean"] == pytest.approx(d.mean()) and out["se"] == pytest.approx(se)
    assert out["low"] == pytest.approx(d.mean() - t.ppf(0.975, 3) * se) and out["resolved"]
    # Only matching (fold, seed) pairs count; one pair has no spread: not resolved.
    one = paired_difference(runs(a), runs(b)[:1], "force_rmse_mev_per_a")
    assert one["n"] == 1 and one["se"] is None and not one["resolved"]


def test_outlier_structures_flag_only_far_errors():
    from mlpot.ablation.stats import (
        outlier_structures,
        recurring_outliers,
        structure_errors,
    )
    from mlpot.evaluation import Predictions

    rng = np.random.default_rng(0)
    n = 40
    forces_ref = rng.normal(size=(3 * n, 3))
    forces = forces_ref + rng.normal(scale=0.06, size=forces_ref.shape)
    forces[3 * 7:3 * 8] += 1.0  # structure 7: ~1 eV/Å off, far above the rest
    pred = Predictions(energy=np.zeros(n), energy_ref=np.zeros(n), n_atoms=np.full(n, 3),
                       forces=forces, forces_ref=forces_ref, numbers=np.ones(3 * n, dtype=int),
                       system_idx=np.repeat(np.arange(n), 3), stress=np.full((n, 3, 3), np.nan),
                       stress_ref=np.full((n, 3, 3), np.nan))
    errors = structure_errors(pred)
    by_hand = np.sqrt(np.mean((forces[:3] - forces_ref[:3]) ** 2)) * 1e3
    assert errors["force_rmse_mev_per_a"][0] == pytest.approx(by_hand)
    found = outlier_structures(errors, list(range(100, 100 + n)))
    assert [s["index"] for s in found["structures"]] == [107]
    assert found["median_force_rmse_mev_per_a"] == pytest.approx(60, rel=0.2)
    run = {"outliers": {"external_test": found}}
    assert recurring_outliers([run, run, {"outliers": {}}], "external_test")[0]["runs"] == 2


def test_range_split_by_hand():
    """Structures 0 (2 atoms, one 0.3 beyond the range) and 2 (2 atoms, 0.25) are beyond 0.2;
    structure 1 (1 atom, 0.05) is inside. Each part's RMSE runs over its force components,
    so a 2-atom structure weighs twice a 1-atom one; without a range there is no split."""
    from mlpot.ablation.stats import range_split
    from mlpot.evaluation import Predictions

    nan = float("nan")
    forces_ref = np.zeros((5, 3))
    forces = np.array([[0.3, 0, 0], [0, 0, 0], [0, 0.06, 0], [0, 0, 0.6], [0, 0, 0]])  # eV/Å
    fields = dict(energy=np.zeros(3), energy_ref=np.zeros(3), n_atoms=np.array([2, 1, 2]),
                  forces=forces, forces_ref=forces_ref, numbers=np.full(5, 42),
                  system_idx=np.array([0, 0, 1, 2, 2]), stress=np.full((3, 3, 3), nan),
                  stress_ref=np.full((3, 3, 3), nan))
    split = range_split(Predictions(**fields, range_excess=np.array([0.0, 0.3, 0.05, 0.25, 0.0])), [10, 11, 12])
    assert split["beyond"] == [10, 12] and split["excess"] == 0.2
    assert split["force_rmse_beyond_mev_per_a"] == pytest.approx(1e3 * np.sqrt((0.3**2 + 0.6**2) / 12))
    assert split["force_rmse_inside_mev_per_a"] == pytest.approx(1e3 * np.sqrt(0.06**2 / 3))
    everything = range_split(Predictions(**fields, range_excess=np.full(5, 0.5)), [10, 11, 12])
    assert everything["beyond"] == [10, 11, 12] and everything["force_rmse_inside_mev_per_a"] is None
    assert range_split(Predictions(**fields), [10, 11, 12]) is None


def test_test_errors_key_the_split_by_the_runs_own_test_set(emt_data):
    """With folds, the fold's test part is the run's "test" and data.test an extra
    ("external_test", with its metrics); without folds data.test is the run's own test set,
    so its split by the training range is "test" and it has no external metrics."""
    from types import SimpleNamespace

    import ase.io

    from mlpot.ablation.runner import _test_errors
    from mlpot.data import collate
    from mlpot.descriptors import SymmetryFunctionSpec
    from mlpot.models import NetworkConfig, Potential

    structures = ase.io.read(emt_data, ":")
    torch.manual_seed(0)
    model = Potential(SymmetryFunctionSpec.default(["Cu", "Au"], cutoff=4.0), NetworkConfig(depth=1, width=4)).double()
    model.fit_to_data([collate(structures[:8], cutoff=model.cutoff)])
    external = structures[12:]
    metrics, outliers, extrapolation = _test_errors(model, structures, SimpleNamespace(test=[8, 9, 10]), external, 4)
    assert set(extrapolation) == {"test", "external_test"} and metrics["n_structures"] == len(external)
    assert set(extrapolation["test"]["beyond"]) <= {8, 9, 10}
    metrics, outliers, extrapolation = _test_errors(model, structures, SimpleNamespace(test=[]), external, 4)
    assert metrics is None and set(extrapolation) == {"test"} and set(outliers) == {"external_test"}
    assert set(extrapolation["test"]["beyond"]) <= set(range(len(external)))


# ----------------------------------------------------------------------------- memory
def test_training_step_memory_grows_with_depth(emt_data):
    from mlpot.ablation.memory import peak_allocated_bytes, training_step_memory
    from mlpot.data import collate
    from mlpot.training import TrainConfig

    held = []
    assert peak_allocated_bytes(lambda: held.append(torch.empty(2**20, dtype=torch.uint8)), "cpu") >= 2**20
    structures = ase.io.read(emt_data, ":")[:8]
    config = load_ablation(base_config(str(emt_data))).base
    peaks = {}
    for depth in (1, 6):
        torch.manual_seed(0)
        model = Potential(SymmetryFunctionSpec.default(["Cu", "Au"], cutoff=4.0),
                          NetworkConfig(depth=depth, width=32)).double()
        model.fit_to_data([collate(structures, cutoff=4.0)])
        cfg = TrainConfig.from_dict({**config.to_dict(), "training": {**config.to_dict()["training"],
                                                                      "descriptor_cache": "memory"}})
        model.eval()
        peaks[depth] = training_step_memory(model, structures, cfg, torch.device("cpu"))
        assert not model.training and all(p.grad is None for p in model.parameters())  # left as found
    assert peaks[6]["train_step_peak_mib"] > peaks[1]["train_step_peak_mib"] > 0
    assert peaks[6]["train_step_peak_checkpointed_mib"] > 0


def test_pareto_front():
    points = [(1.0, 10.0), (2.0, 8.0), (2.5, 9.0), (3.0, 5.0), (0.5, 20.0), (4.0, 5.0)]
    assert pareto_front(points) == [4, 0, 1, 3]
    assert aggregate([]) == []


def test_process_peak_is_the_workers_own():
    """A worker started by the ablation (spawn: fork + exec) reports its own peak resident
    set, not its parent's (ru_maxrss carries the parent's peak over exec on Linux)."""
    import sys
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from mlpot.ablation.runner import _process_peak_rss_mib

    if not sys.platform.startswith("linux"):
        pytest.skip("VmHWM is Linux's")
    ballast = np.ones(400 * 2**20 // 8)  # 400 MiB touched in the parent
    parent = _process_peak_rss_mib("cpu")
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        child = pool.submit(_process_peak_rss_mib, "cpu").result()
    del ballast
    assert parent > 400 and child < parent - 300, (parent, child)


def test_a_grid_chooses_the_terms_once_for_every_run(emt_data, tmp_path):
    """descriptor.select chooses on all of data.train, once: every run trains on those terms,
    a resumed grid keeps them, and another select config cannot resume it."""
    import json

    from mlpot.training import TrainConfig

    config = base_config(str(emt_data), variants=["plain"], depths=[1], md={"structures": 1, "steps": 0})
    config["descriptor"]["select"] = {"count": 3, "method": "cur"}
    out = tmp_path / "grid"
    lines = []
    results = run_ablation(load_ablation(config), out, isolate=False, log=lines.append)
    assert len(results) == 2 and any("chose its terms once, on all 16 structures" in line for line in lines)
    chosen = json.loads((out / "descriptor.json").read_text())["spec"]
    expected = TrainConfig.from_dict({k: v for k, v in config.items() if k != "ablation"}).build_descriptor(
        ["Cu", "Au"], ase.io.read(emt_data, ":")).spec.to_dict()
    assert chosen == expected
    for r in results:
        run = TrainConfig.from_yaml(out / "runs" / r["name"] / "config.yaml")
        assert run.build_descriptor(["Cu", "Au"]).spec.to_dict() == chosen
    lines.clear()
    run_ablation(load_ablation(config), out, resume=True, isolate=False, log=lines.append)
    assert not any("chose its terms" in line for line in lines)
    config["descriptor"]["select"] = {"count": 2, "method": "cur"}
    with pytest.raises(ValueError, match="chosen by another descriptor config"):
        run_ablation(load_ablation(config), out, resume=True, isolate=False, log=lambda _: None)

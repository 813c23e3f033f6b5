"""The depth study's gradient flow per weight: RMS gradient ‖∂L/∂θ‖ / √(weights) per layer,
derived from the (unchanged) norm columns of metrics.csv and the layer sizes, in results,
groups, the report's table and its heatmaps; older results get their sizes from model.pt."""

from __future__ import annotations

import json
import math

import pytest
import torch

import mlpot
from mlpot.ablation.report import aggregate, collect_results, gradient_rms, render_report, write_results
from mlpot.ablation.runner import gradient_flow
from mlpot.ablation.stats import layer_sizes, rms_per_weight
from mlpot.descriptors import SymmetryFunctionSpec
from mlpot.models import NetworkConfig, Potential
from mlpot.training.report import csv_columns, grad_column

SPEC = {"elements": ["H", "O"], "cutoff": 4.0, "cutoff_function": "poly2",
        "radial": [{"grid": {"count": 5, "mode": "shift", "r_lower": 0.8}}], "angular": []}


def model(stem: bool = False) -> Potential:
    torch.manual_seed(0)
    return Potential(SymmetryFunctionSpec.from_dict(SPEC), NetworkConfig(depth=2, width=6, block="residual",
                                                                          stem=stem))


def test_layer_sizes_pool_the_element_networks():
    m = model()
    n_in = m.networks.n_features
    sizes = layer_sizes({n: p.numel() for n, p in m.named_parameters()})
    # Layer 1: weight, bias and the d_in × 6 projection, per element; layer 2: 6 × 6 + 6.
    assert sizes == {"layer 1": sum(2 * d * 6 + 6 for d in n_in), "layer 2": 2 * 42, "readout": 2 * 7}
    stem = layer_sizes({n: p.numel() for n, p in model(stem=True).named_parameters()})
    assert stem["layer 1"] == sum(d * 6 + 6 for d in n_in)
    # metrics.csv column spelling pools the same way.
    columns = {grad_column(n, list(m.elements))[len("grad_norm/"):]: p.numel() for n, p in m.named_parameters()}
    assert layer_sizes(columns) == sizes


def test_rms_per_weight_is_norm_over_root_size_and_compares_layers_fairly():
    # Equal per-weight gradients: norms differ by √(size), the RMS does not.
    norms = {"layer 1": math.sqrt(2500) * 0.1, "readout": math.sqrt(65) * 0.1}
    rms = rms_per_weight(norms, {"layer 1": 2500, "readout": 65})
    assert rms == pytest.approx({"layer 1": 0.1, "readout": 0.1})
    assert rms_per_weight(norms, None) is None and rms_per_weight(None, {"readout": 1}) is None


def test_gradient_flow_of_a_run_derives_rms_from_unchanged_columns(tmp_path):
    m = model()
    names = [grad_column(n, list(m.elements)) for n, _ in m.named_parameters()]
    assert csv_columns(names)[-len(names):] == names  # metrics.csv keeps its norm columns only
    row = {c: "2.0" for c in names} | {"grad_norm/total": "9.0"}
    (tmp_path / "grad_init.json").write_text(json.dumps({"layers": {"layer 1": 3.0, "layer 2": 1.0,
                                                                    "readout": 0.5}}))
    flow = gradient_flow(m, tmp_path, [row, row])
    sizes = flow["layer_parameters"]
    assert flow["grad_init_rms"]["layer 1"] == pytest.approx(3.0 / math.sqrt(sizes["layer 1"]))
    # Last epoch: 2 per tensor; layer 2 pools 4 tensors (2 elements × weight, bias).
    assert flow["grad_last_epoch"]["layer 2"] == pytest.approx(4.0)
    assert flow["grad_last_epoch_rms"]["layer 2"] == pytest.approx(4.0 / math.sqrt(84))
    assert flow["grad_first_epoch_rms"] == flow["grad_last_epoch_rms"]


def _run(depth: int, fold: int, sizes: dict | None) -> dict:
    run = {"version": 1, "name": f"d{depth:02d}_residual_w16_x_tanh_f{fold}_s0", "group": f"d{depth:02d}_residual",
           "depth": depth, "variant": "residual", "width_mode": "fixed", "width": 16, "hidden": [16] * depth,
           "fold": fold, "seed": 0, "n_parameters": 100, "test": {"force_rmse_mev_per_a": 50.0 + fold},
           "grad_init": {"layer 1": 8.0, "readout": 1.0}, "grad_last_epoch": {"layer 1": 4.0, "readout": 1.0}}
    if sizes is not None:
        run["layer_parameters"] = sizes
    return run


def test_report_compares_layers_per_weight(tmp_path):
    sizes = {"layer 1": 1600, "layer 2": 272, "readout": 25}
    runs = [_run(2, f, sizes) for f in range(2)] + [_run(3, 0, None)]
    groups = {g["depth"]: g for g in aggregate(runs)}
    assert groups[2]["grad_init_rms"] == pytest.approx({"layer 1": 8.0 / 40, "readout": 1.0 / 5})
    assert groups[2]["grad_init"] == pytest.approx({"layer 1": 8.0, "readout": 1.0})  # norms stay
    assert groups[3]["grad_init_rms"] == {}  # sizes unknown: no RMS, not a norm in its place
    assert gradient_rms(runs[2], "grad_init") is None
    write_results(tmp_path, runs)
    text = render_report(tmp_path).read_text()
    assert "RMS gradient per weight" in text
    # Norm ratio 8 would read as exploding gradients; per weight the layers are alike (1).
    assert "| residual w16 | 2 | 0.2 | 0.2 | 1 | 0.5 |" in text
    assert "| residual w16 | 3 | – | – | – | – |" in text
    assert (tmp_path / "gradient_norms.png").stat().st_size > 1000


def test_older_results_get_layer_sizes_from_model_file(tmp_path):
    m = model()
    run_dir = tmp_path / "runs" / "d02_residual_f0"
    run_dir.mkdir(parents=True)
    mlpot.save(m, run_dir / "model.pt")
    (run_dir / "result.json").write_text(json.dumps(_run(2, 0, None)))
    (found,) = collect_results(tmp_path)
    assert found["layer_parameters"] == layer_sizes({n: p.numel() for n, p in m.named_parameters()})
    assert gradient_rms(found, "grad_init")["readout"] == pytest.approx(1.0 / math.sqrt(14))

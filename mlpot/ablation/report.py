"""Collect ablation results into tables and render ``report.md`` with its plots.

``results.json`` holds every finished run (``runs``) and the configurations aggregated over
folds and seeds (``groups``: mean and sample standard deviation); ``results.csv`` has one
row per run. The report is rendered from ``results.json`` alone (learning curves also read
each run's ``metrics.csv`` when present), so ``mlpot report DIR`` can redraw it anywhere.

The report ranks configurations by one named metric (the test force RMSE, else the energy
RMSE) and gives each one's paired difference to the best, with its uncertainty, saying "not
resolved" where the data cannot separate the two (:mod:`~mlpot.ablation.stats`); it lists
the test structures whose errors are far above the rest. Plots: :mod:`~mlpot.ablation.plots`.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np

from ..io.files import atomic_write_text
from .labels import series_name, varying
from .plots import draw_plots
from .stats import (METRIC_WORDS, costed, layer_sizes, paired_difference, pareto_front, ranking_metric,
                    recurring_outliers, rms_per_weight)

__all__ = ["collect_results", "aggregate", "gradient_rms", "write_results", "render_report", "pareto_front"]

_METRICS = ("energy_rmse_mev_per_atom", "energy_mae_mev_per_atom", "force_rmse_mev_per_a",
            "force_mae_mev_per_a", "stress_rmse_gpa")


def collect_results(out: str | Path) -> list[dict]:
    """Finished runs under ``out/runs`` (see :func:`~mlpot.ablation.runner.load_result`)."""
    from .runner import load_result

    runs_dir = Path(out) / "runs"
    dirs = sorted(d for d in runs_dir.iterdir() if d.is_dir()) if runs_dir.is_dir() else []
    return [_with_layer_sizes(r, d) for r, d in ((load_result(d), d) for d in dirs) if r is not None]


def _with_layer_sizes(result: dict, run_dir: Path) -> dict:
    """``result`` with its weights per layer (``layer_parameters``, for the RMS gradient per
    weight): results measured before they were kept get them from the run's ``model.pt``
    (shapes only); without a readable file they stay without."""
    if result.get("layer_parameters") is not None:
        return result
    from ..io.model_file import ModelFileError, read_torch_file

    try:
        state = read_torch_file(run_dir / "model.pt", "mlpot model file")["state_dict"]
        sizes = layer_sizes({k: v.numel() for k, v in state.items()})
    except (OSError, ModelFileError, KeyError, TypeError, AttributeError):
        return result
    return {**result, "layer_parameters": sizes}


def gradient_rms(run: dict, key: str) -> dict[str, float] | None:
    """A run's RMS gradient per weight per layer for ``key`` (``grad_init``,
    ``grad_first_epoch``, ``grad_last_epoch``): as measured (``<key>_rms``), else derived
    from its layer norms and ``layer_parameters``; ``None`` without sizes."""
    found = run.get(f"{key}_rms")
    return found if found is not None else rms_per_weight(run.get(key), run.get("layer_parameters"))


def _mean_std(values: Iterable) -> tuple[float | None, float | None]:
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return None, None
    return float(np.mean(v)), (float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)


def aggregate(runs: list[dict]) -> list[dict]:
    """One entry per configuration (``group``): means ± standard deviations over its runs."""
    groups: dict[str, list[dict]] = defaultdict(list)
    show = varying(runs)
    for r in runs:
        groups[r["group"]].append(r)
    out = []
    for name, members in groups.items():
        first = members[0]
        g = {"group": name, "series": series_name(first, show), "depth": first["depth"], "variant": first["variant"],
             "width_mode": first.get("width_mode"), "width": first.get("width"), "hidden": first.get("hidden"),
             "init": first.get("init"), "activation": first.get("activation"),
             "n_parameters": first.get("n_parameters"), "n_runs": len(members)}
        for split in ("test", "external_test"):
            for m in _METRICS:
                mean, std = _mean_std((r.get(split) or {}).get(m) for r in members)
                g[f"{split}_{m}"], g[f"{split}_{m}_std"] = mean, std
        for key in ("train_wall_s", "epochs", "inference_us_per_atom", "train_step_peak_mib",
                    "train_step_peak_checkpointed_mib"):
            g[key], g[f"{key}_std"] = _mean_std(r.get(key) for r in members)
        g["process_peak_rss_mib"], g["process_peak_rss_mib_std"] = _mean_std(_process_rss(r) for r in members)
        times = sorted(r["inference_us_per_atom"] for r in members if r.get("inference_us_per_atom") is not None)
        if times:  # timings are noisy: the median and the range over runs as well as the mean
            g.update(inference_us_per_atom_median=float(np.median(times)), inference_us_per_atom_min=times[0],
                     inference_us_per_atom_max=times[-1])
        md = [r["md"] for r in members if r.get("md")]
        for key in ("survived_fraction", "mean_time_to_failure_ps", "mean_abs_drift_mev_per_atom_ps"):
            g[f"md_{key}"], g[f"md_{key}_std"] = _mean_std(m.get(key) for m in md)
        g["md_steps"] = md[0]["steps"] if md else None
        g["md_time_ps"] = md[0]["steps"] * md[0]["timestep_fs"] * 1e-3 if md else None
        for key in ("grad_init", "grad_last_epoch"):
            layers = sorted({k for r in members for k in (r.get(key) or {})}, key=_layer_order)
            g[key] = {k: _mean_std((r.get(key) or {}).get(k) for r in members)[0] for k in layers}
            rms = [gradient_rms(r, key) or {} for r in members]  # per weight: layers of any size compare
            means = {k: _mean_std(x.get(k) for x in rms)[0] for k in layers}
            g[f"{key}_rms"] = {k: v for k, v in means.items() if v is not None}
        out.append(g)
    out.sort(key=lambda g: (g["series"], g["depth"]))
    return out


def _process_rss(run: dict) -> float | None:
    """The process peak of a run (``peak_memory_mib`` in results written before the rename)."""
    return run.get("process_peak_rss_mib", run.get("peak_memory_mib"))


def _layer_order(layer: str) -> float:
    return math.inf if layer == "readout" else int(layer.split()[1])


def write_results(out: str | Path, runs: list[dict]) -> list[dict]:
    """Write ``results.json`` and ``results.csv``; returns the groups."""
    out = Path(out)
    groups = aggregate(runs)
    atomic_write_text(out / "results.json", json.dumps({"runs": runs, "groups": groups}, indent=1) + "\n")
    columns = ["name", "group", "depth", "variant", "width_mode", "width", "init", "activation", "fold", "seed",
               "n_parameters", "epochs", "best_epoch", "train_wall_s", "inference_us_per_atom",
               "train_step_peak_mib", "train_step_peak_checkpointed_mib", "process_peak_rss_mib"]
    columns += [f"test_{m}" for m in _METRICS] + [f"external_test_{m}" for m in _METRICS]
    columns += ["md_survived_fraction", "md_mean_time_to_failure_ps", "md_mean_abs_drift_mev_per_atom_ps",
                "outliers_test", "outliers_external_test"]
    lines = []
    for r in runs:
        row = {k: r.get(k) for k in columns}
        row["process_peak_rss_mib"] = _process_rss(r)
        for split in ("test", "external_test"):
            found = (r.get("outliers") or {}).get(split)
            row[f"outliers_{split}"] = None if found is None else len(found["structures"])
        for split in ("test", "external_test"):
            for m in _METRICS:
                row[f"{split}_{m}"] = (r.get(split) or {}).get(m)
        for key in ("survived_fraction", "mean_time_to_failure_ps", "mean_abs_drift_mev_per_atom_ps"):
            row[f"md_{key}"] = (r.get("md") or {}).get(key)
        lines.append(row)
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(lines)
    atomic_write_text(out / "results.csv", buffer.getvalue())
    return groups


# ---------------------------------------------------------------------------------- report
def render_report(out: str | Path, title: str | None = None) -> Path:
    """Render ``out/report.md`` and its PNG plots from ``out/results.json``.

    Returns:
        the path of ``report.md``.
    """
    out = Path(out)
    data = json.loads((out / "results.json").read_text())
    runs, groups = data["runs"], data["groups"]
    if not groups:
        raise ValueError(f"{out / 'results.json'} holds no finished runs")
    figures = draw_plots(out, runs, groups)
    lines = [f"# {title or 'Depth ablation'}", ""]
    lines += _setup_summary(out, runs) + [""]
    lines += _accuracy_table(groups)
    lines += _ranking_section(runs, groups)
    lines += _pareto_lines(groups)
    lines += _outlier_section(runs)
    lines += _md_section(runs, groups)
    lines += _gradient_section(groups)
    lines += _figures_section(figures)
    lines += ["---", "Re-render with `mlpot report " + str(out) + "`; per-run data: `results.csv`, "
              "`results.json`, `runs/<name>/`."]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _accuracy_table(groups: list[dict]) -> list[str]:
    """Section "Accuracy and cost": one table row per configuration."""
    # The external-test columns appear only when some configuration has an external test set.
    has_external = any(g.get("external_test_force_rmse_mev_per_a") is not None
                       or g.get("external_test_energy_rmse_mev_per_atom") is not None for g in groups)
    lines = ["## Accuracy and cost", "",
             "Test errors on the held-out data (mean ± standard deviation over "
             "folds and seeds; n = runs). E in meV/atom, F in meV/Å, time per epoch in s, "
             "µs/atom = energy + forces per atom (mean over runs). Memory in MiB: *step* is the peak "
             "memory of one training step (forward with forces, loss, backward) of the run's own "
             "network on one batch, above the weights and the batch (see mlpot.ablation.memory; "
             "*ckpt*: the same with gradient checkpointing); *RSS* is the peak resident set of the "
             "process that trained the run, which the runs trained together share, so it is not "
             "a per-run number.", ""]
    head = ["series", "depth", "hidden", "params", "n", "E RMSE", "E MAE", "F RMSE", "F MAE"]
    if has_external:
        head += ["ext. E RMSE", "ext. F RMSE"]
    head += ["epochs", "s/epoch", "µs/atom", "step MiB", "ckpt MiB", "RSS MiB"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        per_epoch = (g["train_wall_s"] / g["epochs"]) if g.get("train_wall_s") and g.get("epochs") else None
        row = [g["series"], str(g["depth"]), _hidden(g.get("hidden")), str(g.get("n_parameters")), str(g["n_runs"]),
               _pm(g, "test_energy_rmse_mev_per_atom", 2), _pm(g, "test_energy_mae_mev_per_atom", 2),
               _pm(g, "test_force_rmse_mev_per_a", 1), _pm(g, "test_force_mae_mev_per_a", 1)]
        if has_external:
            row += [_pm(g, "external_test_energy_rmse_mev_per_atom", 2), _pm(g, "external_test_force_rmse_mev_per_a", 1)]
        row += [_num(g.get("epochs"), 0), _num(per_epoch, 2), _num(g.get("inference_us_per_atom"), 1),
                _num(g.get("train_step_peak_mib"), 2), _num(g.get("train_step_peak_checkpointed_mib"), 2),
                _num(g.get("process_peak_rss_mib"), 0)]
        lines.append("| " + " | ".join(row) + " |")
    return lines + [""]


def _ranking_section(runs: list[dict], groups: list[dict]) -> list[str]:
    """Section "Ranking": configurations by the mean of one named test metric, each with its
    paired difference to the best and whether the data resolve it."""
    metric = ranking_metric(runs)
    if metric is None:
        return []
    members = defaultdict(list)
    for r in runs:
        members[r["group"]].append(r)
    ranked = sorted((g for g in groups if g.get(f"test_{metric}") is not None), key=lambda g: g[f"test_{metric}"])
    if not ranked:
        return []
    best, words = ranked[0], METRIC_WORDS[metric]
    unit = words.split("(")[-1].rstrip(")")
    lines = ["## Ranking", "",
             f"Ranked by the mean {words} over folds and seeds. Δ is the paired difference to the "
             f"best configuration ({best['series']}, depth {best['depth']}): each configuration minus the "
             "best on the same fold and seed, averaged over the n pairs, ± its standard error; the "
             "interval is a 95 % Student-t interval. **not resolved**: the interval contains 0 (or "
             "n < 2), so these data cannot tell the two apart.", "",
             f"| rank | series | depth | mean ({unit}) | Δ vs best ({unit}) | 95 % interval | n | |",
             "|---|---|---|---|---|---|---|---|"]
    unresolved = []
    for k, g in enumerate(ranked, 1):
        if g is best:
            lines.append(f"| {k} | {g['series']} | {g['depth']} | {_pm(g, f'test_{metric}', 2)} | – | – | "
                         f"{g['n_runs']} | best mean |")
            continue
        d = paired_difference(members[g["group"]], members[best["group"]], metric)
        if not d["resolved"]:
            unresolved.append(f"{g['series']} d{g['depth']}")
        delta = "–" if d["mean"] is None else f"{d['mean']:+.2f}" + ("" if d["se"] is None else f" ± {d['se']:.2f}")
        interval = "–" if d["low"] is None else f"[{d['low']:+.2f}, {d['high']:+.2f}]"
        lines.append(f"| {k} | {g['series']} | {g['depth']} | {_pm(g, f'test_{metric}', 2)} | {delta} | "
                     f"{interval} | {d['n']} | {'worse' if d['resolved'] else '**not resolved**'} |")
    lines += ["", f"Lowest mean {words}: **{best['series']}, depth {best['depth']}**"
              + (f"; not resolved from {', '.join(unresolved)}." if unresolved
                 else "; every other configuration is resolved as worse."), ""]
    return lines


def _pareto_lines(groups: list[dict]) -> list[str]:
    """The Pareto front of inference cost (median over runs) and mean test force error."""
    cand = costed(groups)
    if not cand:
        return []

    def cost(g: dict) -> float:
        return g.get("inference_us_per_atom_median", g["inference_us_per_atom"])

    front = [cand[k] for k in pareto_front([(cost(g), g["test_force_rmse_mev_per_a"]) for g in cand])]
    spread = [(g["inference_us_per_atom_max"] - g["inference_us_per_atom_min"]) / cost(g) for g in cand
              if g.get("inference_us_per_atom_max") is not None and cost(g) > 0]
    note = (f" Timings vary by up to {100 * max(spread):.0f} % between the runs of one configuration "
            "(pareto.png shows the range), so neighbours on the front may swap." if spread and max(spread) >= 0.01
            else "")
    return ["Pareto-optimal (no other configuration is both faster, by median timing, and more accurate "
            "in mean test force RMSE): "
            + ", ".join(f"{g['series']} d{g['depth']} ({cost(g):.1f} µs/atom, "
                        f"{g['test_force_rmse_mev_per_a']:.1f} meV/Å)" for g in front) + "." + note, ""]


def _outlier_section(runs: list[dict]) -> list[str]:
    """Section "Outlier structures": test structures whose errors are far above the rest."""
    from .stats import OUTLIER_FACTOR, OUTLIER_Z

    if not any(r.get("outliers") for r in runs):
        return []
    lines = ["## Outlier structures", "",
             f"Test structures with a force RMSE (or energy error per atom) above {OUTLIER_FACTOR:g} × the "
             f"median structure's and more than {OUTLIER_Z:g} robust standard deviations above it, in the "
             "runs that evaluated them. A structure flagged by most runs is likely unusual data (or far "
             "outside the training set) rather than one model's failure.", ""]
    for split, name in (("external_test", "External test set (index in data.test)"),
                        ("test", "Fold test sets (index in data.train)")):
        evaluated = sum(1 for r in runs if (r.get("outliers") or {}).get(split) is not None)
        if not evaluated:
            continue
        found = recurring_outliers(runs, split)
        if not found:
            lines += [f"{name}: none in {evaluated} runs.", ""]
            continue
        lines += [f"{name}:", "", "| structure | flagged by | force RMSE (meV/Å), median · max | "
                  "median structure (meV/Å) | energy error (meV/atom) |", "|---|---|---|---|---|"]
        for o in found[:10]:
            lines.append(f"| {o['index']} | {o['runs']} of {o['of_runs']} runs | "
                         f"{_num(o['force_rmse_mev_per_a'], 0)} · {_num(o['max_force_rmse_mev_per_a'], 0)} | "
                         f"{_num(o['median_structure_force_rmse_mev_per_a'], 0)} | "
                         f"{_num(o['energy_error_mev_per_atom'], 1)} |")
        lines += [""] + ([f"({len(found) - 10} more in results.json.)", ""] if len(found) > 10 else [])
    return lines


def _md_section(runs: list[dict], groups: list[dict]) -> list[str]:
    """Section "MD stability" (empty when no run did MD)."""
    if not any(g.get("md_survived_fraction") is not None for g in groups):
        return []
    g0 = next(g for g in groups if g.get("md_steps"))
    ensemble = next((r["md"]["ensemble"].upper() for r in runs if r.get("md")), "MD")
    lines = ["## MD stability", "",
             f"Each model ran {g0['md_steps']} {ensemble} steps ({g0['md_time_ps']:.2f} ps) from held-out "
             "structures. A replica fails on a non-finite energy, atoms closer than a fraction of "
             "their start distance, or a temperature far above the start. Time to failure counts "
             "survivors with the full length (a lower bound). Drift: |slope| of the total energy "
             "of surviving NVE replicas.", "",
             "| series | depth | survived | time to failure (ps) | drift (meV/atom/ps) |", "|---|---|---|---|---|"]
    for g in groups:
        lines.append(f"| {g['series']} | {g['depth']} | {_pm(g, 'md_survived_fraction', 2)} | "
                     f"{_pm(g, 'md_mean_time_to_failure_ps', 3)} | {_pm(g, 'md_mean_abs_drift_mev_per_atom_ps', 3)} |")
    return lines + [""]


def _gradient_section(groups: list[dict]) -> list[str]:
    """Section "Gradient flow": first-layer and readout RMS gradient per weight per
    configuration (norms would grow with a layer's size: a first layer has far more
    weights than the readout)."""
    lines = ["## Gradient flow", "",
             "RMS gradient per weight, ‖∂L/∂θ‖ / √(weights), of the training loss per layer "
             "(pooled over the element networks), at initialisation on the first mini-batch. "
             "Per weight, so that layers of different sizes compare: the raw norm of a 38 → 64 "
             "first layer sums ~40× more weights than a readout's. The ratio first layer / "
             "readout shows vanishing (≪ 1) or exploding (≫ 1) gradients through the depth; "
             "– where a run's layer sizes are unknown.", "",
             "| series | depth | layer 1 (RMS per weight) | readout (RMS per weight) | layer 1 / readout | "
             "last epoch: layer 1 / readout |",
             "|---|---|---|---|---|---|"]
    for g in groups:
        gi, gl = g.get("grad_init_rms") or {}, g.get("grad_last_epoch_rms") or {}
        lines.append(f"| {g['series']} | {g['depth']} | {_num(gi.get('layer 1'), 3, 'g')} | "
                     f"{_num(gi.get('readout'), 3, 'g')} | {_ratio(gi)} | {_ratio(gl)} |")
    return lines + [""]


def _figures_section(figures: list[tuple[str, str]]) -> list[str]:
    """Section "Figures": each saved plot (caption, file name) with its caption."""
    if not figures:
        return []
    lines = ["## Figures", ""]
    for caption, name in figures:
        lines += [f"**{caption}**", "", f"![{caption}]({name})", ""]
    return lines


def _setup_summary(out: Path, runs: list[dict]) -> list[str]:
    lines = []
    config_path = out / "ablation.yaml"
    if config_path.is_file():
        import yaml

        cfg = yaml.safe_load(config_path.read_text())
        ab, data, tr = cfg.get("ablation", {}), cfg.get("data", {}), cfg.get("training", {})
        lines.append(f"Data: `{data.get('train')}`"
                     + (f", external test `{data.get('test')}`" if data.get("test") else "")
                     + f". {ab.get('folds')}-fold cross-validation, seeds {ab.get('seeds')}, "
                     f"{tr.get('epochs')} epochs per run ({tr.get('dtype')}, batch {tr.get('batch_size')}).")
        lines.append(f"Grid: depths {ab.get('depths')}, widths {ab.get('widths')} (matched to "
                     f"{ab.get('match_reference')} plain), variants {ab.get('variants')}.")
    devices = sorted({f"{r.get('device')} ({r.get('threads')} thread(s))" for r in runs})
    lines.append(f"{len(runs)} finished runs on {', '.join(devices)}.")
    return lines


def _hidden(hidden) -> str:
    if not hidden:
        return "–"
    if len(set(hidden)) == 1:
        return f"{len(hidden)}×{hidden[0]}"
    if len(set(hidden[:-1])) == 1 and len(hidden) > 2:
        return f"{len(hidden) - 1}×{hidden[0]}, {hidden[-1]}"
    return ", ".join(map(str, hidden))


def _num(value, digits: int, kind: str = "f") -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}{kind}}"


def _pm(g: dict, key: str, digits: int) -> str:
    mean, std = g.get(key), g.get(f"{key}_std")
    if mean is None:
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std else "")


def _ratio(layers: dict) -> str:
    a, b = layers.get("layer 1"), layers.get("readout")
    return f"{a / b:.3g}" if a is not None and b else "–"

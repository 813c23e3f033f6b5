"""Collect ablation results into tables and render ``report.md`` with its plots.

``results.json`` holds every finished run (``runs``) and the configurations aggregated over
folds and seeds (``groups``: mean and sample standard deviation); ``results.csv`` has one
row per run. The report is rendered from ``results.json`` alone (learning curves also read
each run's ``metrics.csv`` when present), so ``mlpot report DIR`` can redraw it anywhere.
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

__all__ = ["collect_results", "aggregate", "write_results", "render_report", "pareto_front"]

_METRICS = ("energy_rmse_mev_per_atom", "energy_mae_mev_per_atom", "force_rmse_mev_per_a",
            "force_mae_mev_per_a", "stress_rmse_gpa")


def collect_results(out: str | Path) -> list[dict]:
    """Finished runs under ``out/runs`` (see :func:`~mlpot.ablation.runner.load_result`)."""
    from .runner import load_result

    runs_dir = Path(out) / "runs"
    found = (load_result(d) for d in sorted(runs_dir.iterdir()) if d.is_dir()) if runs_dir.is_dir() else ()
    return [r for r in found if r is not None]


def _width_label(run: dict) -> str:
    return "matched" if run.get("width_mode") == "matched" else f"w{run.get('width')}"


def _series(run: dict, show: Iterable[str] = ()) -> str:
    """Series label: variant and width, plus init/activation when the grid varies them."""
    return " ".join([run["variant"], _width_label(run)] + [str(run.get(k)) for k in show])


def _varying(runs: list[dict]) -> list[str]:
    return [k for k in ("init", "activation") if len({r.get(k) for r in runs}) > 1]


def _mean_std(values: Iterable) -> tuple[float | None, float | None]:
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return None, None
    return float(np.mean(v)), (float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)


def aggregate(runs: list[dict]) -> list[dict]:
    """One entry per configuration (``group``): means ± standard deviations over its runs."""
    groups: dict[str, list[dict]] = defaultdict(list)
    show = _varying(runs)
    for r in runs:
        groups[r["group"]].append(r)
    out = []
    for name, members in groups.items():
        first = members[0]
        g = {"group": name, "series": _series(first, show), "depth": first["depth"], "variant": first["variant"],
             "width_mode": first.get("width_mode"), "width": first.get("width"), "hidden": first.get("hidden"),
             "init": first.get("init"), "activation": first.get("activation"),
             "n_parameters": first.get("n_parameters"), "n_runs": len(members)}
        for split in ("test", "external_test"):
            for m in _METRICS:
                mean, std = _mean_std((r.get(split) or {}).get(m) for r in members)
                g[f"{split}_{m}"], g[f"{split}_{m}_std"] = mean, std
        for key in ("train_wall_s", "epochs", "inference_us_per_atom", "peak_memory_mib"):
            g[key], g[f"{key}_std"] = _mean_std(r.get(key) for r in members)
        md = [r["md"] for r in members if r.get("md")]
        for key in ("survived_fraction", "mean_time_to_failure_ps", "mean_abs_drift_mev_per_atom_ps"):
            g[f"md_{key}"], g[f"md_{key}_std"] = _mean_std(m.get(key) for m in md)
        g["md_steps"] = md[0]["steps"] if md else None
        g["md_time_ps"] = md[0]["steps"] * md[0]["timestep_fs"] * 1e-3 if md else None
        for key in ("grad_init", "grad_last_epoch"):
            layers = sorted({k for r in members for k in (r.get(key) or {})}, key=_layer_order)
            g[key] = {k: _mean_std((r.get(key) or {}).get(k) for r in members)[0] for k in layers}
        out.append(g)
    out.sort(key=lambda g: (g["series"], g["depth"]))
    return out


def _layer_order(layer: str) -> float:
    return math.inf if layer == "readout" else int(layer.split()[1])


def write_results(out: str | Path, runs: list[dict]) -> list[dict]:
    """Write ``results.json`` and ``results.csv``; returns the groups."""
    out = Path(out)
    groups = aggregate(runs)
    atomic_write_text(out / "results.json", json.dumps({"runs": runs, "groups": groups}, indent=1) + "\n")
    columns = ["name", "group", "depth", "variant", "width_mode", "width", "init", "activation", "fold", "seed",
               "n_parameters", "epochs", "best_epoch", "train_wall_s", "inference_us_per_atom", "peak_memory_mib"]
    columns += [f"test_{m}" for m in _METRICS] + [f"external_test_{m}" for m in _METRICS]
    columns += ["md_survived_fraction", "md_mean_time_to_failure_ps", "md_mean_abs_drift_mev_per_atom_ps"]
    lines = []
    for r in runs:
        row = {k: r.get(k) for k in columns}
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


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats in both cost (x) and error (y), by cost."""
    order = sorted(range(len(points)), key=lambda k: (points[k][0], points[k][1]))
    front, best = [], math.inf
    for k in order:
        if points[k][1] < best:
            front.append(k)
            best = points[k][1]
    return front


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
    figures = _plots(out, runs, groups)
    lines = [f"# {title or 'Depth ablation'}", ""]
    lines += _setup_summary(out, runs) + [""]
    lines += _accuracy_table(groups)
    lines += _accuracy_highlights(groups)
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
             "inference = energy + forces per atom in µs, memory = peak resident set of the run.", ""]
    head = ["series", "depth", "hidden", "params", "n", "E RMSE", "E MAE", "F RMSE", "F MAE"]
    if has_external:
        head += ["ext. E RMSE", "ext. F RMSE"]
    head += ["epochs", "s/epoch", "µs/atom", "MiB"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        per_epoch = (g["train_wall_s"] / g["epochs"]) if g.get("train_wall_s") and g.get("epochs") else None
        row = [g["series"], str(g["depth"]), _hidden(g.get("hidden")), str(g.get("n_parameters")), str(g["n_runs"]),
               _pm(g, "test_energy_rmse_mev_per_atom", 2), _pm(g, "test_energy_mae_mev_per_atom", 2),
               _pm(g, "test_force_rmse_mev_per_a", 1), _pm(g, "test_force_mae_mev_per_a", 1)]
        if has_external:
            row += [_pm(g, "external_test_energy_rmse_mev_per_atom", 2), _pm(g, "external_test_force_rmse_mev_per_a", 1)]
        row += [_num(g.get("epochs"), 0), _num(per_epoch, 2), _num(g.get("inference_us_per_atom"), 1),
                _num(g.get("peak_memory_mib"), 0)]
        lines.append("| " + " | ".join(row) + " |")
    return lines + [""]


def _accuracy_highlights(groups: list[dict]) -> list[str]:
    """The most accurate configuration and the Pareto front of cost and force error."""
    lines = []
    best = _best(groups, "test_force_rmse_mev_per_a") or _best(groups, "test_energy_rmse_mev_per_atom")
    if best:
        lines += [f"Lowest mean test error: **{best['series']}, depth {best['depth']}**.", ""]
    cand = _costed(groups)
    if cand:
        front = [cand[k] for k in pareto_front([(g["inference_us_per_atom"], g["test_force_rmse_mev_per_a"])
                                                for g in cand])]
        lines += ["Pareto-optimal (no other configuration is both faster and more accurate in forces): "
                  + ", ".join(f"{g['series']} d{g['depth']} ({g['inference_us_per_atom']:.1f} µs/atom, "
                              f"{g['test_force_rmse_mev_per_a']:.1f} meV/Å)" for g in front) + ".", ""]
    return lines


def _costed(groups: list[dict]) -> list[dict]:
    """The configurations with both an inference time and a test force error (Pareto candidates)."""
    return [g for g in groups if g.get("inference_us_per_atom") is not None
            and g.get("test_force_rmse_mev_per_a") is not None]


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
    """Section "Gradient flow": first-layer and readout gradient norms per configuration."""
    lines = ["## Gradient flow", "",
             "Gradient norm of the training loss per layer (pooled over the element networks), at "
             "initialisation on the first mini-batch. The ratio first-layer / readout shows "
             "vanishing (≪ 1) or exploding (≫ 1) gradients through the depth.", "",
             "| series | depth | layer 1 | readout | layer 1 / readout | last epoch: layer 1 / readout |",
             "|---|---|---|---|---|---|"]
    for g in groups:
        gi, gl = g.get("grad_init") or {}, g.get("grad_last_epoch") or {}
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


def _best(groups: list[dict], key: str) -> dict | None:
    cand = [g for g in groups if g.get(key) is not None]
    return min(cand, key=lambda g: g[key]) if cand else None


# ---------------------------------------------------------------------------------- plots
def _plots(out: Path, runs: list[dict], groups: list[dict]) -> list[tuple[str, str]]:
    """Draw every plot the data allows into ``out``; returns (caption, file name) per figure."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the report stays useful as tables
        return []
    figures = _Figures(plt, out, runs, groups)
    for draw in (_plot_error_vs_depth, _plot_gradient_norms, _plot_pareto, _plot_learning_curves,
                 _plot_md_stability):
        draw(figures)
    return figures.saved


class _Figures:
    """What the plots share: the data, one colour per series, the depth axis, the saved figures."""

    def __init__(self, plt, out: Path, runs: list[dict], groups: list[dict]):
        self.plt, self.out, self.runs, self.groups = plt, out, runs, groups
        self.series = sorted({g["series"] for g in groups})
        # Colours by series, fixed across figures so a series reads the same everywhere.
        self.colours = {s: plt.cm.tab10(k % 10) for k, s in enumerate(self.series)}
        self.depth_ticks = sorted({g["depth"] for g in groups})
        self.saved: list[tuple[str, str]] = []

    def by_series(self, s: str) -> list[dict]:
        """The groups of series ``s``, by depth."""
        return sorted((g for g in self.groups if g["series"] == s), key=lambda g: g["depth"])

    def depth_axis(self, ax) -> None:
        """Depth on a log2 x axis, ticks at the depths of the grid."""
        ax.set_xlabel("hidden layers")
        ax.set_xscale("log", base=2)
        ax.set_xticks(self.depth_ticks, [str(d) for d in self.depth_ticks])
        ax.minorticks_off()
        ax.grid(alpha=0.3)

    def save(self, fig, name: str, caption: str) -> None:
        fig.tight_layout()
        fig.savefig(self.out / name, dpi=120)
        self.plt.close(fig)
        self.saved.append((caption, name))


def _plot_error_vs_depth(f: _Figures) -> None:
    """Test energy RMSE, force RMSE and force MAE vs depth, one line per series."""
    fig, axes = f.plt.subplots(1, 3, figsize=(14, 4))
    for ax, key, label in ((axes[0], "test_energy_rmse_mev_per_atom", "energy RMSE (meV/atom)"),
                           (axes[1], "test_force_rmse_mev_per_a", "force RMSE (meV/Å)"),
                           (axes[2], "test_force_mae_mev_per_a", "force MAE (meV/Å)")):
        for s in f.series:
            gs = [g for g in f.by_series(s) if g.get(key) is not None]
            if gs:
                ax.errorbar([g["depth"] for g in gs], [g[key] for g in gs],
                            yerr=[g.get(f"{key}_std") or 0 for g in gs], marker="o", capsize=3,
                            label=s, color=f.colours[s])
        ax.set_ylabel(f"test {label}")
        f.depth_axis(ax)
    axes[0].legend(fontsize=8)
    f.save(fig, "error_vs_depth.png", "Test error vs depth (mean ± std over folds and seeds)")


def _plot_gradient_norms(f: _Figures) -> None:
    """Heatmaps of log10 gradient norm per layer (columns) and depth (rows), at initialisation
    and in the last epoch, one column of panels per series."""
    kinds = [k for k in ("grad_init", "grad_last_epoch") if any(g.get(k) for g in f.groups)]
    if not kinds:
        return
    fig, axes = f.plt.subplots(len(kinds), len(f.series), figsize=(4 * len(f.series), 3.2 * len(kinds)),
                               squeeze=False)
    for row, kind in enumerate(kinds):
        for col, s in enumerate(f.series):
            gs = f.by_series(s)
            max_depth = max(g["depth"] for g in gs)
            # Layer k in column k - 1 and the readout in the last column: deeper networks fill
            # more of the row, so the gap shows where the shallow ones end.
            grid = np.full((len(gs), max_depth + 1), np.nan)
            for i, g in enumerate(gs):
                for layer, v in (g.get(kind) or {}).items():
                    j = max_depth if layer == "readout" else int(layer.split()[1]) - 1
                    if v:
                        grid[i, j] = math.log10(v)
            ax = axes[row][col]
            im = ax.imshow(grid, aspect="auto", cmap="viridis", origin="lower")
            ax.set_yticks(range(len(gs)), [str(g["depth"]) for g in gs])
            ax.set_xticks([0, max_depth], ["layer 1", "readout"])
            ax.set_ylabel("depth")
            ax.set_title(f"{s}\n{'at initialisation' if kind == 'grad_init' else 'last epoch'}", fontsize=9)
            fig.colorbar(im, ax=ax, label="log10 ‖∂L/∂θ‖")
    f.save(fig, "gradient_norms.png", "Gradient norm per layer (log10) vs depth")


def _plot_pareto(f: _Figures) -> None:
    """Test force RMSE vs inference cost per configuration, with the Pareto front."""
    cand = _costed(f.groups)
    if not cand:
        return
    fig, ax = f.plt.subplots(figsize=(6, 4.5))
    for s in f.series:
        gs = [g for g in cand if g["series"] == s]
        ax.scatter([g["inference_us_per_atom"] for g in gs], [g["test_force_rmse_mev_per_a"] for g in gs],
                   color=f.colours[s], label=s)
        for g in gs:
            ax.annotate(f"d{g['depth']}", (g["inference_us_per_atom"], g["test_force_rmse_mev_per_a"]),
                        fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = [cand[k] for k in pareto_front([(g["inference_us_per_atom"], g["test_force_rmse_mev_per_a"])
                                            for g in cand])]
    ax.plot([g["inference_us_per_atom"] for g in front], [g["test_force_rmse_mev_per_a"] for g in front],
            "k--", lw=1, label="Pareto front")
    ax.set_xlabel("energy + forces (µs/atom)")
    ax.set_ylabel("test force RMSE (meV/Å)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    f.save(fig, "pareto.png", "Accuracy vs inference cost")


def _learning_curves(out: Path, runs: list[dict]) -> dict[str, list[tuple[int, list[int], list[float]]]]:
    """Validation curves of the first fold and seed of each configuration, from each run's
    ``metrics.csv``: series → [(depth, epochs, force RMSE in meV/Å, or the energy RMSE in
    meV/atom where the forces were not validated)]."""
    curves = defaultdict(list)
    for r in runs:
        if r.get("fold") == min(x.get("fold", 0) for x in runs) and r.get("seed") == min(x.get("seed", 0) for x in runs):
            path = out / "runs" / r["name"] / "metrics.csv"
            if path.is_file():
                with open(path, newline="") as fh:
                    rows = list(csv.DictReader(fh))
                ys = [float(x["val_force_rmse_mev_per_a"] or "nan") for x in rows]
                if all(math.isnan(y) for y in ys):
                    ys = [float(x["val_energy_rmse_mev_per_atom"] or "nan") for x in rows]
                curves[_series(r, _varying(runs))].append((r["depth"], [int(x["epoch"]) for x in rows], ys))
    return curves


def _plot_learning_curves(f: _Figures) -> None:
    """Validation error vs epoch, one panel per series, one line per depth."""
    curves = _learning_curves(f.out, f.runs)
    if not curves:
        return
    names = sorted(curves)
    fig, axes = f.plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.6), squeeze=False)
    for ax, s in zip(axes[0], names):
        depths = sorted({d for d, _, _ in curves[s]})
        cmap = f.plt.cm.plasma(np.linspace(0, 0.85, len(depths)))
        for d, epochs, ys in sorted(curves[s]):
            ax.plot(epochs, ys, color=cmap[depths.index(d)], label=f"d{d}")
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation force RMSE (meV/Å)")
        ax.set_title(s, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    f.save(fig, "learning_curves.png", "Learning curves (first fold and seed)")


def _plot_md_stability(f: _Figures) -> None:
    """Fraction of surviving MD replicas and the survivors' energy drift vs depth."""
    if not any(g.get("md_survived_fraction") is not None for g in f.groups):
        return
    fig, axes = f.plt.subplots(1, 2, figsize=(10, 4))
    for s in f.series:
        gs = [g for g in f.by_series(s) if g.get("md_survived_fraction") is not None]
        if not gs:
            continue
        d = [g["depth"] for g in gs]
        axes[0].plot(d, [g["md_survived_fraction"] for g in gs], "o-", color=f.colours[s], label=s)
        drift = [(g["depth"], g["md_mean_abs_drift_mev_per_atom_ps"]) for g in gs
                 if g.get("md_mean_abs_drift_mev_per_atom_ps") is not None]
        if drift:
            axes[1].plot(*zip(*drift), "o-", color=f.colours[s], label=s)
    axes[0].set_ylabel("fraction of MD replicas that survived")
    axes[0].set_ylim(-0.05, 1.05)
    axes[1].set_ylabel("|energy drift| of survivors (meV/atom/ps)")
    axes[1].set_yscale("log")
    for ax in axes:
        f.depth_axis(ax)
    axes[0].legend(fontsize=8)
    f.save(fig, "md_stability.png", "MD stability vs depth")

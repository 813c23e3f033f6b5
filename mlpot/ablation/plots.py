"""The plots of an ablation report (matplotlib, PNG files beside report.md).

Legends name configurations in words (:func:`~mlpot.ablation.labels.series_words`); every
mean carries its spread over folds and seeds; the gradient heatmaps share one colour scale,
so a colour means the same RMS gradient per weight in every panel; timings, the noisiest numbers, are
drawn as the median over a configuration's runs with bars from the fastest to the slowest.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from .labels import layers_words, series_name, series_words, varying
from .stats import costed, pareto_front

__all__ = ["draw_plots"]


def draw_plots(out: Path, runs: list[dict], groups: list[dict]) -> list[tuple[str, str]]:
    """Draw every plot the data allows into ``out``; returns (caption, file name) per figure
    (none without matplotlib: the report stays useful as tables)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
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
        if fig.get_layout_engine() is None:
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
                            label=series_words(s), color=f.colours[s])
        ax.set_ylabel(f"test {label}")
        f.depth_axis(ax)
    axes[0].legend(fontsize=8)
    f.save(fig, "error_vs_depth.png", "Test error vs depth (mean ± standard deviation over folds and seeds)")


def _gradient_grid(gs: list[dict], kind: str) -> np.ndarray:
    """log10 RMS gradient per weight (``kind``: a ``grad_*_rms`` key): one row per depth,
    layer k in column k − 1 and the readout in the last column (deeper networks fill more of
    the row, so the gap shows where the shallow ones end)."""
    max_depth = max(g["depth"] for g in gs)
    grid = np.full((len(gs), max_depth + 1), np.nan)
    for i, g in enumerate(gs):
        for layer, v in (g.get(kind) or {}).items():
            j = max_depth if layer == "readout" else int(layer.split()[1]) - 1
            if v:
                grid[i, j] = math.log10(v)
    return grid


def _plot_gradient_norms(f: _Figures) -> None:
    """Heatmaps of log10 RMS gradient per weight, ‖∂L/∂θ‖ / √(weights), per layer (columns)
    and depth (rows), at initialisation and in the last epoch, one column of panels per
    series, on one shared colour scale. Per weight: raw norms grow with a layer's size and
    would rank a wide first layer above a small readout for that alone."""
    kinds = [k for k in ("grad_init_rms", "grad_last_epoch_rms") if any(g.get(k) for g in f.groups)]
    if not kinds:
        return
    grids = {(kind, s): _gradient_grid(f.by_series(s), kind) for kind in kinds for s in f.series}
    values = np.concatenate([g[np.isfinite(g)] for g in grids.values()] or [np.zeros(1)])
    vmin, vmax = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    fig, axes = f.plt.subplots(len(kinds), len(f.series), figsize=(4 * len(f.series) + 1, 3.2 * len(kinds)),
                               squeeze=False, layout="constrained")
    image = None
    for row, kind in enumerate(kinds):
        for col, s in enumerate(f.series):
            gs, grid, ax = f.by_series(s), grids[(kind, s)], axes[row][col]
            image = ax.imshow(grid, aspect="auto", cmap="viridis", origin="lower", vmin=vmin, vmax=vmax)
            ax.set_yticks(range(len(gs)), [str(g["depth"]) for g in gs])
            ax.set_xticks([0, grid.shape[1] - 1], ["layer 1", "readout"])
            ax.set_ylabel("hidden layers")
            ax.set_title(f"{series_words(s)}\n{'at initialisation' if kind == 'grad_init_rms' else 'last epoch'}",
                         fontsize=9)
    fig.colorbar(image, ax=axes.ravel().tolist(),
                 label="log10 RMS gradient per weight, ‖∂L/∂θ‖/√n (one scale for all panels)")
    f.save(fig, "gradient_norms.png", "RMS gradient per weight per layer (log10, one colour scale) vs depth")


def _plot_pareto(f: _Figures) -> None:
    """Test force RMSE vs inference cost per configuration, with the Pareto front. Timings are
    the median over the configuration's runs with bars from the fastest to the slowest run;
    errors are means with ± one standard deviation."""
    cand = costed(f.groups)
    if not cand:
        return
    fig, ax = f.plt.subplots(figsize=(6.5, 4.8))
    for s in f.series:
        gs = [g for g in cand if g["series"] == s]
        if not gs:
            continue
        x = [g.get("inference_us_per_atom_median", g["inference_us_per_atom"]) for g in gs]
        xerr = [[max(xi - (g.get("inference_us_per_atom_min") or xi), 0.0) for xi, g in zip(x, gs)],
                [max((g.get("inference_us_per_atom_max") or xi) - xi, 0.0) for xi, g in zip(x, gs)]]
        y = [g["test_force_rmse_mev_per_a"] for g in gs]
        ax.errorbar(x, y, xerr=xerr, yerr=[g.get("test_force_rmse_mev_per_a_std") or 0 for g in gs], fmt="o",
                    capsize=3, color=f.colours[s], label=series_words(s))
        for g, xi, yi in zip(gs, x, y):
            ax.annotate(str(g["depth"]), (xi, yi), fontsize=7, xytext=(4, 4), textcoords="offset points")
    front = [cand[k] for k in pareto_front([(g.get("inference_us_per_atom_median", g["inference_us_per_atom"]),
                                             g["test_force_rmse_mev_per_a"]) for g in cand])]
    ax.plot([g.get("inference_us_per_atom_median", g["inference_us_per_atom"]) for g in front],
            [g["test_force_rmse_mev_per_a"] for g in front], "k--", lw=1, label="Pareto front (of the means)")
    ax.set_xlabel("energy + forces (µs/atom): median over runs, bars fastest–slowest")
    ax.set_ylabel("test force RMSE (meV/Å), mean ± std")
    ax.set_title("numbers: hidden layers", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    f.save(fig, "pareto.png", "Accuracy vs inference cost (timing spread over runs as bars)")


def _learning_curves(out: Path, runs: list[dict]) -> dict[str, list[tuple[int, list[int], list[float]]]]:
    """Validation curves of the first fold and seed of each configuration, from each run's
    ``metrics.csv``: series → [(depth, epochs, force RMSE in meV/Å, or the energy RMSE in
    meV/atom where the forces were not validated)]."""
    curves = defaultdict(list)
    first_fold = min((x.get("fold", 0) for x in runs), default=0)
    first_seed = min((x.get("seed", 0) for x in runs), default=0)
    for r in runs:
        if r.get("fold") == first_fold and r.get("seed") == first_seed:
            path = out / "runs" / r["name"] / "metrics.csv"
            if path.is_file():
                with open(path, newline="") as fh:
                    rows = list(csv.DictReader(fh))
                ys = [float(x["val_force_rmse_mev_per_a"] or "nan") for x in rows]
                if all(math.isnan(y) for y in ys):
                    ys = [float(x["val_energy_rmse_mev_per_atom"] or "nan") for x in rows]
                curves[series_name(r, varying(runs))].append((r["depth"], [int(x["epoch"]) for x in rows], ys))
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
            ax.plot(epochs, ys, color=cmap[depths.index(d)], label=layers_words(d))
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation force RMSE (meV/Å)")
        ax.set_title(series_words(s), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    f.save(fig, "learning_curves.png", "Learning curves (first fold and seed)")


def _plot_md_stability(f: _Figures) -> None:
    """Fraction of surviving MD replicas and the survivors' energy drift vs depth, means
    over folds and seeds with ± one standard deviation."""
    if not any(g.get("md_survived_fraction") is not None for g in f.groups):
        return
    fig, axes = f.plt.subplots(1, 2, figsize=(10, 4))
    for s in f.series:
        gs = [g for g in f.by_series(s) if g.get("md_survived_fraction") is not None]
        if not gs:
            continue
        axes[0].errorbar([g["depth"] for g in gs], [g["md_survived_fraction"] for g in gs],
                         yerr=[g.get("md_survived_fraction_std") or 0 for g in gs], marker="o", capsize=3,
                         color=f.colours[s], label=series_words(s))
        drift = [g for g in gs if g.get("md_mean_abs_drift_mev_per_atom_ps") is not None]
        if drift:
            mean = np.array([g["md_mean_abs_drift_mev_per_atom_ps"] for g in drift])
            std = np.array([g.get("md_mean_abs_drift_mev_per_atom_ps_std") or 0.0 for g in drift])
            # On a log axis a bar below zero cannot be drawn: clip the lower bar at 1 % of the mean.
            low = np.minimum(std, 0.99 * mean)
            axes[1].errorbar([g["depth"] for g in drift], mean, yerr=[low, std], marker="o", capsize=3,
                             color=f.colours[s], label=series_words(s))
    axes[0].set_ylabel("fraction of MD replicas that survived")
    axes[0].set_ylim(-0.05, 1.05)
    axes[1].set_ylabel("|energy drift| of survivors (meV/atom/ps)")
    axes[1].set_yscale("log")
    for ax in axes:
        f.depth_axis(ax)
    axes[0].legend(fontsize=8)
    f.save(fig, "md_stability.png", "MD stability vs depth (mean ± standard deviation over folds and seeds)")

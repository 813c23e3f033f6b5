"""The figures and tables of the depth study v2: ``python scripts/depth_study.py report``.

Drawn from ``docs/depth-study/results.json`` (``scripts/depth_study.py collect``) alone into one
folder (``docs/depth-study/v2`` by default): ``error_vs_depth_<dataset>.png``,
``paired_vs_plain2.png``, ``cost_vs_depth.png``, ``gradient_flow.png``, ``md_stability.png``,
``water_size.png``, ``observables.png`` (each ``plot_*`` function says what its figure shows)
and ``tables.md`` (one table per study, the recommendation, MD stability, observables, and
what is missing).

How to read them: a mean carries a 95 % Student-t interval over the (fold, seed) runs of its
cell; panels that are compared share their y axis (the heat maps one colour scale); every run
with a finite test error counts, converged or not (the tables say how many converged; the
recommendation, from ``collect``, uses the converged ones only). The results may be partial:
what is absent is left out of the figures and listed under "Missing" in ``tables.md``.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

from depth_study_results import (ELASTIC, ENERGY, FORCE, REFERENCE, VARIANT_WORDS, Study, by_cell, dataset_words,
                                 load_studies, md_summary, mean_ci, median, paired_vs_reference, relative_errors,
                                 study_words)
from depth_study_tables import write_tables

from mlpot.ablation.stats import is_finite_number

#: One colour and marker per variant, the same in every figure.
VARIANT_STYLE = {"plain": ("tab:blue", "o"), "residual_stem": ("tab:orange", "s"),
                 "residual_sd_stem": ("tab:green", "^")}
#: Depths drawn as lines in water_size.png (those present): more would not be readable.
WATER_DEPTHS = (1, 2, 3, 4, 8, 16)


# ----------------------------------------------------------------------------- figures
class Figures:
    """What the figures share: pyplot, the output folder, the variants and their styles."""

    def __init__(self, out: Path, variants: list[str]):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt, self.out, self.variants, self.saved = plt, out, variants, []

    def style(self, variant: str) -> dict:
        colour, marker = VARIANT_STYLE.get(variant, (f"C{3 + self.variants.index(variant) % 7}", "D"))
        return {"color": colour, "marker": marker, "label": VARIANT_WORDS.get(variant, variant.replace("_", " "))}

    def dodge(self, variant: str) -> float:
        """A factor on depth that sets the variants' points a little apart (bars would hide each other)."""
        return 2 ** (0.06 * (self.variants.index(variant) - (len(self.variants) - 1) / 2))

    @staticmethod
    def depth_axis(ax, depths: list[int]) -> None:
        """Depth on a log2 axis with ticks at the depths of the data."""
        ax.set_xscale("log", base=2)
        ax.set_xticks(depths, [str(d) for d in depths])
        ax.minorticks_off()
        ax.set_xlabel("hidden layers (depth)")
        ax.grid(alpha=0.3)

    def errorbar(self, ax, points: list[tuple[float, tuple]], variant: str, **kw) -> None:
        """(depth, (value, bar, n)) points at dodged depths: the bar a half-width (a 95 % t
        interval; ``None``: no bar, as for a cell of one run) or a (below, above) pair."""
        points = [(x, m, h if isinstance(h, tuple) else (h or 0.0, h or 0.0)) for x, (m, h, _) in points if m is not None]
        if points:
            ax.errorbar([x * self.dodge(variant) for x, _, _ in points], [m for _, m, _ in points],
                        yerr=[[h[0] for *_, h in points], [h[1] for *_, h in points]], capsize=3, ms=4,
                        **{**self.style(variant), **kw})

    def legend(self, fig, axes) -> None:
        handles = {}
        for ax in axes:
            for h, label in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(label, h)
        if handles:
            fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=min(len(handles), 5),
                       fontsize=8)

    def save(self, fig, name: str) -> None:
        fig.savefig(self.out / name, dpi=130)
        self.plt.close(fig)
        self.saved.append(self.out / name)


def by_dataset(studies: list[Study]) -> dict[str, list[Study]]:
    out: dict[str, list[Study]] = {}
    for s in studies:
        out.setdefault(s.dataset, []).append(s)
    return out


def _depths(studies: list[Study]) -> list[int]:
    return sorted({r["depth"] for s in studies for r in s.runs} | {r["depth"] for s in studies for r in s.md})


def plot_error_vs_depth(f: Figures, studies: list[Study]) -> None:
    """``error_vs_depth_<dataset>.png``: test force RMSE (top row) and test energy RMSE (bottom
    row) vs depth, one column per budget, one line per variant: mean with a 95 % t interval
    over (fold, seed). Each row shares its y axis, so budgets compare at a glance."""
    for dataset, group in by_dataset([s for s in studies if s.runs]).items():
        fig, axes = f.plt.subplots(2, len(group), figsize=(max(4.2 * len(group) + 0.5, 6.5), 7), sharey="row",
                                   squeeze=False, layout="constrained")
        depths = _depths(group)
        for col, study in enumerate(group):
            cells = study.cells()
            for row, (key, label) in enumerate(((FORCE, "test force RMSE (meV/Å)"),
                                                (ENERGY, "test energy RMSE (meV/atom)"))):
                ax = axes[row][col]
                for v in f.variants:
                    f.errorbar(ax, [(d, mean_ci(r.get(key) for r in runs))
                                    for (cv, d), runs in sorted(cells.items()) if cv == v], v)
                f.depth_axis(ax, depths)
                if col == 0:
                    ax.set_ylabel(label)
            axes[0][col].set_title(study_words(study), fontsize=9)
        fig.suptitle(f"{dataset_words(dataset)}: test error vs depth\n(mean, 95 % t interval over the (fold, seed) runs)",
                     fontsize=10)
        f.legend(fig, axes.ravel())
        f.save(fig, f"error_vs_depth_{dataset}.png")


def _grid(f: Figures, studies: list[Study], width: float = 4.2, height: float = 3.3):
    """A figure of one row per data set and one column per budget (unused panels hidden), each
    row's y axis shared; returns (figure, axes, {study name: axis})."""
    rows = by_dataset(studies)
    ncols = max(len(g) for g in rows.values())
    fig, axes = f.plt.subplots(len(rows), ncols, figsize=(max(width * ncols + 0.5, 6.5), height * len(rows) + 1.0),
                               sharey="row", squeeze=False, layout="constrained")
    where = {}
    for i, group in enumerate(rows.values()):
        for j in range(ncols):
            if j < len(group):
                where[group[j].name] = axes[i][j]
                axes[i][j].set_title(study_words(group[j]), fontsize=9)
            else:
                axes[i][j].set_visible(False)
    return fig, axes, where


def plot_paired_vs_plain2(f: Figures, studies: list[Study]) -> None:
    """``paired_vs_plain2.png``: per study, each cell's test force RMSE minus that of the plain
    2-layer network on the same (fold, seed), mean with its 95 % t interval: below the zero line
    a cell beats the literature's default, and an interval that crosses zero does not
    separate them."""
    studies = [s for s in studies if s.runs]
    if not studies:
        return
    fig, axes, where = _grid(f, studies)
    depths = _depths(studies)
    for study in studies:
        ax, paired = where[study.name], paired_vs_reference(study)
        ax.axhline(0.0, color="k", lw=0.8)
        if not paired:
            ax.text(0.5, 0.5, "no plain depth-2 runs:\nno reference", transform=ax.transAxes, ha="center")
        for v in f.variants:
            points = [(d, (p["mean"], None if p["high"] is None else p["high"] - p["mean"], p["n"]))
                      for (cv, d), p in paired.items() if cv == v]
            if paired and v == REFERENCE[0]:  # the reference itself: 0 by definition, drawn so its line is whole
                points.append((REFERENCE[1], (0.0, None, 0)))
            f.errorbar(ax, sorted(points), v)
        f.depth_axis(ax, depths)
        if ax in axes[:, 0]:
            ax.set_ylabel("Δ test force RMSE vs plain, depth 2 (meV/Å)")
    fig.suptitle("Test force RMSE minus the plain 2-layer network's, paired by (fold, seed):\n"
                 "mean and 95 % t interval (plain depth 2 is 0 by definition)", fontsize=10)
    f.legend(fig, axes.ravel())
    f.save(fig, "paired_vs_plain2.png")


def plot_cost_vs_depth(f: Figures, studies: list[Study]) -> None:
    """``cost_vs_depth.png``: inference and training cost and peak activation memory vs depth,
    one row per study; timings as ratios to plain depth 2 from the study's cost pass where it
    has one (``scripts/depth_study_cost.py``, which draws it: :func:`depth_study_cost.plot_cost_vs_depth`)."""
    import depth_study_cost

    depth_study_cost.plot_cost_vs_depth(f, studies, study_words)


def _layer_grid(cells: dict[int, list[dict]], max_depth: int):
    """Median RMS gradient per weight at initialisation: one row per depth of ``cells``
    (depth → runs), layer k in column k − 1 and the readout in the last column (so shallow
    networks leave a gap before their readout)."""
    import numpy as np

    depths = sorted(cells)
    grid = np.full((len(depths), max_depth + 1), np.nan)
    for i, d in enumerate(depths):
        layers = {layer for r in cells[d] for layer in (r.get("grad_init_rms") or {})}
        for layer in layers:
            value = median((r.get("grad_init_rms") or {}).get(layer) for r in cells[d])
            if value and value > 0:
                grid[i, max_depth if layer == "readout" else int(layer.split()[1]) - 1] = value
    return depths, grid


def plot_gradient_flow(f: Figures, studies: list[Study]) -> None:
    """``gradient_flow.png``: RMS gradient per weight, ‖∂L/∂θ‖/√n, of each layer at
    initialisation (median over the cell's runs): rows of a panel are depths, columns layers
    from the input (1) to the readout; one row of panels per study, one column per variant,
    ONE logarithmic colour scale for every panel. Vanishing gradients show as dark columns
    towards the input of deep networks."""
    import numpy as np
    from matplotlib.colors import LogNorm

    studies = [s for s in studies if any(r.get("grad_init_rms") for r in s.runs)]
    if not studies:
        return
    max_depth = max(r["depth"] for s in studies for r in s.runs)
    grids = {}
    for s in studies:
        for v in f.variants:
            cells = {d: runs for (cv, d), runs in s.cells().items() if cv == v and any(r.get("grad_init_rms") for r in runs)}
            if cells:
                grids[s.name, v] = _layer_grid(cells, max_depth)
    values = np.concatenate([g[np.isfinite(g)] for _, g in grids.values()])
    norm = LogNorm(vmin=float(values.min()), vmax=float(values.max()) * (1 + 1e-9))
    fig, axes = f.plt.subplots(len(studies), len(f.variants), squeeze=False, layout="constrained",
                               figsize=(3.9 * len(f.variants) + 1.2, 2.9 * len(studies) + 0.6))
    image = None
    for i, s in enumerate(studies):
        for j, v in enumerate(f.variants):
            ax = axes[i][j]
            ax.set_title(f"{study_words(s)}\n{f.style(v)['label']}", fontsize=8)
            if (s.name, v) not in grids:
                ax.text(0.5, 0.5, "no runs", transform=ax.transAxes, ha="center")
                ax.set_xticks([]), ax.set_yticks([])
                continue
            depths, grid = grids[s.name, v]
            image = ax.imshow(grid, aspect="auto", cmap="viridis", origin="lower", norm=norm)
            ax.set_yticks(range(len(depths)), [str(d) for d in depths])
            ax.set_xticks(range(max_depth + 1), [str(k + 1) for k in range(max_depth)] + ["out"], fontsize=6)
            ax.set_xlabel("layer (input → readout)")
            ax.set_ylabel("hidden layers")
    fig.colorbar(image, ax=axes.ravel().tolist(), location="top", shrink=0.6, aspect=40,
                 label="RMS gradient per weight at initialisation, ‖∂L/∂θ‖/√n (one scale for every panel)")
    f.save(fig, "gradient_flow.png")


def plot_md_stability(f: Figures, studies: list[Study]) -> None:
    """``md_stability.png``: per study and MD condition (rows), the fraction of NVT replicas
    that ran their whole time without failing (with its 95 % Wilson interval over replicas)
    and the mean time to failure, survivors counted at the run length (dotted line), vs
    depth. One model per cell (its median-validation run), so there is no spread over seeds
    here."""
    panels = [(s, t, [r for r in s.md if r.get("temperature_k") == t]) for s in studies
              for t in sorted({r.get("temperature_k") for r in s.md if is_finite_number(r.get("temperature_k"))},
                              reverse=True)]
    if not panels:
        return
    # Not sharey: each condition's time axis ends at its own run length.
    fig, axes = f.plt.subplots(len(panels), 2, figsize=(10, 2.9 * len(panels) + 0.8), squeeze=False,
                               layout="constrained")
    depths = _depths(studies)
    for i, (s, temperature, md) in enumerate(panels):
        for v in f.variants:
            rows = sorted((r for r in md if r["variant"] == v), key=lambda r: r["depth"])
            sums = [(r["depth"], md_summary(r)) for r in rows]
            f.errorbar(axes[i][0], [(d, (m["survived"], (m["survived"] - m["interval"][0],
                                                         m["interval"][1] - m["survived"]), m["replicas"]))
                                    for d, m in sums if m["survived"] is not None], v)
            tt = [(d, m["mean_ttf_ps"]) for d, m in sums if m["mean_ttf_ps"] is not None]
            if tt:
                axes[i][1].plot([d * f.dodge(v) for d, _ in tt], [t for _, t in tt], ms=4, **f.style(v))
        lengths = sorted({r["ps_per_replica"] for r in md if is_finite_number(r.get("ps_per_replica"))})
        for ps in lengths:
            axes[i][1].axhline(ps, color="grey", ls=":", lw=1)
        axes[i][0].set_title(f"{study_words(s)}, NVT at {temperature:g} K for {', '.join(f'{p:g}' for p in lengths)} ps",
                             fontsize=9, loc="left")
        axes[i][0].set_ylabel("fraction of replicas surviving")
        axes[i][0].set_ylim(-0.05, 1.05)
        axes[i][1].set_ylabel("mean time to failure (ps)")
        axes[i][1].set_ylim(0, 1.05 * max(lengths, default=1.0))
        for ax in axes[i]:
            f.depth_axis(ax, depths)
    fig.suptitle("MD stability vs depth (one model per cell; bars: 95 % Wilson interval over replicas)", fontsize=10)
    f.legend(fig, axes.ravel())
    f.save(fig, "md_stability.png")


#: Frames per trajectory of the teacher's water (scripts/make_teacher_water.py).
FRAMES_PER_TRAJECTORY = 20


def training_frames(study: Study, trajectories: int) -> int:
    """The frames a water study trains on: the median of its runs' ``train_structures``, or
    (rows collected before that field) the rung's trajectories less one held for validation."""
    counts = [r["train_structures"] for r in study.runs if r.get("train_structures")]
    return int(statistics.median(counts)) if counts else (trajectories - 1) * FRAMES_PER_TRAJECTORY


def plot_water_size(f: Figures, studies: list[Study]) -> None:
    """``water_size.png``: test force RMSE against the teacher vs the training frames (the
    runs' ``train_structures``; for rows without it, the rung's trajectories less one for
    validation, 20 frames each), log scale, one line per depth (of :data:`WATER_DEPTHS`),
    one panel per variant (columns) and budget (rows), mean with 95 % t interval; one y axis
    for all."""
    water = [(training_frames(s, int(m.group(1))), s) for s in studies
             if s.runs and (m := re.fullmatch(r"water-(\d+)traj", s.dataset))]
    if not water:
        return
    budgets = list(dict.fromkeys(s.budget for _, s in water))
    depths = [d for d in WATER_DEPTHS if any(r["depth"] == d for _, s in water for r in s.runs)]
    sizes = sorted({n for n, _ in water})
    colours = f.plt.cm.viridis([k / max(len(depths) - 1, 1) * 0.9 for k in range(len(depths))])
    fig, axes = f.plt.subplots(len(budgets), len(f.variants), figsize=(4 * len(f.variants) + 0.5, 3.3 * len(budgets) + 0.8),
                               sharey=True, squeeze=False, layout="constrained")
    for i, budget in enumerate(budgets):
        for j, v in enumerate(f.variants):
            ax = axes[i][j]
            for colour, d in zip(colours, depths):
                points = [(n, mean_ci(r.get(FORCE) for r in s.cells().get((v, d), [])))
                          for n, s in sorted(water, key=lambda x: x[0]) if s.budget == budget]
                points = [(n, m, h) for n, (m, h, _) in points if m is not None]
                if points:
                    ax.errorbar([n for n, _, _ in points], [m for _, m, _ in points], yerr=[h or 0 for *_, h in points],
                                color=colour, marker="o", ms=4, capsize=3, label=f"{d} hidden layer{'s' * (d > 1)}")
            ax.set_xscale("log")
            ax.set_xticks(sizes, [str(n) for n in sizes])
            ax.minorticks_off()
            ax.set_xlabel("training frames (teacher water, 192 atoms each)")
            ax.set_title(f"{f.style(v)['label']}, budget ≈{budget} weights", fontsize=9)
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel("test force RMSE vs teacher (meV/Å)")
    fig.suptitle("Water: test force error vs training-set size (mean, 95 % t interval over the (fold, seed) runs)", fontsize=10)
    f.legend(fig, axes.ravel())
    f.save(fig, "water_size.png")


def plot_observables(f: Figures, studies: list[Study]) -> None:
    """``observables.png`` (Si, Mo): relative error (%) against DFT of the bulk modulus (from the
    equation of state) and of the cubic elastic constants C11, C12, C44, vs depth per variant:
    mean with 95 % t interval over the cell's runs; one row per study, y shared by the row."""
    studies = [s for s in studies if any("elastic_model" in r for r in s.observables)]
    if not studies:
        return
    fig, axes = f.plt.subplots(len(studies), len(ELASTIC), figsize=(3.6 * len(ELASTIC) + 0.5, 2.9 * len(studies) + 0.8),
                               sharey="row", squeeze=False, layout="constrained")
    depths = sorted({r["depth"] for s in studies for r in s.observables})
    for i, s in enumerate(studies):
        cells = by_cell(s.observables)
        errors = {c: relative_errors(rows) for c, rows in cells.items()}
        for j, label in enumerate(ELASTIC):
            ax = axes[i][j]
            ax.axhline(0.0, color="k", lw=0.8)
            for v in f.variants:
                f.errorbar(ax, [(d, mean_ci(e[label])) for (cv, d), e in sorted(errors.items()) if cv == v], v)
            f.depth_axis(ax, depths)
            ax.set_title(f"{study_words(s)}: {label}" if j == 0 else label, fontsize=9)
            if j == 0:
                ax.set_ylabel("relative error vs DFT (%)")
    fig.suptitle("Elastic properties against DFT (model − DFT) / DFT: mean, 95 % t interval over the (fold, seed) runs",
                 fontsize=10)
    f.legend(fig, axes.ravel())
    f.save(fig, "observables.png")


# ----------------------------------------------------------------------------- entry point
def report(results: Path, figures: Path, expected: list[str] | None = None) -> list[Path]:
    """Draw every figure the results allow and write ``tables.md`` into ``figures``; returns
    (and prints) the files written. ``expected``: study names that should be there (listed as
    missing when they have no runs)."""
    document = json.loads(Path(results).read_text())
    studies = load_studies(document, expected)
    variants = list((document.get("design") or {}).get("variants") or VARIANT_WORDS)
    variants += sorted({r["variant"] for s in studies for r in s.runs} - set(variants))  # any beyond the design
    figures = Path(figures)
    figures.mkdir(parents=True, exist_ok=True)
    f = Figures(figures, variants)
    for draw in (plot_error_vs_depth, plot_paired_vs_plain2, plot_cost_vs_depth, plot_gradient_flow,
                 plot_md_stability, plot_water_size, plot_observables):
        draw(f, studies)
    write_tables(figures / "tables.md", studies, document, variants)
    written = f.saved + [figures / "tables.md"]
    for path in written:
        print(path)
    return written


"""What ``mlpot search`` writes when it stops: ``trials.csv``, ``best.yaml``, ``report.md``
and its plots (optimisation history, parameter importances, score against parameter count
and against inference cost)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import yaml

from ..io.files import atomic_write_text
from .config import SearchSetup, load_search
from .study import open_study

__all__ = ["write_outputs"]

_COLUMNS = ("number", "state", "value", "n_params", "epochs_run", "inference_us_per_atom", "train_wall_s", "baseline",
            "retries", "reason")


def write_outputs(out: str | Path) -> Path:
    """Write trials.csv, best.yaml (when a trial completed), report.md and the plots of the
    search in ``out``; returns the report's path."""
    out = Path(out)
    setup = load_search(out / "search.yaml")
    study = open_study(out)
    rows = _rows(study, setup)
    _write_csv(out / "trials.csv", rows, [p.name for p in setup.search.parameters()])
    complete = [r for r in rows if r["state"] == "complete" and r["value"] is not None]
    best = min(complete, key=lambda r: r["value"]) if complete else None
    if best is not None:
        config = setup.trial_config(best["params"])
        text = (f"# The best trial ({best['number']}) of the search in {out}: cross-validated loss "
                f"{best['value']:.6g}.\n# Train it on all the data with: mlpot train {out / 'best.yaml'}\n")
        atomic_write_text(out / "best.yaml", text + yaml.safe_dump(config.to_dict(), sort_keys=False))
    figures = _plots(out, rows, study)
    path = out / "report.md"
    atomic_write_text(path, _markdown(setup, rows, best, _importances(study), figures))
    return path


def _rows(study, setup: SearchSetup) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": dict(t.params),
                     **{k: t.user_attrs.get(k) for k in _COLUMNS[3:]}})
    return rows


def _write_csv(path: Path, rows: list[dict], names: list[str]) -> None:
    header = ["number", "state", *names, *_COLUMNS[3:], "value"]
    lines = []
    for r in rows:
        lines.append([r["number"], r["state"], *[r["params"].get(n, "") for n in names],
                      *["" if r.get(k) is None else r[k] for k in _COLUMNS[3:]],
                      "" if r["value"] is None else repr(r["value"])])
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(lines)
    tmp.replace(path)


def _importances(study) -> dict[str, float]:
    """fANOVA importance of each parameter (empty with fewer than two complete trials or
    one parameter value only)."""
    import warnings

    import optuna
    from optuna.trial import TrialState

    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 4:
        return {}  # too few to say anything (Optuna would report equal importances)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError):
        return {}


def _plots(out: Path, rows: list[dict], study) -> list[tuple[str, str]]:
    """(file, caption) of each plot written (none without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    complete = [r for r in rows if r["state"] == "complete" and r["value"] is not None]
    figures = []
    if complete:
        fig, ax = plt.subplots(figsize=(6, 4))
        numbers = [r["number"] for r in complete]
        values = [r["value"] for r in complete]
        best = [min(values[: k + 1]) for k in range(len(values))]
        ax.scatter(numbers, values, s=14, label="complete trial")
        ax.step(numbers, best, where="post", color="C3", label="best so far")
        ax.set(xlabel="trial", ylabel="cross-validated loss", yscale="log", title="Optimisation history")
        ax.legend()
        figures.append(_save(fig, out / "history.png", "Cross-validated loss of each complete trial and the best so far"))
        for key, label, name in (("n_params", "weights of the element networks", "loss_vs_params.png"),
                                 ("inference_us_per_atom", "inference, µs per atom (energy + forces)",
                                  "loss_vs_inference.png")):
            pts = [(r[key], r["value"]) for r in complete if r.get(key)]
            if pts:
                fig, ax = plt.subplots(figsize=(6, 4))
                ax.scatter(*zip(*pts), s=14)
                ax.set(xlabel=label, ylabel="cross-validated loss", xscale="log", yscale="log",
                       title=f"Loss against {label.split(',')[0]}")
                figures.append(_save(fig, out / name, f"Cross-validated loss against {label}"))
    importances = _importances(study)
    if importances:
        fig, ax = plt.subplots(figsize=(6, 0.5 + 0.4 * len(importances)))
        names = list(importances)[::-1]
        ax.barh(names, [importances[n] for n in names])
        ax.set(xlabel="importance (fANOVA)", title="Parameter importances")
        figures.append(_save(fig, out / "importances.png", "How much of the loss's variance each parameter explains"))
    return figures


def _save(fig, path: Path, caption: str) -> tuple[str, str]:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name, caption


def _markdown(setup: SearchSetup, rows: list[dict], best: dict | None, importances: dict[str, float],
              figures: list[tuple[str, str]]) -> str:
    search = setup.search
    counts = {s: sum(r["state"] == s for r in rows) for s in ("complete", "pruned", "fail", "running")}
    retried = {r["retries"] for r in rows if r.get("retries") is not None}
    interrupted = sum(r["state"] == "fail" and r["number"] in retried for r in rows)
    lines = ["# Search report\n",
             f"{len(rows)} trials: {counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} failed"
             + (f" ({interrupted} of them interrupted and run again)" if interrupted else "")
             + (f", {counts['running']} running" if counts["running"] else "") + ".",
             f"Score: the loss (weights of `loss:`) of each trial's best model on the held-out part of each of "
             f"{search.folds} folds, averaged; pruner `{search.pruner}` (after {search.min_epochs} epochs)"
             + (f"; architectures over {search.max_params} weights pruned before training" if search.max_params else "")
             + ".\n"]
    baseline = next((r for r in rows if r.get("baseline")), None)
    if baseline is not None:
        if baseline["state"] == "complete":
            outcome = f"cross-validated loss **{baseline['value']:.4g}**"
        elif baseline["state"] == "pruned" and baseline["value"] is not None:
            outcome = (f"pruned after {baseline.get('epochs_run')} epochs (validation loss then "
                       f"{baseline['value']:.4g}, not comparable with complete trials)")
        else:
            outcome = baseline["state"]
        lines.append(f"The base config's own values (trial {baseline['number']}, the baseline): {outcome}.\n")
    if best is not None:
        lines += [f"## Best trial: {best['number']}\n", f"Cross-validated loss **{best['value']:.4g}** "
                  f"({best['n_params']} weights, {best.get('epochs_run')} epochs"
                  + (f", {best['inference_us_per_atom']:.1f} µs/atom" if best.get("inference_us_per_atom") else "")
                  + "); `best.yaml` trains it on all the data.\n",
                  "| parameter | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in best["params"].items()]
        lines.append("")
    if importances:
        lines += ["## Parameter importances (fANOVA)\n", "| parameter | importance |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in importances.items()]
        lines.append("")
    ranked = sorted((r for r in rows if r["state"] == "complete" and r["value"] is not None),
                    key=lambda r: r["value"])[:10]
    if ranked:
        names = list(ranked[0]["params"])
        lines += ["## Best complete trials\n", "(pruned trials stopped early: their last reported validation loss is "
                  "in trials.csv, not comparable with these)\n",
                  "| trial | " + " | ".join(names) + " | weights | loss |",
                  "|---|" + "---|" * (len(names) + 2)]
        lines += [f"| {r['number']}{' (baseline)' if r.get('baseline') else ''} | "
                  + " | ".join(_fmt(r["params"].get(n)) for n in names) + f" | {r['n_params']} | {r['value']:.4g} |"
                  for r in ranked]
        lines.append("")
    for name, caption in figures:
        lines += [f"![{caption}]({name})", f"*{caption}*\n"]
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if math.isfinite(value) else str(value)
    return str(value)

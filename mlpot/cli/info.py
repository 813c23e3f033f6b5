"""Show what a model file holds.

Format version, elements, the descriptor (cutoff, cutoff function, term and feature counts),
the network architecture with parameter counts (total and per element), the feature
scaling, the reference energies and energy scale, and the metadata saved with it (training
epochs, metrics, config, if present).

example:
  mlpot info runs/cuau/model.pt
  mlpot info runs/cuau/model.pt --json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "show what a model file holds"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model file (model.pt)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def summarise(path: str | Path) -> dict:
    """A plain-dict summary of the model file at ``path`` (JSON-serialisable).

    Raises:
        FileNotFoundError: if the file does not exist.
        ModelFileError: if it is not a readable mlpot model file.
    """
    import torch

    from .. import load

    path = Path(path)
    model = load(path)  # validates the header and version, builds the model
    payload = torch.load(path, map_location="cpu", weights_only=True)
    spec, config = model.spec, model.config
    scaler = model.descriptor.scaler
    per_element = model.networks.n_parameters()
    return {
        "file": str(path),
        "file_size_bytes": path.stat().st_size,
        "format": payload["format"],
        "format_version": payload["version"],
        "dtype": str(model.dtype).removeprefix("torch."),
        "elements": list(model.elements),
        "units": payload.get("units", {}),
        "descriptor": {
            "cutoff": spec.max_cutoff,
            "cutoff_function": spec.cutoff_function,
            "cutoff_alpha": spec.cutoff_alpha,
            "radial_terms": len(spec.radial),
            "angular_terms": {kind: sum(t.kind == kind for t in spec.angular) for kind in ("G4", "G5")},
            "features_per_element": spec.n_features(),
        },
        "network": {
            "hidden": list(config.hidden_sizes),
            "block": config.block,
            "activation": config.activation,
            "init": config.init,
            "zero_init_residual": config.zero_init_residual,
            "survival": config.survival,
            "checkpointing": config.checkpointing,
            "parameters": model.n_parameters(),
            "parameters_per_element": per_element,
        },
        "scaling": None if scaler is None else {"mode": scaler.mode, "range": [scaler.s_min, scaler.s_max]},
        "reference_energies_ev": dict(zip(model.elements, model.reference_energies.tolist())),
        "energy_scale_ev": float(model.energy_scale),
        "metadata": getattr(model, "metadata", {}) or {},
    }


def run(args: argparse.Namespace) -> int:
    summary = summarise(args.model)
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        _print_summary(summary)
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _print_summary(s: dict) -> None:
    d, net = s["descriptor"], s["network"]
    print(f"file         {s['file']} ({_size(s['file_size_bytes'])})")
    print(f"format       {s['format']} version {s['format_version']}, {s['dtype']}")
    print(f"elements     {', '.join(s['elements'])}")
    print(f"descriptor   r_c {d['cutoff']:g} Å, {d['cutoff_function']} cutoff"
          + (f" (alpha {d['cutoff_alpha']:g})" if d["cutoff_alpha"] else "")
          + f"; {d['radial_terms']} radial, {d['angular_terms']['G4']} G4, "
            f"{d['angular_terms']['G5']} G5 terms")
    print("features     " + ", ".join(f"{el} {n}" for el, n in d["features_per_element"].items()))
    extra = []
    if net["zero_init_residual"]:
        extra.append("zero-init residual")
    if net["survival"] < 1:
        extra.append(f"survival {net['survival']:g}")
    if net["checkpointing"]:
        extra.append("checkpointing")
    print(f"network      hidden {net['hidden']}, {net['block']} blocks, {net['activation']}, "
          f"{net['init']} init" + "".join(f", {e}" for e in extra))
    print(f"parameters   {net['parameters']:,} ("
          + ", ".join(f"{el} {n:,}" for el, n in net["parameters_per_element"].items()) + ")")
    sc = s["scaling"]
    print("scaling      " + ("none fitted" if sc is None else f"{sc['mode']}, range {sc['range']}"))
    print("ref. energy  " + ", ".join(f"{el} {e:.6g} eV" for el, e in s["reference_energies_ev"].items()))
    print(f"energy scale {s['energy_scale_ev']:.6g} eV")
    meta = s["metadata"]
    if meta:
        print("metadata")
        for key, value in meta.items():
            label, note = _METADATA_LABELS.get(key, (key, ""))
            text = _brief(value)
            if note and isinstance(value, dict) and value.get("n_structures") is not None:
                note = f"{value['n_structures']} structures, {note}"
            print(f"  {label:<22}{text}" + (f"  ({note})" if note else ""))


def _brief(value, limit: int = 100) -> str:
    """One line per metadata entry: numbers rounded, nested sections named, long text cut."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict) and "energy_rmse_mev_per_atom" in value:  # an error-metrics dict
        return _metrics_line(value)
    if isinstance(value, dict) and all(isinstance(v, (int, float, type(None))) for v in value.values()):
        text = ", ".join(f"{k} {_brief(v)}" for k, v in value.items() if v is not None)
    elif isinstance(value, dict):  # e.g. the training config: too long for one line
        text = f"{len(value)} entries: {', '.join(map(str, value))}"
        text = text if len(text) <= limit - 20 else text[: limit - 21] + "…"
        return text + " (see --json)"
    else:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


#: Metadata keys a training run saves → (what the line says, what the numbers are).
_METADATA_LABELS = {
    "epoch": ("best epoch", "the epoch with the lowest validation loss: these weights"),
    "val_loss": ("validation loss", "the loss of that epoch on the validation set"),
    "val_metrics": ("validation errors", "held out of training; they chose the epoch"),
    "train_metrics": ("training errors", "the training set, averaged over that epoch's steps while the "
                      "weights changed (no EMA), so not comparable to the validation errors"),
    "test_metrics": ("test errors", "the test set, never used in training"),
}

_METRIC_ROWS = (("E", "energy_rmse_mev_per_atom", "energy_mae_mev_per_atom", "meV/atom"),
                ("F", "force_rmse_mev_per_a", "force_mae_mev_per_a", "meV/Å"),
                ("σ", "stress_rmse_gpa", None, "GPa"))


def _metrics_line(m: dict) -> str:
    """``E RMSE 29.2 MAE 25.5 meV/atom, F RMSE …`` from a METRIC_KEYS dict."""
    parts = []
    for name, rmse, mae, unit in _METRIC_ROWS:
        if m.get(rmse) is not None:
            text = f"{name} RMSE {m[rmse]:.4g}"
            if mae is not None and m.get(mae) is not None:
                text += f" MAE {m[mae]:.4g}"
            parts.append(f"{text} {unit}")
    return ", ".join(parts) or "no labels"

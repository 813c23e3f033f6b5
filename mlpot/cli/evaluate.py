"""Errors of a trained model on a labelled dataset.

Prints energy RMSE/MAE per atom (meV/atom), force-component RMSE/MAE (meV/Å) and stress
RMSE (GPa). With ``--json`` stdout holds exactly one JSON object with the keys
energy_rmse_mev_per_atom, energy_mae_mev_per_atom, force_rmse_mev_per_a,
force_mae_mev_per_a, stress_rmse_gpa, n_structures, n_atoms (null for a label the data
lack), so scripts can parse it; the progress bar then stays off. ``--by KEY`` adds the
errors of each group of structures that share ``info[KEY]`` (mlearn data: ``--by group``
gives AIMD, Elastic, Surface, Vacancy), under the JSON key "groups". ``--worst N`` lists the N
structures with the largest force MAE (``--worst-by energy_error``: the largest energy error)
beside their mean reference force and how far their descriptors lie beyond the training
range (JSON key "worst"): whether the error sits in a few hot frames or everywhere, and
whether those structures are extrapolations. Several model files are
evaluated as one committee: the mean of their predictions (mlpot.models.Ensemble).

example:
  mlpot evaluate runs/cuau/model.pt datasets/cuau/cuau.extxyz.gz --plot parity.png
  mlpot evaluate model.pt Mo/test.json --read-option stress_order="xx yy zz xy zx yz" --json
  mlpot evaluate model.pt Si/test.json --by group
  mlpot evaluate model.pt Si/test.json --by group --worst 10
  mlpot evaluate model.pt Si/test.json --by group --worst 5 --worst-by energy_error
  mlpot evaluate runs/si/seed0/model.pt runs/si/seed1/model.pt runs/si/seed2/model.pt Si/test.json
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

HELP = "errors of a trained model on a labelled dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="+",
                        help="model file written by mlpot train (model.pt); several: their mean (a committee)")
    parser.add_argument("data", help="labelled dataset (extxyz, mlearn JSON, DeePMD dir, input.data, npz, h5)")
    parser.add_argument("--format", help="the data format (default: detected from the name)")
    parser.add_argument("--read-option", action="append", default=[], metavar="KEY=VALUE",
                        help="reader option, e.g. stress_order='xx yy zz xy zx yz' (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    parser.add_argument("--by", metavar="KEY",
                        help="also report the errors per group of structures sharing info[KEY] "
                             "(mlearn: group)")
    parser.add_argument("--worst", type=int, default=0, metavar="N",
                        help="also list the N structures with the largest force MAE (their index in "
                             "the data, energy error, force MAE/RMSE, mean reference force, and the "
                             "atoms whose descriptors lie beyond the training range)")
    parser.add_argument("--worst-by", choices=("force_mae", "force_rmse", "energy_error"), default="force_mae",
                        help="what --worst ranks by, energy_error by magnitude (default: %(default)s)")
    parser.add_argument("--plot", metavar="PATH", help="write a parity plot (needs the 'plot' extra)")
    parser.add_argument("--batch-size", type=int, default=16, help="structures per batch (default: %(default)s)")
    parser.add_argument("--device", default="cpu",
                        help="cpu, cuda, cuda:N or auto: CUDA when available (default: %(default)s)")


def parse_options(items: list[str]) -> dict:
    """``["key=value", ...]`` → reader options; values are parsed as YAML, so
    ``units=[0.529177, 27.2114]`` gives a list and ``stress_order=xx yy zz xy zx yz`` a string."""
    import yaml

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--read-option expects KEY=VALUE, got {item!r}")
        options[key.strip()] = yaml.safe_load(value) if value.strip() else value
    return options


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import load
    from ..data import read
    from ..evaluation import evaluate, parity_plot, require_matplotlib
    from ..models import Ensemble
    from ..training.metrics import METRIC_KEYS

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.worst < 0:
        raise ValueError(f"--worst must be >= 0, got {args.worst}")
    if args.plot:
        try:  # fail before the (long) evaluation, not after it
            require_matplotlib()
        except ImportError as exc:
            print(f"mlpot evaluate: error: {exc}", file=sys.stderr)
            return 2
    models = [load(path, device=args.device) for path in args.model]
    if len({m.dtype for m in models}) > 1:  # a committee computes in one precision: the finest
        dtype = max((m.dtype for m in models), key=lambda d: torch.finfo(d).bits)
        models = [m.to(dtype) for m in models]
    model = models[0] if len(models) == 1 else Ensemble(models)
    name = args.model[0] if len(models) == 1 else f"committee of {len(models)} ({', '.join(args.model)})"
    structures = read(args.data, format=args.format, **parse_options(args.read_option))
    metrics, predictions = evaluate(model, structures, batch_size=args.batch_size,
                                    progress=not args.json, group_by=args.by)
    if args.plot:
        parity_plot(predictions, args.plot, title=f"{name} on {args.data}")
    worst = _worst_rows(predictions, structures, args.worst, args.by, args.worst_by) if args.worst else []
    if args.json:
        result = {k: metrics[k] for k in METRIC_KEYS}
        if args.by:
            result["groups"] = metrics["groups"]
        if args.worst:
            result["worst"] = worst
        print(json.dumps(result))
        return 0
    print(f"model   {name} ({', '.join(model.elements)})")
    print(f"data    {args.data}: {metrics['n_structures']} structures, {metrics['n_atoms']} atoms")
    print(f"{'':<8}{'RMSE':>10}{'MAE':>10}")
    rows = (("energy", "energy_rmse_mev_per_atom", "energy_mae_mev_per_atom", "meV/atom"),
            ("forces", "force_rmse_mev_per_a", "force_mae_mev_per_a", "meV/Å"),
            ("stress", "stress_rmse_gpa", None, "GPa"))
    for name, rmse, mae, unit in rows:
        print(f"{name:<8}{_fmt(metrics[rmse]):>10}{_fmt(metrics.get(mae)):>10}  {unit}")
    if args.by:
        _print_groups(args.by, metrics["groups"])
    if worst:
        _print_worst(worst, args.by, args.worst_by)
    if args.plot:
        print(f"parity plot written to {args.plot}")
    return 0


def _print_groups(key: str, groups: dict[str, dict]) -> None:
    """One row per group: structures, energy RMSE/MAE, force RMSE/MAE, stress RMSE."""
    columns = (("n_structures", "structures"), ("energy_rmse_mev_per_atom", "E RMSE"),
               ("energy_mae_mev_per_atom", "E MAE"), ("force_rmse_mev_per_a", "F RMSE"),
               ("force_mae_mev_per_a", "F MAE"), ("stress_rmse_gpa", "σ RMSE"))
    width = max(12, *(len(label) + 2 for label in groups))
    print(f"\nper info[{key!r}] (energy meV/atom, forces meV/Å, stress GPa):")
    print(f"{'':<{width}}" + "".join(f"{title:>11}" for _, title in columns))
    for label, metrics in groups.items():
        print(f"{label:<{width}}" + "".join(f"{_fmt(metrics[k]):>11}" for k, _ in columns))


def _worst_rows(predictions, structures, count: int, key: str | None, by: str = "force_mae") -> list[dict]:
    """The ``count`` structures with the largest ``by`` (see :meth:`StructureErrors.worst
    <mlpot.evaluation.StructureErrors.worst>`), as JSON-ready rows (errors in meV/atom and
    meV/Å; ``None`` for a missing label or where the model cannot check its range)."""
    from ..evaluation import per_structure_errors

    errors = per_structure_errors(predictions)

    def number(value) -> float | None:
        return None if not np.isfinite(value) else float(value)

    rows = []
    for i in errors.worst(count, by=by):
        row = {"index": int(i), "n_atoms": int(errors.n_atoms[i])}
        if key is not None:
            row[key] = str(structures[int(i)].info[key])
        row.update(energy_error_mev_per_atom=number(errors.energy_error[i]),
                   force_mae_mev_per_a=number(errors.force_mae[i]),
                   force_rmse_mev_per_a=number(errors.force_rmse[i]),
                   force_scale_mev_per_a=number(errors.force_scale[i]))
        beyond = number(errors.atoms_beyond[i])
        row.update(atoms_beyond_training_range=None if beyond is None else int(beyond),
                   max_range_excess=number(errors.max_excess[i]))
        rows.append(row)
    return rows


WORST_TITLES = {"force_mae": "force MAE", "force_rmse": "force RMSE", "energy_error": "|energy error|"}


def _print_worst(rows: list[dict], key: str | None, by: str = "force_mae") -> None:
    """One row per structure, the largest ``by`` first; |F| is the mean absolute reference
    force component, so F MAE/|F| is the structure's relative force error; "beyond" counts
    the atoms with a descriptor outside the training range and "excess" is the largest
    distance outside, in units of that feature's training range."""
    label = [key] if key else []
    print(f"\n{len(rows)} structures with the largest {WORST_TITLES[by]} (energy meV/atom, forces meV/Å; "
          "beyond: atoms outside the training range, excess: how far, in units of the range):")
    header = ["index", *label, "atoms", "ΔE", "F MAE", "F RMSE", "|F|", "F MAE/|F|", "beyond", "excess"]
    print("".join(f"{h:>11}" for h in header))
    for row in rows:
        scale, mae = row["force_scale_mev_per_a"], row["force_mae_mev_per_a"]
        relative = None if not scale or mae is None else mae / scale
        cells = [str(row["index"]), *([row[key]] if key else []), str(row["n_atoms"]),
                 _fmt(row["energy_error_mev_per_atom"]), _fmt(mae), _fmt(row["force_rmse_mev_per_a"]),
                 _fmt(scale), _fmt(relative),
                 "–" if row["atoms_beyond_training_range"] is None else str(row["atoms_beyond_training_range"]),
                 _fmt(row["max_range_excess"])]
        print("".join(f"{c:>11}" for c in cells))


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"

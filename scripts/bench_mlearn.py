#!/usr/bin/env python
"""The mlearn benchmark: train examples/mlearn.yaml on Si and Mo, compare with Zuo et al. 2020.

For each element whose data are in ../shared/datasets/mlearn (others are skipped with a
message), this runs, each as a subprocess of this Python:

1. ``mlpot train examples/mlearn.yaml --out RUNS/mlearn-<el> --set data.train=… data.test=…``
   (Mo also gets its shear-stress order, see README.md). Resumable: a run that finished
   with at least the requested epochs is skipped (``--force`` retrains from scratch), and
   an unfinished one continues from its ``last.pt`` with ``--resume``;
2. ``mlpot evaluate RUNS/mlearn-<el>/model.pt …/test.json --json``;

then prints test MAE and RMSE of energy (meV/atom) and forces (eV/Å), stress RMSE (GPa),
epochs and training wall time, beside the MAE of GAP, MTP and NNP (n2p2, 2 hidden layers)
published for the same splits (Zuo et al., J. Phys. Chem. A 124, 731 (2020)), and writes
the table as JSON to RUNS/bench_mlearn.json.

A smoke test (``--epochs 1``) leaves finished runs behind: run the real benchmark with
``--force`` or another ``--runs`` folder, or it resumes them (with a learning-rate schedule
that was laid out for the shorter run).

Usage: python scripts/bench_mlearn.py [--elements Si Mo] [--epochs N] [--force]
           [--runs runs] [--set training.device=cuda ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "mlearn.yaml"
MLEARN = ROOT.parent / "shared" / "datasets" / "mlearn"
ELEMENTS = ("Si", "Mo")
# The mlearn Mo files store shear stress as xx yy zz xy zx yz (README.md, tests).
READ_OPTIONS = {"Mo": {"stress_order": "xx yy zz xy zx yz"}}
# Zuo et al. 2020 test MAE: energy meV/atom, force eV/Å (see ../shared/datasets/README.md).
PUBLISHED = {
    "Si": {"GAP": (2.91, 0.07), "MTP": (2.21, 0.06), "NNP": (5.60, 0.11)},
    "Mo": {"GAP": (2.24, 0.09), "MTP": (2.83, 0.09)},
}
DONE = "bench_done.json"  # written beside the run when `mlpot train` returned 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", nargs="+", default=list(ELEMENTS), help="mlearn elements")
    parser.add_argument("--epochs", type=int, help="override training.epochs of the config")
    parser.add_argument("--force", action="store_true", help="retrain finished runs from scratch")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs", help="folder of the run folders")
    parser.add_argument("--config", type=Path, default=CONFIG, help="training config")
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[],
                        metavar="KEY=VALUE", help="more config overrides, e.g. training.device=cuda")
    args = parser.parse_args()
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    epochs = args.epochs if args.epochs is not None else _config_epochs(args.config)

    rows = []
    for el in args.elements:
        train_file, test_file = MLEARN / el / "training.json", MLEARN / el / "test.json"
        if not (train_file.is_file() and test_file.is_file()):
            print(f"[{el}] skipped: {train_file} or {test_file} not found")
            continue
        out = args.runs / f"mlearn-{el}"
        overrides = [f"data.train={train_file}", f"data.test={test_file}",
                     f"training.epochs={epochs}", *args.overrides]
        if el in READ_OPTIONS:
            overrides.append(f"data.read_options={json.dumps(READ_OPTIONS[el])}")
        if not _train(el, out, args.config, overrides, epochs, args.force):
            print(f"[{el}] training failed; see the output above", file=sys.stderr)
            return 1
        metrics = _evaluate(el, out / "model.pt", test_file)
        if metrics is None:
            return 1
        rows.append({"element": el, **metrics, **_history(out / "metrics.csv")})

    if not rows:
        print("no mlearn data found; nothing to report")
        return 0
    _print_table(rows)
    args.runs.mkdir(parents=True, exist_ok=True)
    (args.runs / "bench_mlearn.json").write_text(json.dumps(
        {"config": str(args.config), "results": rows, "published_mae": PUBLISHED}, indent=1) + "\n")
    print(f"\nresults written to {args.runs / 'bench_mlearn.json'}")
    return 0


def _config_epochs(config: Path) -> int:
    import yaml

    return int(((yaml.safe_load(config.read_text()) or {}).get("training") or {}).get("epochs", 100))


def _mlpot(*args: str) -> list[str]:
    return [sys.executable, "-m", "mlpot", *args]


def _train(el: str, out: Path, config: Path, overrides: list[str], epochs: int, force: bool) -> bool:
    """Train (or resume, or skip) one run; True when ``out/model.pt`` is final."""
    done = out / DONE
    if done.is_file() and not force:
        finished = json.loads(done.read_text()).get("epochs", 0)
        if finished >= epochs:
            print(f"[{el}] {out} finished ({finished} epochs): not retrained (--force retrains)")
            return True
    command = _mlpot("train", str(config), "--out", str(out), "--no-progress", "--set", *overrides)
    if force:
        command.append("--overwrite")
        done.unlink(missing_ok=True)
    elif (out / "last.pt").is_file():
        command.append("--resume")
    print(f"[{el}] {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    rc = subprocess.call(command, cwd=ROOT)
    if rc != 0:
        return False
    done.write_text(json.dumps({"epochs": epochs, "wall_s_this_call": time.perf_counter() - start}) + "\n")
    return True


def _evaluate(el: str, model: Path, test_file: Path) -> dict | None:
    command = _mlpot("evaluate", str(model), str(test_file), "--json")
    for key, value in READ_OPTIONS.get(el, {}).items():
        command += ["--read-option", f"{key}={value}"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"[{el}] evaluation failed:\n{proc.stderr}", file=sys.stderr)
        return None
    return json.loads(proc.stdout)


def _history(metrics_csv: Path) -> dict:
    """Epochs run and summed epoch wall time (s) from the run's metrics.csv."""
    with open(metrics_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {"epochs": len(rows), "train_wall_s": sum(float(r["wall_s"]) for r in rows)}


def _f(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _print_table(rows: list[dict]) -> None:
    print("\nmlearn test set (Zuo et al. 2020 splits). Energy meV/atom, force eV/Å, stress GPa;")
    print("published rows give MAE only (GAP, MTP: ACEpotentials.jl benchmark; NNP: PyXtal_FF).\n")
    head = (f"{'element':<8}{'model':<8}{'E MAE':>8}{'E RMSE':>8}{'F MAE':>8}{'F RMSE':>8}"
            f"{'σ RMSE':>8}{'epochs':>8}{'wall':>10}")
    print(head)
    print("-" * len(head))
    for r in rows:
        f_mae = None if r["force_mae_mev_per_a"] is None else r["force_mae_mev_per_a"] / 1000
        f_rmse = None if r["force_rmse_mev_per_a"] is None else r["force_rmse_mev_per_a"] / 1000
        print(f"{r['element']:<8}{'mlpot':<8}{_f(r['energy_mae_mev_per_atom'], '.2f'):>8}"
              f"{_f(r['energy_rmse_mev_per_atom'], '.2f'):>8}{_f(f_mae, '.3f'):>8}{_f(f_rmse, '.3f'):>8}"
              f"{_f(r['stress_rmse_gpa'], '.3f'):>8}{r['epochs']:>8}{_duration(r['train_wall_s']):>10}")
        for name, (e_mae, f_mae) in PUBLISHED.get(r["element"], {}).items():
            print(f"{'':<8}{name:<8}{e_mae:>8.2f}{'':>8}{f_mae:>8.2f}")


def _duration(seconds: float) -> str:
    minutes, s = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{s:02d}s"


if __name__ == "__main__":
    sys.exit(main())

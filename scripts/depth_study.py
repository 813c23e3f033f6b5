#!/usr/bin/env python
"""Run (or resume) the depth studies of docs/depth-study.md and copy their figures there.

For each study this calls ``mlpot ablate CONFIG --out RUNS/study-<name> --resume`` (finished
runs are skipped, so a rerun only redraws), then copies report.md, results.csv and the PNG
plots into ``docs/depth-study/<name>/``. Studies whose data are missing (mlearn lives in
../shared) are skipped with a message.

Usage: python scripts/depth_study.py [--studies si ethanol] [--jobs 2] [--runs runs]
           [--report-only]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDIES = {
    "si": (ROOT / "examples" / "ablation-mlearn.yaml", ROOT.parent / "shared" / "datasets" / "mlearn" / "Si"),
    "ethanol": (ROOT / "examples" / "ablation-ethanol-full.yaml", ROOT / "datasets" / "ethanol"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", nargs="+", default=list(STUDIES), choices=list(STUDIES))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch threads per run")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs")
    parser.add_argument("--report-only", action="store_true",
                        help="only re-render the reports of finished runs and copy them")
    args = parser.parse_args()
    status = 0
    for name in args.studies:
        config, data = STUDIES[name]
        if not data.exists():
            print(f"[{name}] skipped: {data} not found")
            continue
        out = args.runs / f"study-{name}"
        if args.report_only:
            command = [sys.executable, "-m", "mlpot", "report", str(out)]
        else:
            command = [sys.executable, "-m", "mlpot", "ablate", str(config), "--out", str(out),
                       "--jobs", str(args.jobs), "--resume"]
            if args.threads:
                command += ["--threads", str(args.threads)]
        print(f"[{name}] {' '.join(command[1:])}", flush=True)
        if subprocess.call(command, cwd=ROOT) != 0:
            status = 1
        target = ROOT / "docs" / "depth-study" / name
        target.mkdir(parents=True, exist_ok=True)
        for item in ["report.md", "results.csv", *sorted(p.name for p in out.glob("*.png"))]:
            if (out / item).is_file():
                shutil.copy2(out / item, target / item)
        print(f"[{name}] report and figures copied to {target}")
    return status


if __name__ == "__main__":
    sys.exit(main())

"""Re-render an ablation report from its results.

Collects the finished runs in DIR/runs, rewrites DIR/results.csv and DIR/results.json, and
renders DIR/report.md with its plots (error vs depth, gradient norms per layer, accuracy vs
cost, learning curves, MD stability). With ``--from-json`` only DIR/results.json is read
(e.g. a results file copied without its run folders).
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "re-render an ablation report (report.md, plots) from its results"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="ablation output folder")
    parser.add_argument("--from-json", action="store_true", help="use DIR/results.json as it is")
    parser.add_argument("--title", help="report title (default: Depth ablation)")


def run(args: argparse.Namespace) -> int:
    from ..ablation.report import collect_results, render_report, write_results

    out = Path(args.dir)
    if not out.is_dir():
        raise FileNotFoundError(f"no such folder: {out}")
    if not args.from_json:
        runs = collect_results(out)
        if not runs:
            raise ValueError(f"{out / 'runs'} holds no finished runs (result.json)")
        write_results(out, runs)
    elif not (out / "results.json").is_file():
        raise FileNotFoundError(f"{out / 'results.json'} not found")
    print(f"report: {render_report(out, title=args.title)}")
    return 0

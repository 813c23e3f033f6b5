#!/usr/bin/env python
"""Symmetry-function cost: µs per atom and peak memory, mlpot against its peers.

Systems: one DeePMD liquid-water frame (192 atoms, ../shared/datasets/deepmd-water) and its
3×3×3 supercell (5184 atoms); without ../shared a water box of the same density is built
with ASE (said in the output). Descriptors of comparable length (128 features for H, O):

* ``mlpot-ani``: 16 G2 shells (r_c 5.2 Å) × 2 elements + 32 G5 terms (r_c 3.5 Å) × 3 pairs,
  the cutoffs and layout of TorchANI's ANI-1x AEV;
* ``torchani``: TorchANI's ``AEVComputer.like_1x`` (16 radial × 2 + 32 angular × 3);
* ``mlpot-ani-harmonics``: ``mlpot-ani`` with G5 summed by spherical harmonics (addition
  theorem, no triplets) instead of over triplets;
* ``mlpot-g4``: the same with narrow G4 instead of G5;
* ``mlpot-single``/``dscribe``: one cutoff (5.2 Å) for all terms, as DScribe's ACSF
  requires (DScribe computes no derivatives here, so forward only).

Each case runs in a fresh subprocess (one thread by default) so its peak resident memory
is its own; "peak MB" is the rise in max RSS during the timed calls. Forward+backward
means G and ∂(ΣG)/∂R. Times include building the neighbour list. Ratios are against
TorchANI (or DScribe for the single-cutoff rows) measured in the same run.

Usage: python scripts/bench_descriptors.py [--threads 1] [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WATER = ROOT.parent / "shared" / "datasets" / "deepmd-water" / "data_0"
CASES = ["mlpot-ani", "mlpot-ani-harmonics", "mlpot-g4", "torchani", "mlpot-single", "dscribe"]
REFERENCE = {"mlpot-ani": "torchani", "mlpot-ani-harmonics": "torchani", "mlpot-g4": "torchani",
             "mlpot-single": "dscribe"}

ANI_LIKE = {
    "elements": ["H", "O"], "cutoff": 5.2, "cutoff_function": "cos",
    "radial": [{"grid": {"count": 16, "mode": "shift", "r_lower": 0.9, "r_upper": 5.2}}],
    "angular": [{"kind": "G5", "cutoff": 3.5, "zetas": [1, 2, 4, 8], "lambdas": [-1, 1],
                 "grid": {"count": 4, "mode": "shift", "r_lower": 0.9, "r_upper": 3.5}}],
}


def water(supercell: int):
    """The first DeePMD water frame (or an ASE stand-in), repeated supercell³ times."""
    if WATER.exists():
        from mlpot.data import read

        atoms, source = read(WATER)[0], "DeePMD water frame 0"
    else:
        import numpy as np
        from ase import Atoms
        from ase.build import molecule

        rng = np.random.default_rng(0)
        atoms, source = Atoms(cell=[12.44] * 3, pbc=True), "ASE water stand-in (no ../shared)"
        grid = np.stack(np.meshgrid(*[np.arange(4)] * 3), -1).reshape(-1, 3) * 3.11 + 1.5
        for centre in grid:
            w = molecule("H2O")
            w.rotate(rng.uniform(0, 360), rng.normal(size=3))
            w.translate(centre)
            atoms += w
    return atoms.repeat(supercell), source


def run_case(case: str, supercell: int, backward: bool, repeats: int, device: str) -> dict:
    """Time one case in this process; returns µs/atom and peak-memory rise."""
    import numpy as np
    import torch

    from mlpot.device import synchronize

    atoms, source = water(supercell)
    n = len(atoms)
    if case == "dscribe":
        from dscribe.descriptors import ACSF

        if backward:
            return {"skipped": "DScribe ACSF has no derivatives"}
        acsf = ACSF(species=["H", "O"], r_cut=5.2, periodic=True,
                    g2_params=[[0.5 / 0.2707**2, r] for r in np.linspace(0.9, 5.2, 16)],
                    g4_params=[[1.0, z, lam] for z in (1, 2, 4, 8) for lam in (-1, 1)]
                    + [[0.05, z, lam] for z in (1, 2, 4, 8) for lam in (-1, 1)]
                    + [[0.01, z, lam] for z in (1, 2, 4, 8) for lam in (-1, 1)]
                    + [[0.003, z, lam] for z in (1, 2, 4, 8) for lam in (-1, 1)])
        fn = lambda: acsf.create(atoms, n_jobs=1)  # noqa: E731
    elif case == "torchani":
        import torchani

        aev = torchani.aev.AEVComputer.like_1x(num_species=2, neighborlist="cell_list").to(device)
        species = torch.tensor((atoms.numbers == 8).astype(int), device=device).unsqueeze(0)
        cell = torch.tensor(atoms.cell.array, dtype=torch.float32, device=device)
        pbc = torch.tensor([True, True, True], device=device)
        pos0 = torch.tensor(atoms.positions, dtype=torch.float32, device=device).unsqueeze(0)

        def fn():
            pos = pos0.clone().requires_grad_(backward)
            g = aev(species, pos, cell=cell, pbc=pbc)
            if backward:
                torch.autograd.grad(g.sum(), pos)
    else:
        from mlpot.data import collate
        from mlpot.descriptors import SymmetryFunctions, SymmetryFunctionSpec

        config = dict(ANI_LIKE)
        if case == "mlpot-g4":
            config["angular"] = [dict(config["angular"][0], kind="G4")]
        if case == "mlpot-single":
            config = {"elements": ["H", "O"], "cutoff": 5.2, "cutoff_function": "cos",
                      "radial": ANI_LIKE["radial"],
                      "angular": [{"kind": "G4", "eta": e, "zetas": [1, 2, 4, 8], "lambdas": [-1, 1]}
                                  for e in (1.0, 0.05, 0.01, 0.003)]}
        method = "harmonics" if case == "mlpot-ani-harmonics" else "triplets"
        sf = SymmetryFunctions(SymmetryFunctionSpec.from_dict(config), angular_method=method).to(device)
        batch = collate([atoms], labels=False, dtype=torch.float32, device=device)

        def fn():
            b = batch.with_neighbours(sf.cutoff)
            pos = b.positions.clone().requires_grad_(backward)
            with torch.set_grad_enabled(backward):
                g = sf.compute(pos, sf.species(b.numbers), b.cell, b.system_idx, b.edge_index, b.edge_shift)
                if backward:
                    torch.autograd.grad(g.sum(), pos)

    fn()  # warm-up (allocations, lazy initialisation)
    synchronize(device)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else (rss1 - rss0) / 1024)
    return {"atoms": n, "us_per_atom": 1e6 * float(np.median(times)) / n, "peak_mb": peak, "source": source}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", nargs="*", default=CASES)
    parser.add_argument("--worker", nargs=3, metavar=("CASE", "SUPERCELL", "BACKWARD"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        case, supercell, backward = args.worker[0], int(args.worker[1]), args.worker[2] == "1"
        try:
            result = run_case(case, supercell, backward, args.repeats, args.device)
        except ImportError as exc:
            result = {"skipped": f"not installed ({exc.name})"}
        print(json.dumps(result))
        return

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TORCHANI_NO_WARN_EXTENSIONS="1")
    rows = {}
    for supercell in (1, 3):
        for backward in (False, True):
            for case in args.cases:
                cmd = [sys.executable, __file__, "--worker", case, str(supercell), str(int(backward)),
                       "--repeats", str(args.repeats), "--threads", str(args.threads), "--device", args.device]
                out = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if out.returncode != 0:
                    rows[case, supercell, backward] = {"skipped": f"failed: {out.stderr.strip().splitlines()[-1]}"}
                else:
                    rows[case, supercell, backward] = json.loads(out.stdout.strip().splitlines()[-1])
                print(".", end="", flush=True, file=sys.stderr)
    print(file=sys.stderr)
    source = next((r["source"] for r in rows.values() if "source" in r), "?")
    print(f"# Symmetry functions, {args.device}, {args.threads} thread(s), median of {args.repeats}; system: {source}")
    print(f"{'case':<21}{'atoms':>7}  {'mode':<9}{'µs/atom':>10}{'peak MB':>10}  ratio vs reference")
    for supercell in (1, 3):
        for backward in (False, True):
            for case in args.cases:
                r = rows[case, supercell, backward]
                mode = "fwd+bwd" if backward else "fwd"
                if "skipped" in r:
                    print(f"{case:<21}{'':>7}  {mode:<9}  skipped: {r['skipped']}")
                    continue
                ref = rows.get((REFERENCE.get(case), supercell, backward), {})
                ratio = (f"{r['us_per_atom'] / ref['us_per_atom']:.2f}× {REFERENCE[case]}"
                         if "us_per_atom" in ref else "")
                print(f"{case:<21}{r['atoms']:>7}  {mode:<9}{r['us_per_atom']:>10.1f}{r['peak_mb']:>10.1f}  {ratio}")


if __name__ == "__main__":
    main()

"""Check mlpot's import of an n2p2 potential against n2p2's own predictions.

Reads ``../shared/potentials/n2p2-H2O_RPBE-D3`` with :func:`mlpot.io.n2p2.read_potential`
and evaluates, in float64, the structures of its ``reference/`` folder (computed with the
real n2p2 code; see reference/README.md). Positions are fed as n2p2's ``positions_bohr``
converted with the model's own Bohr (and results converted back with its own Bohr and
Hartree), so the unit constants cancel and the table compares in n2p2's units:

    structure  atoms  max|ΔE| Ha/atom  max|ΔF| Ha/Bohr  SF max|Δ|

ΔE is the total-energy difference divided by the atom count (the largest per-atom energy
difference is printed too), ΔF the largest force-component difference, and SF the largest
difference of the raw (unscaled) symmetry functions, compared in n2p2's order.

    python scripts/n2p2_check.py [--potential DIR] [--skip-large] [--roundtrip]

``--roundtrip`` also exports the imported model with
:func:`mlpot.io.n2p2.write_potential`, re-imports it and reports the largest differences.

``--timing`` times energy + forces of the imported potential on the 1080-atom box (one
thread, neighbour list included, median of 10 after a warm-up) in float64 and float32, beside
n2p2's own figure from ``reference/timing.txt`` (libnnp's evaluation on one core: neighbour
list, SFs with derivatives, networks, forces). That figure was measured on another machine
(see the file), not in this run: the ratio is indicative only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from mlpot.data import collate
from mlpot.io.n2p2 import n2p2_feature_order, read_potential, write_potential

DEFAULT = Path(__file__).resolve().parents[1] / ".." / "shared" / "potentials" / "n2p2-H2O_RPBE-D3"
STRUCTURES = ("deepmd_f0", "deepmd_f1", "deepmd_f2", "h2o1080")


def evaluate(model, ref: dict) -> dict:
    """mlpot's prediction for one reference structure, in Ha and Bohr (arrays in input order)."""
    meta = model.metadata["n2p2"]
    bohr, hartree = meta["length_to_angstrom"], meta["energy_to_ev"]
    atoms = Atoms(symbols=list(ref["elements"]), positions=ref["positions_bohr"] * bohr,
                  cell=ref["lattice_bohr"] * bohr, pbc=True)
    batch = collate([atoms], cutoff=model.cutoff)
    out = model(batch, descriptors=True)
    return {
        "energy": out["energy"].item() / hartree,
        "atomic": out["atomic_energies"].detach().numpy() / hartree,
        "forces": out["forces"].detach().numpy() * bohr / hartree,
        "G": out["descriptors"].numpy(),
    }


def compare(model, ref: dict) -> dict:
    """Largest differences from the n2p2 reference arrays of one structure."""
    got = evaluate(model, ref)
    n = len(ref["elements"])
    order = n2p2_feature_order(model)
    sf = 0.0
    for el in ("H", "O"):
        idx = ref[f"atom_index_{el}"]
        sf = max(sf, float(np.abs(got["G"][idx][:, order[el]] - ref[f"G_raw_{el}"]).max()))
    atomic_ref = ref["atomic_energy_nn_ha"] + ref["mean_energy_ha"]
    return {
        "atoms": n,
        "dE": abs(got["energy"] - float(ref["energy_ha"])) / n,
        "dE_atom": float(np.abs(got["atomic"] - atomic_ref).max()),
        "dF": float(np.abs(got["forces"] - ref["forces_ha_bohr"]).max()),
        "dSF": sf,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--potential", type=Path, default=DEFAULT)
    parser.add_argument("--skip-large", action="store_true", help="skip the 1080-atom structure")
    parser.add_argument("--roundtrip", action="store_true", help="also export, re-import and compare")
    parser.add_argument("--timing", action="store_true", help="time energy + forces on the 1080-atom box")
    args = parser.parse_args(argv)
    torch.set_default_dtype(torch.float64)
    if not (args.potential / "reference").is_dir():
        print(f"{args.potential}/reference is absent (reference data lives outside the repository)")
        return 1
    model = read_potential(args.potential, units="auto")
    print(f"potential: {args.potential.resolve()}  (units {model.metadata['n2p2']['units']}, float64)")
    print(f"{'structure':<11} {'atoms':>5} {'max|ΔE| Ha/atom':>17} {'max|ΔE_i| Ha':>13} "
          f"{'max|ΔF| Ha/Bohr':>16} {'SF max|Δ|':>10} {'time s':>7}")
    worst = {"dE": 0.0, "dF": 0.0, "dSF": 0.0}
    names = [s for s in STRUCTURES if not (args.skip_large and s == "h2o1080")]
    refs = {}
    for name in names:
        ref = dict(np.load(args.potential / "reference" / f"{name}.npz"))
        refs[name] = ref
        t0 = time.perf_counter()
        r = compare(model, ref)
        dt = time.perf_counter() - t0
        for k in worst:
            worst[k] = max(worst[k], r[k])
        print(f"{name:<11} {r['atoms']:>5} {r['dE']:>17.2e} {r['dE_atom']:>13.2e} {r['dF']:>16.2e} "
              f"{r['dSF']:>10.2e} {dt:>7.1f}")
    print(f"{'max':<11} {'':>5} {worst['dE']:>17.2e} {'':>13} {worst['dF']:>16.2e} {worst['dSF']:>10.2e}")
    ok = worst["dE"] < 1e-8 and worst["dF"] < 1e-7 and worst["dSF"] < 1e-10
    print("agreement within 1e-8 Ha/atom, 1e-7 Ha/Bohr, 1e-10 (SF):", "yes" if ok else "NO")
    if args.roundtrip:
        with tempfile.TemporaryDirectory() as tmp:
            write_potential(model, tmp)
            again = read_potential(tmp)
            for name in names[:1]:
                a, b = evaluate(model, refs[name]), evaluate(again, refs[name])
                print(f"export → import ({name}): |ΔE| {abs(a['energy'] - b['energy']):.1e} Ha, "
                      f"max|ΔF| {np.abs(a['forces'] - b['forces']).max():.1e} Ha/Bohr")
    if args.timing:
        timing(model, args.potential)
    return 0 if ok else 1


def timing(model, potential: Path, repeats: int = 10) -> None:
    """µs/atom of energy + forces on h2o1080 against n2p2's figure in reference/timing.txt."""
    torch.set_num_threads(1)
    ref = dict(np.load(potential / "reference" / "h2o1080.npz"))
    bohr = model.metadata["n2p2"]["length_to_angstrom"]
    atoms = Atoms(symbols=list(ref["elements"]), positions=ref["positions_bohr"] * bohr,
                  cell=ref["lattice_bohr"] * bohr, pbc=True)
    n2p2 = [float(line.split()[3]) for line in (potential / "reference" / "timing.txt").read_text().splitlines()
            if line.startswith("total")]
    n2p2_us = float(np.median(n2p2)) if n2p2 else float("nan")
    print(f"\nenergy + forces, {len(atoms)} atoms, 1 thread, neighbour list included (median of {repeats}; "
          "3 for the torch kernel)")
    print(f"{'code':<28} {'µs/atom':>8} {'vs n2p2':>8}")
    for kernel in ("numba", "torch"):
        model.descriptor.kernel = kernel
        for dtype in (torch.float64, torch.float32):
            m = model.to(dtype)
            batch = collate([atoms], labels=False, dtype=dtype)  # pairs built inside each call
            m(batch, forces=True)
            times = []
            for _ in range(repeats if kernel == "numba" else 3):
                t0 = time.perf_counter()
                m(batch, forces=True)
                times.append(time.perf_counter() - t0)
            us = float(np.median(times)) / len(atoms) * 1e6
            name = f"mlpot {str(dtype).split('.')[1]}, kernel {kernel}"
            print(f"{name:<28} {us:>8.1f} {us / n2p2_us:>7.2f}×")
    model.descriptor.kernel = "auto"
    model.to(torch.float64)
    print(f"{'n2p2 (libnnp)':<28} {n2p2_us:>8.1f} {'1.00×':>8}   (reference/timing.txt: another machine)")


if __name__ == "__main__":
    sys.exit(main())

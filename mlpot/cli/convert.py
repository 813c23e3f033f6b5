"""Convert a dataset to mlpot's HDF5 store, extended XYZ or n2p2's input.data.

Reads any format mlpot knows and writes HDF5 (``.h5``/``.hdf5``, read lazily by training),
extended XYZ (``.xyz``/``.extxyz``, readable by ASE) or n2p2/RuNNer ``input.data`` (any
``*.data``; ``--units bohr_hartree`` for n2p2 potentials in atomic units), labels included;
prints the counts of structures, atoms and labels.

example:
  mlpot convert datasets/cuau/cuau.extxyz.gz cuau.h5
  mlpot convert datasets/ethanol/ethanol.extxyz.gz n2p2/input.data --units bohr_hartree
  mlpot convert Mo/test.json mo-test.xyz --read-option stress_order="xx yy zz xy zx yz"
      (an mlearn JSON file, github.com/materialsvirtuallab/mlearn: data/Mo/test.json)
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "convert a dataset to HDF5 (.h5), extended XYZ (.xyz) or n2p2 input.data (.data)"

TARGETS = {".h5": "hdf5", ".hdf5": "hdf5", ".xyz": "extxyz", ".extxyz": "extxyz", ".data": "n2p2"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="dataset (extxyz, mlearn JSON, DeePMD dir, input.data, npz, h5)")
    parser.add_argument("output", help="destination: .h5/.hdf5, .xyz/.extxyz or input.data (*.data)")
    parser.add_argument("--units", default="angstrom_ev", choices=["angstrom_ev", "bohr_hartree"],
                        help="units of an n2p2 input.data output (default: %(default)s)")
    parser.add_argument("--format", help="the input format (default: detected from the name)")
    parser.add_argument("--read-option", action="append", default=[], metavar="KEY=VALUE",
                        help="reader option, e.g. stress_order='xx yy zz xy zx yz' (repeatable)")


def run(args: argparse.Namespace) -> int:
    from ..data import detect_format, get_labels, read, write
    from .evaluate import parse_options

    src, dst = Path(args.input), Path(args.output)
    target = TARGETS.get(dst.suffix.lower())
    if target is None:
        raise ValueError(f"cannot tell the output format of {dst}; use a name ending in "
                         f"{', '.join(TARGETS)}")
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise ValueError(f"input and output are the same file: {src}")
    structures = read(src, format=args.format, **parse_options(args.read_option))
    # Count while writing: an H5Dataset input is read lazily, once.
    counts = {"structures": 0, "atoms": 0, "energy": 0, "forces": 0, "stress": 0}

    def counted():
        for atoms in structures:
            lab = get_labels(atoms)
            counts["structures"] += 1
            counts["atoms"] += len(atoms)
            for key in ("energy", "forces", "stress"):
                counts[key] += getattr(lab, key) is not None
            yield atoms

    if target == "n2p2":
        write(dst, counted(), format="n2p2", units=args.units)
    else:
        write(dst, counted(), format="hdf5" if target == "hdf5" else "ase")
    n = counts["structures"]
    print(f"{src} ({args.format or detect_format(src)}) -> {dst} ({target}): {n} structures, "
          f"{counts['atoms']} atoms; labels: energy {counts['energy']}/{n}, "
          f"forces {counts['forces']}/{n}, stress {counts['stress']}/{n}")
    if target == "n2p2" and counts["stress"]:
        print(f"note: n2p2 input.data has no stress field; {counts['stress']} stress labels were not written")
    return 0

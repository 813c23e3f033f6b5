"""Convert a dataset to mlpot's HDF5 store or to extended XYZ.

Reads any format mlpot knows and writes HDF5 (``.h5``/``.hdf5``, read lazily by training)
or extended XYZ (``.xyz``/``.extxyz``, readable by ASE), labels included; prints the
counts of structures, atoms and labels.

example:
  mlpot convert ../shared/datasets/mlearn/Si/training.json si-train.h5
  mlpot convert ../shared/datasets/mlearn/Mo/test.json mo-test.xyz --read-option stress_order="xx yy zz xy zx yz"
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "convert a dataset to HDF5 (.h5) or extended XYZ (.xyz)"

TARGETS = {".h5": "hdf5", ".hdf5": "hdf5", ".xyz": "extxyz", ".extxyz": "extxyz"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="dataset (extxyz, mlearn JSON, DeePMD dir, input.data, npz, h5)")
    parser.add_argument("output", help="destination: .h5/.hdf5 or .xyz/.extxyz")
    parser.add_argument("--format", help="override the detected input format")
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

    write(dst, counted(), format="hdf5" if target == "hdf5" else "ase")
    n = counts["structures"]
    print(f"{src} ({args.format or detect_format(src)}) -> {dst} ({target}): {n} structures, "
          f"{counts['atoms']} atoms; labels: energy {counts['energy']}/{n}, "
          f"forces {counts['forces']}/{n}, stress {counts['stress']}/{n}")
    return 0

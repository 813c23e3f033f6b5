"""Import an n2p2 potential as an mlpot model file.

Reads FOLDER/input.nn, scaling.data and weights.XXX.data (XXX = atomic number) and writes
one model file that works in eV and Å like every mlpot model (energies, forces, stress,
ASE calculator, MD). The files' units come from input.nn's "# Length unit : Bohr" /
"# Energy unit : Ha" comments (``--units auto``) or are given with ``--units``. Keywords
that change the model but that mlpot cannot represent (other symmetry-function types,
electrostatics, unsupported activations, ...) are errors naming the keyword and its line.

example:
  mlpot import-n2p2 path/to/n2p2-potential/ model.pt
  mlpot import-n2p2 path/to/n2p2-potential/ model.pt --units angstrom_ev
"""

from __future__ import annotations

import argparse

HELP = "import an n2p2 potential (input.nn, scaling.data, weights.XXX.data) as a model file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="n2p2 potential folder")
    parser.add_argument("output", help="model file to write (e.g. model.pt)")
    parser.add_argument("--units", default="auto",
                        help="units of the n2p2 files: auto (read input.nn's comments), "
                             "bohr_hartree or angstrom_ev (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from ..io import save_model
    from ..io.n2p2 import read_potential

    model = read_potential(args.folder, units=args.units)
    save_model(model, args.output, model.metadata)
    meta = model.metadata["n2p2"]
    n_sf = ", ".join(f"{el} {n}" for el, n in model.descriptor.n_features.items())
    print(f"{args.folder} -> {args.output}: elements {list(model.elements)}, symmetry functions "
          f"{n_sf}, hidden {list(model.config.hidden_sizes)}, {model.n_parameters()} parameters, "
          f"cutoff {model.cutoff:.6g} Å; files read in {meta['units'] or 'the given units'}")
    return 0

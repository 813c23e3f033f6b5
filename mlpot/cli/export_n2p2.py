"""Export an mlpot model as an n2p2 potential (for n2p2 and LAMMPS ``pair_style hdnnp``).

Writes FOLDER/input.nn, scaling.data and weights.XXX.data. The model needs plain networks
(no residual blocks or stochastic depth), n2p2 activations (tanh, softplus, identity,
sigmoid, gaussian, cos) and an n2p2 cutoff function; anything else is an error that says
why. Units: those the model was imported from, else Å/eV, or ``--units``; input.nn states
them in comments. See docs/lammps.md for running the result in LAMMPS.

example:
  mlpot export-n2p2 runs/ethanol/model.pt ethanol-n2p2
  mlpot export-n2p2 water-rpbe.pt water-n2p2 --units bohr_hartree
"""

from __future__ import annotations

import argparse

HELP = "export a model as an n2p2 potential folder (input.nn, scaling.data, weights.XXX.data)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model file (model.pt)")
    parser.add_argument("folder", help="folder to write (created if needed)")
    parser.add_argument("--units", default=None,
                        help="angstrom_ev or bohr_hartree (default: the units the model was "
                             "imported from, else angstrom_ev)")


def run(args: argparse.Namespace) -> int:
    from ase.data import atomic_numbers

    from .. import load
    from ..io.n2p2 import write_potential

    model = load(args.model)
    folder = write_potential(model, args.folder, units=args.units)
    numbers = sorted(atomic_numbers[e] for e in model.elements)
    files = ["input.nn", "scaling.data"] + [f"weights.{z:03d}.data" for z in numbers]
    print(f"{args.model} -> {folder}: {', '.join(files)}")
    return 0

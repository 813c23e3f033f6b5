"""Build the LAMMPS plugin (pair_style mlpot) and print its path: the same as
``mlpot lammps-plugin --out DIR``, for environments where the command is not registered.

usage: python scripts/build_lammps_plugin.py --out build/lammps-plugin [--lammps-headers DIR]
       [--mpi-include DIR] [--plugin-header DIR] [--jobs N] [--verbose]
"""

from __future__ import annotations

import argparse
import sys

from mlpot.cli import lammps_plugin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=lammps_plugin.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    lammps_plugin.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return lammps_plugin.run(args)
    except ValueError as exc:
        print(f"build_lammps_plugin: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

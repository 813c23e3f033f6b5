"""LAMMPS ``pair_style mlpot``: the C++ plugin sources (pair_mlpot.h/.cpp, plugin.cpp,
CMakeLists.txt), its build (:mod:`mlpot.lammps.build`) and the explicit-ghost helpers the
export checks and tests use (:mod:`mlpot.lammps.ghosts`). See docs/lammps.md."""

from .ghosts import GhostedStructure, with_ghosts

__all__ = ["GhostedStructure", "with_ghosts"]

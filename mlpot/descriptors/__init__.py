"""Behler–Parrinello atom-centred symmetry functions (G2, G4, G5), cutoffs and scaling."""

from .cutoffs import CUTOFF_FUNCTIONS, cutoff_function
from .jacobian import PairJacobian
from .parameters import AngularTerm, Feature, RadialTerm, SymmetryFunctionSpec, radial_grid
from .symmetry_functions import SymmetryFunctions

__all__ = [
    "AngularTerm",
    "CUTOFF_FUNCTIONS",
    "Feature",
    "PairJacobian",
    "RadialTerm",
    "SymmetryFunctionSpec",
    "SymmetryFunctions",
    "cutoff_function",
    "radial_grid",
]

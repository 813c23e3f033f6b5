"""Descriptors: the :class:`Descriptor` interface and its registry, and the Behler–Parrinello
atom-centred symmetry functions (G2, G4, G5) with their cutoffs and scaling.

``DESCRIPTORS`` maps a kind name (the ``kind`` key of the ``descriptor:`` config section)
to its class; :func:`register_descriptor` adds one (see :mod:`mlpot.descriptors.base`).
"""

from .base import DESCRIPTORS, Descriptor, DescriptorConfig, descriptor_from_dict, register_descriptor
from .cutoffs import CUTOFF_FUNCTIONS, cutoff_function
from .jacobian import PairJacobian
from .parameters import AngularTerm, Feature, RadialTerm, SymmetryFunctionSpec, radial_grid
from .sf_config import SymmetryFunctionsConfig
from .symmetry_functions import SymmetryFunctions

__all__ = [
    "AngularTerm",
    "CUTOFF_FUNCTIONS",
    "DESCRIPTORS",
    "Descriptor",
    "DescriptorConfig",
    "Feature",
    "PairJacobian",
    "RadialTerm",
    "SymmetryFunctionSpec",
    "SymmetryFunctions",
    "SymmetryFunctionsConfig",
    "cutoff_function",
    "descriptor_from_dict",
    "radial_grid",
    "register_descriptor",
]

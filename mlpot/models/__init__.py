"""Per-element atomic networks of free depth and the potential built from them."""

from .blocks import ACTIVATIONS, BLOCKS, register_block
from .depth import DropPath, survival_probabilities
from .elementwise import ElementNetworks
from .ensemble import Ensemble
from .init import INITS
from .mlp import AtomicMLP, NetworkConfig
from .potential import Potential

__all__ = [
    "ACTIVATIONS",
    "AtomicMLP",
    "BLOCKS",
    "DropPath",
    "ElementNetworks",
    "Ensemble",
    "INITS",
    "NetworkConfig",
    "Potential",
    "register_block",
    "survival_probabilities",
]

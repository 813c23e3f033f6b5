"""Neighbour pairs (vesin), triplets and differentiable pair vectors."""

from .edges import edge_vectors
from .pairs import check_cutoff, neighbour_pairs, structure_pairs
from .triplets import triplets_from_pairs

__all__ = [
    "check_cutoff",
    "edge_vectors",
    "neighbour_pairs",
    "structure_pairs",
    "triplets_from_pairs",
]

"""Molecular dynamics: a batched, device-resident engine and integrators."""

from .engine import BatchedMD, MDState
from .integrators import INTEGRATORS

__all__ = ["BatchedMD", "INTEGRATORS", "MDState"]

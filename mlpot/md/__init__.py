"""Molecular dynamics: a batched, device-resident engine and integrators."""

from .engine import BatchedMD, MDState, Thermostat
from .integrators import INTEGRATORS

__all__ = ["BatchedMD", "INTEGRATORS", "MDState", "Thermostat"]

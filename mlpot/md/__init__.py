"""Molecular dynamics: a batched, device-resident engine and integrators."""

from .engine import BatchedMD, MDState, Thermostat, thermalised
from .integrators import INTEGRATORS

__all__ = ["INTEGRATORS", "BatchedMD", "MDState", "Thermostat", "thermalised"]

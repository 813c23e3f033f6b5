"""Integrators for the batched MD engine, as a registry of step functions.

Symbols (ASE units throughout: Å, eV, amu, time in Å·√(amu/eV), so that F/m is an
acceleration without conversion factors):

* x positions (N, 3), v velocities (N, 3), m masses (N, 1), F forces (N, 3);
* dt the timestep; γ the friction (1/time); k_B T the thermal energy (eV), per replica.

Each step takes and returns an :class:`~mlpot.md.engine.MDState` and calls ``forces(x)``
(which returns F for the new positions) exactly once.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["INTEGRATORS", "velocity_verlet", "langevin_baoab"]

ForceFn = Callable[[torch.Tensor], torch.Tensor]
INTEGRATORS: dict[str, Callable] = {}


def register(name: str):
    def wrap(fn):
        INTEGRATORS[name] = fn
        return fn

    return wrap


@register("nve")
def velocity_verlet(state, forces: ForceFn, dt: float, **_) -> None:
    """Velocity Verlet (NVE): v ← v + ½dt F/m; x ← x + dt v; F ← F(x); v ← v + ½dt F/m."""
    state.velocities += 0.5 * dt * state.forces / state.masses
    state.positions += dt * state.velocities
    state.forces = forces(state.positions)
    state.velocities += 0.5 * dt * state.forces / state.masses


@register("nvt")
def langevin_baoab(state, forces: ForceFn, dt: float, kT: torch.Tensor, friction: float,
                   generator: torch.Generator | None = None, **_) -> None:
    """Langevin dynamics, BAOAB splitting (Leimkuhler & Matthews 2013).

    B: v ← v + ½dt F/m;  A: x ← x + ½dt v;
    O: v ← c₁ v + c₂ √(k_B T/m) ξ with c₁ = exp(−γ dt), c₂ = √(1 − c₁²), ξ ~ N(0, 1);
    A: x ← x + ½dt v;  F ← F(x);  B: v ← v + ½dt F/m.
    ``kT`` is (N, 1): each atom's replica temperature.
    """
    state.velocities += 0.5 * dt * state.forces / state.masses
    state.positions += 0.5 * dt * state.velocities
    c1 = torch.exp(torch.tensor(-friction * dt, dtype=state.positions.dtype))
    c2 = torch.sqrt(1.0 - c1 * c1)
    noise = torch.randn(state.velocities.shape, generator=generator, dtype=state.velocities.dtype,
                        device=state.velocities.device)
    state.velocities = c1 * state.velocities + c2 * torch.sqrt(kT / state.masses) * noise
    state.positions += 0.5 * dt * state.velocities
    state.forces = forces(state.positions)
    state.velocities += 0.5 * dt * state.forces / state.masses

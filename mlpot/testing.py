"""Reusable physics checks for tests of descriptors, models and calculators.

Each helper computes its reference independently of the code under test (finite
differences, explicit symmetry operations) and raises ``AssertionError`` with the size of
the disagreement.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

__all__ = [
    "central_difference",
    "assert_gradient_matches_fd",
    "random_rotation",
    "stress_by_strain_fd",
]


def central_difference(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                       step: float = 1e-5) -> torch.Tensor:
    """∂fn/∂x by central differences, for a scalar ``fn``; same shape as ``x`` (float64)."""
    x = x.detach().clone().double()
    grad = torch.zeros_like(x)
    flat, gflat = x.view(-1), grad.view(-1)
    with torch.no_grad():
        for k in range(flat.numel()):
            orig = flat[k].item()
            flat[k] = orig + step
            up = float(fn(x))
            flat[k] = orig - step
            down = float(fn(x))
            flat[k] = orig
            gflat[k] = (up - down) / (2 * step)
    return grad


def assert_gradient_matches_fd(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                               step: float = 1e-5, rtol: float = 1e-6, atol: float = 1e-8) -> None:
    """Autograd gradient of scalar ``fn`` at ``x`` equals its central finite difference."""
    xa = x.detach().clone().double().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(xa), xa)
    fd = central_difference(fn, x, step)
    err = (grad - fd).abs().max().item()
    scale = fd.abs().max().item()
    if not err <= atol + rtol * scale:
        raise AssertionError(f"autograd vs finite difference: max |Δ| = {err:.3e} (max |g| = {scale:.3e})")


def random_rotation(seed: int) -> np.ndarray:
    """A uniformly random proper rotation matrix (3, 3), from a QR decomposition."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def stress_by_strain_fd(energy: Callable, atoms, step: float = 1e-6) -> np.ndarray:
    """Stress (1/V) ∂E/∂ε, (3, 3) eV/Å³, symmetrised, by central differences of
    ``energy(atoms) -> float`` (eV) under homogeneous strains h → h(1 + ε) of cell and atoms."""
    volume = atoms.get_volume()
    fd = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            values = []
            for sign in (1, -1):
                eps = np.eye(3)
                eps[a, b] += sign * step
                strained = atoms.copy()
                strained.set_cell(atoms.cell.array @ eps, scale_atoms=True)
                values.append(energy(strained))
            fd[a, b] = (values[0] - values[1]) / (2 * step) / volume
    return 0.5 * (fd + fd.T)

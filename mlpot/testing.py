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

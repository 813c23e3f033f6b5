"""Activations and hidden-layer blocks, each a small registry.

A hidden block maps width ``d_in`` to ``d_out`` (the contract, and how to add a variant, is
in :func:`register_block`):

* ``plain``:    h' = σ(W h + b)
* ``residual``: h' = P h + DropPath(σ(W h + b)), with P the identity when d_in = d_out and
  a bias-free linear projection otherwise (He et al. 2016). ``NetworkConfig(stem=True)``
  puts a plain layer first instead (d_in → width), so that equal widths leave no block a
  projection (see :class:`~mlpot.models.NetworkConfig`). With ``zero_init`` the branch's
  W starts at zero so every block starts as (projected) identity when σ(0) = 0 (tanh,
  shifted softplus, SiLU, CELU, GELU, identity; not softplus, sigmoid, Gaussian or cos,
  which exist for n2p2 potentials).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from .depth import DropPath
from .init import initialise_linear

__all__ = ["ACTIVATIONS", "BLOCKS", "activation", "register_block", "PlainBlock", "ResidualBlock"]


class ShiftedSoftplus(nn.Module):
    """ssp(x) = softplus(x) − ln 2 (SchNet), zero at the origin."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(x) - math.log(2.0)


class Softplus(nn.Module):
    """softplus(x) = ln(1 + eˣ), not shifted (n2p2's ``p``; softplus(0) = ln 2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch's threshold (x > 20 → x) differs from ln(1 + eˣ) by < 1e-8·e⁻²⁰, far below
        # float64 rounding of x itself.
        return nn.functional.softplus(x)


class Gaussian(nn.Module):
    """g(x) = exp(−x²/2) (n2p2's ``g``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * x * x)


class Cos(nn.Module):
    """cos(x) (n2p2's ``c``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cos(x)


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "shifted_softplus": ShiftedSoftplus,
    "silu": nn.SiLU,
    "celu": nn.CELU,
    "gelu": nn.GELU,
    # The rest exist so that n2p2 potentials (mlpot.io.n2p2) can be represented exactly.
    "softplus": Softplus,
    "sigmoid": nn.Sigmoid,
    "gaussian": Gaussian,
    "cos": Cos,
    "identity": nn.Identity,
}


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


BLOCKS: dict[str, type[nn.Module]] = {}


def register_block(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make a hidden-block class available as ``NetworkConfig(block=name)``.

    The contract every block class keeps (:class:`~mlpot.models.AtomicMLP` builds each hidden
    layer k, through this registry only, as ``BLOCKS[name](d_in, d_out, act=..., init=...,
    zero_init=..., survival=...)``):

    * ``__init__(self, d_in: int, d_out: int, act: str, init: str, zero_init: bool = False,
      survival: float = 1.0)``: widths of layer k's input and output; ``act`` an
      :data:`ACTIVATIONS` name and ``init`` an :data:`~mlpot.models.init.INITS` name (e.g. via
      :func:`~mlpot.models.init.initialise_linear`); ``zero_init`` (``zero_init_residual``:
      start as the identity) and ``survival`` (stochastic-depth survival probability of this
      block) may be ignored by blocks without a skip connection.
    * ``forward(x)``: (n, d_in) → (n, d_out), row by row (atoms are independent), smooth in
      ``x`` so that forces (and their double backward in training) exist. A block with
      stochastic depth sets the class attribute ``takes_keep = True`` and takes
      ``forward(x, keep)``, ``keep`` (n, 1) of 0/1 or ``None``: the per-structure draw for
      this block of each row's structure (:class:`~mlpot.models.depth.DropPath`); it must
      not draw random numbers itself when ``keep`` is given (stacked models evaluate
      blocks under ``torch.func.vmap``).
    * ``n_parameters(d_in, d_out) -> int``, a static method: trainable parameters of one
      block without building it (:mod:`mlpot.ablation` sizes its grids with it).

    Args:
        name: the registry key.

    Raises:
        ValueError: ``name`` is already registered (the message names it).
        TypeError: the class has no callable ``n_parameters``.
    """

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in BLOCKS:
            raise ValueError(f"block {name!r} is already registered (by {BLOCKS[name].__qualname__})")
        if not callable(getattr(cls, "n_parameters", None)):
            raise TypeError(f"block {name!r}: {cls.__qualname__} needs a static n_parameters(d_in, d_out)")
        BLOCKS[name] = cls
        return cls

    return wrap


@register_block("plain")
class PlainBlock(nn.Module):
    """h' = σ(W h + b); ``zero_init`` and ``survival`` do not apply (no skip connection)."""

    takes_keep = False

    def __init__(self, d_in: int, d_out: int, act: str, init: str, zero_init: bool = False,
                 survival: float = 1.0):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.act = activation(act)
        initialise_linear(self.linear, init, act)

    @staticmethod
    def n_parameters(d_in: int, d_out: int) -> int:
        """Trainable parameters of a block, without building it."""
        return d_in * d_out + d_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.linear(x))


@register_block("residual")
class ResidualBlock(nn.Module):
    """h' = P h + DropPath(σ(W h + b)), P the identity or a bias-free projection."""

    takes_keep = True

    def __init__(self, d_in: int, d_out: int, act: str, init: str, zero_init: bool = False,
                 survival: float = 1.0):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.act = activation(act)
        initialise_linear(self.linear, init, act)
        if zero_init:
            nn.init.zeros_(self.linear.weight)
        self.project = None
        if d_in != d_out:
            self.project = nn.Linear(d_in, d_out, bias=False)
            initialise_linear(self.project, init, "linear")
        self.drop = DropPath(survival)

    @staticmethod
    def n_parameters(d_in: int, d_out: int) -> int:
        """Trainable parameters of a block (with its projection), without building it."""
        return d_in * d_out + d_out + (d_in * d_out if d_in != d_out else 0)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """x (n, d_in) → (n, d_out); ``keep`` (n, 1): each row's stochastic-depth draw
        (:class:`~mlpot.models.depth.DropPath`; ignored in eval mode)."""
        skip = x if self.project is None else self.project(x)
        return skip + self.drop(self.act(self.linear(x)), keep)


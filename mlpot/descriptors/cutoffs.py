"""Cutoff functions f_c(r) with the definitions of n2p2 (Singraber et al., JCTC 15, 1827 (2019)).

With an inner radius r_ci = α r_c (0 ≤ α < 1) and x = (r − r_ci)/(r_c − r_ci):

=========  ==========================================================  ==================
name       f_c for r_ci ≤ r < r_c (1 below r_ci, 0 from r_c on)        continuous up to
=========  ==========================================================  ==================
cos        ½ [cos(π x) + 1]                                           f′
tanhu      tanh³(1 − r/r_c)               (α not used)                 f″
tanh       tanh³(1 − r/r_c) / tanh³(1)    (α not used; f_c(0) = 1)      f″
exp        exp(1 − 1/(1 − x²))                                        all derivatives
poly1      (2x − 3)x² + 1                                             f′
poly2      ((15 − 6x)x − 10)x³ + 1                                    f″
poly3      (x(x(20x − 70) + 84) − 35)x⁴ + 1                           f‴
poly4      (x(x((315 − 70x)x − 540) + 420) − 126)x⁵ + 1               f⁗
=========  ==========================================================  ==================

Every function is written so that autograd never meets a NaN or inf outside its support
(the "double where" pattern): the formula is evaluated at a clamped argument and the result
is masked, so value *and* gradient are exactly zero beyond r_c.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

__all__ = ["CUTOFF_FUNCTIONS", "cutoff_function", "register_cutoff"]

CutoffFn = Callable[[torch.Tensor], torch.Tensor]
#: name -> (core f(x) on 0 ≤ x < 1, uses_inner_radius)
CUTOFF_FUNCTIONS: dict[str, tuple[CutoffFn, bool]] = {}


def register_cutoff(name: str, uses_inner_radius: bool = True):
    """Register ``f(x)`` (x in [0, 1)) as cutoff function ``name``."""

    def wrap(fn: CutoffFn) -> CutoffFn:
        CUTOFF_FUNCTIONS[name] = (fn, uses_inner_radius)
        return fn

    return wrap


@register_cutoff("cos")
def _cos(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (torch.cos(math.pi * x) + 1.0)


@register_cutoff("poly1")
def _poly1(x: torch.Tensor) -> torch.Tensor:
    return (2.0 * x - 3.0) * x * x + 1.0


@register_cutoff("poly2")
def _poly2(x: torch.Tensor) -> torch.Tensor:
    return ((15.0 - 6.0 * x) * x - 10.0) * x**3 + 1.0


@register_cutoff("poly3")
def _poly3(x: torch.Tensor) -> torch.Tensor:
    return (x * (x * (20.0 * x - 70.0) + 84.0) - 35.0) * x**4 + 1.0


@register_cutoff("poly4")
def _poly4(x: torch.Tensor) -> torch.Tensor:
    return (x * (x * ((315.0 - 70.0 * x) * x - 540.0) + 420.0) - 126.0) * x**5 + 1.0


@register_cutoff("exp")
def _exp(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(1.0 - 1.0 / (1.0 - x * x))


# tanh-type functions are defined on r/r_c directly: x here is r/r_c (inner radius unused).
@register_cutoff("tanhu", uses_inner_radius=False)
def _tanhu(x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(1.0 - x) ** 3


_TANH_NORM = 1.0 / math.tanh(1.0) ** 3


@register_cutoff("tanh", uses_inner_radius=False)
def _tanh(x: torch.Tensor) -> torch.Tensor:
    return _TANH_NORM * torch.tanh(1.0 - x) ** 3


def cutoff_function(name: str, alpha: float = 0.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Return ``fc(r, r_c)`` for the named cutoff, broadcasting ``r`` against ``r_c``.

    Args:
        name: one of :data:`CUTOFF_FUNCTIONS`.
        alpha: inner-radius fraction α, 0 ≤ α < 1 (n2p2's ``cutoff_type`` parameter).

    Returns:
        A function of r (Å, any shape) and r_c (Å, broadcastable) giving f_c in [0, 1].
    """
    try:
        core, uses_inner = CUTOFF_FUNCTIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown cutoff function {name!r}; choose one of {sorted(CUTOFF_FUNCTIONS)}"
        ) from None
    alpha = float(alpha)
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"cutoff alpha (inner radius fraction) must be in [0, 1), got {alpha}")
    a = alpha if uses_inner else 0.0

    def fc(r: torch.Tensor, rc: torch.Tensor | float) -> torch.Tensor:
        rc = torch.as_tensor(rc, dtype=r.dtype, device=r.device)
        inner = a * rc
        x = (r - inner) / (rc - inner)
        inside = x < 1.0
        # Inside the inner radius x < 0 clamps to 0, where every core is 1 with zero slope.
        # Outside r_c the argument is replaced by 0 so the formula (and its gradient) stays
        # finite where it is masked out.
        safe_x = torch.where(inside, x.clamp(min=0.0), torch.zeros_like(x))
        return torch.where(inside, core(safe_x), torch.zeros_like(x))

    return fc

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

Each function is written once, as a formula of x with the names ``cos``, ``sin``, ``exp``,
``tanh`` and ``pi`` (plus numeric constants of its module), together with its slope df/dx.
Here those names are torch's, and autograd differentiates the formula; the compiled angular
kernel (:mod:`~mlpot.descriptors.angular_kernel`) compiles the very same formula and slope
with numba, the names bound to scalar functions (:func:`scalar_form`), so torch and numba
cannot drift apart. A registered function without a slope, or whose formula uses other
names, runs on the torch path only.
"""

from __future__ import annotations

import math
import types
from typing import Callable, NamedTuple

import torch

__all__ = ["CUTOFF_FUNCTIONS", "CutoffFunction", "cutoff_function", "register_cutoff", "scalar_form",
           "FORMULA_NAMES"]

CutoffFn = Callable[[torch.Tensor], torch.Tensor]

# The names a cutoff formula may use besides its module's numeric constants (see the module
# docstring); bound to torch here.
cos, sin, exp, tanh, pi = torch.cos, torch.sin, torch.exp, torch.tanh, math.pi
FORMULA_NAMES = frozenset({"cos", "sin", "exp", "tanh", "pi"})


class CutoffFunction(NamedTuple):
    """A registered cutoff: ``value(x)`` on 0 ≤ x < 1, its ``slope`` df/dx (``None``: torch
    path only) and whether it uses the inner radius α r_c (else x = r/r_c)."""

    value: CutoffFn
    uses_inner_radius: bool = True
    slope: CutoffFn | None = None


#: name -> CutoffFunction
CUTOFF_FUNCTIONS: dict[str, CutoffFunction] = {}


def register_cutoff(name: str, uses_inner_radius: bool = True, slope: CutoffFn | None = None):
    """Register ``f(x)`` (x in [0, 1)) as cutoff function ``name``, with its slope df/dx
    for the compiled kernel (see the module docstring)."""

    def wrap(fn: CutoffFn) -> CutoffFn:
        CUTOFF_FUNCTIONS[name] = CutoffFunction(fn, uses_inner_radius, slope)
        return fn

    return wrap


@register_cutoff("cos", slope=lambda x: -0.5 * pi * sin(pi * x))
def _cos(x):
    return 0.5 * (cos(pi * x) + 1.0)


@register_cutoff("poly1", slope=lambda x: 6.0 * x * (x - 1.0))
def _poly1(x):
    return (2.0 * x - 3.0) * x * x + 1.0


@register_cutoff("poly2", slope=lambda x: -30.0 * x * x * (x - 1.0) * (x - 1.0))
def _poly2(x):
    return ((15.0 - 6.0 * x) * x - 10.0) * x * x * x + 1.0


@register_cutoff("poly3", slope=lambda x: 140.0 * x * x * x * (x - 1.0) * (x - 1.0) * (x - 1.0))
def _poly3(x):
    return (x * (x * (20.0 * x - 70.0) + 84.0) - 35.0) * x * x * x * x + 1.0


@register_cutoff("poly4", slope=lambda x: -630.0 * x * x * x * x * (x - 1.0) * (x - 1.0) * (x - 1.0) * (x - 1.0))
def _poly4(x):
    return (x * (x * ((315.0 - 70.0 * x) * x - 540.0) + 420.0) - 126.0) * x * x * x * x * x + 1.0


# exp(1 − 1/(1 − x²)) and its slope −2x f / (1 − x²)²: f underflows to 0 long before
# (1 − x²)² could (x is at most 1 − 2⁻⁵³ inside the support), so the slope never meets 0·∞.
@register_cutoff("exp", slope=lambda x: -2.0 * x * exp(1.0 - 1.0 / (1.0 - x * x)) / ((1.0 - x * x) * (1.0 - x * x)))
def _exp(x):
    return exp(1.0 - 1.0 / (1.0 - x * x))


# tanh-type functions are defined on r/r_c directly: x here is r/r_c (inner radius unused).
@register_cutoff("tanhu", uses_inner_radius=False,
                 slope=lambda x: -3.0 * tanh(1.0 - x) ** 2 * (1.0 - tanh(1.0 - x) ** 2))
def _tanhu(x):
    return tanh(1.0 - x) ** 3


_TANH_NORM = 1.0 / math.tanh(1.0) ** 3


@register_cutoff("tanh", uses_inner_radius=False,
                 slope=lambda x: -3.0 * _TANH_NORM * tanh(1.0 - x) ** 2 * (1.0 - tanh(1.0 - x) ** 2))
def _tanh(x):
    return _TANH_NORM * tanh(1.0 - x) ** 3


def scalar_form(fn: Callable, functions: dict[str, Callable]) -> Callable | None:
    """The same formula with ``cos``, ``sin``, ``exp``, ``tanh`` rebound to ``functions``
    (scalar, e.g. numba-compiled) and ``pi`` to a float; ``None`` if it uses any other
    global that is not a number (e.g. ``torch``), which only the torch path can run."""
    code = fn.__code__
    names = set(code.co_names)
    scope = dict(fn.__globals__)
    foreign = [n for n in names - FORMULA_NAMES
               if not isinstance(scope.get(n), (int, float)) or isinstance(scope.get(n), bool)]
    if foreign or code.co_freevars:
        return None
    scope.update(functions, pi=math.pi)
    return types.FunctionType(code, scope, fn.__name__, fn.__defaults__)


def cutoff_function(name: str, alpha: float = 0.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Return ``fc(r, r_c)`` for the named cutoff, broadcasting ``r`` against ``r_c``.

    Args:
        name: one of :data:`CUTOFF_FUNCTIONS`.
        alpha: inner-radius fraction α, 0 ≤ α < 1 (n2p2's ``cutoff_type`` parameter).

    Returns:
        A function of r (Å, any shape) and r_c (Å, broadcastable) giving f_c in [0, 1].
    """
    try:
        core, uses_inner, _ = CUTOFF_FUNCTIONS[name]
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

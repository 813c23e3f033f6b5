"""Symmetry-function parameters: the resolved terms of an element-resolved ACSF descriptor.

A *term* is one functional form with its parameters; it becomes one feature per neighbour
element (radial) or per unordered neighbour-element pair (angular), for each centre element
it applies to. Terms may be restricted to a centre element and to neighbour elements, which
is how n2p2 potentials define different sets per element.

The YAML section that generates terms (explicit entries and n2p2-style grids) is parsed by
:class:`~mlpot.descriptors.sf_config.SymmetryFunctionsConfig`; :meth:`SymmetryFunctionSpec.to_dict`
writes every term explicitly in that same form, so it reads back unchanged.

Grids follow n2p2's ``SymFuncParamGenerator`` rules (Gastegger et al., JCP 148, 241709
(2018) and Imbalzano et al., JCP 148, 241730 (2018)); see :func:`radial_grid`.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from ase.data import atomic_numbers

from .cutoffs import CUTOFF_FUNCTIONS

__all__ = [
    "RadialTerm",
    "AngularTerm",
    "Feature",
    "SymmetryFunctionSpec",
    "radial_grid",
]

ANGULAR_KINDS = ("G4", "G5")


@dataclass(frozen=True)
class RadialTerm:
    """G2_i = Σ_{j≠i, Z_j = neighbour} exp(−η (r_ij − r_s)²) f_c(r_ij).

    Attributes:
        eta: Gaussian width parameter η, Å⁻² (≥ 0).
        r_s: Gaussian centre, Å (≥ 0).
        cutoff: r_c, Å; ``None`` uses the descriptor's cutoff.
        centre: restrict to this centre element (symbol); ``None`` = every element.
        neighbour: restrict to this neighbour element; ``None`` = one feature per element.
    """

    eta: float
    r_s: float = 0.0
    cutoff: float | None = None
    centre: str | None = None
    neighbour: str | None = None


@dataclass(frozen=True)
class AngularTerm:
    """Angular symmetry functions (Behler, JCP 134, 074106 (2011); n2p2 types 3 and 9).

    Narrow (G4), over each unordered pair of neighbours {j, k} (k > j, both ≠ i)::

        G4_i = 2^(1−ζ) Σ (1 + λ cos θ_ijk)^ζ exp(−η[(r_ij−r_s)² + (r_ik−r_s)² + (r_jk−r_s)²])
                          f_c(r_ij) f_c(r_ik) f_c(r_jk)

    Wide (G5): the same without the r_jk Gaussian and without f_c(r_jk).

    Attributes:
        kind: ``"G4"`` (narrow) or ``"G5"`` (wide).
        eta: η, Å⁻² (≥ 0).
        zeta: ζ ≥ 1.
        lam: λ = ±1 (the YAML key is ``lambda``).
        r_s: Gaussian centre, Å.
        cutoff: r_c, Å; ``None`` uses the descriptor's cutoff.
        centre: restrict to this centre element; ``None`` = every element.
        neighbours: restrict to this unordered pair of neighbour elements; ``None`` = all pairs.
    """

    kind: str
    eta: float
    zeta: float
    lam: float
    r_s: float = 0.0
    cutoff: float | None = None
    centre: str | None = None
    neighbours: tuple[str, str] | None = None


@dataclass(frozen=True)
class Feature:
    """One column of the descriptor of a centre element (for names, export and checks)."""

    centre: str
    term: RadialTerm | AngularTerm
    neighbours: tuple[str, ...]  # (Z_j,) for radial, (Z_j, Z_k) sorted for angular

    @property
    def name(self) -> str:
        t = self.term
        nb = ",".join(self.neighbours)
        rc = t.cutoff
        if isinstance(t, RadialTerm):
            return f"G2[{self.centre}|{nb}](eta={t.eta:g},r_s={t.r_s:g},rc={rc:g})"
        return (
            f"{t.kind}[{self.centre}|{nb}](eta={t.eta:g},zeta={t.zeta:g},"
            f"lambda={t.lam:g},r_s={t.r_s:g},rc={rc:g})"
        )


def radial_grid(
    count: int,
    cutoff: float,
    mode: str = "shift",
    rule: str = "gastegger2018",
    r_lower: float | None = None,
    r_upper: float | None = None,
) -> list[tuple[float, float]]:
    """(η, r_s) pairs on n2p2's radial grids.

    ``gastegger2018``: a grid r_1..r_n = linspace(r_lower, r_upper or r_c, count);
    ``center`` mode gives r_s = 0, η = 1/(2 r_k²); ``shift`` mode gives r_s = r_k with one
    η = 1/(2 Δr²) from the grid spacing. ``imbalzano2018``: ``center`` gives r_s = 0,
    η_m = (n^(m/n)/r_c)² for m = 0..n with n = count − 1; ``shift`` places r_s on the
    geometric grid r_c/n^(m/n) and sets η from the neighbouring spacings.

    Returns:
        ``count`` (η in Å⁻², r_s in Å) pairs, ascending in r_s (shift) or η (center).
    """
    if count < 2:
        raise ValueError(f"grid count must be at least 2, got {count}")
    if mode not in ("shift", "center"):
        raise ValueError(f"grid mode must be 'shift' or 'center', got {mode!r}")
    if rule == "gastegger2018":
        if r_lower is None:
            raise ValueError("grid rule 'gastegger2018' needs r_lower (Å)")
        r_upper = cutoff if r_upper is None else r_upper
        low_ok = r_lower > 0 if mode == "center" else r_lower >= 0
        if not (low_ok and r_lower < r_upper <= cutoff):
            raise ValueError(
                f"grid needs {'0 <' if mode == 'center' else '0 <='} r_lower < r_upper <= "
                f"cutoff, got r_lower={r_lower}, r_upper={r_upper}, cutoff={cutoff}"
            )
        grid = np.linspace(r_lower, r_upper, count)
        if mode == "center":
            return [(float(1.0 / (2.0 * r * r)), 0.0) for r in grid]
        dr = (r_upper - r_lower) / (count - 1)
        return [(float(1.0 / (2.0 * dr * dr)), float(r)) for r in grid]
    if rule == "imbalzano2018":
        if mode == "center":
            n = count - 1
            return [(float((n ** (m / n) / cutoff) ** 2), 0.0) for m in range(count)]
        n = count
        shifts = cutoff / n ** (np.arange(n + 1) / n)  # descending, shifts[0] = r_c
        etas = 1.0 / (shifts[:-1] - shifts[1:]) ** 2
        return [(float(e), float(r)) for e, r in zip(etas[::-1], shifts[1:][::-1])]
    raise ValueError(f"unknown grid rule {rule!r}; choose 'gastegger2018' or 'imbalzano2018'")


@dataclass(frozen=True)
class SymmetryFunctionSpec:
    """The full, resolved definition of an element-resolved ACSF descriptor.

    Attributes:
        elements: chemical symbols, in the order that indexes per-element tensors.
        cutoff: default r_c of terms without their own, Å; also the neighbour-list radius
            (the largest term cutoff is used if one exceeds it).
        cutoff_function: name in :data:`mlpot.descriptors.cutoffs.CUTOFF_FUNCTIONS`.
        cutoff_alpha: inner-radius fraction α of the cutoff function.
        radial, angular: the terms, each with a resolved cutoff.
    """

    elements: tuple[str, ...]
    cutoff: float
    cutoff_function: str = "cos"
    cutoff_alpha: float = 0.0
    radial: tuple[RadialTerm, ...] = ()
    angular: tuple[AngularTerm, ...] = field(default=())

    def __post_init__(self) -> None:
        if len(self.elements) == 0:
            raise ValueError("descriptor needs at least one element")
        for el in self.elements:
            if el not in atomic_numbers or el == "X":
                raise ValueError(f"unknown element {el!r} in descriptor elements")
        if len(set(self.elements)) != len(self.elements):
            raise ValueError(f"duplicate elements in {self.elements}")
        if not (np.isfinite(self.cutoff) and self.cutoff > 0):
            raise ValueError(f"cutoff must be a positive distance in Å, got {self.cutoff}")
        if self.cutoff_function not in CUTOFF_FUNCTIONS:
            raise ValueError(
                f"unknown cutoff_function {self.cutoff_function!r}; "
                f"choose one of {sorted(CUTOFF_FUNCTIONS)}"
            )
        if not 0.0 <= self.cutoff_alpha < 1.0:
            raise ValueError(f"cutoff_alpha must be in [0, 1), got {self.cutoff_alpha}")
        if not self.radial and not self.angular:
            raise ValueError("descriptor has no radial and no angular terms")
        # Terms without their own cutoff take the descriptor's (frozen: set through object).
        for name in ("radial", "angular"):
            terms = tuple(
                replace(t, cutoff=float(self.cutoff)) if t.cutoff is None else t
                for t in getattr(self, name)
            )
            object.__setattr__(self, name, terms)
        for t in self.radial + self.angular:
            self._check_term(t)

    def _check_term(self, t: RadialTerm | AngularTerm) -> None:
        where = f"{type(t).__name__} {t}"
        if t.cutoff is None or not (np.isfinite(t.cutoff) and t.cutoff > 0):
            raise ValueError(f"{where}: cutoff must be a positive distance in Å")
        if not (t.eta >= 0 and np.isfinite(t.eta)):
            raise ValueError(f"{where}: eta must be finite and >= 0")
        if not (t.r_s >= 0 and np.isfinite(t.r_s)):
            raise ValueError(f"{where}: r_s must be finite and >= 0")
        named = [t.centre] + (
            [t.neighbour] if isinstance(t, RadialTerm) else list(t.neighbours or ())
        )
        for el in named:
            if el is not None and el not in self.elements:
                raise ValueError(f"{where}: element {el!r} is not in elements {self.elements}")
        if isinstance(t, AngularTerm):
            if t.kind not in ANGULAR_KINDS:
                raise ValueError(f"{where}: kind must be one of {ANGULAR_KINDS}")
            if not t.zeta >= 1:
                raise ValueError(f"{where}: zeta must be >= 1")
            if t.lam not in (-1.0, 1.0):
                raise ValueError(f"{where}: lambda must be +1 or -1")
            if t.neighbours is not None and len(t.neighbours) != 2:
                raise ValueError(f"{where}: neighbours must name two elements")

    # ------------------------------------------------------------------ derived views
    @property
    def max_cutoff(self) -> float:
        """Neighbour-list radius: the largest cutoff of any term, Å."""
        return max(t.cutoff for t in self.radial + self.angular)

    @property
    def max_angular_cutoff(self) -> float:
        """Radius of the pairs that enter triplets, Å (0 without angular terms)."""
        return max((t.cutoff for t in self.angular), default=0.0)

    def element_pairs(self) -> list[tuple[str, str]]:
        """Unordered neighbour-element pairs in canonical order (by element index)."""
        return list(itertools.combinations_with_replacement(self.elements, 2))

    def features(self, centre: str) -> list[Feature]:
        """The ordered feature list of a centre element: radial blocks per neighbour element,
        then angular blocks per neighbour pair; terms in definition order inside a block."""
        out: list[Feature] = []
        for nb in self.elements:
            for t in self.radial:
                if t.centre in (None, centre) and t.neighbour in (None, nb):
                    out.append(Feature(centre, t, (nb,)))
        for pair in self.element_pairs():
            for t in self.angular:
                if t.centre in (None, centre) and (
                    t.neighbours is None or tuple(sorted(t.neighbours, key=self.elements.index)) == pair
                ):
                    out.append(Feature(centre, t, pair))
        return out

    def n_features(self) -> dict[str, int]:
        return {el: len(self.features(el)) for el in self.elements}

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Explicit, resolved dict (every term listed, grids expanded); from_dict inverts it."""
        def term_dict(t):
            d = asdict(t)
            if isinstance(t, AngularTerm):
                d["lambda"] = d.pop("lam")
                if d["neighbours"] is not None:
                    d["neighbours"] = list(d["neighbours"])
            return {k: v for k, v in d.items() if v is not None}

        return {
            "elements": list(self.elements),
            "cutoff": self.cutoff,
            "cutoff_function": self.cutoff_function,
            "cutoff_alpha": self.cutoff_alpha,
            "radial": [term_dict(t) for t in self.radial],
            "angular": [term_dict(t) for t in self.angular],
        }

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "SymmetryFunctionSpec":
        """Build from a (YAML) dict with ``elements`` (see :class:`SymmetryFunctionsConfig
        <mlpot.descriptors.sf_config.SymmetryFunctionsConfig>`); unknown keys are errors
        that name the key."""
        from ..config import from_dict
        from .sf_config import SymmetryFunctionsConfig

        if not isinstance(config, dict):
            raise ValueError(f"descriptor: expected a mapping, got {type(config).__name__}")
        return from_dict(SymmetryFunctionsConfig, config, "descriptor").spec()

    @classmethod
    def default(cls, elements, cutoff: float = 5.0, radial_count: int = 8,
                angular_count: int = 3, zetas=(1, 4), kind: str = "G5") -> "SymmetryFunctionSpec":
        """A general-purpose set: shifted radial Gaussians from 0.5 Å to r_c and wide (G5)
        angular terms on a centred η grid, ζ in ``zetas``, λ = ±1, for every element and
        element pair."""
        return cls.from_dict({
            "elements": list(elements), "cutoff": cutoff, "cutoff_function": "poly2",
            "radial": [{"grid": {"count": radial_count, "mode": "shift", "r_lower": 0.5}}],
            "angular": [{"kind": kind, "zetas": list(zetas), "lambdas": [-1, 1],
                         "grid": {"count": angular_count, "mode": "center", "r_lower": 1.0}}],
        })

    @classmethod
    def from_yaml(cls, path) -> "SymmetryFunctionSpec":
        import yaml

        with open(path) as fh:
            return cls.from_dict(yaml.safe_load(fh))

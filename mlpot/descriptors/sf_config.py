"""The ``descriptor:`` YAML section of the symmetry functions, as typed dataclasses.

Parsed once, strictly, by :func:`mlpot.config.from_dict` (an unknown key anywhere names its
full path, e.g. ``descriptor.radial[0].width``), then resolved for the elements of the data
into a :class:`~mlpot.descriptors.SymmetryFunctionSpec` of explicit terms::

    kind: symmetry_functions     # the default kind
    elements: [H, O]             # optional: the training data's elements otherwise
    cutoff: 6.0                  # Å, default r_c of every term and the neighbour-list radius
    cutoff_function: cos         # see mlpot.descriptors.cutoffs
    cutoff_alpha: 0.0            # inner radius fraction (polynomial/cos/exp cutoffs)
    radial:
      - {eta: 0.5, r_s: 0.0}                                    # one explicit G2 term
      - {grid: {count: 8, mode: shift, r_lower: 0.8}}           # a generated grid
      - {eta: 1.0, centre: H, neighbour: O, cutoff: 4.0}        # restricted term
    angular:
      - {kind: G5, eta: 0.01, zeta: 1, lambda: 1}
      - {kind: G4, zetas: [1, 4], lambdas: [-1, 1], grid: {count: 2, mode: center, r_lower: 1.5}}
    select: {count: 40, method: cur}   # optional: keep the 40 most informative terms per element

``select`` turns the terms above into a candidate pool: before training, the pool is computed
on the training structures and the ``count`` most informative terms of each element are kept
(:mod:`mlpot.descriptors.selection`, Imbalzano et al., JCP 148, 241730 (2018)); the model file
holds only the kept terms. ``select: {count: 40, balance_by: group}`` weighs each value of
``info["group"]`` alike in that choice, so that a few surface slabs among many bulk cells
keep the terms that describe them.

Lengths in Å, η in Å⁻². Grids follow n2p2's rules (:func:`~mlpot.descriptors.radial_grid`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
from ase.data import chemical_symbols

from .base import DescriptorConfig
from .parameters import AngularTerm, RadialTerm, SymmetryFunctionSpec, radial_grid

__all__ = ["GridConfig", "RadialEntry", "AngularEntry", "SelectionConfig", "SymmetryFunctionsConfig"]


@dataclass(frozen=True)
class GridConfig:
    """A generated (η, r_s) grid: ``count`` points by ``rule`` in ``mode`` (see radial_grid)."""

    count: int
    mode: Literal["shift", "center"] = "shift"
    rule: Literal["gastegger2018", "imbalzano2018"] = "gastegger2018"
    r_lower: float | None = None
    r_upper: float | None = None

    def pairs(self, cutoff: float) -> list[tuple[float, float]]:
        """(η Å⁻², r_s Å) of the grid at ``cutoff``."""
        return radial_grid(self.count, cutoff, mode=self.mode, rule=self.rule, r_lower=self.r_lower,
                           r_upper=self.r_upper)


def _explicit_or_grid(entry, where: str) -> None:
    if entry.grid is not None and (entry.eta is not None or entry.r_s is not None):
        raise ValueError(f"{where}: give either 'grid' or explicit 'eta'/'r_s', not both")
    if entry.grid is None and entry.eta is None:
        raise ValueError(f"{where}: missing required key 'eta' (or a 'grid')")


@dataclass(frozen=True)
class RadialEntry:
    """One G2 term (``eta``, ``r_s``) or a grid of them, optionally restricted to a centre
    and a neighbour element, with an optional own cutoff (Å)."""

    eta: float | None = None
    r_s: float | None = None
    cutoff: float | None = None
    centre: str | None = None
    neighbour: str | None = None
    grid: GridConfig | None = None

    def __post_init__(self) -> None:
        _explicit_or_grid(self, "radial")

    def terms(self, default_cutoff: float) -> list[RadialTerm]:
        cutoff = self.cutoff if self.cutoff is not None else default_cutoff
        pairs = self.grid.pairs(cutoff) if self.grid is not None else [(self.eta, self.r_s or 0.0)]
        return [RadialTerm(eta=eta, r_s=r_s, cutoff=cutoff, centre=self.centre, neighbour=self.neighbour)
                for eta, r_s in pairs]


@dataclass(frozen=True)
class AngularEntry:
    """G4 (narrow) or G5 (wide) terms: every combination of the (η, r_s) of ``eta``/``r_s``
    or ``grid``, of ``zeta``/``zetas`` and of ``lambda``/``lambdas`` (default ±1)."""

    kind: str = "G4"
    eta: float | None = None
    zeta: float | None = None
    zetas: tuple[float, ...] | None = None
    lam: float | None = field(default=None, metadata={"key": "lambda"})
    lambdas: tuple[float, ...] | None = None
    r_s: float | None = None
    cutoff: float | None = None
    centre: str | None = None
    neighbours: tuple[str, ...] | None = None
    grid: GridConfig | None = None

    def __post_init__(self) -> None:
        if self.zeta is None and self.zetas is None:
            raise ValueError("angular: missing required key 'zeta' (or 'zetas')")
        _explicit_or_grid(self, "angular")

    def terms(self, default_cutoff: float) -> list[AngularTerm]:
        cutoff = self.cutoff if self.cutoff is not None else default_cutoff
        pairs = self.grid.pairs(cutoff) if self.grid is not None else [(self.eta, self.r_s or 0.0)]
        zetas = self.zetas if self.zetas is not None else (self.zeta,)
        lambdas = self.lambdas if self.lambdas is not None else ((self.lam,) if self.lam is not None else (-1.0, 1.0))
        return [AngularTerm(kind=self.kind, eta=eta, zeta=float(z), lam=float(lam), r_s=r_s, cutoff=cutoff,
                            centre=self.centre, neighbours=self.neighbours)
                for eta, r_s in pairs for z in zetas for lam in lambdas]


@dataclass(frozen=True)
class SelectionConfig:
    """Keep ``count`` terms per element out of the candidate pool, chosen on the training data.

    Attributes:
        count: terms kept per element (all of them where the pool has fewer).
        method: ``cur`` or ``fps`` (see :func:`~mlpot.descriptors.selection.select_columns`).
        max_atoms: atoms per element in the selection matrix, evenly strided over the
            training structures (bounds the cost on large data sets).
        balance_by: an ``info`` key of the training structures (e.g. ``group``): each of
            its values weighs the same in the selection however many atoms it has, so that
            rare environments (a few surface slabs among many bulk cells) keep their terms.
            ``null``: every atom counts once.
    """

    count: int
    method: Literal["cur", "fps"] = "cur"
    max_atoms: int = 20000
    balance_by: str | None = None

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"select.count must be >= 1, got {self.count}")
        if self.max_atoms < 1:
            raise ValueError(f"select.max_atoms must be >= 1, got {self.max_atoms}")


def as_symbol(element: str | int) -> str:
    """A chemical symbol from a symbol or an atomic number."""
    if isinstance(element, (int, np.integer)) and not isinstance(element, bool):
        if not 0 < int(element) < len(chemical_symbols):
            raise ValueError(f"unknown element with atomic number {element}")
        return chemical_symbols[int(element)]
    return str(element)


@dataclass(frozen=True)
class SymmetryFunctionsConfig(DescriptorConfig):
    """The symmetry-function descriptor section (see the module docstring).

    Attributes:
        kind: ``symmetry_functions``.
        elements: symbols or atomic numbers; ``None`` takes the training data's elements.
        cutoff: default r_c of terms without their own, Å.
        cutoff_function, cutoff_alpha: see :mod:`mlpot.descriptors.cutoffs`.
        radial, angular: the term entries.
        select: keep only the most informative terms, chosen on the training structures
            (``None``: keep every term).
    """

    kind: str = "symmetry_functions"
    elements: tuple[str | int, ...] | None = None
    cutoff: float | None = None
    cutoff_function: str = "cos"
    cutoff_alpha: float = 0.0
    radial: tuple[RadialEntry, ...] = ()
    angular: tuple[AngularEntry, ...] = ()
    select: SelectionConfig | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cutoff is None:
            raise ValueError("descriptor: missing required key 'cutoff'")
        if not (np.isfinite(self.cutoff) and self.cutoff > 0):  # checked before grids are built on it
            raise ValueError(f"cutoff must be a positive distance in Å, got {self.cutoff}")
        if self.elements is not None:
            object.__setattr__(self, "elements", tuple(as_symbol(e) for e in self.elements))

    def spec(self, elements: Sequence[str] | None = None) -> SymmetryFunctionSpec:
        """The resolved terms for the config's elements or, if it names none, ``elements``."""
        chosen = self.elements or (tuple(as_symbol(e) for e in elements) if elements is not None else None)
        if not chosen:
            raise ValueError("descriptor: missing required key 'elements'")
        return SymmetryFunctionSpec(
            elements=tuple(chosen), cutoff=float(self.cutoff), cutoff_function=self.cutoff_function,
            cutoff_alpha=float(self.cutoff_alpha),
            radial=tuple(t for entry in self.radial for t in entry.terms(self.cutoff)),
            angular=tuple(t for entry in self.angular for t in entry.terms(self.cutoff)))

    @property
    def fits_to_data(self) -> bool:
        return self.select is not None

    def build(self, elements: Sequence[str], structures: Sequence | None = None):
        """The descriptor; with ``select``, its terms chosen on ``structures`` (the training
        structures, required then)."""
        from .symmetry_functions import SymmetryFunctions

        spec = self.spec(elements)
        if self.select is not None:
            from .selection import select_on_structures

            if not structures:
                raise ValueError("select: the terms are chosen on the training structures, and none were given")
            spec = select_on_structures(spec, structures, self.select.count, self.select.method,
                                        max_atoms=self.select.max_atoms, balance_by=self.select.balance_by)
        return SymmetryFunctions(spec)

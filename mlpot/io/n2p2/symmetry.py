"""n2p2 symmetry-function lines ↔ mlpot's :class:`~mlpot.descriptors.SymmetryFunctionSpec`.

n2p2 sorts each element's functions (:meth:`SF.sort_key`); that sorted order is its network
input order and the row order of scaling.data, and differs from mlpot's feature order, so
both directions also return the permutation between the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ase.data import atomic_numbers

from .common import (CUTOFF_TYPES, SF_KINDS, SF_TYPE_OF, N2P2Error, eta_from_file, length_from_file,
                     shortest)
from .parse import Entry, InputNN, to_number

if TYPE_CHECKING:
    from ...descriptors import SymmetryFunctionSpec
    from ...models import Potential

__all__ = ["SF", "parse_sf", "symmetry_spec", "n2p2_lines"]


@dataclass(frozen=True)
class SF:
    """One n2p2 symmetry function, parameters in file units."""

    line: int
    centre: str
    type: int
    neighbours: tuple[str, ...]  # (e1,) or (e1, e2) sorted by atomic number
    eta: float
    rs: float
    rc: float
    lam: float = 0.0
    zeta: float = 0.0

    def sort_key(self) -> tuple:
        """n2p2's ``SymFnc::operator<`` (type, [cutoff type, α: global], r_c, η, r_s, ζ, λ,
        e1, e2); neighbour elements compare by atomic number, as in n2p2's element map."""
        nb = tuple(atomic_numbers[e] for e in self.neighbours)
        if self.type == 2:
            return (self.type, self.rc, self.eta, self.rs, nb)
        return (self.type, self.rc, self.eta, self.rs, self.zeta, self.lam, nb)


def parse_sf(entry: Entry, elements: tuple[str, ...], path: Path) -> SF:
    """One ``symfunction_short`` line of input.nn (parameters in file units), checked."""
    where = f"{path}:{entry.line}"
    a = entry.args
    if len(a) < 2:
        raise N2P2Error(f"{where}: symfunction_short needs a centre element and a type")
    centre = a[0]
    if centre not in elements:
        raise N2P2Error(f"{where}: symfunction_short centre element {centre!r} is not in elements {list(elements)}")
    sf_type = to_number(a[1], where, "symmetry function type", int)
    if sf_type not in SF_KINDS:
        raise N2P2Error(f"{where}: symmetry function type {sf_type} is not supported "
                        "(mlpot has types 2, 3 and 9: radial, narrow and wide angular)")
    n_nb = 1 if sf_type == 2 else 2
    n_num = 3 if sf_type == 2 else 4  # η r_s r_c | η λ ζ r_c
    if len(a) not in (2 + n_nb + n_num, 2 + n_nb + n_num + (sf_type != 2)):
        raise N2P2Error(f"{where}: symfunction_short type {sf_type} needs "
                        + ("'ec 2 e1 eta rs rc'" if sf_type == 2 else f"'ec {sf_type} e1 e2 eta lambda zeta rc [rs]'")
                        + f", got {len(a)} fields")
    neighbours = a[2:2 + n_nb]
    for el in neighbours:
        if el not in elements:
            raise N2P2Error(f"{where}: neighbour element {el!r} is not in elements {list(elements)}")
    nums = [to_number(t, where, name, float) for t, name in
            zip(a[2 + n_nb:], ("eta", "rs", "rc") if sf_type == 2 else ("eta", "lambda", "zeta", "rc", "rs"))]
    neighbours = tuple(sorted(neighbours, key=lambda e: atomic_numbers[e]))
    if sf_type == 2:
        eta, rs, rc = nums
        sf = SF(entry.line, centre, 2, neighbours, eta, rs, rc)
    else:
        eta, lam, zeta, rc = nums[:4]
        rs = nums[4] if len(nums) > 4 else 0.0
        sf = SF(entry.line, centre, sf_type, neighbours, eta, rs, rc, lam, zeta)
    if not (sf.rc > 0 and sf.eta >= 0 and sf.rs >= 0):
        raise N2P2Error(f"{where}: need rc > 0, eta >= 0 and rs >= 0")
    if sf_type != 2 and (sf.lam not in (-1.0, 1.0) or sf.zeta < 1):
        raise N2P2Error(f"{where}: need lambda = ±1 and zeta >= 1")
    return sf


def symmetry_spec(nn_input: InputNN) -> tuple[SymmetryFunctionSpec, dict[str, list[int]]]:
    """The :class:`~mlpot.descriptors.SymmetryFunctionSpec` of input.nn's symmetry
    functions (Å), and per element ``perm[el][k]``, the n2p2 index of mlpot feature k.

    Terms are kept in input.nn order (so a file written by write_potential gives back the
    model's own feature order); n2p2's network-input order is the sorted one, a stable sort
    keeping input order on exact ties.
    """
    from ...descriptors import AngularTerm, RadialTerm, SymmetryFunctionSpec

    path, elements, length = nn_input.path, nn_input.elements, nn_input.length
    sfs = [parse_sf(e, elements, path) for e in nn_input.symmetry_functions]
    sorted_index: dict[int, int] = {}  # position in sfs -> index in its element's n2p2 order
    for el in elements:
        mine = sorted((i for i, s in enumerate(sfs) if s.centre == el), key=lambda i: sfs[i].sort_key())
        if not mine:
            raise N2P2Error(f"{path}: element {el} has no symfunction_short lines")
        sorted_index.update({i: k for k, i in enumerate(mine)})
    terms: dict[int, int] = {}  # id(term) -> n2p2 index within its centre element
    radial, angular = [], []
    for i, s in enumerate(sfs):
        common = dict(eta=eta_from_file(s.eta, length), r_s=length_from_file(s.rs, length),
                      cutoff=length_from_file(s.rc, length), centre=s.centre)
        if s.type == 2:
            t = RadialTerm(neighbour=s.neighbours[0], **common)
            radial.append(t)
        else:
            t = AngularTerm(kind=SF_KINDS[s.type], zeta=s.zeta, lam=s.lam, neighbours=s.neighbours, **common)
            angular.append(t)
        terms[id(t)] = sorted_index[i]
    spec = SymmetryFunctionSpec(elements=elements, cutoff=max(t.cutoff for t in radial + angular),
                                cutoff_function=CUTOFF_TYPES[nn_input.cutoff_type],
                                cutoff_alpha=nn_input.cutoff_alpha, radial=tuple(radial), angular=tuple(angular))
    perm = {el: [terms[id(f.term)] for f in spec.features(el)] for el in elements}
    return spec, perm


def n2p2_lines(model: Potential, length: float) -> dict[str, list[tuple[tuple, str, int]]]:
    """Per element, (n2p2 sort key, input.nn line, mlpot feature index) in n2p2's order.

    The numbers are the shortest decimals that read back (through
    :func:`~.common.eta_from_file` and :func:`~.common.length_from_file`) to the model's
    values exactly, and the sort keys are computed from those numbers, as n2p2 will see
    them. ``length`` is Å per file length unit.
    """
    fmt = shortest
    per_element: dict[str, list[tuple[tuple, str, int]]] = {}
    for el in model.elements:
        lst = []
        for k, f in enumerate(model.descriptor.features[el]):
            t = f.term
            eta = fmt(t.eta, lambda x: eta_from_file(x, length), t.eta * length * length)
            rs = fmt(t.r_s, lambda x: length_from_file(x, length), t.r_s / length)
            rc = fmt(t.cutoff, lambda x: length_from_file(x, length), t.cutoff / length)
            nb = tuple(sorted(f.neighbours, key=lambda e: atomic_numbers[e]))
            if len(nb) == 1:
                sf = SF(0, el, 2, nb, float(eta), float(rs), float(rc))
                text = f"symfunction_short {el:2s} 2 {nb[0]:2s} {eta} {rs} {rc}"
            else:
                sf = SF(0, el, SF_TYPE_OF[t.kind], nb, float(eta), float(rs), float(rc), t.lam, t.zeta)
                text = (f"symfunction_short {el:2s} {sf.type} {nb[0]:2s} {nb[1]:2s} {eta} {t.lam:g} "
                        f"{t.zeta:.17g} {rc}" + (f" {rs}" if t.r_s != 0 else ""))
            lst.append((sf.sort_key(), text, k))
        # n2p2's order; a stable sort keeps exact duplicates in mlpot order.
        per_element[el] = sorted(lst, key=lambda x: x[0])
    return per_element


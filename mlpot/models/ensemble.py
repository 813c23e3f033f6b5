"""The mean of several potentials (a committee), usable wherever one :class:`Potential` is.

A committee of K independently trained members (other seeds, other folds) usually predicts
better than any one of them, at K times the inference cost, and the spread of its members
estimates the error of the mean (Behler, Int. J. Quantum Chem. 115, 1032 (2015)).
:class:`Ensemble` averages energies, atomic energies, forces and stress, and returns the
members' standard deviations beside them, so :func:`mlpot.evaluation.evaluate`,
:mod:`mlpot.elastic` and ``mlpot evaluate model1.pt model2.pt ...`` take a committee as they
take one model. :class:`~mlpot.calculator.MLPotCalculator` runs a committee's members one
by one (each checks the range of its own descriptors) and reduces their outputs with the
same :func:`committee` (:func:`range_checked_committee`, which
:func:`mlpot.evaluation.evaluate` uses too).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["Ensemble", "committee", "range_checked_committee"]

_AVERAGED = ("energy", "atomic_energies", "forces", "stress")


class Ensemble(nn.Module):
    """The mean prediction of ``members``.

    Args:
        members: two or more potentials of the same elements, in the same dtype. Their
            cutoffs may differ: the neighbour list is built once, for the largest.

    Raises:
        ValueError: fewer than two members, or members of other elements or dtypes.
    """

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        members = list(members)
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two members, got {len(members)}")
        elements = {tuple(m.elements) for m in members}
        if len(elements) > 1:
            raise ValueError(f"ensemble members disagree on elements: {sorted(elements)}")
        dtypes = {m.dtype for m in members}
        if len(dtypes) > 1:
            raise ValueError(f"ensemble members have different dtypes {sorted(map(str, dtypes))}; "
                             "load them with one dtype")
        self.members = nn.ModuleList(members)

    @property
    def elements(self) -> tuple[str, ...]:
        return tuple(self.members[0].elements)

    @property
    def dtype(self) -> torch.dtype:
        return self.members[0].dtype

    @property
    def cutoff(self) -> float:
        return max(m.cutoff for m in self.members)

    def __len__(self) -> int:
        return len(self.members)

    def forward(self, batch, forces: bool = True, stress: bool = False, create_graph: bool | None = None,
                **options) -> dict[str, torch.Tensor]:
        """The members' mean of each output of :meth:`Potential.forward` (same arguments and
        shapes), plus ``energy_std`` (B,) eV and, with forces, ``forces_std`` (N, 3) eV/Å: the
        standard deviation over members (population, ``ddof=0``, as the calculator reports).
        Raw descriptors (``descriptors=True``) are not returned: each member has its own."""
        if batch.edge_index is None or batch.cutoff is None or batch.cutoff < self.cutoff:
            batch = batch.with_neighbours(self.cutoff)  # once, not once per member
        return committee([m(batch, forces=forces, stress=stress, create_graph=create_graph, **options)
                          for m in self.members])


def committee(outputs: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of the members' ``energy``, ``atomic_energies``, ``forces`` and ``stress``
    (those present), and with two or more members ``energy_std`` (B,) eV and ``forces_std``
    (N, 3) eV/Å over them (population, ``ddof=0``). Other outputs, e.g. raw descriptors,
    are left out: members may differ in them. Shared by :class:`Ensemble` and
    :class:`~mlpot.calculator.MLPotCalculator`."""
    result = {}
    for key in _AVERAGED:
        if key not in outputs[0]:
            continue
        stacked = torch.stack([o[key] for o in outputs])
        result[key] = stacked.mean(dim=0)
        if key in ("energy", "forces") and len(outputs) > 1:
            result[f"{key}_std"] = stacked.std(dim=0, correction=0)
    return result


def range_checked_committee(members: Sequence[nn.Module], batch, stress: bool,
                            check_range: bool = True) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Energies and forces (and ``stress``) of ``members`` on ``batch``, member by member,
    each also checking how far its own descriptors lie beyond its training range.

    Returns:
        the members' outputs, detached, reduced by :func:`committee` (one member: its mean
        is its own), and the (N,) float64 largest excess over the members
        (:meth:`~mlpot.models.Potential.range_excess`), ``None`` when ``check_range`` is off.
        Shared by :class:`~mlpot.calculator.MLPotCalculator` and :func:`mlpot.evaluation.evaluate`.
    """
    outputs, excess = [], []
    for member in members:
        with torch.enable_grad():
            out = member(batch, forces=True, stress=stress, create_graph=False, descriptors=True)
        descriptors = out.pop("descriptors")
        outputs.append({k: v.detach() for k, v in out.items()})
        if check_range:
            excess.append(member.range_excess(descriptors, batch.numbers))
    return committee(outputs), (torch.stack(excess).amax(dim=0) if excess else None)

"""Per-element routing: each element's atoms go through that element's network once."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .mlp import AtomicMLP, NetworkConfig

__all__ = ["ElementNetworks"]


class ElementNetworks(nn.Module):
    """One :class:`AtomicMLP` per element.

    Args:
        elements: symbols, in species-index order.
        n_features: descriptor length per element (its first columns are used).
        config: the architecture shared by all elements.
    """

    def __init__(self, elements: Sequence[str], n_features: Sequence[int], config: NetworkConfig):
        super().__init__()
        self.elements = tuple(elements)
        self.n_features = tuple(int(n) for n in n_features)
        self.networks = nn.ModuleList(AtomicMLP(n, config) for n in self.n_features)

    def network(self, element: str) -> AtomicMLP:
        """The network of ``element`` (a symbol of :attr:`elements`); it maps that element's
        scaled descriptors (n, ``n_features[e]``) to atomic outputs (n,), in units of the
        potential's energy scale.

        Raises:
            KeyError: ``element`` is not one of :attr:`elements`.
        """
        try:
            return self.networks[self.elements.index(element)]
        except ValueError:
            raise KeyError(f"no network for element {element!r}; elements are {list(self.elements)}") from None

    def forward(self, features: torch.Tensor, species: torch.Tensor,
                keep: torch.Tensor | None = None) -> torch.Tensor:
        """Atomic outputs (N,) for features (N, F) of atoms with element indices species (N,).

        ``keep`` (N, n_blocks) 0/1: each atom's stochastic-depth row (its structure's draws,
        :meth:`~mlpot.models.Potential.draw_depth_mask`), routed with the atom to its
        network (``None``: none; see :meth:`AtomicMLP.forward`).

        Atoms are sorted by element once and each network takes its contiguous slice: one
        host synchronisation per call (the element counts), not one per element, and none
        when ``species`` is the very tensor of the previous call, unchanged since (MD
        steps: :meth:`Descriptor.species <mlpot.descriptors.Descriptor.species>` returns
        the same tensor for the same batch). Networks of absent elements are not called
        (so stochastic depth draws the same numbers)."""
        if torch.jit.is_tracing():
            return self._forward_traced(features, species)
        order, counts = self._routing(species)
        chunks = features.index_select(0, order).split(counts)
        rows = keep.index_select(0, order).split(counts) if keep is not None else [None] * len(counts)
        parts = [net(chunk[:, :n], mask) for net, n, chunk, mask, count
                 in zip(self.networks, self.n_features, chunks, rows, counts) if count]
        if not parts:
            return features.new_zeros(features.shape[0])
        values = torch.cat(parts)
        return values.new_zeros(features.shape[0]).scatter(0, order, values)

    def _routing(self, species: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """(N,) the atoms sorted by element (stable) and the atoms per element, remembered
        for the last ``species`` tensor (identity and version counter)."""
        memo = getattr(self, "_routing_memo", None)
        if memo is not None and memo[0] is species and memo[1] == species._version:
            return memo[2], memo[3]
        order = torch.argsort(species, stable=True)
        counts = torch.bincount(species, minlength=len(self.networks)).tolist()  # the one sync
        self._routing_memo = (species, species._version, order, counts)
        return order, counts

    def _forward_traced(self, features: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` under ``torch.jit.trace``: element counts must not become constants
        of the trace, so every network runs on its ``nonzero`` rows (possibly none)."""
        parts, where = [], []
        for e, net in enumerate(self.networks):
            idx = torch.nonzero(species == e).squeeze(1)
            parts.append(net(features.index_select(0, idx)[:, : self.n_features[e]]))
            where.append(idx)
        values = torch.cat(parts)
        return values.new_zeros(features.shape[0]).scatter(0, torch.cat(where), values)

    def n_parameters(self) -> dict[str, int]:
        return {el: sum(p.numel() for p in net.parameters()) for el, net in zip(self.elements, self.networks)}

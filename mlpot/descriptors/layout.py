"""Which raw symmetry-function column each element's features read.

The radial and angular blocks compute a *raw* layout shared by all centre elements::

    [radial: E neighbour elements × K_r shapes | angular: n_pair_types × n_columns | one zero pad]

Each centre element's feature list (its terms, restricted by centre and neighbour elements,
in the spec's order) is a selection of those columns, a (E, F) column map. When every element
reads every raw column in order (the common case) the map is the identity and no gather runs.
"""

from __future__ import annotations

import torch
from torch import nn

from .parameters import Feature, RadialTerm

__all__ = ["FeatureLayout"]


class FeatureLayout(nn.Module):
    """The per-element column map from the raw layout to the features.

    Args:
        spec: the resolved :class:`~mlpot.descriptors.SymmetryFunctionSpec`.
        radial: the radial block (its ``column`` of each (η, r_s, r_c) and ``n_shapes``).
        angular: the angular block (its ``column`` of each term key, ``n_columns``, ``pairs``).
    """

    def __init__(self, spec, radial, angular):
        super().__init__()
        elements = tuple(spec.elements)
        n_el = len(elements)
        self.n_radial_columns = n_el * radial.n_shapes
        self.n_raw = self.n_radial_columns + angular.n_pair_types * angular.n_columns
        self.features: dict[str, list[Feature]] = {el: spec.features(el) for el in elements}
        self.n_features = {el: len(f) for el, f in self.features.items()}
        self.max_features = max(self.n_features.values())
        colmap = torch.full((n_el, self.max_features), self.n_raw, dtype=torch.long)
        for e, el in enumerate(elements):
            for c, feat in enumerate(self.features[el]):
                t = feat.term
                if isinstance(t, RadialTerm):
                    nb = elements.index(feat.neighbours[0])
                    colmap[e, c] = nb * radial.n_shapes + radial.column[(t.eta, t.r_s, t.cutoff)]
                else:
                    pt = angular.pairs.index(feat.neighbours)
                    key = (t.kind, t.eta, t.r_s, t.cutoff, t.zeta, t.lam)
                    colmap[e, c] = self.n_radial_columns + pt * angular.n_columns + angular.column[key]
        self.register_buffer("colmap", colmap, persistent=False)
        identity = torch.arange(self.n_raw).expand(n_el, -1)
        self.full = self.max_features == self.n_raw and bool((colmap == identity).all())
        self.elements = elements

    def angular_columns_used(self) -> list[list[int]] | None:
        """Per element, the raw angular columns (counted from the angular block's start) its
        features read; ``None`` when every element reads every column."""
        if self.full:
            return None
        first = self.n_radial_columns
        return [[raw - first for raw in self.colmap[e, : self.n_features[el]].tolist() if first <= raw < self.n_raw]
                for e, el in enumerate(self.elements)]

    def gather(self, raw: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """(N, n_raw) raw columns → (N, F) features of each atom's element (zero padded)."""
        if self.full:
            return raw
        padded = torch.cat([raw, raw.new_zeros(raw.shape[0], 1)], dim=1)
        return padded.gather(1, self.colmap[species])

    def scatter(self, features: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """The adjoint of :meth:`gather`: (N, F) per-feature values (e.g. ∂E/∂G) → (N, n_raw)
        raw columns, padding columns dropped."""
        if self.full:
            return features
        return features.new_zeros(features.shape[0], self.n_raw + 1).scatter_add(
            1, self.colmap.index_select(0, species), features)[:, : self.n_raw]

    def gather_pairs(self, dense: torch.Tensor, centre_species: torch.Tensor) -> torch.Tensor:
        """(P, n_raw + 1, 3) per-pair raw derivatives → (P, F, 3) in each centre's feature
        layout (``centre_species`` (P,))."""
        if self.full:
            return dense[:, : self.n_raw]
        cols = self.colmap.index_select(0, centre_species)  # (P, F)
        return dense.gather(1, cols.unsqueeze(2).expand(-1, -1, 3))

"""Element-resolved atom-centred symmetry functions as one vectorised torch module.

Data path (N atoms, P pairs, T triplets; no Python loop over atoms, pairs or elements):

1. pair vectors r_ij from positions, cell and integer shifts (differentiable in both);
2. radial: a (P, K_r) table of exp(−η(r−r_s)²) f_c(r) for the K_r distinct radial shapes,
   summed into rows (centre i, element of j) with ``index_add_``;
3. angular: pairs inside the angular cutoff → triplets (pairs of pairs with one centre);
   per-pair Gaussians·cutoffs are computed once and multiplied for the two legs, the angle
   factor 2^(1−ζ)(1+λ cos θ)^ζ per distinct (ζ, λ), the r_jk factor only for G4; summed
   into rows (centre i, unordered element pair of j, k);
4. one gather maps these raw blocks onto each centre element's own feature list (skipped
   when every element uses the full block layout, the common case).

Forces and stress follow from autograd through step 1.
"""

from __future__ import annotations

import torch
from torch import nn

from ..neighbours import edge_vectors, triplets_from_pairs
from .cutoffs import cutoff_function
from .parameters import AngularTerm, RadialTerm, SymmetryFunctionSpec

__all__ = ["SymmetryFunctions"]


def _unique_index(keys: list[tuple]) -> tuple[list[tuple], list[int]]:
    """Distinct keys in first-seen order and the index of each key into them."""
    table: dict[tuple, int] = {}
    index = [table.setdefault(k, len(table)) for k in keys]
    return list(table), index


class SymmetryFunctions(nn.Module):
    """Behler–Parrinello ACSF descriptor (G2, G4, G5), element-resolved.

    Output shape (N, F) where F = max over elements of the per-element feature count;
    element e uses columns ``0 .. n_features[e]−1`` (the rest are zero). Units: G2 counts
    neighbours (dimensionless); η in Å⁻², distances in Å.

    Args:
        spec: the resolved parameter set (see :class:`SymmetryFunctionSpec`).
    """

    def __init__(self, spec: SymmetryFunctionSpec):
        super().__init__()
        self.spec = spec
        self.elements = tuple(spec.elements)
        n_el = len(self.elements)
        self.n_elements = n_el
        self.cutoff = spec.max_cutoff
        self.angular_cutoff = spec.max_angular_cutoff
        self._fc = cutoff_function(spec.cutoff_function, spec.cutoff_alpha)

        from ase.data import atomic_numbers

        lookup = torch.full((119,), -1, dtype=torch.long)
        for k, el in enumerate(self.elements):
            lookup[atomic_numbers[el]] = k
        self.register_buffer("species_of_number", lookup, persistent=False)

        # Radial shapes (η, r_s, r_c), deduplicated over centre/neighbour restrictions.
        radial_keys, radial_idx = _unique_index([(t.eta, t.r_s, t.cutoff) for t in spec.radial])
        self.register_buffer("radial_shape", torch.tensor(radial_keys, dtype=torch.float64).reshape(-1, 3), persistent=False)
        self.n_radial = len(radial_keys)

        # Angular terms: the two-leg factor (η, r_s, r_c), the angle factor (ζ, λ) and, for
        # G4 only, the r_jk factor (η, r_s, r_c); column 0 of the r_jk table is all ones.
        angular_keys, _ = _unique_index([(t.kind, t.eta, t.zeta, t.lam, t.r_s, t.cutoff) for t in spec.angular])
        self.n_angular = len(angular_keys)
        leg_keys, leg_idx = _unique_index([(eta, rs, rc) for _, eta, _, _, rs, rc in angular_keys])
        angle_keys, angle_idx = _unique_index([(z, lam) for _, _, z, lam, _, _ in angular_keys])
        jk_keys, jk_idx = _unique_index([(eta, rs, rc) for kind, eta, _, _, rs, rc in angular_keys if kind == "G4"])
        jk_lookup = dict(zip(jk_keys, range(1, len(jk_keys) + 1)))
        jk_col = [jk_lookup[(eta, rs, rc)] if kind == "G4" else 0 for kind, eta, _, _, rs, rc in angular_keys]
        f64 = dict(dtype=torch.float64)
        self.register_buffer("leg_shape", torch.tensor(leg_keys, **f64).reshape(-1, 3), persistent=False)
        self.register_buffer("angle_shape", torch.tensor(angle_keys, **f64).reshape(-1, 2), persistent=False)
        self.register_buffer("jk_shape", torch.tensor(jk_keys, **f64).reshape(-1, 3), persistent=False)
        self.register_buffer("leg_col", torch.tensor(leg_idx, dtype=torch.long), persistent=False)
        self.register_buffer("angle_col", torch.tensor(angle_idx, dtype=torch.long), persistent=False)
        self.register_buffer("jk_col", torch.tensor(jk_col, dtype=torch.long), persistent=False)

        # Unordered neighbour-element pair → pair type.
        pairs = spec.element_pairs()
        self.n_pair_types = len(pairs)
        pair_type = torch.empty(n_el, n_el, dtype=torch.long)
        for p, (a, b) in enumerate(pairs):
            ia, ib = self.elements.index(a), self.elements.index(b)
            pair_type[ia, ib] = pair_type[ib, ia] = p
        self.register_buffer("pair_type", pair_type, persistent=False)

        # Column map: raw layout = [radial (n_el × K_r) | angular (n_pt × K_a) | one zero pad].
        radial_col = {k: i for i, k in enumerate(radial_keys)}
        angular_col = {k: i for i, k in enumerate(angular_keys)}
        self.n_raw = n_el * self.n_radial + self.n_pair_types * self.n_angular
        self.features = {el: spec.features(el) for el in self.elements}
        self.n_features = {el: len(f) for el, f in self.features.items()}
        self.max_features = max(self.n_features.values())
        colmap = torch.full((n_el, self.max_features), self.n_raw, dtype=torch.long)
        for e, el in enumerate(self.elements):
            for c, feat in enumerate(self.features[el]):
                t = feat.term
                if isinstance(t, RadialTerm):
                    nb = self.elements.index(feat.neighbours[0])
                    colmap[e, c] = nb * self.n_radial + radial_col[(t.eta, t.r_s, t.cutoff)]
                else:
                    pt = pairs.index(feat.neighbours)
                    key = (t.kind, t.eta, t.zeta, t.lam, t.r_s, t.cutoff)
                    colmap[e, c] = n_el * self.n_radial + pt * self.n_angular + angular_col[key]
        self.register_buffer("colmap", colmap, persistent=False)
        identity = torch.arange(self.n_raw).expand(n_el, -1)
        self.full_layout = self.max_features == self.n_raw and bool((colmap == identity).all())

    # ------------------------------------------------------------------ public API
    @property
    def n_features_per_element(self) -> list[int]:
        return [self.n_features[el] for el in self.elements]

    def feature_names(self, element: str) -> list[str]:
        return [f.name for f in self.features[element]]

    def species(self, numbers: torch.Tensor) -> torch.Tensor:
        """Map atomic numbers (N,) to element indices (N,); raise for unknown elements."""
        numbers = numbers.long()
        if numbers.numel() and (int(numbers.min()) < 1 or int(numbers.max()) > 118):
            raise ValueError(f"atomic numbers out of range 1..118: {numbers.unique().tolist()}")
        species = self.species_of_number[numbers]
        if numbers.numel() and bool((species < 0).any()):
            from ase.data import chemical_symbols

            unknown = sorted({chemical_symbols[int(z)] for z in numbers[species < 0].unique()})
            raise ValueError(
                f"element(s) {unknown} not known to this descriptor (elements {list(self.elements)})"
            )
        return species

    def forward(self, batch) -> torch.Tensor:
        """Descriptors of an :class:`~mlpot.data.AtomsBatch` (pairs are built if missing).

        Returns:
            (N, F) symmetry-function values.
        """
        if batch.edge_index is None or batch.cutoff is None or batch.cutoff < self.cutoff:
            batch = batch.with_neighbours(self.cutoff)
        return self.compute(
            batch.positions,
            self.species(batch.numbers),
            batch.cell,
            batch.system_idx,
            batch.edge_index,
            batch.edge_shift,
        )

    def compute(
        self,
        positions: torch.Tensor,
        species: torch.Tensor,
        cell: torch.Tensor,
        system_idx: torch.Tensor,
        edge_index: torch.Tensor,
        edge_shift: torch.Tensor,
    ) -> torch.Tensor:
        """Descriptors from raw tensors; differentiable in ``positions`` and ``cell``.

        Args:
            positions: (N, 3) Å.
            species: (N,) long element indices (see :meth:`species`).
            cell: (B, 3, 3) Å, rows are lattice vectors.
            system_idx: (N,) long.
            edge_index: (2, P) long, sorted by centre, pairs within ≥ ``self.cutoff``.
            edge_shift: (P, 3) integer image shifts, floating dtype.

        Returns:
            (N, F) symmetry-function values in ``positions.dtype``.
        """
        n_atoms = positions.shape[0]
        vec = edge_vectors(positions, cell, system_idx, edge_index, edge_shift)
        dist = torch.linalg.vector_norm(vec, dim=1)
        centre, neighbour = edge_index[0], edge_index[1]
        blocks = []
        if self.n_radial:
            blocks.append(self._radial(dist, centre, species[neighbour], n_atoms))
        if self.n_angular:
            blocks.append(self._angular(vec, dist, centre, neighbour, species, n_atoms))
        raw = torch.cat(blocks, dim=1) if len(blocks) > 1 else blocks[0]
        if self.full_layout:
            return raw
        padded = torch.cat([raw, raw.new_zeros(n_atoms, 1)], dim=1)
        return padded.gather(1, self.colmap[species])

    # ------------------------------------------------------------------ kernels
    def _gaussian_cutoff(self, r: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        """exp(−η (r − r_s)²) f_c(r; r_c) for each shape row (η, r_s, r_c): (M,) → (M, K)."""
        shape = shape.to(r.dtype)
        eta, r_s, r_c = shape[:, 0], shape[:, 1], shape[:, 2]
        r = r.unsqueeze(1)
        return torch.exp(-eta * (r - r_s) ** 2) * self._fc(r, r_c)

    def _radial(self, dist, centre, neighbour_species, n_atoms) -> torch.Tensor:
        values = self._gaussian_cutoff(dist, self.radial_shape)  # (P, K_r)
        rows = centre * self.n_elements + neighbour_species
        out = values.new_zeros(n_atoms * self.n_elements, self.n_radial)
        out.index_add_(0, rows, values)
        return out.view(n_atoms, self.n_elements * self.n_radial)

    def _angular(self, vec, dist, centre, neighbour, species, n_atoms) -> torch.Tensor:
        # Only pairs inside the angular cutoff can form triplets (a shorter angular cutoff,
        # as in ANI, shrinks the triplet count quadratically).
        if self.angular_cutoff < self.cutoff:
            keep = torch.nonzero(dist < self.angular_cutoff).squeeze(1)
            vec, dist, centre, neighbour = vec[keep], dist[keep], centre[keep], neighbour[keep]
        first, second = triplets_from_pairs(centre, n_atoms)
        legs = self._gaussian_cutoff(dist, self.leg_shape)  # (P_a, L)
        radial = (legs[first] * legs[second])[:, self.leg_col]  # (T, K_a)
        d1, d2 = dist[first], dist[second]
        cos = (vec[first] * vec[second]).sum(1) / (d1 * d2)
        angle_shape = self.angle_shape.to(dist.dtype)
        zeta, lam = angle_shape[:, 0], angle_shape[:, 1]
        # Rounding can push 1 + λcosθ a hair below 0, where a fractional power is NaN.
        angle = 2.0 ** (1.0 - zeta) * (1.0 + lam * cos.unsqueeze(1)).clamp(min=0.0) ** zeta
        values = radial * angle[:, self.angle_col]
        if self.jk_shape.shape[0]:
            r_jk = torch.linalg.vector_norm(vec[second] - vec[first], dim=1)
            jk = self._gaussian_cutoff(r_jk, self.jk_shape)
            jk = torch.cat([jk.new_ones(jk.shape[0], 1), jk], dim=1)
            values = values * jk[:, self.jk_col]
        rows = centre[first] * self.n_pair_types + self.pair_type[
            species[neighbour[first]], species[neighbour[second]]
        ]
        out = values.new_zeros(n_atoms * self.n_pair_types, self.n_angular)
        out.index_add_(0, rows, values)
        return out.view(n_atoms, self.n_pair_types * self.n_angular)

    def extra_repr(self) -> str:
        return (
            f"elements={list(self.elements)}, features={self.n_features}, "
            f"cutoff={self.cutoff}, cutoff_function={self.spec.cutoff_function!r}"
        )

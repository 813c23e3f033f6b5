"""Element-resolved atom-centred symmetry functions as one vectorised torch module.

Data path (N atoms, P pairs, T triplets; no Python loop over atoms, pairs or elements):

1. pair vectors r_ij from positions, cell and integer shifts (differentiable in both);
2. radial: a (P, K_r) table of exp(−η(r−r_s)²) f_c(r) for the K_r distinct radial shapes,
   summed into rows (centre i, element of j) with ``index_add_``;
3. angular: pairs inside the angular cutoff → triplets (pairs of pairs with one centre);
   per-pair Gaussians·cutoffs and unit vectors are computed once and gathered for the two
   legs (times the r_jk factor for G4), the powers (1 ± cos θ)^ζ once per distinct ζ, and
   their outer product is summed into rows (centre i, unordered element pair of j, k) as one
   batched matrix product (:func:`~mlpot.descriptors.segments.piece_layout`);
4. one gather maps these raw blocks onto each centre element's own feature list (skipped
   when every element uses the full block layout, the common case).

On CPU tensors step 3 runs instead in the compiled loops of
:mod:`~mlpot.descriptors.angular_kernel` (``kernel="auto"``/``"numba"``), with an analytic
backward pass; the torch form above serves CUDA, tracing and double backward.

Forces and stress follow from autograd through step 1. Two alternatives to step 3: wide
angular (G5) terms with integer ζ can be summed without triplets through spherical harmonics
(``angular_method="harmonics"``, :meth:`SymmetryFunctions._g5_harmonics`), and
:meth:`SymmetryFunctions.jacobian` returns the descriptors with their exact per-pair
derivatives (compact blocks, :class:`~mlpot.descriptors.PairJacobian`) for training without
re-differentiating them.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from ..neighbours import edge_vectors, triplets_from_pairs
from .cutoffs import cutoff_function
from .jacobian import PairJacobian
from .parameters import RadialTerm, SymmetryFunctionSpec
from .scaling import FeatureScaler, FeatureStatistics
from .segments import piece_layout, scatter_outer_sum

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

    Calling the module on a batch returns scaled features once a scaler is fitted
    (:meth:`fit_scaling`) or attached; :meth:`compute` always returns raw values.

    Args:
        spec: the resolved parameter set (see :class:`SymmetryFunctionSpec`).
        angular_method: how wide angular (G5) terms are summed: ``"triplets"`` enumerates
            the pairs of neighbours; ``"harmonics"`` uses the addition theorem (exact for
            integer ζ, O(pairs), see :meth:`_g5_harmonics`); ``"auto"`` takes harmonics
            where they apply. Narrow G4 terms always use triplets.
        kernel: how the triplet sums run: ``"numba"``, compiled loops over each centre's
            pairs of neighbours (:mod:`~mlpot.descriptors.angular_kernel`; CPU tensors with
            a built-in cutoff function); ``"torch"``, batched torch operations (any device,
            ``torch.jit.trace``); ``"auto"`` (default), numba where it applies, else torch.
            Both give the same values and derivatives to rounding; the attribute
            :attr:`kernel` may be changed at any time.
    """

    def __init__(self, spec: SymmetryFunctionSpec, angular_method: str = "triplets", kernel: str = "auto"):
        super().__init__()
        if angular_method not in ("triplets", "harmonics", "auto"):
            raise ValueError(f"angular_method must be triplets, harmonics or auto, got {angular_method!r}")
        self.spec = spec
        self.kernel = kernel
        self.scaler: FeatureScaler | None = None
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

        # Radial shapes (η, r_s, r_c), deduplicated over centre/neighbour restrictions; the
        # cutoff function is evaluated once per distinct r_c, not once per shape.
        radial_keys, _ = _unique_index([(t.eta, t.r_s, t.cutoff) for t in spec.radial])
        self.n_radial = len(radial_keys)
        self._register_shapes("radial", radial_keys)

        # Angular terms factor into a radial part per (kind, η, r_s, r_c) and an angle part
        # 2^(1−ζ)(1+λcosθ)^ζ per (ζ, λ). Raw angular columns are the outer product of the
        # two (no per-term gathers) unless that would compute more than twice the terms.
        angular_keys = [(t.kind, t.eta, t.r_s, t.cutoff, t.zeta, t.lam) for t in spec.angular]
        g5 = _unique_index([k[:4] for k in angular_keys if k[0] == "G5"])[0]
        g4 = _unique_index([k[:4] for k in angular_keys if k[0] == "G4"])[0]
        self._register_shapes("g5", [k[1:] for k in g5])
        self._register_shapes("g4", [k[1:] for k in g4])
        self.g4_unshifted = all(k[2] == 0.0 for k in g4)
        part_keys = g5 + g4
        angle_keys, _ = _unique_index([k[4:] for k in angular_keys])
        self._part_keys, self._angle_keys = part_keys, angle_keys
        self._angular_plans: dict = {}
        self.register_buffer("angle_zeta", torch.tensor([z for z, _ in angle_keys], dtype=torch.float64), persistent=False)
        self.register_buffer("angle_lambda_col", torch.tensor([0 if lam > 0 else 1 for _, lam in angle_keys], dtype=torch.long), persistent=False)
        zetas = sorted({z for z, _ in angle_keys})
        all_integer = all(float(z).is_integer() and z <= 64 for z in zetas)
        self.integer_zetas = [int(z) for z in zetas] if all_integer else []
        # Column of each angle term in _angle_table's output.
        table_col = ([(0 if lam > 0 else 1) * len(zetas) + zetas.index(z) for z, lam in angle_keys]
                     if all_integer else list(range(len(angle_keys))))
        self.register_buffer("angle_table_col", torch.tensor(table_col, dtype=torch.long), persistent=False)
        unique_terms = _unique_index(angular_keys)[0]
        self.angular_outer = len(part_keys) * len(angle_keys) <= 2 * len(unique_terms)
        if self.angular_outer:
            angular_col = {p + a: ip * len(angle_keys) + ia for ip, p in enumerate(part_keys)
                           for ia, a in enumerate(angle_keys)}
            self.n_angular = len(part_keys) * len(angle_keys)
        else:
            angular_col = {k: i for i, k in enumerate(unique_terms)}
            self.n_angular = len(unique_terms)
        self.register_buffer("term_part", torch.tensor([part_keys.index(k[:4]) for k in unique_terms], dtype=torch.long), persistent=False)
        self.register_buffer("term_angle", torch.tensor([angle_keys.index(k[4:]) for k in unique_terms], dtype=torch.long), persistent=False)

        # Unordered neighbour-element pair → pair type.
        pairs = spec.element_pairs()
        self.n_pair_types = len(pairs)
        pair_type = torch.empty(n_el, n_el, dtype=torch.long)
        for p, (a, b) in enumerate(pairs):
            ia, ib = self.elements.index(a), self.elements.index(b)
            pair_type[ia, ib] = pair_type[ib, ia] = p
        self.register_buffer("pair_type", pair_type, persistent=False)
        self.register_buffer("pair_first", torch.tensor([self.elements.index(a) for a, _ in pairs], dtype=torch.long),
                             persistent=False)
        self.register_buffer("pair_second", torch.tensor([self.elements.index(b) for _, b in pairs], dtype=torch.long),
                             persistent=False)

        # G5 by the addition theorem: 2^(1−ζ)(1+λc)^ζ = Σ_l b_l P_l(c), and P_l(u·v) is a
        # sum over m of products of spherical harmonics of u and v.
        self.n_g5 = len(g5)
        # e3nn's spherical harmonics go up to l = 12.
        harmonics_ok = (self.n_g5 > 0 and bool(self.integer_zetas) and max(self.integer_zetas) <= 12
                        and (self.angular_outer or not g4))
        if angular_method == "harmonics" and not harmonics_ok:
            raise ValueError("angular_method='harmonics' needs G5 terms with integer ζ ≤ 12 (and, with "
                             "G4 terms present, the outer-product column layout)")
        self.g5_harmonics = harmonics_ok and angular_method in ("harmonics", "auto")
        if self.g5_harmonics:
            from numpy.polynomial import legendre

            l_max = max(self.integer_zetas)
            coeffs = torch.zeros(len(angle_keys), l_max + 1, dtype=torch.float64)
            for a, (zeta, lam) in enumerate(angle_keys):
                z = int(zeta)
                power = [2.0 ** (1 - z) * math.comb(z, n) * lam ** n for n in range(z + 1)]
                coeffs[a, : z + 1] = torch.as_tensor(legendre.poly2leg(power))
            self.l_max = l_max
            self.register_buffer("legendre_coefficients", coeffs, persistent=False)  # (A, L)
            degree = torch.cat([torch.full((2 * l + 1,), l) for l in range(l_max + 1)])
            # (M, L): sums the m components of each degree l, divided by 2l+1
            # (e3nn's "component" normalisation: Σ_m Y_lm(u) Y_lm(v) = (2l+1) P_l(u·v)).
            self.register_buffer("m_to_l", torch.nn.functional.one_hot(degree, l_max + 1).double()
                                 / (2 * degree + 1).double().unsqueeze(1), persistent=False)

        # Column map: raw layout = [radial (n_el × K_r) | angular (n_pt × K_a) | one zero pad].
        radial_col = {k: i for i, k in enumerate(radial_keys)}
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
                    key = (t.kind, t.eta, t.r_s, t.cutoff, t.zeta, t.lam)
                    colmap[e, c] = n_el * self.n_radial + pt * self.n_angular + angular_col[key]
        self.register_buffer("colmap", colmap, persistent=False)
        identity = torch.arange(self.n_raw).expand(n_el, -1)
        self.full_layout = self.max_features == self.n_raw and bool((colmap == identity).all())

    # ------------------------------------------------------------------ public API
    @property
    def kernel(self) -> str:
        """``"auto"``, ``"numba"`` or ``"torch"``: how triplet sums run (see the class)."""
        return self._kernel

    @kernel.setter
    def kernel(self, value: str) -> None:
        if value not in ("auto", "numba", "torch"):
            raise ValueError(f"kernel must be auto, numba or torch, got {value!r}")
        if value == "numba" and (reason := self._kernel_unavailable()):
            raise ValueError(f"kernel='numba': {reason}")
        self._kernel = value

    def _kernel_unavailable(self) -> str | None:
        """Why the compiled kernel cannot serve this descriptor, or None."""
        from .angular_kernel import NUMBA_CUTOFF_CODES, numba_available

        if not numba_available():
            return "numba is not installed (pip install numba)"
        if self.spec.cutoff_function not in NUMBA_CUTOFF_CODES:
            return (f"no compiled form of the cutoff function {self.spec.cutoff_function!r} "
                    f"(it has {sorted(NUMBA_CUTOFF_CODES)})")
        return None

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

    def forward(self, batch, scaled: bool = True) -> torch.Tensor:
        """Descriptors of an :class:`~mlpot.data.AtomsBatch` (pairs are built if missing).

        Args:
            batch: the structures.
            scaled: apply the fitted scaler, if there is one.

        Returns:
            (N, F) symmetry-function values.
        """
        if batch.edge_index is None or batch.cutoff is None or batch.cutoff < self.cutoff:
            batch = batch.with_neighbours(self.cutoff)
        species = self.species(batch.numbers)
        raw = self.compute(batch.positions, species, batch.cell, batch.system_idx,
                           batch.edge_index, batch.edge_shift)
        return self.scale(raw, species) if scaled else raw

    def scale(self, features: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Apply the scaler (identity when none is fitted). features (N, F), species (N,)."""
        return features if self.scaler is None else self.scaler(features, species)

    @torch.no_grad()
    def statistics(self, batches: Iterable) -> FeatureStatistics:
        """Per-element statistics of the raw descriptors over an iterable of batches."""
        stats = FeatureStatistics(self.n_elements, self.n_features_per_element)
        for batch in batches:
            stats.update(self(batch, scaled=False), self.species(batch.numbers))
        return stats

    def fit_scaling(self, batches: Iterable, mode: str = "scale_center",
                    s_min: float = 0.0, s_max: float = 1.0) -> FeatureScaler:
        """Fit and attach a per-element scaler from (training) batches; returns it."""
        stats = self.statistics(batches)
        missing = [el for el, n in zip(self.elements, stats.count.tolist()) if n == 0]
        if missing:
            raise ValueError(f"no atoms of element(s) {missing} in the data used to fit the "
                             "descriptor scaling; every element of the model must occur there")
        scaler = FeatureScaler.from_statistics(stats, mode, s_min, s_max)
        self.scaler = scaler.to(self.species_of_number.device)
        return self.scaler

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
        vec = edge_vectors(positions, cell, system_idx, edge_index, edge_shift)
        return self.compute_from_vectors(vec, species, edge_index, positions.shape[0])

    def compute_from_vectors(self, vec: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor,
                             n_atoms: int, create_graph: bool = False) -> torch.Tensor:
        """Descriptors as a function of the pair vectors alone.

        Every symmetry function of atom i depends on the positions only through the
        vectors r_ij of i's own pairs, which is what makes the per-pair Jacobian of
        :meth:`jacobian` sparse.

        Args:
            vec: (P, 3) pair vectors r_ij = R_j − R_i (+ image shift), Å.
            species: (N,) long element indices.
            edge_index: (2, P) long, sorted by centre.
            n_atoms: N.
            create_graph: the caller will differentiate the gradient again (training on
                forces without the descriptor cache): the triplet sums then take the torch
                path directly, whose backward is differentiable (the compiled kernel would
                fall back to it in its backward, after a forward of its own).

        Returns:
            (N, F) symmetry-function values in ``vec.dtype``.
        """
        dist = torch.linalg.vector_norm(vec, dim=1)
        centre, neighbour = edge_index[0], edge_index[1]
        blocks = []
        if self.n_radial:
            blocks.append(self._radial(dist, centre, species[neighbour], n_atoms))
        if self.n_angular:
            blocks.append(self._angular(vec, dist, centre, neighbour, species, n_atoms, create_graph))
        raw = torch.cat(blocks, dim=1) if len(blocks) > 1 else blocks[0]
        if self.full_layout:
            return raw
        padded = torch.cat([raw, raw.new_zeros(n_atoms, 1)], dim=1)
        return padded.gather(1, self.colmap[species])

    def jacobian(self, positions: torch.Tensor, species: torch.Tensor, cell: torch.Tensor,
                 system_idx: torch.Tensor, edge_index: torch.Tensor, edge_shift: torch.Tensor,
                 triplet_block: int = 2**15) -> tuple[torch.Tensor, PairJacobian]:
        """Raw descriptors and their sparse derivative with respect to the pair vectors.

        G_i depends on the positions only through the vectors of i's own pairs, so the
        full derivative dG/dR (N·F × N·3, mostly zeros) is held per pair, and only in the
        columns the pair can reach (see :class:`~mlpot.descriptors.PairJacobian`). Forces
        then follow from any ∂E/∂G without differentiating the descriptors again
        (:meth:`pair_gradients`, :meth:`mlpot.models.Potential.forward_from_descriptors`):
        ∂E/∂r_p = Σ_f ∂E/∂G_{i(p), f} ∂G_{i(p), f}/∂r_p, and the chain rule through
        r_p = R_j − R_i + S_p·h gives forces and the virial.

        Arguments as for :meth:`compute`, and ``triplet_block``: triplets differentiated at
        a time by the torch path (bounds the memory; the result does not depend on it). The
        compiled kernel (CPU) needs no such bound: its memory is O(pairs).

        Returns:
            ``(G, J)``: (N, F) raw descriptors and the :class:`PairJacobian`, detached.
        """
        from torch.func import jvp

        with torch.no_grad():
            vec = edge_vectors(positions, cell, system_idx, edge_index, edge_shift)
            raw = self.compute_from_vectors(vec, species, edge_index, positions.shape[0])
            n_pairs, n_atoms, n_el = vec.shape[0], positions.shape[0], self.n_elements
            centre, neighbour = edge_index[0], edge_index[1]
            dist = torch.linalg.vector_norm(vec, dim=1)
            unit = vec / dist.clamp(min=torch.finfo(vec.dtype).tiny).unsqueeze(1)
            # Each radial term depends on its pair's distance alone: one forward-mode pass
            # gives dφ/dr for every pair, and ∂φ/∂r_p = dφ/dr · r̂_p (kept as the factors).
            _, radial = jvp(lambda r: self._gaussian_cutoff(r, "radial"), (dist,), (torch.ones_like(dist),))
            keep = torch.nonzero(dist < self.angular_cutoff).squeeze(1) if self.n_angular else \
                torch.zeros(0, dtype=torch.long, device=vec.device)
            angular = vec.new_zeros(3, keep.shape[0] * n_el, self.n_angular)  # axis first, see the end
            kinds = tuple(k for k in ("g5", "g4") if getattr(self, f"{k}_eta").shape[0])
            if keep.shape[0] and self._use_kernel(vec):
                # The compiled kernel gives the derivatives with the values (no forward-mode
                # passes over the triplets), in the same (pair, axis, element, column) layout.
                from .angular_kernel import angular_jacobian

                kept_neighbour = neighbour.index_select(0, keep)
                _, block = angular_jacobian(vec.index_select(0, keep), centre.index_select(0, keep), species,
                                            species.index_select(0, kept_neighbour), n_atoms,
                                            self._angular_plan(kinds))
                angular = block.permute(1, 0, 2, 3).reshape(3, keep.shape[0] * n_el, self.n_angular)
            elif keep.shape[0]:
                all_first, all_second = triplets_from_pairs(centre.index_select(0, keep), n_atoms)
                kept_vec = vec.index_select(0, keep)
                kept_species = species.index_select(0, neighbour.index_select(0, keep))
                # Blocks of triplets bound the memory of the forward-mode passes (each holds
                # a few dozen (T, A) tensors): caching 32 water frames of 192 atoms, 16 at a
                # time, raised the peak RSS by 1.49 GB with all triplets in one block and by
                # 0.74 GB (0.29 GB of it the cache) in blocks of 2**15 (12.4 s → 10.2 s).
                for lo in range(0, all_first.shape[0], triplet_block):
                    first, second = all_first[lo:lo + triplet_block], all_second[lo:lo + triplet_block]
                    v1, v2 = kept_vec.index_select(0, first), kept_vec.index_select(0, second)
                    # A triplet's terms sit in pair type (e(j), e(k)): in leg j's row they
                    # belong to the block of k's element, and the other way round. Six
                    # forward-mode passes (x, y, z of either leg) give every derivative.
                    legs = ((first, kept_species.index_select(0, second)),
                            (second, kept_species.index_select(0, first)))
                    for leg, (pair, other_element) in enumerate(legs):
                        rows = pair * n_el + other_element
                        for k in range(3):
                            tangent = torch.zeros_like(v1)
                            tangent[:, k] = 1.0
                            if leg == 0:
                                _, d = jvp(lambda a: self._triplet_values(a, v2), (v1,), (tangent,))
                            else:
                                _, d = jvp(lambda b: self._triplet_values(v1, b), (v2,), (tangent,))
                            angular[k].index_add_(0, rows, d)
            angular_row = torch.full((n_pairs,), -1, dtype=torch.long, device=vec.device)
            angular_row[keep] = torch.arange(keep.shape[0], device=vec.device)
        # Explicit sizes: with no angular terms or no kept pairs, -1 would be ambiguous.
        angular = angular.view(3, keep.shape[0], n_el, self.n_angular).permute(1, 0, 2, 3).contiguous()
        return raw, PairJacobian(radial.contiguous(), angular, angular_row, unit.contiguous())

    def dense_jacobian(self, jacobian: PairJacobian, species: torch.Tensor, edge_index: torch.Tensor,
                       ) -> torch.Tensor:
        """The (P, F, 3) array J[p, f] = ∂G_{i(p), f}/∂r_p in :meth:`compute`'s column
        layout, from the compact blocks (for inspection and tests: it is mostly zeros)."""
        n_pairs, n_el = jacobian.n_pairs, self.n_elements
        neighbour_species = species.index_select(0, edge_index[1])
        dense = jacobian.radial.new_zeros(n_pairs, self.n_raw + 1, 3)
        cols = (neighbour_species * self.n_radial).unsqueeze(1) + torch.arange(self.n_radial, device=dense.device)
        radial = jacobian.radial.unsqueeze(2) * jacobian.direction.unsqueeze(1)  # (P, K_r, 3)
        dense.scatter_(1, cols.unsqueeze(2).expand(-1, -1, 3), radial)
        pairs = jacobian.angular_pairs()
        if pairs.shape[0]:
            types = self.pair_type.index_select(0, neighbour_species.index_select(0, pairs))  # (Q, E)
            cols = (n_el * self.n_radial + types.unsqueeze(2) * self.n_angular
                    + torch.arange(self.n_angular, device=dense.device)).reshape(pairs.shape[0], -1)
            block = dense.new_zeros(pairs.shape[0], self.n_raw + 1, 3)
            block.scatter_add_(1, cols.unsqueeze(2).expand(-1, -1, 3),
                               jacobian.angular.reshape(pairs.shape[0], 3, -1).transpose(1, 2))
            dense.index_add_(0, pairs, block)
        if self.full_layout:
            return dense[:, : self.n_raw]
        cols = self.colmap.index_select(0, species.index_select(0, edge_index[0]))  # (P, F)
        return dense.gather(1, cols.unsqueeze(2).expand(-1, -1, 3))

    def pair_gradients(self, de_dg: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor,
                       jacobian: PairJacobian) -> torch.Tensor:
        """∂E/∂r_p = Σ_f ∂E/∂G_{i(p), f} ∂G_{i(p), f}/∂r_p for every pair, eV/Å.

        Differentiable in ``de_dg`` (force training back-propagates through it).

        Args:
            de_dg: (N, F) ∂E/∂G in :meth:`compute`'s per-element column layout, eV.
            species: (N,) element indices.
            edge_index: (2, P) the pairs the Jacobian was computed on.
            jacobian: from :meth:`jacobian`.

        Returns:
            (P, 3).
        """
        n_atoms, n_el = de_dg.shape[0], self.n_elements
        if not self.full_layout:  # back to the raw column layout (padding columns dropped)
            de_dg = de_dg.new_zeros(n_atoms, self.n_raw + 1).scatter_add(
                1, self.colmap.index_select(0, species), de_dg)[:, : self.n_raw]
        centre = edge_index[0]
        neighbour_species = species.index_select(0, edge_index[1])
        n_rad = n_el * self.n_radial
        jac = jacobian.to(dtype=de_dg.dtype)
        # Radial: pair p reaches the K_r columns of its neighbour's element block.
        de_radial = de_dg[:, :n_rad].reshape(n_atoms * n_el, self.n_radial).index_select(
            0, centre * n_el + neighbour_species)  # (P, K_r)
        grad = (de_radial * jac.radial).sum(1, keepdim=True) * jac.direction
        if jac.angular.shape[0]:
            # Angular: a pair inside the angular cutoff reaches pair types (e(j), e), e = 0..E−1.
            pairs = jacobian.angular_pairs()
            types = self.pair_type.index_select(0, neighbour_species.index_select(0, pairs))  # (Q, E)
            rows = centre.index_select(0, pairs).unsqueeze(1) * self.n_pair_types + types
            de_angular = de_dg[:, n_rad:].reshape(n_atoms * self.n_pair_types, self.n_angular)[rows]  # (Q, E, A)
            products = de_angular.view(pairs.shape[0], 1, -1) * jac.angular.view(pairs.shape[0], 3, -1)
            grad = grad.index_add(0, pairs, products.sum(2))
        return grad

    # ------------------------------------------------------------------ kernels
    def _register_shapes(self, prefix: str, keys: list[tuple[float, float, float]]) -> None:
        """Buffers ``{prefix}_eta``, ``_rs`` (K,), the distinct cutoffs ``_rc`` (C,) and each
        shape's cutoff column ``_rc_col`` (K,)."""
        cutoffs, rc_col = _unique_index([(rc,) for _, _, rc in keys])
        f64 = dict(dtype=torch.float64)
        self.register_buffer(f"{prefix}_eta", torch.tensor([k[0] for k in keys], **f64), persistent=False)
        self.register_buffer(f"{prefix}_rs", torch.tensor([k[1] for k in keys], **f64), persistent=False)
        self.register_buffer(f"{prefix}_rc", torch.tensor([c for (c,) in cutoffs], **f64), persistent=False)
        self.register_buffer(f"{prefix}_rc_col", torch.tensor(rc_col, dtype=torch.long), persistent=False)

    def _gaussian_cutoff(self, r: torch.Tensor, prefix: str) -> torch.Tensor:
        """exp(−η (r − r_s)²) f_c(r; r_c) for each registered shape: (M,) → (M, K)."""
        eta = getattr(self, f"{prefix}_eta").to(r.dtype)
        r_s = getattr(self, f"{prefix}_rs").to(r.dtype)
        r_c = getattr(self, f"{prefix}_rc").to(r.dtype)
        r = r.unsqueeze(1)
        fc = self._fc(r, r_c)  # (M, C), C distinct cutoffs (usually 1: broadcasts)
        if r_c.shape[0] > 1:
            fc = fc[:, getattr(self, f"{prefix}_rc_col")]
        return torch.exp(-eta * (r - r_s) ** 2) * fc

    def _angle_table(self, base: torch.Tensor) -> torch.Tensor:
        """The distinct powers base[λ]^ζ without prefactors: (2, T) → (T, C), a transposed
        view of a contiguous (C, T) tensor.

        Column ``angle_table_col[a]`` holds angle term a's power. Integer ζ use repeated
        squaring (a few multiplications of (2, T) tensors, cheaper than ``pow`` forward and
        backward) and a layout that needs no gather (C = 2 · distinct ζ); any fractional ζ
        falls back to ``pow``, one column per term. Every power is a contiguous (2, T)
        block, so the products and their gradients run on contiguous memory rather than on
        strided (T, 2) slices of a (T, 2, Z) stack.
        """
        if not self.integer_zetas:
            return (base[self.angle_lambda_col] ** self.angle_zeta.to(base.dtype).unsqueeze(1)).t()
        powers: dict[int, torch.Tensor] = {1: base}

        def power(z: int) -> torch.Tensor:  # binary exponentiation, memoised
            if z not in powers:
                half = power(z // 2)
                powers[z] = half * half if z % 2 == 0 else half * half * base
            return powers[z]

        stacked = torch.stack([power(z) for z in self.integer_zetas], dim=1)  # (2, Z, T)
        return stacked.view(2 * len(self.integer_zetas), base.shape[1]).t()

    def _angle_prefactor(self, dtype: torch.dtype) -> torch.Tensor:
        """2^(1−ζ) per angle term, (A,)."""
        return 2.0 ** (1.0 - self.angle_zeta.to(dtype))

    def _angle_powers(self, base: torch.Tensor) -> torch.Tensor:
        """2^(1−ζ) base[λ]^ζ for every (ζ, λ): (2, T) → (T, A)."""
        return self._angle_prefactor(base.dtype) * self._angle_table(base)[:, self.angle_table_col]

    def _radial(self, dist, centre, neighbour_species, n_atoms) -> torch.Tensor:
        # Pairs of a Verlet skin (MD reuses a list built with cutoff + skin) contribute exact
        # zeros: dropping them first saves ~40 % of the radial work at a 1 Å skin on the CPU.
        # On a GPU the extra Gaussians are cheaper than the nonzero() (a device sync).
        if not dist.is_cuda or torch.jit.is_tracing():
            keep = torch.nonzero(dist < self.cutoff).squeeze(1)
            if keep.shape[0] < dist.shape[0] or torch.jit.is_tracing():  # a trace must record the filter
                dist, centre, neighbour_species = (t.index_select(0, keep) for t in (dist, centre, neighbour_species))
        values = self._gaussian_cutoff(dist, "radial")  # (P, K_r)
        rows = centre * self.n_elements + neighbour_species
        out = values.new_zeros(n_atoms * self.n_elements, self.n_radial)
        out.index_add_(0, rows, values)
        return out.view(n_atoms, self.n_elements * self.n_radial)

    @staticmethod
    def _angle_base(cos: torch.Tensor) -> torch.Tensor:
        """(T,) cos θ → (2, T) the bases 1 + cos θ and 1 − cos θ of the angle factors (λ = ±1)."""
        # Rounding can push 1 ± cos θ a hair below 0, where a fractional power is NaN.
        return torch.stack([1.0 + cos, 1.0 - cos]).clamp(min=0.0)

    def _triplet_values(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        """Angular symmetry-function terms of each triplet from its two legs.

        The per-triplet form that :meth:`jacobian` differentiates (forward mode, per leg);
        :meth:`_angular` sums the same products per centre without materialising them.

        Args:
            v1, v2: (T, 3) vectors from the centre to the two neighbours, Å.

        Returns:
            (T, n_angular) terms 2^(1−ζ)(1+λ cos θ)^ζ × radial part.
        """
        d1, d2 = torch.linalg.vector_norm(v1, dim=1), torch.linalg.vector_norm(v2, dim=1)
        parts = []
        if self.g5_eta.shape[0]:
            parts.append(self._gaussian_cutoff(d1, "g5") * self._gaussian_cutoff(d2, "g5"))
        if self.g4_eta.shape[0]:
            r_jk = torch.linalg.vector_norm(v2 - v1, dim=1)
            parts.append(self._gaussian_cutoff(d1, "g4") * self._gaussian_cutoff(d2, "g4")
                         * self._gaussian_cutoff(r_jk, "g4"))
        radial = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        angle = self._angle_powers(self._angle_base((v1 * v2).sum(1) / (d1 * d2)))
        if self.angular_outer:
            # Explicit sizes: with no triplets at all, -1 would be ambiguous.
            return (radial.unsqueeze(2) * angle.unsqueeze(1)).reshape(radial.shape[0], radial.shape[1] * angle.shape[1])
        return radial[:, self.term_part] * angle[:, self.term_angle]

    def _angular(self, vec, dist, centre, neighbour, species, n_atoms, create_graph=False) -> torch.Tensor:
        # Only pairs inside the angular cutoff can form triplets: a shorter angular cutoff
        # (as in ANI) or a Verlet skin on the pair list would otherwise add triplets that
        # contribute exact zeros, quadratically many.
        keep = torch.nonzero(dist < self.angular_cutoff).squeeze(1)
        if keep.shape[0] < dist.shape[0] or torch.jit.is_tracing():  # a trace must record the filter
            vec, dist, centre, neighbour = (t.index_select(0, keep) for t in (vec, dist, centre, neighbour))
        kinds = tuple(k for k in ("g5", "g4") if getattr(self, f"{k}_eta").shape[0]
                      and not (k == "g5" and self.g5_harmonics))
        blocks = []
        if self.g5_harmonics:
            g5 = self._g5_harmonics(vec, dist, centre, neighbour, species, n_atoms)  # (N·n_pt, S, A)
            if self.angular_outer:
                blocks.append(g5.reshape(g5.shape[0], -1))
            else:  # G5 terms only (no G4): pick each term's (part, angle) column
                blocks.append(g5[:, self.term_part, self.term_angle])
        if kinds:
            if not create_graph and self._use_kernel(vec):
                from .angular_kernel import angular_sums

                neighbour_species = species.index_select(0, neighbour)

                def torch_sums(v: torch.Tensor) -> torch.Tensor:
                    return self._triplet_sums(v, torch.linalg.vector_norm(v, dim=1), centre, neighbour,
                                              species, n_atoms, kinds)

                blocks.append(angular_sums(vec, centre, species, neighbour_species, n_atoms,
                                           self._angular_plan(kinds), torch_sums))
            else:
                blocks.append(self._triplet_sums(vec, dist, centre, neighbour, species, n_atoms, kinds))
        out = torch.cat(blocks, dim=1) if len(blocks) > 1 else blocks[0]
        return out.view(n_atoms, self.n_pair_types * self.n_angular)

    def uses_compiled_kernel(self, device: torch.device | str) -> bool:
        """Whether triplet sums on ``device`` run in the compiled kernel (see ``kernel``):
        its memory is O(pairs), so callers need not split large structures into groups."""
        if self._kernel == "torch" or torch.device(device).type != "cpu" or not self.n_angular:
            return False
        return self._kernel_unavailable() is None

    def _use_kernel(self, vec: torch.Tensor) -> bool:
        """Whether this call's triplet sums run in the compiled kernel."""
        if torch.jit.is_tracing() or torch.jit.is_scripting():
            return False
        return self.uses_compiled_kernel(vec.device)

    def _angular_plan(self, kinds: tuple[str, ...]):
        """The compiled kernel's tables for the triplet kinds ``kinds`` (built once)."""
        plan = self._angular_plans.get(kinds)
        if plan is not None:
            return plan
        from .angular_kernel import AngularPlan

        n_angles = len(self._angle_keys)
        parts = [i for i, k in enumerate(self._part_keys) if k[0].lower() in kinds]
        kernel_shape = {part: s for s, part in enumerate(parts)}
        if self.angular_outer:
            columns = [(s, a) for s in range(len(parts)) for a in range(n_angles)]
        else:  # no harmonics here: every part is a triplet part
            columns = [(kernel_shape[p], a) for p, a in zip(self.term_part.tolist(), self.term_angle.tolist())]
        # With G5 by harmonics (and not among the kinds), that block comes first in each
        # pair type's columns.
        offset = self.n_g5 * n_angles if self.g5_harmonics and "g5" not in kinds else 0
        n_el, n_pt = self.n_elements, self.n_pair_types
        if self.full_layout:
            used = [[set(range(len(columns))) for _ in range(n_pt)] for _ in range(n_el)]
        else:  # only the columns some feature of the centre's element reads
            used = [[set() for _ in range(n_pt)] for _ in range(n_el)]
            first_angular = n_el * self.n_radial
            for e in range(n_el):
                for raw in self.colmap[e, : self.n_features[self.elements[e]]].tolist():
                    if raw >= first_angular:
                        p, c = divmod(raw - first_angular, self.n_angular)
                        if 0 <= c - offset < len(columns):
                            used[e][p].add(c - offset)
        plan = AngularPlan.build(
            n_elements=n_el, pair_type=self.pair_type.cpu().numpy(),
            shapes=[self._part_keys[p] for p in parts], angles=self._angle_keys, columns=columns, used=used,
            cutoff=self.spec.cutoff_function, alpha=self.spec.cutoff_alpha)
        self._angular_plans[kinds] = plan
        return plan

    def _triplet_sums(self, vec, dist, centre, neighbour, species, n_atoms, kinds) -> torch.Tensor:
        """The triplet-summed angular block in torch: (N · n_pair_types, columns of ``kinds``).

        ``vec`` (Q, 3), ``dist`` (Q,), ``centre`` and ``neighbour`` (Q,) are the pairs inside
        the angular cutoff, sorted by centre; ``kinds`` the terms summed over triplets
        ("g5" unless by harmonics, "g4").
        """
        first, second = triplets_from_pairs(centre, n_atoms)
        neighbour_species = species.index_select(0, neighbour)
        pair_type = self.pair_type.view(-1).index_select(
            0, neighbour_species.index_select(0, first) * self.n_elements
            + neighbour_species.index_select(0, second))
        major = centre.index_select(0, first)
        # Σ over each centre's triplets of the radial ⊗ angle outer product, one row per
        # (centre, neighbour-element pair): the triplets of a row are laid out in padded
        # pieces and summed by one bmm. The layout is built on the pair indices, so the
        # per-pair quantities are gathered straight into it; padding slots pair two dummy
        # pairs (rows P and P + 1 below) whose cutoff factors are zero.
        layout = piece_layout(major, pair_type, n_atoms, self.n_pair_types)
        n_pairs = dist.shape[0]
        if layout is not None:
            first, second = layout.spread(first, n_pairs), layout.spread(second, n_pairs + 1)

        def with_dummies(per_pair: torch.Tensor, dummies: list[list[float]]) -> torch.Tensor:
            return torch.cat([per_pair, per_pair.new_tensor(dummies)])

        # Everything per pair (unit vectors, the legs' Gaussians·cutoffs) is computed
        # once and gathered for the triplets; index_select rather than fancy indexing,
        # as its backward is a fast index_add. The dummies' unit vectors are orthogonal
        # (cos θ = 0, r_jk > 0: finite values and gradients in the padding).
        unit = with_dummies(vec / dist.unsqueeze(1), [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        cos = (unit.index_select(0, first) * unit.index_select(0, second)).sum(1)
        table = self._angle_table(self._angle_base(cos))  # (T, C)
        parts = []
        if "g5" in kinds:
            per_pair = self._gaussian_cutoff(dist, "g5")
            per_pair = with_dummies(per_pair, [[0.0] * per_pair.shape[1]] * 2)
            parts.append(per_pair.index_select(0, first) * per_pair.index_select(0, second))
        if "g4" in kinds:
            fc_pair = self._fc(dist.unsqueeze(1), self.g4_rc.to(dist.dtype))  # (P, C): C distinct cutoffs
            parts.append(self._g4_radial(with_dummies(dist, [1.0, 1.0]),
                                         with_dummies(fc_pair, [[0.0] * fc_pair.shape[1]] * 2),
                                         first, second, cos))
        radial = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]  # (T, S)
        if layout is not None:
            sums = layout.outer_sum(radial, table)  # (N · n_pt, S, C)
        else:
            sums = scatter_outer_sum(radial, table, major * self.n_pair_types + pair_type,
                                     n_atoms * self.n_pair_types)
        angle = sums[:, :, self.angle_table_col] * self._angle_prefactor(sums.dtype)
        if self.angular_outer:
            return angle.reshape(angle.shape[0], -1)
        return angle[:, self.term_part, self.term_angle]

    def _g4_radial(self, dist: torch.Tensor, fc_pair: torch.Tensor, first: torch.Tensor,
                   second: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
        """(T, S) radial parts of the G4 terms, Π over the three sides of exp(−η(r−r_s)²) f_c(r),
        from the pairs' lengths ``dist`` (P,) and cutoff factors ``fc_pair`` (P, C) at the
        C distinct G4 cutoffs.

        Without shifts (r_s = 0, n2p2's usual type 3) the three Gaussians of a shape are one
        exponential of −η (r_ij² + r_ik² + r_jk²), so the (T, S) work is one outer product,
        one ``exp`` and one product with the cutoffs, instead of three Gaussians and their
        products per shape (this kernel
        dominates potentials with long angular cutoffs, such as n2p2's water model:
        ~5500 triplets per atom). r_jk comes from the legs' lengths and the angle,
        r_jk² = (r_ij − r_ik)² + 2 r_ij r_ik (1 − cos θ), without gathering the vectors
        and without cancellation for short r_jk.
        """
        d1, d2 = dist.index_select(0, first), dist.index_select(0, second)
        r_jk_sq = ((d1 - d2) ** 2 + 2.0 * d1 * d2 * (1.0 - cos)).clamp(min=0.0)
        r_jk = r_jk_sq.sqrt()
        eta, r_s = self.g4_eta.to(dist.dtype), self.g4_rs.to(dist.dtype)
        if self.g4_unshifted:
            # −η (r_ij² + r_ik² + r_jk²): a sum of positive terms, no cancellation.
            gauss = torch.exp(torch.outer(d1 * d1 + d2 * d2 + r_jk_sq, -eta))
        else:
            # With r_s ≠ 0 the expanded exponent −η q₂ + 2η r_s q₁ − 3η r_s² cancels large
            # terms (1e-4 relative error in float32 at η = 16, r_s = 3): one Gaussian per side.
            sides = torch.stack([d1, d2, r_jk], dim=1).unsqueeze(2)  # (T, 3, 1)
            gauss = torch.exp(-(eta * (sides - r_s) ** 2).sum(1))
        r_c = self.g4_rc.to(dist.dtype)
        cutoffs = fc_pair.index_select(0, first) * fc_pair.index_select(0, second) * self._fc(r_jk.unsqueeze(1), r_c)
        if r_c.shape[0] > 1:
            cutoffs = cutoffs[:, self.g4_rc_col]
        return gauss * cutoffs

    def _g5_harmonics(self, vec, dist, centre, neighbour, species, n_atoms) -> torch.Tensor:
        """Wide angular (G5) terms without triplets, exact for integer ζ.

        With R_s(r) = exp(−η_s(r−r_s)²) f_c(r), unit vectors u_j and the Legendre expansion
        2^(1−ζ)(1+λ cos θ)^ζ = Σ_l b_l P_l(cos θ), the addition theorem
        (2l+1) P_l(u_j·u_k) = Σ_m Y_lm(u_j) Y_lm(u_k) turns the sum over pairs of
        neighbours into sums over neighbours, A_{e,s,lm} = Σ_{j∈e} R_s(r_ij) Y_lm(u_ij):

            Σ_{j∈e1, k∈e2} R_j R_k P_l   = Σ_m A_{e1,lm} A_{e2,lm} / (2l+1)              (e1 ≠ e2)
            Σ_{j<k ∈ e}    R_j R_k P_l   = ½ [Σ_m A_{e,lm}² / (2l+1) − Σ_{j∈e} R_j²]   (e1 = e2)

        Cost O(P (l_max+1)² S) instead of O(T S A).

        Returns:
            (N · n_pair_types, S, A) with S the G5 radial shapes and A the (ζ, λ) terms.
        """
        from e3nn.o3 import spherical_harmonics

        n_el, n_pt = self.n_elements, self.n_pair_types
        radial = self._gaussian_cutoff(dist, "g5")  # (P, S)
        ylm = spherical_harmonics(list(range(self.l_max + 1)), vec, normalize=True,
                                  normalization="component")  # (P, M)
        n_s, n_m = radial.shape[1], ylm.shape[1]
        rows = centre * n_el + species[neighbour]
        moments = radial.new_zeros(n_atoms * n_el, n_s * n_m).index_add_(
            0, rows, (radial.unsqueeze(2) * ylm.unsqueeze(1)).reshape(-1, n_s * n_m)).view(n_atoms, n_el, n_s, n_m)
        self_terms = radial.new_zeros(n_atoms * n_el, n_s).index_add_(0, rows, radial * radial).view(n_atoms, n_el, n_s)
        products = moments[:, self.pair_first] * moments[:, self.pair_second]  # (N, n_pt, S, M)
        q = products @ self.m_to_l.to(products.dtype)  # (N, n_pt, S, L)
        same = (self.pair_first == self.pair_second).view(1, n_pt, 1, 1)
        q = torch.where(same, 0.5 * (q - self_terms[:, self.pair_first].unsqueeze(3)), q)
        g5 = q @ self.legendre_coefficients.to(q.dtype).T  # (N, n_pt, S, A)
        return g5.reshape(n_atoms * n_pt, n_s, -1)

    def extra_repr(self) -> str:
        return (
            f"elements={list(self.elements)}, features={self.n_features}, "
            f"cutoff={self.cutoff}, cutoff_function={self.spec.cutoff_function!r}"
        )

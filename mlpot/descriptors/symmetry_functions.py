"""Element-resolved atom-centred symmetry functions (G2, G4, G5): the descriptor container.

Data path (N atoms, P pairs, T triplets; no Python loop over atoms, pairs or elements):

1. pair vectors r_ij from positions, cell and integer shifts (differentiable in both);
2. radial (G2) block, :mod:`~mlpot.descriptors.radial`: a (P, K_r) table of
   exp(−η(r−r_s)²) f_c(r) for the K_r distinct radial shapes, summed into rows
   (centre i, element of j);
3. angular (G4/G5) block, :mod:`~mlpot.descriptors.angular`: triplet sums in torch or in the
   compiled kernel (CPU), or G5 by spherical harmonics;
4. :mod:`~mlpot.descriptors.layout` maps these raw blocks onto each centre element's own
   feature list (skipped when every element uses the full block layout, the common case).

Forces and stress follow from autograd through step 1; :meth:`SymmetryFunctions.jacobian`
returns the descriptors with their exact per-pair derivatives (compact blocks,
:class:`~mlpot.descriptors.PairJacobian`) for training without re-differentiating them.
"""

from __future__ import annotations

from typing import Any

import torch

from ..neighbours import edge_vectors
from .angular import AngularSymmetryFunctions
from .base import Descriptor, register_descriptor
from .cutoffs import cutoff_function
from .jacobian import PairJacobian
from .layout import FeatureLayout
from .parameters import SymmetryFunctionSpec
from .radial import RadialSymmetryFunctions
from .sf_config import SymmetryFunctionsConfig

__all__ = ["SymmetryFunctions", "TRIPLET_BLOCK"]

#: Triplets per forward-mode block of :meth:`SymmetryFunctions.jacobian`'s torch path, per
#: device type. CPU: caching 32 water frames of 192 atoms, 16 at a time, peaked 0.74 GB
#: above the start at 2**15 against 1.49 GB in one block (12.4 s -> 10.2 s). GPU: about
#: 1.6 kB per triplet in float64 for mlearn's Si set, so 2**18 holds ~0.4 GB.
TRIPLET_BLOCK = {"cpu": 2**15, "cuda": 2**18}


@register_descriptor("symmetry_functions", SymmetryFunctionsConfig)
class SymmetryFunctions(Descriptor):
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
            integer ζ, O(pairs), see :meth:`AngularSymmetryFunctions.g5_harmonics
            <mlpot.descriptors.angular.AngularSymmetryFunctions.g5_harmonics>`); ``"auto"``
            takes harmonics where they apply. Narrow G4 terms always use triplets.
        kernel: how the triplet sums run: ``"numba"``, compiled loops over each centre's
            pairs of neighbours (:mod:`~mlpot.descriptors.angular_kernel`; CPU tensors with
            a built-in cutoff function); ``"torch"``, batched torch operations (any device,
            ``torch.jit.trace``); ``"auto"`` (default), numba where it applies, else torch.
            Both give the same values and derivatives to rounding; the attribute
            :attr:`kernel` may be changed at any time.
    """

    supports_pair_jacobian = True

    def __init__(self, spec: SymmetryFunctionSpec, angular_method: str = "triplets", kernel: str = "auto"):
        super().__init__(spec.elements, spec.max_cutoff)
        self.spec = spec
        fc = cutoff_function(spec.cutoff_function, spec.cutoff_alpha)
        self.radial = RadialSymmetryFunctions(spec.radial, fc, self.n_elements)
        self.angular = AngularSymmetryFunctions(spec, fc, angular_method)
        self.layout = FeatureLayout(spec, self.radial, self.angular)
        self.angular.set_used_columns(self.layout.angular_columns_used())
        self.kernel = kernel

    # ------------------------------------------------------------------ sizes and layout
    @property
    def n_radial(self) -> int:
        """K_r, distinct radial shapes (columns per neighbour element)."""
        return self.radial.n_shapes

    @property
    def n_angular(self) -> int:
        """Angular columns per neighbour-element pair type."""
        return self.angular.n_columns

    @property
    def n_pair_types(self) -> int:
        return self.angular.n_pair_types

    @property
    def pair_type(self) -> torch.Tensor:
        """(E, E) unordered neighbour-element pair → pair type."""
        return self.angular.pair_type

    @property
    def g5_harmonics(self) -> bool:
        """Whether G5 terms are summed by spherical harmonics."""
        return self.angular.harmonics

    @property
    def angular_cutoff(self) -> float:
        return self.spec.max_angular_cutoff

    @property
    def features(self) -> dict:
        return self.layout.features

    @property
    def n_features(self) -> dict[str, int]:
        return self.layout.n_features

    @property
    def max_features(self) -> int:
        return self.layout.max_features

    @property
    def n_raw(self) -> int:
        return self.layout.n_raw

    @property
    def full_layout(self) -> bool:
        return self.layout.full

    @property
    def n_features_per_element(self) -> list[int]:
        return [self.n_features[el] for el in self.elements]

    def feature_names(self, element: str) -> list[str]:
        return [f.name for f in self.features[element]]

    def config_dict(self) -> dict[str, Any]:
        return self.spec.to_dict()

    @classmethod
    def from_config_dict(cls, data: dict[str, Any]) -> "SymmetryFunctions":
        return cls(SymmetryFunctionSpec.from_dict(data))

    def jacobian_values_per_pair(self, angular: bool) -> int:
        # PairJacobian: dφ/dr (K_r) and r̂ (3) per pair; 3 E A per pair inside the angular cutoff.
        return 3 * self.n_elements * self.n_angular if angular else self.n_radial + 3

    # ------------------------------------------------------------------ kernel choice
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

    def work_item_bytes(self, dtype: torch.dtype) -> int:
        """Bytes per triplet of the torch path's forward and backward: its (T, S) radial
        parts and (T, C) angle powers (S shapes, C power columns) with their gradients and
        the gathered per-pair values, ~24 + 6 (S + C) numbers (n2p2's water potential,
        S = 5, C = 4: 312 bytes predicted in float32 and 624 in float64; its peak memory
        measured 318 and 608 per pair + triplet)."""
        angular = self.angular
        n_shapes = len(angular.part_keys)
        n_powers = 2 * len(angular.integer_zetas) if angular.integer_zetas else len(angular.angle_keys)
        return (24 + 6 * (n_shapes + n_powers)) * dtype.itemsize

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

    # ------------------------------------------------------------------ values and derivatives
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
            blocks.append(self.radial(dist, centre, species[neighbour], n_atoms))
        if self.n_angular:
            compiled = not create_graph and self._use_kernel(vec)
            blocks.append(self.angular(vec, dist, centre, neighbour, species, n_atoms, compiled))
        raw = torch.cat(blocks, dim=1) if len(blocks) > 1 else blocks[0]
        return self.layout.gather(raw, species)

    def jacobian(self, positions: torch.Tensor, species: torch.Tensor, cell: torch.Tensor,
                 system_idx: torch.Tensor, edge_index: torch.Tensor, edge_shift: torch.Tensor,
                 triplet_block: int | None = None) -> tuple[torch.Tensor, PairJacobian]:
        """Raw descriptors and their sparse derivative with respect to the pair vectors.

        G_i depends on the positions only through the vectors of i's own pairs, so the
        full derivative dG/dR (N·F × N·3, mostly zeros) is held per pair, and only in the
        columns the pair can reach (see :class:`~mlpot.descriptors.PairJacobian`). Forces
        then follow from any ∂E/∂G without differentiating the descriptors again
        (:meth:`pair_gradients`, :meth:`mlpot.models.Potential.forward_from_descriptors`):
        ∂E/∂r_p = Σ_f ∂E/∂G_{i(p), f} ∂G_{i(p), f}/∂r_p, and the chain rule through
        r_p = R_j − R_i + S_p·h gives forces and the virial.

        Arguments as for :meth:`compute`, and ``triplet_block``: triplets differentiated at
        a time by the torch path (bounds the memory; the result does not depend on it);
        ``None``: :data:`TRIPLET_BLOCK` for the device of ``positions`` (2**15 on the CPU,
        2**18 on a GPU, where each block's six forward-mode passes are a Python iteration
        of launches that 2**15 triplets would not fill). The compiled kernel (CPU) needs no
        such bound: its memory is O(pairs).

        Returns:
            ``(G, J)``: (N, F) raw descriptors and the :class:`PairJacobian`, detached.
        """
        if triplet_block is None:
            triplet_block = TRIPLET_BLOCK["cuda" if positions.is_cuda else "cpu"]
        with torch.no_grad():
            vec = edge_vectors(positions, cell, system_idx, edge_index, edge_shift)
            n_atoms = positions.shape[0]
            raw = self.compute_from_vectors(vec, species, edge_index, n_atoms)
            dist = torch.linalg.vector_norm(vec, dim=1)
            unit = vec / dist.clamp(min=torch.finfo(vec.dtype).tiny).unsqueeze(1)
            # Each radial term depends on its pair's distance alone: ∂φ/∂r_p = dφ/dr · r̂_p
            # (kept as the factors).
            radial = self.radial.slopes(dist)
            if self.n_angular:
                keep, angular = self.angular.jacobian(vec, edge_index, species, n_atoms, self._use_kernel(vec),
                                                      triplet_block)
            else:
                keep = torch.zeros(0, dtype=torch.long, device=vec.device)
                angular = vec.new_zeros(0, 3, self.n_elements, 0)
            angular_row = torch.full((vec.shape[0],), -1, dtype=torch.long, device=vec.device)
            angular_row[keep] = torch.arange(keep.shape[0], device=vec.device)
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
        return self.layout.gather_pairs(dense, species.index_select(0, edge_index[0]))

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
        de_dg = self.layout.scatter(de_dg, species)  # back to the raw column layout
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

    def extra_repr(self) -> str:
        return (
            f"elements={list(self.elements)}, features={self.n_features}, "
            f"cutoff={self.cutoff}, cutoff_function={self.spec.cutoff_function!r}"
        )

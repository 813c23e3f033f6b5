"""Angular (triplet) symmetry functions G4 and G5, summed in torch or in the compiled kernel.

Angular terms factor into a radial part per (kind, η, r_s, r_c) — the *parts* — and an angle
part 2^(1−ζ)(1+λ cos θ)^ζ per (ζ, λ) — the *angles*. Pairs inside the angular cutoff form
triplets (pairs of pairs with one centre); per-pair Gaussians·cutoffs and unit vectors are
computed once and gathered for the two legs (times the r_jk factor for G4), the powers
(1 ± cos θ)^ζ once per distinct ζ, and their outer product is summed into rows (centre i,
unordered element pair of j, k) as one batched matrix product
(:func:`~mlpot.descriptors.segments.piece_layout`).

On CPU tensors the sums run instead in the compiled loops of
:mod:`~mlpot.descriptors.angular_kernel`, with an analytic backward pass; the torch form
serves CUDA, tracing and double backward. Wide (G5) terms with integer ζ can be summed
without triplets through spherical harmonics (:meth:`AngularSymmetryFunctions.g5_harmonics`).

The raw angular block is (N, n_pair_types · n_angular): columns per unordered neighbour
element pair, then per term column (the outer product parts × angles, or one column per
distinct term when that would compute more than twice the terms).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ..neighbours import triplets_from_pairs
from .radial import GaussianShapes, unique_index
from .segments import piece_layout, scatter_outer_sum

__all__ = ["AngularSymmetryFunctions"]


class AngularSymmetryFunctions(nn.Module):
    """The raw angular block of a symmetry-function descriptor.

    Args:
        spec: the resolved :class:`~mlpot.descriptors.SymmetryFunctionSpec`.
        fc: its cutoff function ``fc(r, r_c)``.
        angular_method: ``"triplets"``, ``"harmonics"`` or ``"auto"`` for the G5 terms (see
            :class:`~mlpot.descriptors.SymmetryFunctions`).
    """

    def __init__(self, spec, fc: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 angular_method: str = "triplets"):
        super().__init__()
        self.spec = spec
        self.fc = fc
        self.elements = tuple(spec.elements)
        self.n_elements = len(self.elements)
        self.cutoff = spec.max_angular_cutoff
        keys = [(t.kind, t.eta, t.r_s, t.cutoff, t.zeta, t.lam) for t in spec.angular]
        g5 = unique_index([k[:4] for k in keys if k[0] == "G5"])[0]
        g4 = unique_index([k[:4] for k in keys if k[0] == "G4"])[0]
        self.g5 = GaussianShapes([k[1:] for k in g5], fc)
        self.g4 = GaussianShapes([k[1:] for k in g4], fc)
        self.g4_unshifted = all(k[2] == 0.0 for k in g4)
        self.part_keys = g5 + g4
        self.n_g5 = len(g5)
        self._build_angles(keys)
        self._build_pair_types(spec.element_pairs())
        self._build_harmonics(angular_method, has_g4=bool(g4))
        self.used_columns: list[list[int]] | None = None  # see set_used_columns
        self._plans: dict = {}

    def _build_angles(self, keys: list[tuple]) -> None:
        """Angle terms (ζ, λ), their power table columns, and the term → column map."""
        angle_keys, _ = unique_index([k[4:] for k in keys])
        self.angle_keys = angle_keys
        self.register_buffer("angle_zeta", torch.tensor([z for z, _ in angle_keys], dtype=torch.float64),
                             persistent=False)
        self.register_buffer("angle_lambda_col", torch.tensor([0 if lam > 0 else 1 for _, lam in angle_keys],
                                                              dtype=torch.long), persistent=False)
        zetas = sorted({z for z, _ in angle_keys})
        all_integer = all(float(z).is_integer() and z <= 64 for z in zetas)
        self.integer_zetas = [int(z) for z in zetas] if all_integer else []
        # Column of each angle term in _angle_table's output.
        table_col = ([(0 if lam > 0 else 1) * len(zetas) + zetas.index(z) for z, lam in angle_keys]
                     if all_integer else list(range(len(angle_keys))))
        self.register_buffer("angle_table_col", torch.tensor(table_col, dtype=torch.long), persistent=False)
        unique_terms = unique_index(keys)[0]
        parts = self.part_keys
        # Raw columns are the outer product parts × angles (no per-term gathers) unless
        # that would compute more than twice the terms.
        self.outer = len(parts) * len(angle_keys) <= 2 * len(unique_terms)
        if self.outer:
            self.column = {p + a: ip * len(angle_keys) + ia for ip, p in enumerate(parts)
                           for ia, a in enumerate(angle_keys)}
            self.n_columns = len(parts) * len(angle_keys)
        else:
            self.column = {k: i for i, k in enumerate(unique_terms)}
            self.n_columns = len(unique_terms)
        self.register_buffer("term_part", torch.tensor([parts.index(k[:4]) for k in unique_terms], dtype=torch.long),
                             persistent=False)
        self.register_buffer("term_angle", torch.tensor([angle_keys.index(k[4:]) for k in unique_terms],
                                                        dtype=torch.long), persistent=False)

    def _build_pair_types(self, pairs: list[tuple[str, str]]) -> None:
        """Unordered neighbour-element pair → pair type, (E, E), and each type's two elements."""
        self.pairs = pairs
        self.n_pair_types = len(pairs)
        index = self.elements.index
        pair_type = torch.empty(self.n_elements, self.n_elements, dtype=torch.long)
        for p, (a, b) in enumerate(pairs):
            pair_type[index(a), index(b)] = pair_type[index(b), index(a)] = p
        self.register_buffer("pair_type", pair_type, persistent=False)
        self.register_buffer("pair_first", torch.tensor([index(a) for a, _ in pairs], dtype=torch.long),
                             persistent=False)
        self.register_buffer("pair_second", torch.tensor([index(b) for _, b in pairs], dtype=torch.long),
                             persistent=False)

    def _build_harmonics(self, angular_method: str, has_g4: bool) -> None:
        """G5 by the addition theorem: 2^(1−ζ)(1+λc)^ζ = Σ_l b_l P_l(c), and P_l(u·v) is a
        sum over m of products of spherical harmonics of u and v."""
        if angular_method not in ("triplets", "harmonics", "auto"):
            raise ValueError(f"angular_method must be triplets, harmonics or auto, got {angular_method!r}")
        # e3nn's spherical harmonics go up to l = 12.
        harmonics_ok = (self.n_g5 > 0 and bool(self.integer_zetas) and max(self.integer_zetas) <= 12
                        and (self.outer or not has_g4))
        if angular_method == "harmonics" and not harmonics_ok:
            raise ValueError("angular_method='harmonics' needs G5 terms with integer ζ ≤ 12 (and, with "
                             "G4 terms present, the outer-product column layout)")
        self.harmonics = harmonics_ok and angular_method in ("harmonics", "auto")
        if not self.harmonics:
            return
        from numpy.polynomial import legendre

        l_max = max(self.integer_zetas)
        coeffs = torch.zeros(len(self.angle_keys), l_max + 1, dtype=torch.float64)
        for a, (zeta, lam) in enumerate(self.angle_keys):
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

    def set_used_columns(self, used: list[list[int]] | None) -> None:
        """The raw angular columns (0 .. n_pair_types · n_columns − 1) each centre element's
        features read (``None``: all); the compiled kernel computes only those."""
        self.used_columns = used
        self._plans.clear()

    @property
    def triplet_kinds(self) -> tuple[str, ...]:
        """The kinds summed over triplets: "g5" (unless by harmonics) and "g4", if present."""
        return tuple(k for k in ("g5", "g4") if len(getattr(self, k)) and not (k == "g5" and self.harmonics))

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

    @staticmethod
    def _angle_base(cos: torch.Tensor) -> torch.Tensor:
        """(T,) cos θ → (2, T) the bases 1 + cos θ and 1 − cos θ of the angle factors (λ = ±1)."""
        # Rounding can push 1 ± cos θ a hair below 0, where a fractional power is NaN.
        return torch.stack([1.0 + cos, 1.0 - cos]).clamp(min=0.0)

    def triplet_values(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        """Angular symmetry-function terms of each triplet from its two legs.

        The per-triplet form that :meth:`jacobian` differentiates (forward mode, per leg);
        :meth:`forward` sums the same products per centre without materialising them.

        Args:
            v1, v2: (T, 3) vectors from the centre to the two neighbours, Å.

        Returns:
            (T, n_columns) terms 2^(1−ζ)(1+λ cos θ)^ζ × radial part.
        """
        d1, d2 = torch.linalg.vector_norm(v1, dim=1), torch.linalg.vector_norm(v2, dim=1)
        parts = []
        if len(self.g5):
            parts.append(self.g5(d1) * self.g5(d2))
        if len(self.g4):
            r_jk = torch.linalg.vector_norm(v2 - v1, dim=1)
            parts.append(self.g4(d1) * self.g4(d2) * self.g4(r_jk))
        radial = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        angle = self._angle_powers(self._angle_base((v1 * v2).sum(1) / (d1 * d2)))
        if self.outer:
            # Explicit sizes: with no triplets at all, -1 would be ambiguous.
            return (radial.unsqueeze(2) * angle.unsqueeze(1)).reshape(radial.shape[0], radial.shape[1] * angle.shape[1])
        return radial[:, self.term_part] * angle[:, self.term_angle]

    def forward(self, vec: torch.Tensor, dist: torch.Tensor, centre: torch.Tensor, neighbour: torch.Tensor,
                species: torch.Tensor, n_atoms: int, compiled: bool = False) -> torch.Tensor:
        """The raw angular block (N, n_pair_types · n_columns) from the (P, 3) pair vectors,
        their (P,) lengths, centres and neighbours (sorted by centre) and the (N,) species.
        ``compiled``: the triplet sums run in the compiled kernel (CPU, first derivatives)."""
        # Only pairs inside the angular cutoff can form triplets: a shorter angular cutoff
        # (as in ANI) or a Verlet skin on the pair list would otherwise add triplets that
        # contribute exact zeros, quadratically many.
        keep = torch.nonzero(dist < self.cutoff).squeeze(1)
        if keep.shape[0] < dist.shape[0] or torch.jit.is_tracing():  # a trace must record the filter
            vec, dist, centre, neighbour = (t.index_select(0, keep) for t in (vec, dist, centre, neighbour))
        kinds = self.triplet_kinds
        blocks = []
        if self.harmonics:
            g5 = self.g5_harmonics(vec, dist, centre, neighbour, species, n_atoms)  # (N·n_pt, S, A)
            if self.outer:
                blocks.append(g5.reshape(g5.shape[0], -1))
            else:  # G5 terms only (no G4): pick each term's (part, angle) column
                blocks.append(g5[:, self.term_part, self.term_angle])
        if kinds and compiled:
            from .angular_kernel import angular_sums

            neighbour_species = species.index_select(0, neighbour)

            def torch_sums(v: torch.Tensor) -> torch.Tensor:
                return self.triplet_sums(v, torch.linalg.vector_norm(v, dim=1), centre, neighbour,
                                         species, n_atoms, kinds)

            blocks.append(angular_sums(vec, centre, species, neighbour_species, n_atoms, self.plan(kinds),
                                       torch_sums))
        elif kinds:
            blocks.append(self.triplet_sums(vec, dist, centre, neighbour, species, n_atoms, kinds))
        out = torch.cat(blocks, dim=1) if len(blocks) > 1 else blocks[0]
        return out.view(n_atoms, self.n_pair_types * self.n_columns)

    def plan(self, kinds: tuple[str, ...]):
        """The compiled kernel's tables for the triplet kinds ``kinds`` (built once)."""
        plan = self._plans.get(kinds)
        if plan is not None:
            return plan
        from .angular_kernel import AngularPlan

        n_angles = len(self.angle_keys)
        parts = [i for i, k in enumerate(self.part_keys) if k[0].lower() in kinds]
        kernel_shape = {part: s for s, part in enumerate(parts)}
        if self.outer:
            columns = [(s, a) for s in range(len(parts)) for a in range(n_angles)]
        else:  # no harmonics here: every part is a triplet part
            columns = [(kernel_shape[p], a) for p, a in zip(self.term_part.tolist(), self.term_angle.tolist())]
        # With G5 by harmonics (and not among the kinds), that block comes first in each
        # pair type's columns.
        offset = self.n_g5 * n_angles if self.harmonics and "g5" not in kinds else 0
        n_el, n_pt = self.n_elements, self.n_pair_types
        if self.used_columns is None:
            used = [[set(range(len(columns))) for _ in range(n_pt)] for _ in range(n_el)]
        else:  # only the columns some feature of the centre's element reads
            used = [[set() for _ in range(n_pt)] for _ in range(n_el)]
            for e in range(n_el):
                for raw in self.used_columns[e]:
                    p, c = divmod(raw, self.n_columns)
                    if 0 <= c - offset < len(columns):
                        used[e][p].add(c - offset)
        plan = AngularPlan.build(
            n_elements=n_el, pair_type=self.pair_type.cpu().numpy(),
            shapes=[self.part_keys[p] for p in parts], angles=self.angle_keys, columns=columns, used=used,
            cutoff=self.spec.cutoff_function, alpha=self.spec.cutoff_alpha)
        self._plans[kinds] = plan
        return plan

    def triplet_sums(self, vec, dist, centre, neighbour, species, n_atoms, kinds) -> torch.Tensor:
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

        def with_dummies(per_pair: torch.Tensor, dummies: torch.Tensor) -> torch.Tensor:
            return torch.cat([per_pair, dummies])

        # Everything per pair (unit vectors, the legs' Gaussians·cutoffs) is computed
        # once and gathered for the triplets; index_select rather than fancy indexing,
        # as its backward is a fast index_add. The dummies' unit vectors are orthogonal
        # (cos θ = 0, r_jk > 0: finite values and gradients in the padding). The dummy
        # rows are made on the device (eye, zeros, ones), never from Python lists: on a
        # GPU a tensor built from host data is a pageable copy that PyTorch waits for, one
        # host synchronisation per call (and per group of centres in a chunked forward).
        unit = with_dummies(vec / dist.unsqueeze(1), torch.eye(2, 3, dtype=vec.dtype, device=vec.device))
        cos = (unit.index_select(0, first) * unit.index_select(0, second)).sum(1)
        table = self._angle_table(self._angle_base(cos))  # (T, C)
        parts = []
        if "g5" in kinds:
            per_pair = self.g5(dist)
            per_pair = with_dummies(per_pair, per_pair.new_zeros(2, per_pair.shape[1]))
            parts.append(per_pair.index_select(0, first) * per_pair.index_select(0, second))
        if "g4" in kinds:
            fc_pair = self.fc(dist.unsqueeze(1), self.g4.rc.to(dist.dtype))  # (P, C): C distinct cutoffs
            parts.append(self._g4_radial(with_dummies(dist, dist.new_ones(2)),
                                         with_dummies(fc_pair, fc_pair.new_zeros(2, fc_pair.shape[1])),
                                         first, second, cos))
        radial = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]  # (T, S)
        if layout is not None:
            sums = layout.outer_sum(radial, table)  # (N · n_pt, S, C)
        else:
            sums = scatter_outer_sum(radial, table, major * self.n_pair_types + pair_type,
                                     n_atoms * self.n_pair_types)
        angle = sums[:, :, self.angle_table_col] * self._angle_prefactor(sums.dtype)
        if self.outer:
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
        eta, r_s = self.g4.eta.to(dist.dtype), self.g4.rs.to(dist.dtype)
        if self.g4_unshifted:
            # −η (r_ij² + r_ik² + r_jk²): a sum of positive terms, no cancellation.
            gauss = torch.exp(torch.outer(d1 * d1 + d2 * d2 + r_jk_sq, -eta))
        else:
            # With r_s ≠ 0 the expanded exponent −η q₂ + 2η r_s q₁ − 3η r_s² cancels large
            # terms (1e-4 relative error in float32 at η = 16, r_s = 3): one Gaussian per side.
            sides = torch.stack([d1, d2, r_jk], dim=1).unsqueeze(2)  # (T, 3, 1)
            gauss = torch.exp(-(eta * (sides - r_s) ** 2).sum(1))
        r_c = self.g4.rc.to(dist.dtype)
        cutoffs = fc_pair.index_select(0, first) * fc_pair.index_select(0, second) * self.fc(r_jk.unsqueeze(1), r_c)
        if r_c.shape[0] > 1:
            cutoffs = cutoffs[:, self.g4.rc_col]
        return gauss * cutoffs

    def g5_harmonics(self, vec, dist, centre, neighbour, species, n_atoms) -> torch.Tensor:
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
        radial = self.g5(dist)  # (P, S)
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

    def jacobian(self, vec: torch.Tensor, edge_index: torch.Tensor, species: torch.Tensor, n_atoms: int,
                 compiled: bool, triplet_block: int = 2**15) -> tuple[torch.Tensor, torch.Tensor]:
        """∂(angular block)/∂r_p for the pairs inside the angular cutoff, without a graph.

        Returns:
            ``(keep, block)``: (Q,) indices of those pairs and (Q, 3, E, n_columns) the
            derivative of the row (centre, pair type (e(p), e)) for each element e, Å⁻¹
            (see :class:`~mlpot.descriptors.PairJacobian`).
        """
        dist = torch.linalg.vector_norm(vec, dim=1)
        keep = torch.nonzero(dist < self.cutoff).squeeze(1)
        n_el, n_kept = self.n_elements, keep.shape[0]
        centre, neighbour = edge_index[0].index_select(0, keep), edge_index[1].index_select(0, keep)
        kept_vec, kept_species = vec.index_select(0, keep), species.index_select(0, neighbour)
        if n_kept and compiled:
            # The compiled kernel gives the derivatives with the values (no forward-mode
            # passes over the triplets), in the same (pair, axis, element, column) layout.
            from .angular_kernel import angular_jacobian

            _, block = angular_jacobian(kept_vec, centre, species, kept_species, n_atoms, self.plan(self.triplet_kinds))
            return keep, block.contiguous()
        angular = vec.new_zeros(3, n_kept * n_el, self.n_columns)  # axis first, see the end
        if n_kept:
            self._forward_mode_jacobian(kept_vec, kept_species, triplets_from_pairs(centre, n_atoms), angular,
                                        triplet_block)
        # Explicit sizes: with no kept pairs, -1 would be ambiguous.
        return keep, angular.view(3, n_kept, n_el, self.n_columns).permute(1, 0, 2, 3).contiguous()

    def _forward_mode_jacobian(self, vec: torch.Tensor, neighbour_species: torch.Tensor,
                               triplets: tuple[torch.Tensor, torch.Tensor], out: torch.Tensor,
                               triplet_block: int) -> None:
        """Adds ∂/∂(leg vectors) of every triplet's terms into ``out`` (3, Q · E, n_columns)
        by forward mode, ``triplet_block`` triplets at a time."""
        from torch.func import jvp

        n_el = self.n_elements
        all_first, all_second = triplets
        # Blocks of triplets bound the memory of the forward-mode passes (each holds
        # a few dozen (T, A) tensors): caching 32 water frames of 192 atoms, 16 at a
        # time, raised the peak RSS by 1.49 GB with all triplets in one block and by
        # 0.74 GB (0.29 GB of it the cache) in blocks of 2**15 (12.4 s → 10.2 s).
        for lo in range(0, all_first.shape[0], triplet_block):
            first, second = all_first[lo:lo + triplet_block], all_second[lo:lo + triplet_block]
            v1, v2 = vec.index_select(0, first), vec.index_select(0, second)
            # A triplet's terms sit in pair type (e(j), e(k)): in leg j's row they
            # belong to the block of k's element, and the other way round. Six
            # forward-mode passes (x, y, z of either leg) give every derivative.
            legs = ((first, neighbour_species.index_select(0, second)),
                    (second, neighbour_species.index_select(0, first)))
            for leg, (pair, other_element) in enumerate(legs):
                rows = pair * n_el + other_element
                for k in range(3):
                    tangent = torch.zeros_like(v1)
                    tangent[:, k] = 1.0
                    if leg == 0:
                        _, d = jvp(lambda a: self.triplet_values(a, v2), (v1,), (tangent,))
                    else:
                        _, d = jvp(lambda b: self.triplet_values(v1, b), (v2,), (tangent,))
                    out[k].index_add_(0, rows, d)

"""Angular symmetry functions summed over triplets in compiled loops (numba, CPU).

The torch path (:meth:`AngularSymmetryFunctions.triplet_sums <mlpot.descriptors.angular.AngularSymmetryFunctions.triplet_sums>`) builds per-triplet tensors for
every radial shape and angle power and sums them with batched matrix products. With long
angular cutoffs that is memory traffic, not arithmetic: n2p2's water potential (6.35 Å,
~5500 triplets per atom) moves tens of bytes per triplet and shape through memory several
times. Here one loop per centre walks its pairs of neighbours, and it computes only what
the centre needs:

- only the columns the centre's element uses in the triplet's neighbour-element pair type
  (an n2p2 potential defines a few per element pair, not the full grid), with only their
  radial shapes and angle powers;
- G4 triplets whose third side r_jk lies beyond every G4 cutoff of the pair type are
  skipped before any exponential (their terms and derivatives are exact zeros);
- cutoff factors of the legs once per pair; per triplet one exponential per radial shape,
  of −η times the summed squares of the sides (less their shift r_s), times one product
  of cutoff factors per distinct cutoff.

One kernel serves three modes: the sums (VALUES), the sums with their per-pair Jacobian
(JACOBIAN, the layout of :class:`~mlpot.descriptors.PairJacobian`, for the descriptor
cache of force training), and ∂E/∂r_pair from ∂E/∂sums (GRADIENT, the backward pass). The
backward recomputes the per-triplet quantities instead of storing them, so memory stays
O(pairs) whatever the number of triplets. Within a centre, triplets are evaluated in
blocks of 256 by loops that LLVM vectorises, with an inlined exp (libm's is a call that
stops vectorisation). Each centre owns its pairs (the pair list is sorted by centre), so
ranges of centres run in threads (``torch.get_num_threads()`` of them, the kernels release
the GIL) without races and without numba's own threading layer, which is neither fork-
nor thread-safe in every configuration.

Autograd: :func:`angular_sums` is a ``torch.autograd.Function`` of the pair vectors. Its
backward is the analytic kernel, unless a graph of the gradient itself is asked for
(``create_graph``, as in training on forces without the descriptor cache): then it
differentiates the torch implementation, so second derivatives stay exact.

All arithmetic is float64 (the result is cast back to the input dtype): sums over
thousands of triplets keep their precision, and the inlined exp is written for float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

__all__ = ["AngularPlan", "NUMBA_CUTOFF_CODES", "angular_jacobian", "angular_sums", "numba_available"]

#: cutoff function name → its code in the compiled kernels (empty without numba; see
#: :mod:`~mlpot.descriptors.scalar_math`).
NUMBA_CUTOFF_CODES: dict[str, int] = {}

try:  # numba is a dependency, but a broken install should degrade to the torch path
    import numba
    from numba import njit
except ImportError:  # pragma: no cover - exercised only without numba
    numba = None

if numba is not None:
    from .scalar_math import NUMBA_CUTOFF_CODES, _cutoffs, _exp, _expm1  # noqa: F401  (_expm1: tests)
    from .scalar_math import cache_with_dependencies

    def _jit(**options):
        """``njit(**options)`` with numba's on-disk cache keyed also on the code compiled in
        from scalar_math and the cutoff registry (see :mod:`~mlpot.descriptors.scalar_math`)."""
        def decorate(fn):
            return cache_with_dependencies(njit(**options)(fn))
        return decorate


def numba_available() -> bool:
    """Whether the compiled angular kernels can run here."""
    return numba is not None


if numba is not None:
    @_jit(nogil=True, error_model="numpy")
    def _pair_factors(vec, lo, hi, rc, code, alpha):
        """Pairs lo..hi−1: length (Q,), unit vector (Q, 3), f_c and df_c/dr at each of the
        C distinct cutoffs (C, Q)."""
        n_pairs, n_cut = hi - lo, rc.shape[0]
        dist = np.empty(n_pairs)
        unit = np.empty((n_pairs, 3))
        fc = np.empty((n_cut, n_pairs))
        dfc = np.empty((n_cut, n_pairs))
        for q in range(n_pairs):
            x, y, z = vec[lo + q, 0], vec[lo + q, 1], vec[lo + q, 2]
            r = math.sqrt(x * x + y * y + z * z)
            dist[q] = r
            inv = 1.0 / r if r > 0.0 else 0.0
            unit[q, 0], unit[q, 1], unit[q, 2] = x * inv, y * inv, z * inv
        for c in range(n_cut):
            _cutoffs(code, dist, n_pairs, rc[c], alpha, fc[c], dfc[c])
        return dist, unit, fc, dfc

    @_jit(nogil=True, error_model="numpy", inline="always")
    def _cartesian(d_r, d_u0, d_u1, d_u2, u, r):
        """∂/∂v of a function of r = |v| and û = v/r, from ∂/∂r and ∂/∂û (û held fixed):
        ∂/∂r û + (∂/∂û − (∂/∂û·û) û) / r (zero tangential part at r = 0)."""
        inv = 1.0 / r if r > 0.0 else 0.0
        along = d_u0 * u[0] + d_u1 * u[1] + d_u2 * u[2]
        return (d_r * u[0] + (d_u0 - along * u[0]) * inv, d_r * u[1] + (d_u1 - along * u[1]) * inv,
                d_r * u[2] + (d_u2 - along * u[2]) * inv)

    @_jit(nogil=True, error_model="numpy", inline="always")
    def _g4_slopes(ex, f, f_d1, f_d2, f_cos, neg_eta, e1, e2, e3, jk_d1, jk_d2, jk_cos):
        """∂R/∂r_ij, ∂R/∂r_ik, ∂R/∂cos θ of a G4 radial part R = exp(−η q) F, with
        q = e1² + e2² + e3² (e = side − r_s) and F's slopes f_d1, f_d2, f_cos:
        ∂q/∂x = 2 e_x + 2 e3 ∂r_jk/∂x."""
        w3 = 2.0 * neg_eta * e3
        return (ex * (f_d1 + f * (2.0 * neg_eta * e1 + w3 * jk_d1)),
                ex * (f_d2 + f * (2.0 * neg_eta * e2 + w3 * jk_d2)),
                ex * (f_cos + f * w3 * jk_cos))

    @_jit(nogil=True, error_model="numpy", inline="always")
    def _g5_slopes(ex, f, f_d1, f_d2, neg_eta, e1, e2):
        """∂R/∂r_ij, ∂R/∂r_ik of a G5 radial part R = exp(−η (e1² + e2²)) F."""
        return ex * (f_d1 + f * 2.0 * neg_eta * e1), ex * (f_d2 + f * 2.0 * neg_eta * e2)

    #: Triplets evaluated together: long enough for vector loops, short enough that the
    #: per-triplet rows stay in the L1/L2 cache.
    _BLOCK = 256
    VALUES, JACOBIAN, GRADIENT = 0, 1, 2

    @_jit(nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
    def _block(mode, m, p, ep, lo, blk_a, blk_b, blk_cos, blk_rsq, dist, unit, fc_pair, dfc_pair,
               neighbour_species, p_lo, row, grad_row, local, grad_dist, grad_unit, eta, r_s, rc_col, rc,
               is_g4, code, alpha, zeta, zeta_int, lam, prefactor, col_ptr, col_out, col_shape, col_angle,
               shape_ptr, shape_list, has_g4, w):
        """Evaluates m triplets of one centre and pair type p (blk_*: local pair indices of
        the two legs, cos θ, r_jk²) in loops over the triplets that LLVM vectorises.

        Radial part of shape s: R = exp(−η q) F with q the sum of (r − r_s)² over the legs
        (G5) or the three sides (G4), and F the product of their cutoff factors (one per
        distinct cutoff, not per shape): no per-shape data is gathered per triplet.

        mode VALUES adds the sums to row (n_pt, n_cols); JACOBIAN also adds each triplet's
        derivatives to local (pairs, E, n_cols, 4) in the basis (∂/∂r, ∂/∂û) of each leg;
        GRADIENT adds ∂E/∂r and ∂E/∂û of each leg to grad_dist, grad_unit from
        grad_row = ∂E/∂sums (n_pt, n_cols). ``w`` holds the work rows.
        """
        (d1, d2, ua, ub, r_jk, jk_d1, jk_d2, jk_cos, fc_jk, dfc_jk, f_legs, f_all, f_d1, f_d2, f_cos,
         f4_d1, f4_d2, expo, radial, radial_d1, radial_d2, radial_cos, angle, dangle, power, grad_radial, grad_angle,
         grad_d1, grad_d2, grad_cos) = w
        derivatives = mode != VALUES
        n_cut = rc.shape[0]
        g4 = has_g4[ep]
        # Gather first: loops with indexed loads do not vectorise, the arithmetic below does.
        for t in range(m):
            a, b = blk_a[t], blk_b[t]
            d1[t] = dist[a]
            d2[t] = dist[b]
        for c in range(n_cut):
            for t in range(m):
                f_legs[c, t] = fc_pair[c, blk_a[t]] * fc_pair[c, blk_b[t]]
        if derivatives:
            for t in range(m):
                a, b = blk_a[t], blk_b[t]
                for x in range(3):
                    ua[x, t] = unit[a, x]
                    ub[x, t] = unit[b, x]
            for c in range(n_cut):
                for t in range(m):
                    a, b = blk_a[t], blk_b[t]
                    f_d1[c, t] = dfc_pair[c, a] * fc_pair[c, b]
                    f_d2[c, t] = fc_pair[c, a] * dfc_pair[c, b]
        if g4:
            for t in range(m):
                rr = math.sqrt(max(blk_rsq[t], 0.0))
                r_jk[t] = rr
                inv = 1.0 / rr if rr > 0.0 else 0.0
                # r_jk² = r_ij² + r_ik² − 2 r_ij r_ik cos θ
                jk_d1[t] = (d1[t] - d2[t] * blk_cos[t]) * inv
                jk_d2[t] = (d2[t] - d1[t] * blk_cos[t]) * inv
                jk_cos[t] = -d1[t] * d2[t] * inv
            for c in range(n_cut):
                _cutoffs(code, r_jk, m, rc[c], alpha, fc_jk[c], dfc_jk[c])
                for t in range(m):
                    f_all[c, t] = f_legs[c, t] * fc_jk[c, t]
                if derivatives:  # of the three sides' product, from the legs' (f_d*)
                    for t in range(m):
                        fj, dfj, fl = fc_jk[c, t], dfc_jk[c, t], f_legs[c, t]
                        f_cos[c, t] = fl * dfj * jk_cos[t]
                        f4_d1[c, t] = f_d1[c, t] * fj + fl * dfj * jk_d1[t]
                        f4_d2[c, t] = f_d2[c, t] * fj + fl * dfj * jk_d2[t]
        s0, s1 = shape_ptr[ep], shape_ptr[ep + 1]
        for k in range(s0, s1):
            s, kk = shape_list[k], k - s0
            neg_eta, shift, c = -eta[s], r_s[s], rc_col[s]
            rad, ex_s = radial[kk], expo[kk]
            if is_g4[s]:
                ff = f_all[c]
                for t in range(m):
                    e1, e2, e3 = d1[t] - shift, d2[t] - shift, r_jk[t] - shift
                    ex_s[t] = _exp(neg_eta * (e1 * e1 + e2 * e2 + e3 * e3))
                    rad[t] = ex_s[t] * ff[t]
                if mode == JACOBIAN:  # (GRADIENT contracts the same slopes below, unstored)
                    fd1, fd2, fcos = f4_d1[c], f4_d2[c], f_cos[c]
                    for t in range(m):
                        radial_d1[kk, t], radial_d2[kk, t], radial_cos[kk, t] = _g4_slopes(
                            ex_s[t], ff[t], fd1[t], fd2[t], fcos[t], neg_eta, d1[t] - shift, d2[t] - shift,
                            r_jk[t] - shift, jk_d1[t], jk_d2[t], jk_cos[t])
            else:
                ff = f_legs[c]
                for t in range(m):
                    e1, e2 = d1[t] - shift, d2[t] - shift
                    ex_s[t] = _exp(neg_eta * (e1 * e1 + e2 * e2))
                    rad[t] = ex_s[t] * ff[t]
                if mode == JACOBIAN:
                    fd1, fd2 = f_d1[c], f_d2[c]
                    for t in range(m):
                        radial_d1[kk, t], radial_d2[kk, t] = _g5_slopes(
                            ex_s[t], ff[t], fd1[t], fd2[t], neg_eta, d1[t] - shift, d2[t] - shift)
                        radial_cos[kk, t] = 0.0
        for k in range(zeta.shape[0]):
            # 2^(1−ζ)(1 + λ cos)^ζ and its slope; the base is ≥ 0 but for rounding.
            lk, pk = lam[k], prefactor[k]
            if zeta_int[k] >= 1:
                for t in range(m):
                    power[t] = 1.0
                for _ in range(zeta_int[k] - 1):
                    for t in range(m):
                        power[t] *= max(1.0 + lk * blk_cos[t], 0.0)
            else:
                for t in range(m):
                    power[t] = max(1.0 + lk * blk_cos[t], 0.0) ** (zeta[k] - 1.0)
            slope = pk * zeta[k] * lk
            for t in range(m):
                base = max(1.0 + lk * blk_cos[t], 0.0)
                angle[k, t] = pk * power[t] * base
                dangle[k, t] = slope * power[t] if base > 0.0 else 0.0
        if mode == GRADIENT:
            for k in range(s1 - s0):
                for t in range(m):
                    grad_radial[k, t] = 0.0
            for k in range(zeta.shape[0]):
                for t in range(m):
                    grad_angle[k, t] = 0.0
        for c in range(col_ptr[ep], col_ptr[ep + 1]):
            kk, am, col = col_shape[c], col_angle[c], col_out[c]
            rad, ang = radial[kk], angle[am]
            if mode == GRADIENT:
                go = grad_row[p, col]
                gr, gan = grad_radial[kk], grad_angle[am]
                for t in range(m):
                    gr[t] += go * ang[t]
                    gan[t] += go * rad[t]
                continue
            total = 0.0
            for t in range(m):
                total += rad[t] * ang[t]
            row[p, col] += total
            if mode == JACOBIAN:
                dang, r1, r2, rcos = dangle[am], radial_d1[kk], radial_d2[kk], radial_cos[kk]
                for t in range(m):
                    gc = rad[t] * dang[t] + rcos[t] * ang[t]
                    a, b = blk_a[t], blk_b[t]
                    block = local[a - lo, neighbour_species[p_lo + b], col]
                    block[0] += r1[t] * ang[t]
                    block[1] += gc * ub[0, t]
                    block[2] += gc * ub[1, t]
                    block[3] += gc * ub[2, t]
                    block = local[b - lo, neighbour_species[p_lo + a], col]
                    block[0] += r2[t] * ang[t]
                    block[1] += gc * ua[0, t]
                    block[2] += gc * ua[1, t]
                    block[3] += gc * ua[2, t]
        if mode == GRADIENT:
            for t in range(m):
                grad_d1[t] = 0.0
                grad_d2[t] = 0.0
                grad_cos[t] = 0.0
            for k in range(zeta.shape[0]):
                for t in range(m):
                    grad_cos[t] += grad_angle[k, t] * dangle[k, t]
            for k in range(s0, s1):
                s, kk = shape_list[k], k - s0
                neg_eta, shift, c = -eta[s], r_s[s], rc_col[s]
                gr, ex_s = grad_radial[kk], expo[kk]
                if is_g4[s]:
                    ff, fd1, fd2, fcos = f_all[c], f4_d1[c], f4_d2[c], f_cos[c]
                    for t in range(m):
                        s_d1, s_d2, s_cos = _g4_slopes(
                            ex_s[t], ff[t], fd1[t], fd2[t], fcos[t], neg_eta, d1[t] - shift, d2[t] - shift,
                            r_jk[t] - shift, jk_d1[t], jk_d2[t], jk_cos[t])
                        grad_d1[t] += gr[t] * s_d1
                        grad_d2[t] += gr[t] * s_d2
                        grad_cos[t] += gr[t] * s_cos
                else:
                    ff, fd1, fd2 = f_legs[c], f_d1[c], f_d2[c]
                    for t in range(m):
                        s_d1, s_d2 = _g5_slopes(ex_s[t], ff[t], fd1[t], fd2[t], neg_eta, d1[t] - shift,
                                                d2[t] - shift)
                        grad_d1[t] += gr[t] * s_d1
                        grad_d2[t] += gr[t] * s_d2
            for t in range(m):
                a, b = blk_a[t], blk_b[t]
                grad_dist[a] += grad_d1[t]
                grad_dist[b] += grad_d2[t]
                for x in range(3):
                    grad_unit[a, x] += grad_cos[t] * ub[x, t]
                    grad_unit[b, x] += grad_cos[t] * ua[x, t]

    @_jit(nogil=True, error_model="numpy")
    def _kernel(mode, vec, grad_out, out, jac, grad_vec, atom_lo, atom_hi, offsets, centre_species,
                neighbour_species, pair_type, n_pair_types, eta, r_s, rc_col, rc, is_g4, code, alpha, zeta,
                zeta_int, lam, prefactor, col_ptr, col_out, col_shape, col_angle, shape_ptr, shape_list,
                skip_sq, has_g4):
        """The angular sums of centres atom_lo..atom_hi−1 (mode VALUES: added to out
        (N, n_pt, n_cols)), with their derivatives (JACOBIAN: also written to jac
        (Q, 3, E, n_cols), jac[q, x, e, c] = ∂G[i(q), pair type (e(q), e), c]/∂r_q,x), or
        the gradient (GRADIENT: ∂E/∂vec (Q, 3) into grad_vec from grad_out = ∂E/∂sums).

        A centre's pairs are taken in order of the neighbour's element, so each (e_j, e_k)
        block of triplets has one pair type: blocks whose pair type the centre's element
        does not use are skipped whole, and the others stream into a block buffer, keeping
        the triplets that can contribute without a branch per triplet (about half fail the
        r_jk test, unpredictably); full buffers are evaluated by :func:`_block`. Sums over a
        buffer may be reassociated (fastmath "reassoc"): rounding changes only.
        """
        p_lo, p_hi = offsets[atom_lo], offsets[atom_hi]
        dist, unit, fc_pair, dfc_pair = _pair_factors(vec, p_lo, p_hi, rc, code, alpha)
        n_el, n_cols = pair_type.shape[0], out.shape[2]
        n_cut, n_angles = rc.shape[0], zeta.shape[0]
        max_pairs, n_s = 1, 1
        for i in range(atom_lo, atom_hi):
            max_pairs = max(max_pairs, offsets[i + 1] - offsets[i])
        for ep in range(shape_ptr.shape[0] - 1):
            n_s = max(n_s, shape_ptr[ep + 1] - shape_ptr[ep])
        B = _BLOCK
        blk_a = np.empty(B, dtype=np.int64)
        blk_b = np.empty(B, dtype=np.int64)
        blk_cos = np.empty(B)
        blk_rsq = np.empty(B)
        w = (np.empty(B), np.empty(B), np.empty((3, B)), np.empty((3, B)), np.empty(B), np.empty(B),
             np.empty(B), np.empty(B), np.empty((n_cut, B)), np.empty((n_cut, B)), np.empty((n_cut, B)),
             np.empty((n_cut, B)), np.empty((n_cut, B)), np.empty((n_cut, B)), np.empty((n_cut, B)),
             np.empty((n_cut, B)), np.empty((n_cut, B)), np.empty((n_s, B)), np.empty((n_s, B)), np.empty((n_s, B)), np.empty((n_s, B)), np.empty((n_s, B)),
             np.empty((n_angles, B)), np.empty((n_angles, B)), np.empty(B), np.empty((n_s, B)),
             np.empty((n_angles, B)), np.empty(B), np.empty(B), np.empty(B))
        order = np.empty(max_pairs, dtype=np.int64)
        start = np.empty(n_el + 1, dtype=np.int64)
        # JACOBIAN: this centre's derivatives per pair in the basis (∂/∂r, ∂/∂û); every
        # triplet of a pair has the same centre, so the block is finished per centre.
        local = np.zeros((max_pairs if mode == JACOBIAN else 1, n_el, n_cols, 4))
        grad_dist = np.zeros(p_hi - p_lo if mode == GRADIENT else 0)
        grad_unit = np.zeros((p_hi - p_lo if mode == GRADIENT else 0, 3))
        dummy_row = np.zeros((1, 1))
        for i in range(atom_lo, atom_hi):
            first_ep = centre_species[i] * n_pair_types
            row = out[i] if mode != GRADIENT else dummy_row
            grad_row = grad_out[i] if mode == GRADIENT else dummy_row
            lo, hi = offsets[i] - p_lo, offsets[i + 1] - p_lo
            # Counting sort of the centre's pairs by the neighbour's element.
            for el in range(n_el + 1):
                start[el] = 0
            for a in range(lo, hi):
                start[neighbour_species[p_lo + a] + 1] += 1
            for el in range(n_el):
                start[el + 1] += start[el]
            for a in range(lo, hi):
                el = neighbour_species[p_lo + a]
                order[start[el]] = a
                start[el] += 1
            for el in range(n_el, 0, -1):
                start[el] = start[el - 1]
            start[0] = 0
            for ea in range(n_el):
                for eb in range(ea, n_el):
                    p = pair_type[ea, eb]
                    limit = skip_sq[first_ep + p]
                    if limit < 0.0:  # the centre's element has no term of this pair type
                        continue
                    n = 0
                    for ia in range(start[ea], start[ea + 1]):
                        a = order[ia]
                        xa, ya, za, d1 = unit[a, 0], unit[a, 1], unit[a, 2], dist[a]
                        for ib in range(ia + 1 if eb == ea else start[eb], start[eb + 1]):
                            b = order[ib]
                            cos = xa * unit[b, 0] + ya * unit[b, 1] + za * unit[b, 2]
                            db = dist[b]
                            r_sq = (d1 - db) * (d1 - db) + 2.0 * d1 * db * (1.0 - cos)
                            blk_a[n] = a
                            blk_b[n] = b
                            blk_cos[n] = cos
                            blk_rsq[n] = r_sq
                            n += r_sq < limit
                            if n == B:
                                _block(mode, n, p, first_ep + p, lo, blk_a, blk_b, blk_cos, blk_rsq, dist, unit,
                                       fc_pair, dfc_pair, neighbour_species, p_lo, row, grad_row, local,
                                       grad_dist, grad_unit, eta, r_s, rc_col, rc, is_g4, code, alpha, zeta,
                                       zeta_int, lam, prefactor, col_ptr, col_out, col_shape, col_angle,
                                       shape_ptr, shape_list, has_g4, w)
                                n = 0
                    if n:
                        _block(mode, n, p, first_ep + p, lo, blk_a, blk_b, blk_cos, blk_rsq, dist, unit,
                               fc_pair, dfc_pair, neighbour_species, p_lo, row, grad_row, local,
                               grad_dist, grad_unit, eta, r_s, rc_col, rc, is_g4, code, alpha, zeta,
                               zeta_int, lam, prefactor, col_ptr, col_out, col_shape, col_angle,
                               shape_ptr, shape_list, has_g4, w)
            if mode == JACOBIAN:
                # Cartesian, then clear the block.
                for a in range(lo, hi):
                    q = p_lo + a
                    for el in range(n_el):
                        for col in range(n_cols):
                            blk = local[a - lo, el, col]
                            jac[q, 0, el, col], jac[q, 1, el, col], jac[q, 2, el, col] = _cartesian(
                                blk[0], blk[1], blk[2], blk[3], unit[a], dist[a])
                            blk[0] = 0.0
                            blk[1] = 0.0
                            blk[2] = 0.0
                            blk[3] = 0.0
        if mode == GRADIENT:
            for q in range(p_hi - p_lo):
                gu = grad_unit[q]
                grad_vec[p_lo + q, 0], grad_vec[p_lo + q, 1], grad_vec[p_lo + q, 2] = _cartesian(
                    grad_dist[q], gu[0], gu[1], gu[2], unit[q], dist[q])


@dataclass(frozen=True)
class AngularPlan:
    """What the kernels compute, as flat arrays (built once per descriptor).

    Shapes s = 0..S−1 are the radial parts of the triplet terms: G5 legs
    exp(−η(r_ij−r_s)²)f_c(r_ij)·(same for r_ik), G4 the same times the factor of r_jk.
    Angle terms a = 0..A−1 are 2^(1−ζ)(1+λ cos θ)^ζ. Output column c of pair type p is
    shape ``col_shape`` × angle ``col_angle``; for each (centre element e, pair type p),
    ``ep = e · n_pair_types + p`` indexes CSR lists of the columns and shapes it uses.
    """

    n_pair_types: int
    n_cols: int
    pair_type: np.ndarray      # (E, E) int64
    eta: np.ndarray            # (S,) Å⁻²
    r_s: np.ndarray            # (S,) Å
    rc_col: np.ndarray         # (S,) int64 index into rc
    rc: np.ndarray             # (C,) Å, the distinct cutoffs
    is_g4: np.ndarray          # (S,) bool
    code: int                  # cutoff function, NUMBA_CUTOFF_CODES
    alpha: float               # inner-radius fraction
    zeta: np.ndarray           # (A,)
    zeta_int: np.ndarray       # (A,) int64 ζ where integer (≤ 64), else −1
    lam: np.ndarray            # (A,) ±1
    prefactor: np.ndarray      # (A,) 2^(1−ζ)
    col_ptr: np.ndarray        # (E·n_pt + 1,) CSR over ep of the used columns
    col_out: np.ndarray        # (n,) output column
    col_shape: np.ndarray      # (n,) position of its shape in the ep's shape list
    col_angle: np.ndarray      # (n,) angle term
    shape_ptr: np.ndarray      # (E·n_pt + 1,) CSR over ep of the used shapes
    shape_list: np.ndarray     # (m,) shape indices
    skip_sq: np.ndarray        # (E·n_pt,) r_jk² from which a triplet of ep contributes nothing
    has_g4: np.ndarray         # (E·n_pt,) bool

    @classmethod
    def build(cls, *, n_elements: int, pair_type: np.ndarray, shapes: list[tuple[str, float, float, float]],
              angles: list[tuple[float, float]], columns: list[tuple[int, int]],
              used: list[list[set[int]]], cutoff: str, alpha: float) -> "AngularPlan":
        """Args:
            n_elements: E.
            pair_type: (E, E) unordered neighbour-element pair → pair type.
            shapes: (kind "G4" | "G5", η, r_s, r_c) per shape.
            angles: (ζ, λ) per angle term.
            columns: (shape, angle) of each output column.
            used: ``used[e][p]``, the output columns element e uses in pair type p.
            cutoff: cutoff function name (a key of :data:`NUMBA_CUTOFF_CODES`).
            alpha: inner-radius fraction.
        """
        n_pt = int(pair_type.max()) + 1 if pair_type.size else 0
        cutoffs = sorted({rc for _, _, _, rc in shapes})
        col_ptr, col_out, col_shape, col_angle = [0], [], [], []
        shape_ptr, shape_list, skip_sq, has_g4 = [0], [], [], []
        for e in range(n_elements):
            for p in range(n_pt):
                cols = sorted(used[e][p])
                ep_shapes = sorted({columns[c][0] for c in cols})
                for c in cols:
                    col_out.append(c)
                    col_shape.append(ep_shapes.index(columns[c][0]))
                    col_angle.append(columns[c][1])
                col_ptr.append(len(col_out))
                shape_list.extend(ep_shapes)
                shape_ptr.append(len(shape_list))
                kinds = {shapes[s][0] for s in ep_shapes}
                if not cols:  # nothing to compute: every triplet fails r_jk² < −1
                    skip_sq.append(-1.0)
                elif kinds == {"G4"}:  # every term carries f_c(r_jk): zero from the largest cutoff on
                    skip_sq.append(max(shapes[s][3] for s in ep_shapes) ** 2)
                else:
                    skip_sq.append(math.inf)
                has_g4.append("G4" in kinds)
        i64 = dict(dtype=np.int64)
        return cls(
            n_pair_types=n_pt, n_cols=len(columns), pair_type=np.ascontiguousarray(pair_type, **i64),
            eta=np.array([s[1] for s in shapes], dtype=np.float64),
            r_s=np.array([s[2] for s in shapes], dtype=np.float64),
            rc_col=np.array([cutoffs.index(s[3]) for s in shapes], **i64),
            rc=np.array(cutoffs, dtype=np.float64),
            is_g4=np.array([s[0] == "G4" for s in shapes], dtype=np.bool_),
            code=NUMBA_CUTOFF_CODES[cutoff], alpha=float(alpha),
            zeta=np.array([z for z, _ in angles], dtype=np.float64),
            zeta_int=np.array([int(z) if float(z).is_integer() and z <= 64 else -1 for z, _ in angles], **i64),
            lam=np.array([lam for _, lam in angles], dtype=np.float64),
            prefactor=np.array([2.0 ** (1.0 - z) for z, _ in angles], dtype=np.float64),
            col_ptr=np.array(col_ptr, **i64), col_out=np.array(col_out, **i64),
            col_shape=np.array(col_shape, **i64), col_angle=np.array(col_angle, **i64),
            shape_ptr=np.array(shape_ptr, **i64), shape_list=np.array(shape_list, **i64),
            skip_sq=np.array(skip_sq, dtype=np.float64), has_g4=np.array(has_g4, dtype=np.bool_),
        )

    def _tables(self) -> tuple:
        return (self.pair_type, self.n_pair_types, self.eta, self.r_s, self.rc_col, self.rc, self.is_g4,
                self.code, self.alpha, self.zeta, self.zeta_int, self.lam, self.prefactor, self.col_ptr, self.col_out, self.col_shape, self.col_angle,
                self.shape_ptr, self.shape_list, self.skip_sq, self.has_g4)


def _as_numpy(t: torch.Tensor, dtype=torch.float64) -> np.ndarray:
    return t.detach().to(dtype=dtype).contiguous().numpy()


#: Triplets (pairs of neighbours) a thread takes at least: below that, starting threads
#: costs more than it saves.
_MIN_TRIPLETS_PER_THREAD = 20_000


def _atom_ranges(offsets: np.ndarray, n_threads: int) -> list[tuple[int, int]]:
    """Consecutive ranges of centres with about equal triplet counts, one per thread."""
    n_atoms = offsets.shape[0] - 1
    counts = np.diff(offsets)
    work = np.cumsum(counts * (counts - 1) // 2)
    total = int(work[-1]) if n_atoms else 0
    n_parts = max(1, min(n_threads, total // _MIN_TRIPLETS_PER_THREAD))
    if n_parts == 1:
        return [(0, n_atoms)]
    cuts = np.searchsorted(work, np.arange(1, n_parts) * (total / n_parts)).tolist()
    bounds = sorted({0, n_atoms, *cuts})
    return list(zip(bounds[:-1], bounds[1:]))


def _run(kernel, ranges: list[tuple[int, int]], *args) -> None:
    """``kernel(*head, lo, hi, *tail)`` for each range, in threads when there are several;
    ``args`` is (head, tail)."""
    head, tail = args
    if len(ranges) == 1:
        kernel(*head, *ranges[0], *tail)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(ranges)) as pool:
        for future in [pool.submit(kernel, *head, lo, hi, *tail) for lo, hi in ranges]:
            future.result()


def _prepare(vec: torch.Tensor, centre: torch.Tensor, centre_species: torch.Tensor,
             neighbour_species: torch.Tensor, n_atoms: int):
    """numpy inputs of the kernels and the ranges of centres for the threads."""
    if numba is None:
        raise RuntimeError("the compiled angular kernels need numba (pip install numba)")
    counts = torch.bincount(centre, minlength=n_atoms)
    offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    index = tuple(_as_numpy(t, torch.int64) for t in (offsets, centre_species, neighbour_species))
    return _as_numpy(vec), index, _atom_ranges(index[0], torch.get_num_threads())


def _evaluate(vec_np: np.ndarray, index: tuple, ranges: list, plan: "AngularPlan",
              with_jacobian: bool) -> tuple[np.ndarray, np.ndarray]:
    n_atoms, n_el = index[0].shape[0] - 1, plan.pair_type.shape[0]
    out = np.zeros((n_atoms, plan.n_pair_types, plan.n_cols))
    jac = np.empty((vec_np.shape[0] if with_jacobian else 0, 3, n_el, plan.n_cols))
    mode = JACOBIAN if with_jacobian else VALUES
    _run(_kernel, ranges, (mode, vec_np, out, out, jac, np.empty((0, 3))), (*index, *plan._tables()))
    return out, jac


def _gradient(vec_np: np.ndarray, grad_out: np.ndarray, index: tuple, ranges: list,
              plan: "AngularPlan") -> np.ndarray:
    grad = np.empty((vec_np.shape[0], 3))
    empty = np.empty((0, 1, 1))
    _run(_kernel, ranges, (GRADIENT, vec_np, grad_out, empty, np.empty((0, 3, 1, 1)), grad),
         (*index, *plan._tables()))
    return grad


class _AngularSums(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vec, centre, centre_species, neighbour_species, n_atoms, plan, fallback):
        vec_np, index, ranges = _prepare(vec, centre, centre_species, neighbour_species, n_atoms)
        out, _ = _evaluate(vec_np, index, ranges, plan, False)
        ctx.save_for_backward(vec)
        ctx.vec_np, ctx.index, ctx.ranges, ctx.plan, ctx.fallback = vec_np, index, ranges, plan, fallback
        return torch.from_numpy(out).to(vec.dtype).view(n_atoms * plan.n_pair_types, plan.n_cols)

    @staticmethod
    def backward(ctx, grad_out):
        (vec,) = ctx.saved_tensors
        if torch.is_grad_enabled():
            # A graph of this gradient is asked for (create_graph): differentiate the torch
            # implementation, whose own backward is differentiable.
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(ctx.fallback(vec), vec, grad_out, create_graph=True)
            return grad, None, None, None, None, None, None
        plan = ctx.plan
        go = _as_numpy(grad_out).reshape(ctx.index[0].shape[0] - 1, plan.n_pair_types, plan.n_cols)
        grad = _gradient(ctx.vec_np, go, ctx.index, ctx.ranges, plan)
        return torch.from_numpy(grad).to(vec.dtype), None, None, None, None, None, None


def angular_sums(vec: torch.Tensor, centre: torch.Tensor, centre_species: torch.Tensor,
                 neighbour_species: torch.Tensor, n_atoms: int, plan: AngularPlan,
                 fallback: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Σ over each centre's triplets of the angular terms, compiled; differentiable in ``vec``.

    Args:
        vec: (Q, 3) pair vectors r_ij, Å, sorted by centre (only pairs that can form
            triplets: inside the angular cutoff).
        centre: (Q,) long centre of each pair, non-decreasing.
        centre_species: (N,) long element of each atom.
        neighbour_species: (Q,) long element of each pair's neighbour.
        n_atoms: N.
        plan: the terms (:class:`AngularPlan`).
        fallback: the same sums as a torch function of ``vec`` (for double backward).

    Returns:
        (N · n_pair_types, n_cols) in ``vec.dtype``; columns no centre uses are zero.
    """
    return _AngularSums.apply(vec, centre, centre_species, neighbour_species, n_atoms, plan, fallback)


def angular_jacobian(vec: torch.Tensor, centre: torch.Tensor, centre_species: torch.Tensor,
                     neighbour_species: torch.Tensor, n_atoms: int, plan: AngularPlan,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The sums of :func:`angular_sums` and their derivatives with respect to ``vec``.

    Arguments as for :func:`angular_sums` (no graph is kept).

    Returns:
        ``(sums, jac)``: (N · n_pair_types, n_cols) and (Q, 3, E, n_cols) with
        jac[q, x, e, c] = ∂ sums[i(q), pair type (e(q), e), c] / ∂vec[q, x] (the layout of
        :attr:`PairJacobian.angular`), both in ``vec.dtype``.
    """
    vec_np, index, ranges = _prepare(vec, centre, centre_species, neighbour_species, n_atoms)
    out, jac = _evaluate(vec_np, index, ranges, plan, True)
    return (torch.from_numpy(out).to(vec.dtype).view(n_atoms * plan.n_pair_types, plan.n_cols),
            torch.from_numpy(jac).to(vec.dtype))

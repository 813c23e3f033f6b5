"""The potential: descriptors → scaling → per-element networks → energy, forces, stress.

E = Σ_i [e_ref(Z_i) + s · NN_{Z_i}(G̃_i)], with per-element reference energies e_ref fitted by
least squares on the training energies (so networks learn only the remainder), a global
energy scale s (eV) from the training forces, and G̃ the scaled descriptors. Forces are
F = −∂E/∂R and stress σ = (1/V) ∂E/∂ε (ASE convention, eV/Å³), both by autograd; the strain
ε acts on positions and cell together.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..descriptors import Descriptor, PairJacobian, SymmetryFunctions, SymmetryFunctionSpec
from ..neighbours import edge_vectors
from .elementwise import ElementNetworks
from .mlp import NetworkConfig, block_survival

__all__ = ["Potential", "auto_chunk_size"]


#: Work (pairs + triplets) per group of centres on the CPU, and its bounds on a GPU.
CPU_CHUNK = 2**19
GPU_CHUNK_RANGE = (2**19, 2**25)


def auto_chunk_size(device: torch.device | str, item_bytes: int, free_bytes: int | None = None,
                    fraction: float = 0.2) -> int:
    """Work per group of centres for :meth:`Potential.forward` (``chunk_size="auto"``).

    On the CPU, :data:`CPU_CHUNK` (groups that stay in cache were fastest there). On a GPU,
    the work that ``fraction`` of the free device memory holds at ``item_bytes`` per item,
    within :data:`GPU_CHUNK_RANGE`: the CPU's size would cut a 100,000-atom water box
    (~6·10⁸ triplets) into ~1,200 groups, each a Python iteration with its own launches
    and host synchronisations, where a GPU has room for a few dozen large ones.

    Args:
        device: where the forward runs.
        item_bytes: working memory per pair or triplet of the descriptor's torch path,
            bytes (:meth:`~mlpot.descriptors.Descriptor.work_item_bytes`).
        free_bytes: free device memory, bytes (default: asked of CUDA).
        fraction: share of the free memory one group may take.

    Returns:
        pairs + triplets per group.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return CPU_CHUNK
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(device)[0]
    lo, hi = GPU_CHUNK_RANGE
    return int(min(max(fraction * free_bytes // max(item_bytes, 1), lo), hi))


class Potential(nn.Module):
    """A Behler–Parrinello potential.

    Args:
        descriptor: a :class:`~mlpot.descriptors.Descriptor` of any registered kind, or a
            :class:`~mlpot.descriptors.SymmetryFunctionSpec` (symmetry functions).
        config: the per-element network architecture.
    """

    def __init__(self, descriptor: Descriptor | SymmetryFunctionSpec, config: NetworkConfig):
        super().__init__()
        if isinstance(descriptor, SymmetryFunctionSpec):
            descriptor = SymmetryFunctions(descriptor)
        if not isinstance(descriptor, Descriptor):
            raise TypeError(f"descriptor must be a mlpot Descriptor or a SymmetryFunctionSpec, "
                            f"got {type(descriptor).__name__}")
        self.config = config
        self.descriptor = descriptor
        self.networks = ElementNetworks(descriptor.elements, descriptor.n_features_per_element, config)
        self.register_buffer("reference_energies", torch.zeros(len(descriptor.elements), dtype=torch.float64))
        self.register_buffer("energy_scale", torch.ones((), dtype=torch.float64))

    @property
    def spec(self) -> SymmetryFunctionSpec:
        """The symmetry-function parameters (descriptors of kind ``symmetry_functions``)."""
        spec = getattr(self.descriptor, "spec", None)
        if spec is None:
            raise AttributeError(f"a {self.descriptor.kind!r} descriptor has no symmetry-function spec")
        return spec

    @property
    def elements(self) -> tuple[str, ...]:
        return self.descriptor.elements

    @property
    def dtype(self) -> torch.dtype:
        return next(self.networks.parameters()).dtype

    @property
    def cutoff(self) -> float:
        return self.descriptor.cutoff

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ------------------------------------------------------------------ data-derived set-up
    @torch.no_grad()
    def fit_to_data(self, batches: Sequence, scaling: str = "scale_center",
                    scaling_range: tuple[float, float] = (-1.0, 1.0)) -> dict:
        """Fit descriptor scaling, reference energies and energy scale on training batches.

        Reference energies: least squares of E_total ≈ Σ_e n_e e_ref(e) (minimum-norm when
        compositions are collinear). Energy scale: RMS of the reference force components,
        or, without forces, the standard deviation of the per-atom residual energy.

        Returns:
            a summary dict (reference energies per element, scale, residual RMSE per atom).
        """
        self.descriptor.fit_scaling(batches, scaling, *scaling_range)
        n_el = len(self.elements)
        counts, energies, n_atoms, forces = [], [], [], []
        for b in batches:
            t = b.targets
            species = self.descriptor.species(b.numbers)
            c = torch.zeros(b.n_systems, n_el, dtype=torch.float64, device=species.device)
            c.index_put_((b.system_idx, species), torch.ones_like(species, dtype=torch.float64), accumulate=True)
            keep = t.has_energy
            counts.append(c[keep].cpu())
            energies.append(t.energy[keep].double().cpu())
            n_atoms.append(b.n_atoms[keep].double().cpu())
            has_f = t.has_forces[b.system_idx]
            forces.append(t.forces[has_f].double().cpu())
        counts, energies, n_atoms = torch.cat(counts), torch.cat(energies), torch.cat(n_atoms)
        forces = torch.cat(forces)
        summary: dict = {}
        if len(energies):
            ref, *_ = np.linalg.lstsq(counts.numpy(), energies.numpy(), rcond=None)
            self.reference_energies.copy_(torch.as_tensor(ref))
            residual = (energies - counts @ torch.as_tensor(ref)) / n_atoms
            summary["residual_rmse_per_atom"] = float(residual.pow(2).mean().sqrt())
        if forces.numel():
            scale = float(forces.pow(2).mean().sqrt())
        elif len(energies) > 1:
            scale = float(residual.std())
        else:
            scale = 1.0
        self.energy_scale.fill_(scale if scale > 0 else 1.0)
        summary["reference_energies"] = dict(zip(self.elements, self.reference_energies.tolist()))
        summary["energy_scale"] = float(self.energy_scale)
        return summary

    def range_excess(self, descriptors: torch.Tensor, numbers: torch.Tensor) -> torch.Tensor:
        """How far each atom's raw descriptors lie beyond the training range (n2p2's check).

        Args:
            descriptors: (N, F) raw descriptors (``forward(..., descriptors=True)``).
            numbers: (N,) atomic numbers.

        Returns:
            (N,) float64 on the CPU: the largest excess over the atom's features beyond its
            element's training [min, max], in units of that feature's training range (0
            inside). A feature constant in training (range 0) counts as infinitely far once
            it differs by more than 1e-8; a model without a fitted scaler reports 0.
        """
        scaler = self.descriptor.scaler
        if scaler is None or descriptors.shape[1] == 0:
            return torch.zeros(len(descriptors), dtype=torch.float64)
        species = self.descriptor.species(numbers)
        g = descriptors.detach().double()
        lo, hi = scaler.train_min.double()[species], scaler.train_max.double()[species]
        beyond = torch.clamp(torch.maximum(lo - g, g - hi), min=0.0)
        span = hi - lo
        relative = torch.where(span > 0, beyond / span.clamp(min=torch.finfo(torch.float64).tiny),
                               torch.where(beyond > 1e-8, torch.inf, 0.0))
        return relative.amax(dim=1).cpu()

    # ------------------------------------------------------------------ evaluation
    def forward(self, batch, forces: bool = True, stress: bool = False,
                create_graph: bool | None = None,
                descriptors: bool = False, chunk_size: int | str | None = "auto") -> dict[str, torch.Tensor]:
        """Energies (and optionally forces and stress) of a batch.

        The pair list may extend beyond the cutoff (a Verlet skin): such pairs contribute
        exact zeros.

        Args:
            batch: an :class:`~mlpot.data.AtomsBatch` (neighbour pairs are built if absent).
            forces: compute forces.
            stress: compute stress (NaN for structures that are not periodic in 3D).
            create_graph: keep the graph of the derivatives (needed to train on forces);
                defaults to ``self.training``.
            descriptors: also return the raw descriptors (for extrapolation checks).
            chunk_size: without ``create_graph``, evaluate the centres in consecutive groups
                of about this much work (pairs + triplets), one graph at a time (same results
                to rounding). An atom's energy depends only on its own pairs, so each group's
                energies and their gradient are complete; memory then follows the group, not
                the structure. Pays for long angular cutoffs (n2p2's water potential, 1080
                atoms, ~6M triplets, float32, CPU: 4410 -> 1730 µs/atom and a quarter of
                the memory at 2**19; 1860 at 2**20, 2530 at 2**21); ``None``: one group;
                ``"auto"`` (default): :func:`auto_chunk_size`, 2**19 on the CPU and on a
                GPU what a fifth of its free memory holds (each group is a Python
                iteration with its own launches and host synchronisations, so a GPU wants
                few large groups). Training (``create_graph``) always evaluates one group, and so does
                the compiled triplet kernel (CPU, see ``SymmetryFunctions.kernel``), whose
                memory does not grow with the triplets.

        Returns:
            ``energy`` (B,) eV, ``atomic_energies`` (N,) eV, and if asked ``forces``
            (N, 3) eV/Å, ``stress`` (B, 3, 3) eV/Å³, ``descriptors`` (N, F) raw
            (unscaled) symmetry functions, detached.
        """
        if batch.edge_index is None or batch.cutoff is None or batch.cutoff < self.cutoff:
            batch = batch.with_neighbours(self.cutoff)
        if batch.dtype != self.dtype:  # compute in the model's precision
            batch = batch.to(dtype=self.dtype)
        create_graph = self.training if create_graph is None else create_graph
        need_grad = forces or stress
        leaf = batch.positions
        if need_grad and not leaf.requires_grad:
            leaf = leaf.detach().requires_grad_(True)
        positions, cell, strain = leaf, batch.cell, None
        if stress:
            # Homogeneous strain of atoms and cell together: r → r(1 + ε), h → h(1 + ε).
            strain = torch.zeros_like(cell).requires_grad_(True)
            positions = leaf + torch.einsum("ni,nij->nj", leaf, strain[batch.system_idx])
            cell = cell + cell @ strain
        with torch.set_grad_enabled(need_grad or torch.is_grad_enabled()):
            vec = edge_vectors(positions, cell, batch.system_idx, batch.edge_index, batch.edge_shift)
        # The compiled triplet kernel needs O(pairs) memory whatever the structure's size:
        # one group is then fastest (n2p2's water potential, 1080 atoms: 393 -> 325 µs/atom).
        if (chunk_size is not None and need_grad and not create_graph
                and not self.descriptor.uses_compiled_kernel(vec.device)):
            if chunk_size == "auto":
                chunk_size = auto_chunk_size(vec.device, self.descriptor.work_item_bytes(vec.dtype))
            groups = self._chunk_groups(batch, int(chunk_size), vec.detach())
            if len(groups[0]) > 2:
                return self._forward_chunked(batch, vec, leaf, strain, forces, descriptors, groups)
        with torch.set_grad_enabled(need_grad or torch.is_grad_enabled()):
            species = self.descriptor.species(batch.numbers)
            raw = self.descriptor.compute_from_vectors(vec, species, batch.edge_index, batch.positions.shape[0],
                                                       create_graph=need_grad and create_graph)
            atomic, energy = self._energies(raw, species, batch)
        out = {"energy": energy, "atomic_energies": atomic}
        if descriptors:
            out["descriptors"] = raw.detach()
        if not need_grad:
            return out
        return _add_derivatives(out, energy.sum(), None, (leaf, strain), batch, forces, create_graph)

    def _chunk_starts(self, batch, chunk_size: int, vec: torch.Tensor) -> list[int]:
        """First atom of each group of ~``chunk_size`` work (pairs + triplets), then N."""
        return self._chunk_groups(batch, chunk_size, vec)[0]

    @torch.no_grad()
    def _chunk_groups(self, batch, chunk_size: int, vec: torch.Tensor) -> tuple[list[int], list[int]]:
        """Groups of ~``chunk_size`` work (pairs + triplets): the first atom of each, then N,
        and the first pair of each, then P; ``vec`` (P, 3) are the pair vectors.

        Two host synchronisations (the bound below and one read of the result), whatever
        the number of groups: sizes are bounded on the host and trimmed after the read."""
        centre = batch.edge_index[0]
        n_atoms, n_pairs = batch.positions.shape[0], centre.shape[0]
        pairs = torch.bincount(centre, minlength=n_atoms)
        bound = int((pairs + pairs * (pairs - 1) // 2).sum())  # every pair angular: an upper bound
        if bound <= chunk_size:
            return [0, n_atoms], [0, n_pairs]
        inside = torch.linalg.vector_norm(vec, dim=1) < self.descriptor.angular_cutoff
        # scatter_add of the mask, not bincount(centre[inside]): a boolean index is a sync.
        angular = torch.zeros_like(pairs).scatter_add_(0, centre, inside.long())
        cumulative = torch.cumsum(pairs + angular * (angular - 1) // 2, 0)
        # Targets up to the bound; those past the true total land on N and are dropped below.
        targets = torch.arange(1, -(-bound // chunk_size), device=centre.device) * chunk_size
        ends = (torch.searchsorted(cumulative, targets) + 1).clamp(max=n_atoms)
        bounds = torch.cat([ends.new_zeros(1), ends])
        pair_start = torch.cat([torch.cumsum(pairs, 0) - pairs, pairs.new_full((1,), n_pairs)])
        atoms, first_pairs = torch.stack([bounds, pair_start.index_select(0, bounds)]).tolist()
        starts, firsts = [0], [0]
        for a, p in zip(atoms, first_pairs):  # non-decreasing: drop repeats
            if a > starts[-1]:
                starts.append(a)
                firsts.append(p)
        if starts[-1] < n_atoms:
            starts.append(n_atoms)
            firsts.append(n_pairs)
        return starts, firsts

    def _forward_chunked(self, batch, vec: torch.Tensor, leaf: torch.Tensor, strain: torch.Tensor | None,
                         forces: bool, descriptors: bool, groups: tuple[list[int], list[int]]
                         ) -> dict[str, torch.Tensor]:
        """:meth:`forward` without ``create_graph``, the centres in ``groups`` (first atoms and
        first pairs, from :meth:`_chunk_groups`).

        Each group's graph runs from its own slice of the pair vectors ``vec`` (P, 3) to its
        energies and is freed after its backward pass; ∂E/∂vec of all groups then goes back
        to the positions (and strain) in one pass through ``vec``'s graph.
        """
        n_atoms = leaf.shape[0]
        species = self.descriptor.species(batch.numbers)
        # Pairs are sorted by centre: each group's pairs are one contiguous slice.
        starts, first_pair = groups
        keep = self._depth_rows(batch, vec.dtype)  # one draw per structure for all its groups
        de_dvec = torch.zeros_like(vec)
        atomic_parts, raw_parts = [], []
        for k, (lo, hi) in enumerate(zip(starts[:-1], starts[1:])):
            a, b = first_pair[k], first_pair[k + 1]
            with torch.enable_grad():
                part = vec[a:b].detach().requires_grad_(True)
                raw = self.descriptor.compute_from_vectors(part, species, batch.edge_index[:, a:b], n_atoms)[lo:hi]
                atomic = self.atomic_energies(raw, species[lo:hi], None if keep is None else keep[lo:hi])
                (grad,) = torch.autograd.grad(atomic.sum(), part, allow_unused=True)
            if grad is not None:  # None: a group without pairs
                de_dvec[a:b] = grad
            atomic_parts.append(atomic.detach())
            if descriptors:
                raw_parts.append(raw.detach())
        atomic = torch.cat(atomic_parts)
        out = {"energy": atomic.new_zeros(batch.n_systems).index_add(0, batch.system_idx, atomic),
               "atomic_energies": atomic}
        if descriptors:
            out["descriptors"] = torch.cat(raw_parts)
        return _add_derivatives(out, vec, de_dvec, (leaf, strain), batch, forces, False)

    def forward_from_descriptors(self, batch, raw: torch.Tensor, jacobian: PairJacobian,
                                 forces: bool = True, stress: bool = False,
                                 create_graph: bool | None = None) -> dict[str, torch.Tensor]:
        """As :meth:`forward`, from precomputed raw descriptors and their pair Jacobian.

        The descriptors do not depend on the weights, so training can compute them and
        J = ∂G/∂r_pair once (:meth:`~mlpot.descriptors.SymmetryFunctions.jacobian`) and
        back-propagate only through the networks: with g_p = Σ_f ∂E/∂G_{i(p), f} J[p, f]
        (eV/Å), the force on atom a is Σ_{p: i(p)=a} g_p − Σ_{p: j(p)=a} g_p and the
        strain derivative is Σ_p r_p ⊗ g_p. Equal to :meth:`forward` to rounding.

        Args:
            batch: the structures, with the pairs the Jacobian was computed on.
            raw: (N, F) raw descriptors.
            jacobian: the :class:`~mlpot.descriptors.PairJacobian` of ``batch.edge_index``.
            forces, stress, create_graph: as for :meth:`forward`.
        """
        if batch.edge_index is None or jacobian.n_pairs != batch.edge_index.shape[1]:
            raise ValueError("the Jacobian must have one row per pair of the batch")
        create_graph = self.training if create_graph is None else create_graph
        need_grad = forces or stress
        raw = raw.to(self.dtype)
        if need_grad:
            raw = raw.detach().requires_grad_(True)
        with torch.set_grad_enabled(need_grad or torch.is_grad_enabled()):
            species = self.descriptor.species(batch.numbers)
            atomic, energy = self._energies(raw, species, batch)
        out = {"energy": energy, "atomic_energies": atomic}
        if not need_grad:
            return out
        (de_dg,) = torch.autograd.grad(energy.sum(), raw, create_graph=create_graph)
        with torch.set_grad_enabled(create_graph):
            g = self.descriptor.pair_gradients(de_dg, species, batch.edge_index, jacobian)
        centre, neighbour = batch.edge_index
        if forces:
            # r_p = R_j − R_i + shift: ∂E/∂R_j += g_p, ∂E/∂R_i −= g_p, and F = −∂E/∂R.
            f = torch.zeros_like(batch.positions, dtype=g.dtype)
            out["forces"] = f.index_add(0, centre, g).index_add(0, neighbour, -g)
        if stress:
            vec = edge_vectors(batch.positions, batch.cell, batch.system_idx, batch.edge_index,
                               batch.edge_shift).to(g.dtype)
            virial = g.new_zeros(batch.n_systems, 3, 3).index_add(
                0, batch.system_idx.index_select(0, centre), vec.unsqueeze(2) * g.unsqueeze(1))
            out["stress"] = stress_from_strain_derivative(virial, batch.cell, batch.pbc.all(dim=1))
        return out

    def _energies(self, raw: torch.Tensor, species: torch.Tensor, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) atomic and (B,) total energies, eV, from (N, F) raw descriptors."""
        atomic = self.atomic_energies(raw, species, self._depth_rows(batch, raw.dtype))
        energy = atomic.new_zeros(batch.n_systems).index_add(0, batch.system_idx, atomic)
        return atomic, energy

    def draw_depth_mask(self, n_systems: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
        """Stochastic depth: (B, n_blocks) 0/1, one draw per (structure, hidden block), block
        k kept with its survival probability (:func:`~mlpot.models.mlp.block_survival`);
        shared by the element networks (block k of every element's network is dropped
        for the whole structure together).

        ``None``, drawing nothing, in eval mode and when every survival probability is 1.
        The mask does not depend on positions: forces stay the exact gradient of the
        training energy of this draw.
        """
        if not self.training:
            return None
        survival = block_survival(self.config)
        if all(p >= 1.0 for p in survival):
            return None
        p = torch.tensor(survival, dtype=dtype, device=device)
        return torch.bernoulli(p.expand(n_systems, len(survival)))

    def _depth_rows(self, batch, dtype: torch.dtype) -> torch.Tensor | None:
        """(N, n_blocks): each atom's row of :meth:`draw_depth_mask` (its structure's draws)."""
        mask = self.draw_depth_mask(batch.n_systems, batch.system_idx.device, dtype)
        return None if mask is None else mask.index_select(0, batch.system_idx)

    def atomic_energies(self, raw: torch.Tensor, species: torch.Tensor,
                        keep: torch.Tensor | None = None) -> torch.Tensor:
        """(n,) atomic energies e_ref(Z_i) + s · NN_{Z_i}(G̃_i), eV, from (n, F) raw
        descriptors of atoms of ``species`` (n,), scaled to G̃ here.

        ``keep`` (n, n_blocks): each atom's stochastic-depth row (:meth:`draw_depth_mask`,
        training only; ``None`` in eval mode)."""
        return self.atomic_energies_from_features(self.descriptor.scale(raw, species), species, keep)

    def atomic_energies_from_features(self, features: torch.Tensor, species: torch.Tensor,
                                      keep: torch.Tensor | None = None) -> torch.Tensor:
        """(n,) atomic energies e_ref(Z_i) + s · NN_{Z_i}(G̃_i), eV, from (n, F) scaled
        descriptors G̃ (the networks' input): the energy formula, here only. ``keep`` as for
        :meth:`atomic_energies`."""
        dtype = features.dtype
        return (self.reference_energies.to(dtype)[species]
                + self.energy_scale.to(dtype) * self.networks(features, species, keep))


def _add_derivatives(out: dict, outputs: torch.Tensor, grad_outputs: torch.Tensor | None,
                     leaves: tuple[torch.Tensor, torch.Tensor | None], batch, forces: bool,
                     create_graph: bool) -> dict[str, torch.Tensor]:
    """Forces −∂E/∂R (N, 3) eV/Å and stress (B, 3, 3) eV/Å³ into ``out``, by one backward pass
    from ``outputs`` (the energy, or the pair vectors with ``grad_outputs`` = ∂E/∂vec) to the
    positions leaf and the strain (``None``: no stress)."""
    leaf, strain = leaves
    wrt = [leaf] + ([strain] if strain is not None else [])
    grads = torch.autograd.grad(outputs, wrt, grad_outputs=grad_outputs, create_graph=create_graph,
                                allow_unused=True)
    grads = [torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt)]
    if forces:
        out["forces"] = -grads[0]
    if strain is not None:
        out["stress"] = stress_from_strain_derivative(grads[1], batch.cell, batch.pbc.all(dim=1))
    return out


def stress_from_strain_derivative(strain_derivative: torch.Tensor, cell: torch.Tensor,
                                  periodic: torch.Tensor) -> torch.Tensor:
    """Stress σ = (1/V) ∂E/∂ε, symmetrised, eV/Å³ (ASE sign convention).

    Args:
        strain_derivative: (B, 3, 3) ∂E/∂ε, eV (the virial).
        cell: (B, 3, 3) unstrained lattice vectors as rows, Å.
        periodic: (B,) bool, periodic along all three axes.

    Returns:
        (B, 3, 3); NaN for structures that are not periodic in 3D (no volume). The function
        is TorchScript-compatible: the deployment export (:mod:`mlpot.io.export`) calls it.
    """
    periodic = periodic.view(-1, 1, 1)
    # Open structures have no volume: divide by 1 there (and mask below) so the double
    # backward of stress training never sees 0/0.
    volume = torch.linalg.det(cell).abs().view(-1, 1, 1).to(strain_derivative.dtype)
    volume = torch.where(periodic, volume, torch.ones_like(volume))
    sigma = strain_derivative / volume
    sigma = 0.5 * (sigma + sigma.transpose(1, 2))
    return torch.where(periodic, sigma, torch.full_like(sigma, float("nan")))

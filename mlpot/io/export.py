"""Deployment export: a TorchScript file that evaluates the potential with torch alone.

``export_model(model, "out.pt")`` writes one file that ``torch.jit.load`` reads without mlpot,
ASE or vesin installed::

    module = torch.jit.load("out.pt")
    out = module(positions, numbers, cell, pbc)   # (N, 3) Å, (N,) long, (3, 3) Å, (3,) bool
    out["energy"]           # () eV
    out["forces"]           # (N, 3) eV/Å
    out["stress"]           # (3, 3) eV/Å³, ASE sign convention; NaN unless periodic in 3D
    out["atomic_energies"]  # (N,) eV

LAMMPS (``pair_style mlpot``, mlpot/lammps/) calls another entry point: local and ghost atoms
and a neighbour list in, no cell (see :meth:`ExportedPotential.forward_lammps`)::

    out = module.forward_lammps(positions, species, edge_index, n_local)
    out["atomic_energies"]  # (n_local,) eV
    out["forces"]           # (N_all, 3) eV/Å, on local and ghost atoms
    out["virial"]           # (3, 3) eV, this rank's share of −V·σ

How it is built: the descriptor and networks (positions, species, cell and pair list →
atomic energies) are recorded with ``torch.jit.trace`` at a synthetic structure made here,
because :class:`~mlpot.descriptors.SymmetryFunctions` is not TorchScript-scriptable. The
wrapper around it, :class:`ExportedPotential`, is scripted: it checks the elements, builds the
pair list, applies the strain and takes forces and stress by autograd. The trace is then
evaluated at two other structures (another atom count, a periodic cell with images) and
compared with the Python model; a mismatch refuses the export.

A trace bakes in every Python-level branch taken at the example. The ones that matter:

- ``ElementNetworks.forward`` routes atoms by element counts read on the host; under a
  trace it takes a form without them, so the recorded graph runs every element's network
  (on zero rows if absent);
- the descriptor's angular kernel picks its summation layout from data (a padded layout
  sized by the longest row, a filter skipped when every pair is inside the angular cutoff);
  under ``torch.jit.is_tracing()`` it takes the layout whose shapes follow from tensors;
- tensors created inside the trace are placed on the device of the example, so the file
  runs on the device it was exported for (``device=``).
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
from torch import nn

from ..models.potential import stress_from_strain_derivative
from .files import atomic_path

__all__ = ["ExportedPotential", "export_model", "EXPORT_FORMAT"]

EXPORT_FORMAT = "mlpot-torchscript"
EXPORT_VERSION = 1
_EXTRA_FILE = "mlpot_export.json"


class _AtomicEnergies(nn.Module):
    """Atomic energies of one structure from raw tensors: the part that is traced.

    Args:
        model: a :class:`~mlpot.models.Potential` (copied by the caller, in eval mode).
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, positions: torch.Tensor, species: torch.Tensor, cell: torch.Tensor,
                edge_index: torch.Tensor, edge_shift: torch.Tensor) -> torch.Tensor:
        """positions (N, 3) Å, species (N,) element indices, cell (1, 3, 3) Å, edge_index
        (2, P), edge_shift (P, 3) → (N,) atomic energies, eV."""
        from ..neighbours import edge_vectors

        vec = edge_vectors(positions, cell, torch.zeros_like(species), edge_index, edge_shift)
        raw = self.model.descriptor.compute_from_vectors(vec, species, edge_index, positions.shape[0])
        return self.model.atomic_energies(raw, species)


class _PairAtomicEnergies(nn.Module):
    """Atomic energies of chosen atoms from pair vectors: the part traced for LAMMPS
    (:meth:`ExportedPotential.forward_lammps`).

    Taking the pair vectors themselves as input (not positions and image shifts) gives
    ∂E/∂r_ij per pair in one backward pass, from which forces on local and ghost atoms and
    the virial of this rank's centres both follow.

    Args:
        model: a :class:`~mlpot.models.Potential` (copied by the caller, in eval mode).
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, vec: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor,
                rows: torch.Tensor) -> torch.Tensor:
        """vec (P, 3) Å pair vectors r_ij, species (N,) element indices of all atoms,
        edge_index (2, P) sorted by centre, rows (M,) atoms whose energies are wanted →
        (M,) atomic energies, eV. The networks run on ``rows`` only (LAMMPS: the local
        atoms, not the ghosts)."""
        raw = self.model.descriptor.compute_from_vectors(vec, species, edge_index, species.shape[0])
        return self.model.atomic_energies(raw.index_select(0, rows), species.index_select(0, rows))


def _distinct(values: torch.Tensor) -> List[int]:
    """Sorted distinct entries of an integer tensor, for error messages (TorchScript has no
    ``Tensor.unique``)."""
    ordered: List[int] = torch.sort(values.flatten())[0].tolist()
    out: List[int] = []
    for v in ordered:
        if len(out) == 0 or out[-1] != v:
            out.append(v)
    return out


class ExportedPotential(nn.Module):
    """Energy, forces and stress of one structure; scripted and saved by :func:`export_model`.

    The pair list is built here by brute force: every pair of atoms with every lattice image
    that can lie within the cutoff, O(N² · images) time and, in blocks of centres, bounded
    memory. That suits a deployment module for small and medium structures (it needs no
    neighbour-list library); for large ones pass a list from elsewhere to
    :meth:`forward_with_pairs`.

    Args:
        core: the traced atomic-energy module (positions, species, cell (1, 3, 3),
            edge_index, edge_shift → (N,) eV).
        species_of_number: (119,) long, element index of each atomic number, −1 if unknown.
        elements: the model's element symbols, in species order.
        cutoff: the descriptor's largest cutoff, Å.
        dtype: the model's floating dtype (inputs are cast to it).
    """

    def __init__(self, core: nn.Module, species_of_number: torch.Tensor, elements: List[str],
                 cutoff: float, dtype: torch.dtype):
        super().__init__()
        self.core = core
        # The LAMMPS entry point's traced part (_PairAtomicEnergies); set by build_exported.
        self.pair_core: nn.Module = nn.Module()
        self.register_buffer("species_of_number", species_of_number.clone())
        self.elements = list(elements)
        self.cutoff = float(cutoff)
        self.dtype = dtype
        # Candidate (centre, neighbour, image) triples examined at once by the pair search:
        # bounds its memory to ~100 MiB whatever the structure.
        self.block_pairs = 1 << 22

    def forward(self, positions: torch.Tensor, numbers: torch.Tensor, cell: torch.Tensor,
                pbc: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Energy, forces and stress of one structure.

        Args:
            positions: (N, 3) Cartesian positions, Å.
            numbers: (N,) integer atomic numbers.
            cell: (3, 3) lattice vectors as rows, Å (ignored along non-periodic axes).
            pbc: (3,) bool periodicity.

        Returns:
            ``energy`` () eV, ``atomic_energies`` (N,) eV, ``forces`` (N, 3) eV/Å and
            ``stress`` (3, 3) eV/Å³ (NaN unless periodic along all three axes).
        """
        self._check_inputs(positions, numbers, cell, pbc)
        edge_index, edge_shift = self.neighbour_pairs(positions, cell, pbc)
        return self.forward_with_pairs(positions, numbers, cell, pbc, edge_index, edge_shift)

    @torch.jit.export
    def forward_with_pairs(self, positions: torch.Tensor, numbers: torch.Tensor, cell: torch.Tensor,
                           pbc: torch.Tensor, edge_index: torch.Tensor,
                           edge_shift: torch.Tensor) -> Dict[str, torch.Tensor]:
        """As :meth:`forward`, with a pair list from elsewhere.

        Args:
            positions, numbers, cell, pbc: as for :meth:`forward`.
            edge_index: (2, P) long (centre i, neighbour j), both directions of every pair,
                sorted by centre, every pair within the cutoff listed (pairs beyond it, e.g.
                a Verlet skin, contribute exact zeros).
            edge_shift: (P, 3) integer image shifts (any numeric dtype), such that
                r_ij = positions[j] − positions[i] + edge_shift @ cell.
        """
        self._check_inputs(positions, numbers, cell, pbc)
        species = self._species(numbers)
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError("edge_index must have shape (2, P)")
        if edge_shift.dim() != 2 or edge_shift.shape[1] != 3 or edge_shift.shape[0] != edge_index.shape[1]:
            raise ValueError("edge_shift must have shape (P, 3) with P = edge_index.shape[1]")
        if edge_index.shape[1] > 1 and bool((edge_index[0, 1:] < edge_index[0, :-1]).any()):
            # Triplets are enumerated per run of one centre: unsorted pairs would give wrong
            # angular terms without any other error.
            raise ValueError("edge_index must be sorted by centre (edge_index[0] non-decreasing)")
        # Forces need autograd even when called under torch.no_grad(); TorchScript has no
        # enable_grad() context, so the mode is set and restored by hand (inputs are
        # validated above, so nothing in between is expected to raise).
        grad_was_enabled = torch.is_grad_enabled()
        torch.set_grad_enabled(True)
        leaf = positions.detach().to(self.dtype).requires_grad_(True)
        h = cell.detach().to(self.dtype)
        # Homogeneous strain of atoms and cell together, r → r(1 + ε), h → h(1 + ε):
        # σ = (1/V) ∂E/∂ε (ASE convention), as in mlpot.models.Potential.
        strain = torch.zeros(3, 3, dtype=self.dtype, device=positions.device).requires_grad_(True)
        strained = leaf + leaf @ strain
        h = h + h @ strain
        atomic = self.core(strained, species, h.unsqueeze(0), edge_index.long(), edge_shift.to(self.dtype))
        energy = atomic.sum()
        grads = torch.autograd.grad([energy], [leaf, strain], allow_unused=True)
        torch.set_grad_enabled(grad_was_enabled)
        g_pos, g_strain = grads[0], grads[1]
        forces = torch.zeros_like(leaf) if g_pos is None else -g_pos
        virial = torch.zeros(3, 3, dtype=self.dtype, device=positions.device) if g_strain is None else g_strain
        stress = stress_from_strain_derivative(virial.unsqueeze(0), cell.to(self.dtype).unsqueeze(0),
                                               pbc.to(torch.bool).all().view(1))[0]
        return {"energy": energy.detach(), "atomic_energies": atomic.detach(),
                "forces": forces.detach(), "stress": stress.detach()}

    @torch.jit.export
    def forward_lammps(self, positions: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor,
                       n_local: int) -> Dict[str, torch.Tensor]:
        """Energies, forces and virial of one LAMMPS rank's atoms: the entry point of
        ``pair_style mlpot`` (mlpot/lammps/pair_mlpot.cpp).

        LAMMPS passes no cell and no image shifts: periodic images and atoms of other ranks
        are ghost atoms with coordinates of their own, so r_ij = positions[j] − positions[i].
        Only local atoms are centres; their energy E_loc = Σ_{i < n_local} e_i depends on
        ghost positions too, and the forces on ghosts are summed onto their owners by LAMMPS
        (reverse communication).

        Args:
            positions: (N_all, 3) Å, the n_local local atoms first, then the ghosts. Any
                floating dtype: differences are taken in it (float64 keeps a float32 model's
                pair vectors exact far from the origin), then cast to the model's dtype.
            species: (N_all,) long element indices, in the order of ``self.elements``.
            edge_index: (2, P) long pairs i → j with centre i < n_local and any j, sorted by
                centre, every neighbour within the cutoff listed (pairs beyond it, e.g. a
                Verlet skin, contribute exact zeros).
            n_local: number of local atoms.

        Returns:
            ``atomic_energies`` (n_local,) eV; ``forces`` (N_all, 3) eV/Å, −∂E_loc/∂R on local
            and ghost atoms; ``virial`` (3, 3) eV, W = −Σ_p r_p ⊗ ∂E_loc/∂r_p (= Σ_k R_k ⊗ F_k;
            summed over ranks it is −V·σ of the whole periodic system); ``pair_gradients``
            (P, 3) eV/Å, ∂E_loc/∂r_p (F_i += g_p, F_j −= g_p), for per-atom virials.
        """
        n_all = positions.shape[0]
        self._check_lammps_inputs(positions, species, edge_index, n_local)
        dtype, device = self.dtype, positions.device
        if n_local == 0:  # a rank without atoms (vacuum in its domain)
            return {"atomic_energies": torch.zeros(0, dtype=dtype, device=device),
                    "forces": torch.zeros(n_all, 3, dtype=dtype, device=device),
                    "virial": torch.zeros(3, 3, dtype=dtype, device=device),
                    "pair_gradients": torch.zeros(edge_index.shape[1], 3, dtype=dtype, device=device)}
        centre, neighbour = edge_index[0], edge_index[1]
        pos = positions.detach()
        vec = (pos.index_select(0, neighbour) - pos.index_select(0, centre)).to(dtype)
        rows = torch.arange(n_local, device=device)
        # As in forward_with_pairs: autograd even under no_grad, mode restored by hand.
        grad_was_enabled = torch.is_grad_enabled()
        torch.set_grad_enabled(True)
        vec.requires_grad_(True)
        atomic = self.pair_core(vec, species, edge_index, rows)
        grads = torch.autograd.grad([atomic.sum()], [vec], allow_unused=True)
        torch.set_grad_enabled(grad_was_enabled)
        g = grads[0]
        g = torch.zeros_like(vec) if g is None else g
        vec = vec.detach()
        forces = torch.zeros(n_all, 3, dtype=dtype, device=device)
        forces.index_add_(0, centre, g)
        forces.index_add_(0, neighbour, -g)
        return {"atomic_energies": atomic.detach(), "forces": forces,
                "virial": -(vec.t() @ g), "pair_gradients": g}

    def _check_lammps_inputs(self, positions: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor,
                             n_local: int) -> None:
        """Shape and range checks of :meth:`forward_lammps`; a wrong list would otherwise give
        wrong numbers, not an error."""
        n_all = positions.shape[0]
        if positions.dim() != 2 or positions.shape[1] != 3:
            raise ValueError("positions must have shape (N_all, 3), got " + str(positions.shape))
        if species.dim() != 1 or species.shape[0] != n_all:
            raise ValueError("species must have shape (N_all,) with N_all = " + str(n_all))
        if n_local < 0 or n_local > n_all:
            raise ValueError("n_local must be in 0.." + str(n_all) + ", got " + str(n_local))
        if n_all > 0 and (int(species.min()) < 0 or int(species.max()) >= len(self.elements)):
            raise ValueError("species indices must be in 0.." + str(len(self.elements) - 1))
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError("edge_index must have shape (2, P)")
        if edge_index.shape[1] > 0:
            if bool((edge_index[0, 1:] < edge_index[0, :-1]).any()):
                raise ValueError("edge_index must be sorted by centre (edge_index[0] non-decreasing)")
            if int(edge_index[0, -1]) >= n_local or int(edge_index.min()) < 0 or int(edge_index[1].max()) >= n_all:
                raise ValueError("edge_index: centres must be local atoms (< n_local), neighbours < N_all")

    @torch.jit.export
    def neighbour_pairs(self, positions: torch.Tensor, cell: torch.Tensor,
                        pbc: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """All pairs within the cutoff, with lattice images, by brute force (float64).

        Atoms are first wrapped into the cell along periodic axes (fractional coordinates
        through the pseudo-inverse of the periodic lattice vectors, so partly periodic cells
        work); an image n along axis k can then hold a neighbour only if
        |n| ≤ ⌈r_c / d_k⌉, with d_k the spacing of the lattice planes normal to axis k.

        Args:
            positions: (N, 3) Å; cell: (3, 3) Å; pbc: (3,) bool.

        Returns:
            edge_index (2, P) long sorted by centre, both directions of every pair;
            edge_shift (P, 3) integer shifts in float64 with
            r_ij = positions[j] − positions[i] + edge_shift @ cell.
        """
        device = positions.device
        pos = positions.detach().to(torch.float64)
        h = cell.detach().to(torch.float64)
        periodic = pbc.to(torch.bool)
        n_atoms = pos.shape[0]
        reach = torch.zeros(3, dtype=torch.long, device=device)
        wrap = torch.zeros(n_atoms, 3, dtype=torch.float64, device=device)
        if bool(periodic.any()):
            rows = h[periodic]  # (k, 3) periodic lattice vectors
            if int(torch.linalg.matrix_rank(rows)) < rows.shape[0]:
                raise ValueError("the periodic lattice vectors of the cell are zero or linearly dependent")
            inverse = torch.linalg.pinv(rows)  # (3, k): fractional coordinates = r @ inverse
            wrap[:, periodic] = -torch.floor(pos @ inverse)
            # |column k of the pseudo-inverse| = 1 / d_k.
            reach[periodic] = torch.ceil(self.cutoff * torch.linalg.vector_norm(inverse, dim=0)).long()
        wrapped = pos + wrap @ h
        ranges = [torch.arange(-int(reach[k]), int(reach[k]) + 1, device=device) for k in range(3)]
        images = torch.cartesian_prod(ranges[0], ranges[1], ranges[2]).to(torch.float64)  # (M, 3)
        offsets = images @ h  # (M, 3) Å
        is_origin = (images == 0).all(dim=1)  # (M,)
        n_images = images.shape[0]
        block = max(1, self.block_pairs // max(1, n_atoms * n_images))
        atom_index = torch.arange(n_atoms, device=device)
        centres: List[torch.Tensor] = []
        neighbours: List[torch.Tensor] = []
        image_index: List[torch.Tensor] = []
        for lo in range(0, n_atoms, block):
            hi = min(n_atoms, lo + block)
            # (b, N, M, 3) vectors from centre i to image m of atom j.
            vec = (wrapped.unsqueeze(0) - wrapped[lo:hi].unsqueeze(1)).unsqueeze(2) + offsets.view(1, 1, -1, 3)
            within = torch.linalg.vector_norm(vec, dim=3) < self.cutoff
            itself = (atom_index[lo:hi].view(-1, 1, 1) == atom_index.view(1, -1, 1)) & is_origin.view(1, 1, -1)
            found = torch.nonzero(within & ~itself)  # lexicographic: sorted by centre
            centres.append(found[:, 0] + lo)
            neighbours.append(found[:, 1])
            image_index.append(found[:, 2])
        if len(centres) == 0:  # no atoms
            empty = torch.zeros(0, dtype=torch.long, device=device)
            return torch.stack([empty, empty]), torch.zeros(0, 3, dtype=torch.float64, device=device)
        i, j, m = torch.cat(centres), torch.cat(neighbours), torch.cat(image_index)
        # Shift relative to the unwrapped positions: image m plus the two wrapping shifts.
        shift = images.index_select(0, m) + wrap.index_select(0, j) - wrap.index_select(0, i)
        return torch.stack([i, j]), shift

    def _species(self, numbers: torch.Tensor) -> torch.Tensor:
        """(N,) element indices of atomic numbers; a clear error for an unknown element."""
        numbers = numbers.long()
        if numbers.numel() > 0 and (int(numbers.min()) < 1 or int(numbers.max()) > 118):
            raise ValueError("atomic numbers must be in 1..118, got " + str(_distinct(numbers)))
        species = self.species_of_number.index_select(0, numbers)
        unknown = species < 0
        if bool(unknown.any()):
            raise ValueError("atomic number(s) " + str(_distinct(numbers[unknown]))
                             + " not known to this model (elements " + ", ".join(self.elements) + ")")
        return species

    def _check_inputs(self, positions: torch.Tensor, numbers: torch.Tensor, cell: torch.Tensor,
                      pbc: torch.Tensor) -> None:
        if positions.dim() != 2 or positions.shape[1] != 3:
            raise ValueError("positions must have shape (N, 3), got " + str(positions.shape))
        if numbers.dim() != 1 or numbers.shape[0] != positions.shape[0]:
            raise ValueError("numbers must have shape (N,) with N = " + str(positions.shape[0])
                             + ", got " + str(numbers.shape))
        if cell.dim() != 2 or cell.shape[0] != 3 or cell.shape[1] != 3:
            raise ValueError("cell must have shape (3, 3), got " + str(cell.shape))
        if pbc.dim() != 1 or pbc.shape[0] != 3:
            raise ValueError("pbc must have shape (3,), got " + str(pbc.shape))


def _synthetic_structure(elements: list[str], spacing: float, far: float | None, per_element: int,
                         seed: int, cell: np.ndarray | None = None):
    """Atoms of every element on a jittered grid (an ``ase.Atoms``); with ``far``, one more
    atom at that distance from the first (a pair outside the angular cutoff)."""
    from ase import Atoms

    rng = np.random.default_rng(seed)
    n = per_element * len(elements)
    side = int(np.ceil(n ** (1 / 3)))
    grid = np.array([(a, b, c) for a in range(side) for b in range(side) for c in range(side)][:n], float)
    positions = spacing * (grid + rng.uniform(-0.15, 0.15, size=grid.shape))
    symbols = [elements[k % len(elements)] for k in range(n)]
    if far is not None:
        positions = np.vstack([positions, positions[0] - [far, 0.0, 0.0]])
        symbols.append(elements[0])
    if cell is None:
        return Atoms(symbols, positions=positions)
    return Atoms(symbols, positions=positions, cell=cell, pbc=True)


def _trace_examples(model) -> tuple[list, list]:
    """The structure to trace at and two structures to check the trace against."""
    descriptor = model.descriptor
    elements = list(model.elements)
    cutoff, angular = float(descriptor.cutoff), float(descriptor.angular_cutoff)
    short = min(cutoff, angular) if angular > 0 else cutoff
    # A pair between the angular cutoff and the cutoff exercises the angular pair filter.
    far = 0.5 * (angular + cutoff) if 0 < angular < cutoff else None
    example = _synthetic_structure(elements, 0.45 * short, far, 2, seed=0)
    other = _synthetic_structure(elements, 0.4 * short, None, 3, seed=1)
    periodic = _synthetic_structure(elements, 0.5 * short, None, 1, seed=2,
                                    cell=np.diag([0.9, 1.0, 1.1]) * 0.6 * cutoff + 0.05 * cutoff)
    return example, [other, periodic]


def _tensors(atoms, dtype: torch.dtype, device: torch.device):
    return (torch.as_tensor(atoms.positions, dtype=dtype, device=device),
            torch.as_tensor(atoms.numbers, dtype=torch.long, device=device),
            torch.as_tensor(atoms.cell.array, dtype=dtype, device=device),
            torch.as_tensor(atoms.pbc, dtype=torch.bool, device=device))


def build_exported(model, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """Trace and script ``model`` (a :class:`~mlpot.models.Potential`), check it, return it.

    Raises:
        ValueError: if the exported module disagrees with the Python model on the check
            structures (a trace that does not generalise).
    """
    device = torch.device(device)
    model = copy.deepcopy(model).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    dtype = model.dtype
    example, checks = _trace_examples(model)
    wrapper = ExportedPotential(nn.Module(), model.descriptor.species_of_number.cpu(), list(model.elements),
                                model.cutoff, dtype).to(device)
    positions, numbers, cell, pbc = _tensors(example, dtype, device)
    edge_index, edge_shift = wrapper.neighbour_pairs(positions, cell, pbc)
    species = model.descriptor.species(numbers)
    inputs = (positions, species, cell.unsqueeze(0), edge_index, edge_shift.to(dtype))
    with warnings.catch_warnings():
        # The tracer warns about every Python-level branch; the ones that matter are
        # handled by the choice of example (module docstring) and by the checks below.
        warnings.simplefilter("ignore")
        core = torch.jit.trace(_AtomicEnergies(model), inputs, check_trace=False)
        wrapper.core = core
        wrapper.pair_core = torch.jit.trace(_PairAtomicEnergies(model), _lammps_inputs(wrapper, example, model),
                                            check_trace=False)
        scripted = torch.jit.script(wrapper)
    for k, atoms in enumerate(checks):
        _compare(scripted, model, atoms, dtype, device, f"check structure {k + 1} ({len(atoms)} atoms)")
        _compare_lammps(scripted, model, atoms, dtype, device, f"check structure {k + 1} ({len(atoms)} atoms)")
    return scripted


def _lammps_inputs(wrapper: ExportedPotential, atoms, model) -> tuple:
    """Inputs of :class:`_PairAtomicEnergies` at the trace example, shaped like a LAMMPS rank:
    its last two atoms play ghosts (neighbours, not centres), so that the recorded graph
    computes descriptors for all atoms and runs the networks on the local ones only."""
    device = wrapper.species_of_number.device
    positions, numbers, cell, pbc = _tensors(atoms, model.dtype, device)
    edge_index, _ = wrapper.neighbour_pairs(positions, cell, pbc)  # an open structure: no shifts
    n_local = len(atoms) - 2
    edge_index = edge_index[:, edge_index[0] < n_local]
    vec = positions.index_select(0, edge_index[1]) - positions.index_select(0, edge_index[0])
    return vec, model.descriptor.species(numbers), edge_index, torch.arange(n_local, device=device)


def _compare_lammps(scripted, model, atoms, dtype, device, what: str) -> None:
    """Raise ValueError unless ``forward_lammps`` on ``atoms`` with explicit ghost atoms, ghost
    forces folded onto their owners, gives the Python model's energy, forces and −V·stress."""
    from ..data import collate
    from ..lammps.ghosts import with_ghosts

    ghosted = with_ghosts(atoms.positions, atoms.cell.array, atoms.pbc, model.cutoff)
    species = model.descriptor.species(torch.as_tensor(atoms.numbers[ghosted.owner], device=device))
    out = scripted.forward_lammps(torch.as_tensor(ghosted.positions, dtype=torch.float64, device=device), species,
                                  torch.as_tensor(ghosted.edge_index, device=device), ghosted.n_local)
    batch = collate([atoms], cutoff=model.cutoff, dtype=dtype, device=device, labels=False)
    periodic = bool(atoms.pbc.all())
    ref = model(batch, forces=True, stress=periodic)
    forces = torch.as_tensor(ghosted.fold(out["forces"].cpu().numpy()), device=device)
    pairs = [("energy", out["atomic_energies"].sum(), ref["energy"][0].detach()), ("forces", forces, ref["forces"])]
    if periodic:
        pairs.append(("virial", out["virial"], -abs(atoms.get_volume()) * ref["stress"][0]))
    tol = 1e-8 if dtype == torch.float64 else 1e-3
    for name, got, want in pairs:
        scale = float(want.abs().max()) + 1.0
        err = float((got.to(want.dtype) - want).abs().max())
        if not err <= tol * scale:
            raise ValueError(f"export failed its self-check: the LAMMPS entry point's {name} on {what} "
                             f"differs from the Python model by {err:.3g} (tolerance {tol * scale:.3g})")


def _compare(scripted, model, atoms, dtype, device, what: str) -> None:
    """Raise ValueError unless the exported module matches the Python model on ``atoms``."""
    from ..data import collate

    out = scripted(*_tensors(atoms, dtype, device))
    batch = collate([atoms], cutoff=model.cutoff, dtype=dtype, device=device, labels=False)
    ref = model(batch, forces=True, stress=bool(atoms.pbc.all()))
    tol = 1e-8 if dtype == torch.float64 else 1e-3
    pairs = [("energy", out["energy"], ref["energy"][0].detach()), ("forces", out["forces"], ref["forces"])]
    if atoms.pbc.all():
        pairs.append(("stress", out["stress"], ref["stress"][0]))
    for name, got, want in pairs:
        scale = float(want.abs().max()) + 1.0
        err = float((got - want).abs().max())
        if not err <= tol * scale:
            raise ValueError(f"export failed its self-check: {name} on {what} differs from the Python "
                             f"model by {err:.3g} (tolerance {tol * scale:.3g}); the traced graph does "
                             "not generalise")


def export_model(model, path: str | os.PathLike, device: str | torch.device = "cpu",
                 metadata: dict | None = None) -> Path:
    """Write ``model`` as a TorchScript file that loads with plain ``torch.jit.load``.

    Args:
        model: a :class:`~mlpot.models.Potential` (its dtype is kept).
        path: output file, e.g. ``model-deploy.pt``.
        device: the device the module will run on (``"cpu"``, ``"cuda"``).
        metadata: stored as JSON in the archive's ``mlpot_export.json`` (beside the format
            name, elements, cutoff, units and dtype).

    Returns:
        the path written.
    """
    from .model_file import UNITS

    scripted = build_exported(model, device)
    info = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "elements": list(model.elements),
            "cutoff": float(model.cutoff), "dtype": str(model.dtype).replace("torch.", ""),
            "device": str(torch.device(device)), "units": dict(UNITS), "metadata": dict(metadata or {})}
    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # torch 2.13 marks TorchScript deprecated in favour of torch.export; the pair and
        # triplet counts here are data-dependent sizes, which TorchScript handles as is.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(scripted, str(tmp), _extra_files={_EXTRA_FILE: json.dumps(info, indent=1)})
    return path

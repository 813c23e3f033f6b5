"""Import: an n2p2 potential folder → a :class:`~mlpot.models.Potential` (eV, Å), in named
steps (input.nn, symmetry functions, network, scaling, weights, energies)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from ase.data import atomic_numbers

from .common import N2P2Error
from .parse import InputNN, parse_input_nn, read_scaling, read_weights
from .symmetry import symmetry_spec

if TYPE_CHECKING:
    from ...descriptors.scaling import FeatureScaler
    from ...models import NetworkConfig, Potential

__all__ = ["read_potential"]


def read_potential(folder: str | Path, units: str | tuple[float, float] = "auto",
                   dtype: torch.dtype = torch.float64) -> Potential:
    """Read an n2p2 potential folder into a :class:`~mlpot.models.Potential` (eV, Å).

    Args:
        folder: holds ``input.nn``, ``scaling.data`` and ``weights.XXX.data`` (XXX = atomic
            number, three digits).
        units: the units of the files (see the module docstring); ``"auto"`` reads the
            ``# Length unit : ...`` / ``# Energy unit : ...`` comments of input.nn.
        dtype: floating dtype of the model.

    Returns:
        The potential in eval mode; ``model.metadata["n2p2"]`` keeps the normalisation
        keywords and units so that :func:`write_potential` can reproduce the files.

    Raises:
        FileNotFoundError: a file is missing.
        N2P2Error: a malformed file (naming the file and line), or a keyword mlpot cannot
            represent (naming the keyword and its line).
    """
    from ...models import Potential

    folder = Path(folder)
    nn_input = parse_input_nn(folder / "input.nn", units)
    spec, perm = symmetry_spec(nn_input)
    model = Potential(spec, _network_config(nn_input)).to(dtype)
    model.descriptor.scaler = _scaler(folder / "scaling.data", nn_input, perm)
    _load_weights(model, folder, nn_input.hidden, perm)
    _set_energies(model, nn_input)
    model.metadata = {"n2p2": _metadata(folder, nn_input)}
    return model.eval()


def _network_config(nn_input: InputNN) -> NetworkConfig:
    """n2p2's networks are plain MLPs with one activation per layer."""
    from ...models import NetworkConfig

    acts = nn_input.activations
    return NetworkConfig(hidden=nn_input.hidden, layer_activations=acts[:-1],
                         activation=acts[0], output_activation=acts[-1], block="plain")


def _scaler(path: Path, nn_input: InputNN, perm: dict[str, list[int]]) -> FeatureScaler:
    """The descriptor scaling of scaling.data (``path``), in mlpot's feature order.

    scaling.data holds n2p2's min, max, mean and sigma; FeatureStatistics keeps sigma as
    M2 = count·sigma², so count 1 and M2 = sigma² (sqrt(sigma²) is sigma again, bit for bit,
    in binary floating point). FeatureScaler.from_statistics then derives n2p2's map.
    """
    from ...descriptors.scaling import FeatureScaler, FeatureStatistics

    elements, mode = nn_input.elements, nn_input.scaling
    n_sf = [len(perm[el]) for el in elements]
    # scaling.data lists the elements by atomic number, n2p2's element order.
    by_number = sorted(elements, key=lambda e: atomic_numbers[e])
    rows = read_scaling(path, [len(perm[el]) for el in by_number])
    scaling = [rows[by_number.index(el)] for el in elements]
    stats = FeatureStatistics(len(elements), n_sf)
    stats.count.fill_(1.0)
    for e, el in enumerate(elements):
        g_min, g_max, g_mean, g_sigma = torch.as_tensor(scaling[e][perm[el]].T)
        if bool((g_sigma < 0).any()):
            k = int(torch.nonzero(g_sigma < 0)[0])
            raise N2P2Error(f"{path}: element {el}, symmetry function {perm[el][k] + 1} "
                            f"has a negative sigma")
        stats.min[e, : n_sf[e]], stats.max[e, : n_sf[e]], stats.mean[e, : n_sf[e]] = g_min, g_max, g_mean
        stats.m2[e, : n_sf[e]] = g_sigma**2
        spread = {"scale": g_max - g_min, "scale_center": g_max - g_min, "scale_sigma": g_sigma}.get(mode)
        if spread is not None and bool((spread <= 0).any()):
            k = int(torch.nonzero(spread <= 0)[0])
            raise N2P2Error(f"{path}: element {el}, symmetry function {perm[el][k] + 1} "
                            f"has zero range or sigma; n2p2 would divide by zero")
    scaler = FeatureScaler.from_statistics(stats, mode, nn_input.scale_min, nn_input.scale_max, constant_floor=0.0)
    if mode in ("scale", "scale_center", "scale_sigma") and bool(scaler.constant_mask.any()):
        # A range ≤ 1e-12·|max| is rounding: n2p2 would amplify it by ≥ 1e12 (mlpot leaves such a
        # feature unscaled). A term of tiny values with a real range is scaled, as n2p2 does.
        e, k = torch.nonzero(scaler.constant_mask)[0].tolist()
        raise N2P2Error(f"{path}: element {elements[e]}, symmetry function "
                        f"{perm[elements[e]][k] + 1} has a range of ~0 (≤ 1e-12 of its values); n2p2 "
                        f"would divide by it")
    return scaler


def _load_weights(model: Potential, folder: Path, hidden: tuple[int, ...], perm: dict[str, list[int]]) -> None:
    """Copy each element's weights.XXX.data into its network's affine layers, the first
    layer's input columns permuted from n2p2's into mlpot's feature order."""
    with torch.no_grad():
        for el in model.elements:
            path = folder / f"weights.{atomic_numbers[el]:03d}.data"
            weights, biases = read_weights(path, [len(perm[el]), *hidden, 1])
            weights[0] = weights[0][:, perm[el]]  # input columns into mlpot's feature order
            for lin, w, bias in zip(model.networks.network(el).linear_layers(), weights, biases):
                lin.weight.copy_(torch.as_tensor(w))
                lin.bias.copy_(torch.as_tensor(bias))


def _set_energies(model: Potential, nn_input: InputNN) -> None:
    """n2p2's E = Σ_i [mean + offset(Z_i) + NN_i / conv_energy] (file units) as mlpot's
    E = Σ_i [e_ref(Z_i) + s NN_i] (eV): e_ref = (mean + offset)·energy, s = energy / conv_energy."""
    energy = nn_input.energy
    with torch.no_grad():
        model.reference_energies.copy_(torch.tensor(
            [(nn_input.mean_energy + nn_input.atom_energy[el]) * energy for el in nn_input.elements],
            dtype=torch.float64))
        model.energy_scale.fill_(energy / nn_input.conv_energy)


def _metadata(folder: Path, nn_input: InputNN) -> dict:
    """``model.metadata["n2p2"]``: what write_potential needs to give the files back."""
    n = nn_input
    return {
        "source": str(folder), "units": n.unit_name, "length_to_angstrom": n.length, "energy_to_ev": n.energy,
        "mean_energy": n.mean_energy if n.normalised else None,
        "conv_energy": n.conv_energy if n.normalised else None,
        "conv_length": n.conv_length, "atom_energy": {el: n.atom_energy[el] for el in n.elements},
    }

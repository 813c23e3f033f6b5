"""Export: a :class:`~mlpot.models.Potential` → input.nn, scaling.data and weights.XXX.data,
in named steps (check, units, symmetry-function lines, scaling rows, then one text per file)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from ase.data import atomic_numbers
from torch import nn

from ...units import unit_factors
from ..files import atomic_write_text
from .common import CUTOFF_TYPE_OF, LETTER_OF, N2P2Error, shortest
from .symmetry import n2p2_lines

if TYPE_CHECKING:
    from ...descriptors.scaling import FeatureScaler
    from ...models import NetworkConfig, Potential

__all__ = ["write_potential", "n2p2_feature_order"]

# (n2p2 sort key, input.nn line, mlpot feature index) per element, in n2p2's order.
Lines = dict[str, list[tuple[tuple, str, int]]]


def write_potential(model: Potential, folder: str | Path,
                    units: str | tuple[float, float] | None = None) -> Path:
    """Write ``model`` as an n2p2 potential: input.nn, scaling.data, weights.XXX.data.

    Args:
        model: a :class:`~mlpot.models.Potential` with plain networks, n2p2 activations
            (tanh, softplus, identity, sigmoid, Gaussian, cos), an n2p2 cutoff function and
            G2/G4/G5 symmetry functions.
        folder: created if needed; existing files of these names are replaced.
        units: units of the files: ``"angstrom_ev"``, ``"bohr_hartree"`` or a (Å per length
            unit, eV per energy unit) pair; default: those the model was imported from
            (``model.metadata["n2p2"]``), else Å/eV. input.nn records them in comments that
            :func:`read_potential` reads back.

    Returns:
        The folder.

    Raises:
        N2P2Error: the model has residual blocks, stochastic depth, or an activation,
            cutoff function or scaling that n2p2 cannot represent.
    """
    _check_exportable(model)
    length, energy = _export_units(model, units)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    per_element = n2p2_lines(model, length)
    mode, s_min, s_max, rows = _scaling_rows(model)
    input_nn = (_unit_comments(length, energy) + _energy_keywords(model, length, energy)
                + _model_keywords(model, mode, s_min, s_max) + _symmetry_function_lines(model, per_element))
    atomic_write_text(folder / "input.nn", "\n".join(input_nn) + "\n")
    atomic_write_text(folder / "scaling.data", _scaling_text(model.elements, per_element, rows))
    for el in model.elements:
        order = [k for _, _, k in per_element[el]]
        text = _weights_text(model.networks.network(el).linear_layers(), order)
        atomic_write_text(folder / f"weights.{atomic_numbers[el]:03d}.data", text)
    return folder


def n2p2_feature_order(model: Potential, units: str | tuple[float, float] | None = None) -> dict[str, list[int]]:
    """Per element, the mlpot descriptor column of each n2p2 symmetry function, in n2p2's
    order (the order of n2p2's network inputs and of scaling.data rows): ``G_n2p2 =
    G_mlpot[:, order[element]]`` for that element's atoms.

    Args:
        model: a :class:`~mlpot.models.Potential` with G2/G4/G5 terms.
        units: the file units the order is taken in (only exact ties can depend on them);
            default as for :func:`write_potential`.
    """
    return {el: [k for _, _, k in lst] for el, lst in n2p2_lines(model, _export_units(model, units)[0]).items()}


# ---------------------------------------------------------------------- checks and units
def _check_exportable(model: Potential) -> None:
    """Refuse what n2p2 cannot represent: non-plain blocks, other activations or cutoffs."""
    config = model.config
    if config.block != "plain":
        raise N2P2Error(f"cannot export: {config.block!r} blocks (skip connections"
                        + (", stochastic depth" if config.survival < 1 else "")
                        + ") have no n2p2 equivalent; n2p2 networks are plain MLPs")
    for act in (*config.hidden_activations, config.output_activation):
        if act not in LETTER_OF:
            raise N2P2Error(f"cannot export: activation {act!r} has no n2p2 equivalent "
                            f"(n2p2 letters map to {sorted(LETTER_OF)})")
    spec = model.spec
    if spec.cutoff_function not in CUTOFF_TYPE_OF:
        raise N2P2Error(f"cannot export: cutoff function {spec.cutoff_function!r} has no n2p2 cutoff_type")


def _n2p2_metadata(model: Potential) -> dict:
    """``model.metadata["n2p2"]`` of an imported model, else {}."""
    return (getattr(model, "metadata", None) or {}).get("n2p2") or {}


def _export_units(model: Potential, units: str | tuple[float, float] | None) -> tuple[float, float]:
    """(Å per file length unit, eV per file energy unit); ``None``: the imported ones, else Å/eV."""
    meta = _n2p2_metadata(model)
    if units is None:
        units = (meta.get("units") or (meta["length_to_angstrom"], meta["energy_to_ev"])) if meta else "angstrom_ev"
    return unit_factors(units)


# ---------------------------------------------------------------------- input.nn
def _unit_comments(length: float, energy: float) -> list[str]:
    """input.nn's header; the unit comments are what read_potential(units="auto") reads."""
    names = {(1.0, 1.0): ("Angstrom", "eV")}
    bohr, hartree = unit_factors("bohr_hartree")
    names[(bohr, hartree)] = ("Bohr", "Ha")
    unit_names = names.get((length, energy))
    out = ["#" * 79, "# n2p2 HDNNP written by mlpot (mlpot.io.n2p2.write_potential)"]
    if unit_names:
        out += [f"# Length unit     : {unit_names[0]}", f"# Energy unit     : {unit_names[1]}"]
    else:
        out += [f"# Units: 1 length unit = {length!r} Angstrom, 1 energy unit = {energy!r} eV"]
    return out + ["#" * 79, ""]


def _energy_keywords(model: Potential, length: float, energy: float) -> list[str]:
    """mean_energy, conv_energy, conv_length, the elements and their atom_energy lines.

    Model E = Σ [ref(Z) + s NN]; n2p2 E = Σ [mean + offset(Z) + NN / conv_energy]. An
    imported model gets its own mean_energy/atom_energy back when they still reproduce its
    reference energies; otherwise mean_energy = 0 and the offsets carry everything.
    """
    meta = _n2p2_metadata(model)
    elements = model.elements
    ref = model.reference_energies.double().tolist()
    scale = float(model.energy_scale)
    conv_length = float(meta.get("conv_length") or 1.0)
    mean_text = "0.0"
    offsets_text = {el: shortest(r, lambda x: (0.0 + x) * energy, r / energy) for el, r in zip(elements, ref)}
    conv_text = shortest(scale, lambda x: energy / x, energy / scale)
    if meta.get("mean_energy") is not None and (length, energy) == (meta["length_to_angstrom"], meta["energy_to_ev"]):
        m, offs, ce = meta["mean_energy"], meta["atom_energy"], meta["conv_energy"]
        if [(m + offs.get(el, 0.0)) * energy for el in elements] == ref and energy / ce == scale:
            mean_text, conv_text = repr(m), repr(ce)
            offsets_text = {el: repr(offs.get(el, 0.0)) for el in elements}
    out = [f"mean_energy {mean_text}", f"conv_energy {conv_text}", f"conv_length {conv_length!r}", "",
           f"number_of_elements {len(elements)}",
           "elements " + " ".join(elements)]  # n2p2 sorts them; read_potential keeps this order
    return out + [f"atom_energy {el:2s} {offsets_text[el]}" for el in elements]


def _model_keywords(model: Potential, mode: str, s_min: float, s_max: float) -> list[str]:
    """The cutoff, scaling (n2p2 ``mode``, range [S_min, S_max]) and network keywords."""
    spec, cfg = model.spec, model.config
    out = [f"cutoff_type {CUTOFF_TYPE_OF[spec.cutoff_function]} {spec.cutoff_alpha!r}"]
    out += {"scale": ["scale_symmetry_functions"], "center": ["center_symmetry_functions"],
            "scale_center": ["scale_symmetry_functions", "center_symmetry_functions"],
            "scale_sigma": ["scale_symmetry_functions_sigma"], "none": []}[mode]
    if mode in ("scale", "scale_center", "scale_sigma"):
        out += [f"scale_min_short {s_min!r}", f"scale_max_short {s_max!r}"]
    return out + _network_keywords(cfg)


def _network_keywords(cfg: NetworkConfig) -> list[str]:
    """Widths and activation letters: n2p2 networks are plain MLPs like mlpot's plain blocks."""
    letters = [LETTER_OF[a] for a in (*cfg.hidden_activations, cfg.output_activation)]
    return [f"global_hidden_layers_short {len(cfg.hidden_sizes)}",
            "global_nodes_short " + " ".join(map(str, cfg.hidden_sizes)),
            "global_activation_short " + " ".join(letters), ""]


def _symmetry_function_lines(model: Potential, per_element: Lines) -> list[str]:
    """The symfunction_short lines, elements by atomic number."""
    # In mlpot's feature order, which read_potential keeps; n2p2 sorts them itself.
    out = ["# symmetry functions (n2p2 sorts them per element; scaling.data follows that order)"]
    for el in sorted(model.elements, key=lambda e: atomic_numbers[e]):
        out += [text for _, text, _ in sorted(per_element[el], key=lambda x: x[2])]
    return out


# ---------------------------------------------------------------------- scaling.data
def _scaling_rows(model: Potential) -> tuple[str, float, float, dict[str, np.ndarray]]:
    """(n2p2 mode, S_min, S_max, per-element (F, 4) min/max/mean/sigma in mlpot order)."""
    scaler = model.descriptor.scaler
    n = model.descriptor.n_features
    if scaler is None:
        warnings.warn("model has no descriptor scaling: scaling.data gets zeros (n2p2 will report "
                      "extrapolation for every atom)", stacklevel=3)
        return "none", 0.0, 1.0, {el: np.zeros((n[el], 4)) for el in model.elements}
    mode = "scale_sigma" if scaler.mode == "standard" else scaler.mode
    s_min, s_max = scaler.s_min, scaler.s_max
    rows = {}
    for e, el in enumerate(model.elements):
        r = torch.stack([scaler.train_min[e], scaler.train_max[e], scaler.train_mean[e],
                         scaler.train_std[e]], dim=1)[: n[el]].double().cpu().numpy().copy()
        const = scaler.constant_mask[e, : n[el]].cpu().numpy()
        if mode in ("scale", "scale_center") and const.any():
            # mlpot scales a constant feature by 1; n2p2 would divide by zero.
            r[const, 1] = r[const, 0] + (s_max - s_min)
        if mode == "scale_sigma" and const.any():
            r[const, 3] = s_max - s_min
        rows[el] = r
        _check_scaling_map(scaler, e, el, r, (mode, s_min, s_max))
    return mode, s_min, s_max, rows


def _check_scaling_map(scaler: FeatureScaler, e: int, el: str, r: np.ndarray, scaling: tuple[str, float, float]) -> None:
    """The export is only faithful if the scaler's affine map (element index ``e``) is the
    one n2p2 derives from the statistics ``r`` (F, 4) under ``scaling`` (mode, S_min, S_max)."""
    mode, s_min, s_max = scaling
    n = len(r)
    spread = {"scale": r[:, 1] - r[:, 0], "scale_center": r[:, 1] - r[:, 0], "scale_sigma": r[:, 3]}.get(mode)
    centre = {"scale": r[:, 0], "center": r[:, 2], "scale_center": r[:, 2], "scale_sigma": r[:, 2]}.get(mode)
    a = np.ones(n) if spread is None else (s_max - s_min) / spread
    b = np.zeros(n) if centre is None else (s_min - a * centre if spread is not None else -centre)
    w, bb = scaler.weight[e, :n].double().cpu().numpy(), scaler.bias[e, :n].double().cpu().numpy()
    # Bitwise in float64 (same formula as FeatureScaler.from_statistics); a float32
    # model rounded its statistics and its map separately.
    rtol = 1e-12 if scaler.weight.dtype == torch.float64 else 1e3 * torch.finfo(scaler.weight.dtype).eps
    tol = rtol * max(1.0, float(np.abs(bb).max(initial=0.0)))
    if not (np.allclose(a, w, rtol=rtol, atol=0) and np.allclose(b, bb, rtol=rtol, atol=tol)):
        raise N2P2Error(f"cannot export: the descriptor scaling of {el} is not the n2p2 "
                        f"{mode!r} map of its stored statistics (was the scaler edited?)")


def _scaling_text(elements: tuple[str, ...], per_element: Lines, rows: dict[str, np.ndarray]) -> str:
    """scaling.data rows: elements by atomic number (n2p2's element index), n2p2 SF order."""
    lines = ["#" * 79, "# Symmetry function scaling data (mlpot).",
             "# e_index sf_index sf_min sf_max sf_mean sf_sigma", "#" * 79]
    for e, el in enumerate(sorted(elements, key=lambda x: atomic_numbers[x]), start=1):
        for j, (_, _, k) in enumerate(per_element[el], start=1):
            lines.append(f"{e:10d} {j:10d} " + " ".join(f"{v:24.16E}" for v in rows[el][k]))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- weights.XXX.data
def _weights_text(linears: list[nn.Linear], order: list[int]) -> str:
    """One network's connections in n2p2's order (per layer: weights with the source
    neuron outermost, then biases), the first layer's columns taken in ``order`` (n2p2's
    feature order, as mlpot column indices)."""
    lines = ["#" * 79, "# Neural network connection values (weights and biases), mlpot.",
             "# connection t index l_s n_s l_e n_e", "#" * 79]
    count = 0
    for layer, lin in enumerate(linears, start=1):
        w = lin.weight.detach().double().cpu().numpy()
        b = lin.bias.detach().double().cpu().numpy()
        if layer == 1:
            w = w[:, order]  # mlpot feature order → n2p2 order
        for j in range(w.shape[1]):
            for k in range(w.shape[0]):
                count += 1
                lines.append(f"{w[k, j]:24.16E} a {count:9d} {layer - 1:5d} {j + 1:5d} {layer:5d} {k + 1:5d}")
        for k in range(w.shape[0]):
            count += 1
            lines.append(f"{b[k]:24.16E} b {count:9d} {layer:5d} {k + 1:5d}")
    return "\n".join(lines) + "\n"

"""Reading n2p2's files: input.nn keywords (checked against what mlpot can represent,
units resolved, the model keywords parsed into :class:`InputNN`), scaling.data rows and
weights.XXX.data connections. Errors name the file and line (:class:`N2P2Error`)."""

from __future__ import annotations

import logging
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers

from ...units import unit_factors
from .common import ACTIVATION_LETTERS, CUTOFF_TYPES, UNSUPPORTED_ACTIVATIONS, N2P2Error

__all__ = ["Entry", "InputNN", "parse_input_nn", "to_number", "read_scaling", "read_weights"]

# The package's logger, as before the module became a package.
log = logging.getLogger(__package__)

# Keywords that change the model but that mlpot cannot represent, with the reason.
_REJECTED = {
    "normalize_nodes": "neuron inputs divided by the previous layer's width",
    "element_hidden_layers_short": "per-element network depths (mlpot shares one architecture)",
    "element_nodes_short": "per-element network widths (mlpot shares one architecture)",
    "element_activation_short": "per-element activations (mlpot shares one architecture)",
    "committee_mode": "committee (ensemble) potentials", "committee_dir_prefix": "committees",
    "conv_charge": "charges (4G/Q-HDNNP)", "symfunction_electrostatic": "electrostatics (4G-HDNNP)",
    "global_hidden_layers_electrostatic": "electrostatics (4G-HDNNP)",
    "global_nodes_electrostatic": "electrostatics (4G-HDNNP)",
    "global_activation_electrostatic": "electrostatics (4G-HDNNP)",
    "ewald_prec": "electrostatics (4G-HDNNP)", "ewald_truncation_error_method": "electrostatics",
    "screen_electrostatics": "electrostatics", "four_pi_epsilon": "electrostatics",
    "fixed_gausswidth": "electrostatics", "initial_hardness": "electrostatics",
    "kspace_solver": "electrostatics",
}
_MODEL_KEYWORDS = {
    "number_of_elements", "elements", "atom_energy", "cutoff_type", "symfunction_short",
    "scale_symmetry_functions", "scale_min_short", "scale_max_short",
    "center_symmetry_functions", "scale_symmetry_functions_sigma",
    "global_hidden_layers_short", "global_nodes_short", "global_activation_short",
    "mean_energy", "conv_length", "conv_energy", "nnp_type", "nn_type",
}
# Keywords of nnp-train and friends: they do not change predictions and are ignored.
_TRAINING_KEYWORDS = set("""
random_seed test_fraction epochs use_short_forces rmse_threshold rmse_threshold_energy
rmse_threshold_force rmse_threshold_charge rmse_threshold_trials rmse_threshold_trials_energy
rmse_threshold_trials_force rmse_threshold_trials_charge energy_fraction force_fraction
charge_fraction use_old_weights_short use_old_weights_charge weights_min weights_max
nguyen_widrow_weights_short nguyen_widrow_weights_charge precondition_weights
main_error_metric write_trainpoints write_trainforces write_traincharges write_weights_epoch
write_neuronstats write_trainlog repeated_energy_update updater_type parallel_mode
jacobian_mode update_strategy selection_mode selection_mode_energy selection_mode_force
selection_mode_charge task_batch_size_energy task_batch_size_force task_batch_size_charge
gradient_type gradient_eta gradient_adam_eta gradient_adam_beta1 gradient_adam_beta2
gradient_adam_epsilon kalman_type kalman_epsilon kalman_eta kalman_etatau kalman_etamax
kalman_q0 kalman_qtau kalman_qmin kalman_lambda_short kalman_nue_short
memorize_symfunc_results force_weight charge_weight short_energy_error_threshold
short_force_error_threshold short_energy_fraction short_force_fraction
write_symfunc_histograms freeze_nn nguyen_widrow_weights
""".split())
# n2p2 accepts these once only (Settings::sanityCheck).
_REPEATABLE = {"symfunction_short", "atom_energy", "element_nodes_short"}


@dataclass(frozen=True)
class Entry:
    """One keyword line of input.nn."""

    line: int  # 1-based line number in input.nn
    args: tuple[str, ...]


# ---------------------------------------------------------------------- input.nn keywords
def read_settings(path: Path) -> tuple[dict[str, list[Entry]], list[str]]:
    """Keyword → entries (n2p2's parser: '#' and '!' start comments), and the comment texts."""
    if not path.is_file():
        raise FileNotFoundError(f"n2p2 potential: no such file {path}")
    entries: dict[str, list[Entry]] = {}
    comments: list[str] = []
    for number, raw in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        cut = len(raw)
        for mark in "#!":
            if mark in raw:
                cut = min(cut, raw.index(mark))
        comments.append(raw[cut:])
        tokens = raw[:cut].split()
        if tokens:
            entries.setdefault(tokens[0], []).append(Entry(number, tuple(tokens[1:])))
    return entries, comments


def to_number(token: str, where: str, what: str, kind: type = float) -> float | int:
    """``kind(token)`` (float: finite), else an N2P2Error naming ``where`` (file:line) and ``what``."""
    try:
        value = kind(token)
    except ValueError:
        raise N2P2Error(f"{where}: {what} must be {'an integer' if kind is int else 'a number'}, "
                        f"got {token!r}") from None
    if kind is float and not math.isfinite(value):
        raise N2P2Error(f"{where}: {what} must be finite, got {token!r}")
    return value


def _units_from_comments(comments: list[str]) -> tuple[str | None, str | None]:
    """The lower-cased unit names of ``# Length unit : X`` / ``# Energy unit : Y`` comments."""
    found: dict[str, str] = {}
    for text in comments:
        m = re.search(r"(length|energy)\s+unit\s*:\s*(\S+)", text, re.IGNORECASE)
        if m:
            found.setdefault(m.group(1).lower(), m.group(2).lower())
    return found.get("length"), found.get("energy")


_LENGTH_NAMES = {"bohr": "bohr", "a0": "bohr", "angstrom": "angstrom", "ang": "angstrom",
                 "å": "angstrom", "a": "angstrom"}
_ENERGY_NAMES = {"ha": "hartree", "hartree": "hartree", "eh": "hartree", "ev": "ev"}


def resolve_units(units: str | tuple[float, float], comments: list[str],
                  path: Path) -> tuple[float, float, str | None]:
    """(Å per file length unit, eV per file energy unit, name or None)."""
    if not (isinstance(units, str) and units == "auto"):
        length, energy = unit_factors(units)
        return length, energy, units if isinstance(units, str) else None
    length_name, energy_name = _units_from_comments(comments)
    ln, en = _LENGTH_NAMES.get(length_name or ""), _ENERGY_NAMES.get(energy_name or "")
    if ln is None or en is None:
        raise N2P2Error(
            f"{path}: cannot tell the units (no '# Length unit : ...' and '# Energy unit : ...' "
            f"comments naming Bohr/Angstrom and Ha/eV; found {length_name!r}, {energy_name!r}); "
            "pass units='bohr_hartree', 'angstrom_ev' or a (length_to_angstrom, energy_to_ev) pair")
    bohr, hartree = unit_factors("bohr_hartree")
    length = bohr if ln == "bohr" else 1.0
    energy = hartree if en == "hartree" else 1.0
    name = {(True, True): "bohr_hartree", (False, False): "angstrom_ev"}.get((ln == "bohr", en == "hartree"))
    return length, energy, name


def single(settings: dict[str, list[Entry]], key: str, where: Path, required: bool = True) -> Entry | None:
    """The (first) entry of ``key``; a missing required keyword is an N2P2Error."""
    entries = settings.get(key, [])
    if not entries:
        if required:
            raise N2P2Error(f"{where}: required keyword {key!r} is missing")
        return None
    return entries[0]


def check_keywords(settings: dict[str, list[Entry]], path: Path) -> None:
    """Refuse keywords mlpot cannot represent, repeated keywords and non-2G potentials; log the
    ignored training keywords and warn about unknown ones (as n2p2 does)."""
    for key, entries in settings.items():
        if key in _REJECTED:
            raise N2P2Error(f"{path}:{entries[0].line}: keyword {key!r} ({_REJECTED[key]}) changes "
                            "the model in a way mlpot cannot represent")
        if len(entries) > 1 and key not in _REPEATABLE:
            raise N2P2Error(f"{path}:{entries[1].line}: keyword {key!r} given more than once "
                            f"(first at line {entries[0].line}); n2p2 refuses this too")
    nnp_type = settings.get("nnp_type") or settings.get("nn_type")
    if nnp_type:
        value = " ".join(nnp_type[0].args)
        if value not in ("2G-HDNNP", "2", "0"):  # 0: short-range only in n2p2 < 2.1
            raise N2P2Error(f"{path}:{nnp_type[0].line}: nnp_type {value!r} is not a short-range "
                            "(2G) HDNNP; charges and electrostatics are not supported by mlpot")
    ignored = sorted(k for k in settings if k in _TRAINING_KEYWORDS)
    if ignored:
        log.debug("n2p2 %s: training keywords ignored: %s", path, ", ".join(ignored))
    unknown = [(k, e[0].line) for k, e in settings.items()
               if k not in _TRAINING_KEYWORDS and k not in _MODEL_KEYWORDS]
    if unknown:
        # n2p2 itself only warns about unknown keywords. stacklevel: check_keywords ←
        # parse_input_nn ← read_potential ← its caller, the line the warning names.
        warnings.warn(f"{path}: unknown n2p2 keyword(s) ignored: "
                      + ", ".join(f"{k!r} (line {n})" for k, n in unknown), stacklevel=4)



# ---------------------------------------------------------------------- input.nn model
@dataclass(frozen=True)
class InputNN:
    """The model keywords of an input.nn, checked; numbers in file units unless stated."""

    path: Path
    length: float  # Å per file length unit
    energy: float  # eV per file energy unit
    unit_name: str | None  # "bohr_hartree", "angstrom_ev" or None (an explicit pair)
    # mlpot indexes elements in the order of the elements line (so that write_potential's
    # files give the model's own order back); n2p2 orders them by atomic number, which is
    # the order of scaling.data.
    elements: tuple[str, ...]
    # E = Σ_i [mean_energy + atom_energy(Z_i) + NN_i / conv_energy].
    mean_energy: float
    conv_energy: float
    normalised: bool  # mean_energy, conv_energy and conv_length were given
    conv_length: float | None
    atom_energy: dict[str, float]
    cutoff_type: int
    cutoff_alpha: float
    scaling: str  # n2p2's scaling mode: scale, center, scale_center, scale_sigma or none
    scale_min: float
    scale_max: float
    hidden: tuple[int, ...]  # widths of the hidden layers
    activations: tuple[str, ...]  # mlpot names, one per hidden layer and the output
    symmetry_functions: tuple[Entry, ...]  # symfunction_short lines, in input.nn order


def parse_input_nn(path: Path, units: str | tuple[float, float]) -> InputNN:
    """Read and check ``path`` (an input.nn), keyword by keyword, in n2p2's precedence.

    Args:
        path: the input.nn file.
        units: ``"auto"`` (from the ``# Length unit`` / ``# Energy unit`` comments), a named
            system or a (Å per length unit, eV per energy unit) pair.

    Raises:
        FileNotFoundError: no such file.
        N2P2Error: a malformed line or a keyword mlpot cannot represent (naming the line).
    """
    settings, comments = read_settings(path)
    check_keywords(settings, path)
    length, energy, unit_name = resolve_units(units, comments, path)
    elements = _elements(settings, path)
    mean_energy, conv_energy, conv_length, normalised = _normalisation(settings, path)
    atom_energy = _atom_energies(settings, path, elements)
    cutoff_type, cutoff_alpha = _cutoff(settings, path)
    scaling, scale_min, scale_max = _scaling(settings, path)
    hidden, activations = _architecture(settings, path)
    return InputNN(path=path, length=length, energy=energy, unit_name=unit_name, elements=elements,
                   mean_energy=mean_energy, conv_energy=conv_energy, normalised=normalised,
                   conv_length=conv_length, atom_energy=atom_energy, cutoff_type=cutoff_type,
                   cutoff_alpha=cutoff_alpha, scaling=scaling, scale_min=scale_min, scale_max=scale_max,
                   hidden=hidden, activations=activations,
                   symmetry_functions=tuple(settings.get("symfunction_short", [])))


def _elements(settings: dict[str, list[Entry]], path: Path) -> tuple[str, ...]:
    """The elements line (checked against number_of_elements), in its own order."""
    entry = single(settings, "elements", path)
    for el in entry.args:
        if el not in atomic_numbers or el == "X":
            raise N2P2Error(f"{path}:{entry.line}: unknown element {el!r}")
    elements = tuple(dict.fromkeys(entry.args))
    if len(elements) != len(entry.args) or not elements:
        raise N2P2Error(f"{path}:{entry.line}: elements must be distinct and non-empty")
    n_entry = single(settings, "number_of_elements", path)
    if not n_entry.args or to_number(n_entry.args[0], f"{path}:{n_entry.line}", "number_of_elements", int) != len(elements):
        raise N2P2Error(f"{path}:{n_entry.line}: number_of_elements does not match the {len(elements)} elements")
    return elements


def _normalisation(settings: dict[str, list[Entry]], path: Path) -> tuple[float, float, float | None, bool]:
    """(mean_energy, conv_energy, conv_length, given): all three keywords or none."""
    norm = {k: single(settings, k, path, required=False) for k in ("mean_energy", "conv_energy", "conv_length")}
    given = [k for k, v in norm.items() if v is not None]
    if given and len(given) != 3:
        raise N2P2Error(f"{path}:{norm[given[0]].line}: use all or none of mean_energy, conv_energy "
                        "and conv_length")
    values = {k: (to_number(v.args[0] if v.args else "", f"{path}:{v.line}", k) if v else None)
              for k, v in norm.items()}
    mean_energy = values["mean_energy"] or 0.0
    conv_energy = values["conv_energy"] if given else 1.0
    if not conv_energy > 0:
        raise N2P2Error(f"{path}:{norm['conv_energy'].line}: conv_energy must be positive")
    return mean_energy, conv_energy, values["conv_length"], bool(given)


def _atom_energies(settings: dict[str, list[Entry]], path: Path, elements: tuple[str, ...]) -> dict[str, float]:
    """atom_energy offset per element (file energy units), 0 where not given."""
    offsets = dict.fromkeys(elements, 0.0)
    for e in settings.get("atom_energy", []):
        where = f"{path}:{e.line}"
        if len(e.args) < 2 or e.args[0] not in elements:
            raise N2P2Error(f"{where}: atom_energy needs an element of {list(elements)} and a value")
        offsets[e.args[0]] = to_number(e.args[1], where, "atom_energy")
    return offsets


def _cutoff(settings: dict[str, list[Entry]], path: Path) -> tuple[int, float]:
    """(n2p2 cutoff_type, α)."""
    entry = single(settings, "cutoff_type", path)
    where = f"{path}:{entry.line}"
    ctype = to_number(entry.args[0] if entry.args else "", where, "cutoff_type", int)
    if ctype not in CUTOFF_TYPES:
        raise N2P2Error(f"{where}: cutoff_type {ctype} is not supported (mlpot has "
                        + ", ".join(f"{k} {v}" for k, v in CUTOFF_TYPES.items()) + "; 0 is a hard cutoff)")
    alpha = to_number(entry.args[1], where, "cutoff alpha") if len(entry.args) > 1 else 0.0
    if not 0.0 <= alpha < 1.0:
        raise N2P2Error(f"{where}: cutoff alpha must be in [0, 1), got {alpha}")
    return ctype, alpha


def _scaling(settings: dict[str, list[Entry]], path: Path) -> tuple[str, float, float]:
    """(scaling mode, S_min, S_max), the mode with n2p2's precedence."""
    scale, center, sigma = (k in settings for k in ("scale_symmetry_functions", "center_symmetry_functions",
                                                    "scale_symmetry_functions_sigma"))
    mode = ("scale_center" if scale and center else "scale" if scale else "center" if center
            else "scale_sigma" if sigma else "none")
    s_min, s_max = 0.0, 1.0
    if mode in ("scale", "scale_center", "scale_sigma"):
        for key in ("scale_min_short", "scale_max_short"):
            e = single(settings, key, path, required=False)
            if e is not None:
                v = to_number(e.args[0] if e.args else "", f"{path}:{e.line}", key)
                s_min, s_max = (v, s_max) if key == "scale_min_short" else (s_min, v)
        if not s_max > s_min:
            raise N2P2Error(f"{path}: scale_max_short must exceed scale_min_short")
    return mode, s_min, s_max


def _architecture(settings: dict[str, list[Entry]], path: Path) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """(hidden widths, mlpot activation of each hidden layer and of the output)."""
    entry = single(settings, "global_hidden_layers_short", path)
    n_hidden = to_number(entry.args[0] if entry.args else "", f"{path}:{entry.line}", "global_hidden_layers_short", int)
    if n_hidden < 1:
        raise N2P2Error(f"{path}:{entry.line}: at least one hidden layer is needed")
    entry = single(settings, "global_nodes_short", path)
    if len(entry.args) != n_hidden:
        raise N2P2Error(f"{path}:{entry.line}: global_nodes_short needs {n_hidden} widths, got {len(entry.args)}")
    widths = [to_number(t, f"{path}:{entry.line}", "global_nodes_short", int) for t in entry.args]
    if min(widths) < 1:
        raise N2P2Error(f"{path}:{entry.line}: widths must be positive")
    entry = single(settings, "global_activation_short", path)
    if len(entry.args) != n_hidden + 1:
        raise N2P2Error(f"{path}:{entry.line}: global_activation_short needs {n_hidden + 1} letters "
                        f"(hidden layers and output), got {len(entry.args)}")
    acts = []
    for letter in entry.args:
        if letter not in ACTIVATION_LETTERS:
            what = UNSUPPORTED_ACTIVATIONS.get(letter, "unknown to n2p2")
            raise N2P2Error(f"{path}:{entry.line}: global_activation_short: activation {letter!r} ({what}) "
                            f"is not supported; mlpot has {sorted(ACTIVATION_LETTERS)}")
        acts.append(ACTIVATION_LETTERS[letter])
    return tuple(widths), tuple(acts)

# ---------------------------------------------------------------------- scaling and weights
def data_lines(path: Path) -> list[tuple[int, list[str]]]:
    """(1-based line number, fields) of each non-blank, non-comment line of ``path``."""
    if not path.is_file():
        raise FileNotFoundError(f"n2p2 potential: no such file {path}")
    out = []
    for number, raw in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if raw.strip() and not raw.lstrip().startswith("#"):
            out.append((number, raw.split()))
    return out


def read_scaling(path: Path, n_sf: list[int]) -> list[np.ndarray]:
    """Per element, (n_sf, 4) min, max, mean, sigma rows in n2p2 order."""
    lines = data_lines(path)
    total = sum(n_sf)
    if len(lines) < total:
        raise N2P2Error(f"{path}: {len(lines)} data lines, but input.nn defines {total} symmetry "
                        f"functions ({n_sf} per element)")
    out, k = [], 0
    for e, n in enumerate(n_sf):
        rows = np.empty((n, 4))
        for s in range(n):
            number, tok = lines[k]
            k += 1
            where = f"{path}:{number}"
            if len(tok) < 5:
                raise N2P2Error(f"{where}: expected 'element sf min max mean [sigma]', got {len(tok)} fields")
            ie, isf = (to_number(t, where, name, int) for t, name in zip(tok[:2], ("element index", "sf index")))
            if (ie, isf) != (e + 1, s + 1):
                raise N2P2Error(f"{where}: expected element {e + 1}, symmetry function {s + 1} "
                                f"(input.nn order), got {ie}, {isf}")
            vals = [to_number(t, where, name) for t, name in zip(tok[2:6], ("min", "max", "mean", "sigma"))]
            rows[s] = vals + [0.0] * (4 - len(vals))  # old files have no sigma
        out.append(rows)
    # n2p2 ignores trailing lines; more rows than functions means a mismatch, though.
    if k != len(lines):
        raise N2P2Error(f"{path}:{lines[k][0]}: more data lines than the {total} symmetry functions of input.nn")
    return out


def read_weights(path: Path, sizes: list[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Weights (out, in) and biases (out,) per layer of a network with layer sizes ``sizes``.

    Each line is ``value a index l_s n_s l_e n_e`` (weight from neuron n_s of layer l_s to
    neuron n_e of layer l_e = l_s + 1) or ``value b index l_e n_e`` (bias), 1-based neurons.
    The indices place each value; n2p2 itself reads the first column by position, so a file
    whose order differs from n2p2's (per layer: weights with the source neuron outermost,
    then biases) is refused rather than read differently from n2p2.
    """
    weights = [np.full((sizes[i + 1], sizes[i]), np.nan) for i in range(len(sizes) - 1)]
    biases = [np.full(sizes[i + 1], np.nan) for i in range(len(sizes) - 1)]
    expected = sum(w.size + b.size for w, b in zip(weights, biases))
    arch = "-".join(map(str, sizes))
    lines = data_lines(path)
    if len(lines) != expected:
        raise N2P2Error(f"{path}: {len(lines)} connections, but the {arch} network of input.nn "
                        f"needs {expected}")
    position = 0
    for number, tok in lines:
        where = f"{path}:{number}"
        if len(tok) < 2 or tok[1] not in ("a", "b") or len(tok) != (7 if tok[1] == "a" else 5):
            raise N2P2Error(f"{where}: expected 'value a index l_s n_s l_e n_e' or 'value b index l_e n_e'")
        value = to_number(tok[0], where, "connection value")
        idx = [to_number(t, where, "index", int) for t in tok[2:]]
        if tok[1] == "a":
            _, ls, ns, le, ne = idx
            if not (le == ls + 1 and 1 <= le < len(sizes) and 1 <= ns <= sizes[ls] and 1 <= ne <= sizes[le]):
                raise N2P2Error(f"{where}: weight {ls}:{ns} -> {le}:{ne} does not exist in the {arch} network")
            target, at = weights[le - 1], (ne - 1, ns - 1)
            canonical = sum(w.size + b.size for w, b in zip(weights[:le - 1], biases[:le - 1])) \
                + (ns - 1) * sizes[le] + (ne - 1)
        else:
            _, le, ne = idx
            if not (1 <= le < len(sizes) and 1 <= ne <= sizes[le]):
                raise N2P2Error(f"{where}: bias {le}:{ne} does not exist in the {arch} network")
            target, at = biases[le - 1], (ne - 1,)
            canonical = (sum(w.size + b.size for w, b in zip(weights[:le - 1], biases[:le - 1]))
                         + weights[le - 1].size + (ne - 1))
        if not np.isnan(target[at]):
            raise N2P2Error(f"{where}: connection given twice")
        if canonical != position:
            raise N2P2Error(f"{where}: connection out of n2p2's order (n2p2 reads weights by "
                            "position, so it would read this file differently)")
        target[at] = value
        position += 1
    return weights, biases



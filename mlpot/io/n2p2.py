"""n2p2 potentials: read ``input.nn`` + ``scaling.data`` + ``weights.XXX.data`` into a
:class:`~mlpot.models.Potential`, and write a Potential back in that format.

What maps onto what (n2p2 ≥ 2.0, short-range "2G" HDNNPs):

=================================  ========================================================
n2p2                               mlpot
=================================  ========================================================
``symfunction_short`` type 2       :class:`~mlpot.descriptors.RadialTerm` (G2)
type 3 (narrow, Gaussian and f_c   :class:`~mlpot.descriptors.AngularTerm` ``kind="G4"``
on all three legs), type 9 (wide)  and ``kind="G5"``; each line restricted to its centre
                                   and neighbour element(s)
``cutoff_type t [α]``              ``cutoff_function`` (1 cos, 2 tanhu, 3 tanh, 4 exp,
                                   5–8 poly1–poly4) and ``cutoff_alpha``
scaling keywords + scaling.data    :class:`~mlpot.descriptors.scaling.FeatureScaler`
``global_*_short``                 a plain :class:`~mlpot.models.NetworkConfig`; letters
                                   t tanh, p softplus ln(1+eˣ), l identity, s sigmoid,
                                   g Gaussian exp(−x²/2), c cos
``mean_energy``, ``conv_energy``,  ``reference_energies`` and ``energy_scale``:
``atom_energy``                    E = Σ_i [mean + offset(Z_i) + NN_i / conv_energy]
=================================  ========================================================

``conv_length`` only rescales n2p2's internal length unit; symmetry functions are
dimensionless, so it does not enter the model (it is kept in ``model.metadata["n2p2"]``
and written back on export).

**Symmetry-function order.** n2p2 does not use the input.nn order: per centre element it
sorts the functions by type, cutoff type, α, r_c, η, r_s, (ζ, λ,) then the neighbour
element(s) by atomic number, and that sorted order is the network's input order and the row
order of scaling.data. mlpot's own per-element order (radial blocks per neighbour element,
then angular blocks per element pair, see
:meth:`~mlpot.descriptors.SymmetryFunctionSpec.features`) differs, so the import permutes
the first layer's weight columns and the scaling statistics into mlpot's order, and the
export permutes them back.

**Units.** n2p2 files carry no units; the model works in eV and Å, so η, r_s, r_c and all
energies are converted at the edge with ``units`` (``"bohr_hartree"``, ``"angstrom_ev"``,
an explicit (Å per length unit, eV per energy unit) pair, or ``"auto"``: read the
``# Length unit : Bohr`` / ``# Energy unit : Ha`` comments that n2p2's examples and this
module's export write). The named systems use :mod:`mlpot.units`, i.e. ASE's constants
(CODATA 2014: 1 Bohr = 0.52917721056 Å, 1 Ha = 27.211386024 eV); CODATA 2018 or n2p2's
LAMMPS-example factors differ in the 8th–9th digit, so pass an explicit pair to
reproduce eV numbers computed with other constants.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from ase.data import atomic_numbers

from ..units import unit_factors

__all__ = ["N2P2Error", "read_potential", "write_potential", "n2p2_feature_order",
           "ACTIVATION_LETTERS", "CUTOFF_TYPES"]

log = logging.getLogger(__name__)

#: n2p2 activation letter → mlpot activation name.
ACTIVATION_LETTERS = {"t": "tanh", "p": "softplus", "l": "identity", "s": "sigmoid",
                      "g": "gaussian", "c": "cos"}
_LETTER_OF = {v: k for k, v in ACTIVATION_LETTERS.items()}
_UNSUPPORTED_ACTIVATIONS = {"r": "ReLU", "S": "reversed logistic 1 − σ(x)", "e": "exp(−x)",
                            "h": "harmonic x²"}
#: n2p2 ``cutoff_type`` → mlpot cutoff function (0, the hard cutoff, has no equivalent).
CUTOFF_TYPES = {1: "cos", 2: "tanhu", 3: "tanh", 4: "exp", 5: "poly1", 6: "poly2",
                7: "poly3", 8: "poly4"}
_CUTOFF_TYPE_OF = {v: k for k, v in CUTOFF_TYPES.items()}
_SF_KINDS = {2: "G2", 3: "G4", 9: "G5"}
_SF_TYPE_OF = {"G4": 3, "G5": 9}

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


class N2P2Error(ValueError):
    """An n2p2 file is missing, malformed or describes something mlpot cannot represent;
    the message names the file and, where there is one, the line."""


@dataclass(frozen=True)
class _Entry:
    line: int  # 1-based line number in input.nn
    args: tuple[str, ...]


@dataclass(frozen=True)
class _SF:
    """One n2p2 symmetry function, parameters in file units."""

    line: int
    centre: str
    type: int
    neighbours: tuple[str, ...]  # (e1,) or (e1, e2) sorted by atomic number
    eta: float
    rs: float
    rc: float
    lam: float = 0.0
    zeta: float = 0.0

    def sort_key(self) -> tuple:
        """n2p2's ``SymFnc::operator<`` (type, [cutoff type, α: global], r_c, η, r_s, ζ, λ,
        e1, e2); neighbour elements compare by atomic number, as in n2p2's element map."""
        nb = tuple(atomic_numbers[e] for e in self.neighbours)
        if self.type == 2:
            return (self.type, self.rc, self.eta, self.rs, nb)
        return (self.type, self.rc, self.eta, self.rs, self.zeta, self.lam, nb)


# ---------------------------------------------------------------------- unit conversions
# The single place where file units become Å/eV; the export searches the shortest decimal
# that these same functions map back onto the model's value, so a round trip is exact.
def _length(x: float, length: float) -> float:
    return x * length


def _eta(x: float, length: float) -> float:
    return x / (length * length)


def _shortest(value: float, forward: Callable[[float], float], guess: float) -> str:
    """The shortest decimal string s with forward(float(s)) == value (exact), else repr."""
    if not math.isfinite(guess):
        raise N2P2Error(f"cannot write the non-finite value {guess}")
    for digits in range(1, 18):
        s = f"{guess:.{digits}g}"
        if forward(float(s)) == value:
            return s
    # No decimal of the guess maps back exactly: try its neighbours a few ulps away.
    below = above = guess
    for _ in range(8):
        below, above = math.nextafter(below, -math.inf), math.nextafter(above, math.inf)
        for candidate in (below, above):
            if forward(candidate) == value:
                return repr(candidate)
    return repr(guess)  # within an ulp or two; the conversion has no exact preimage


# ---------------------------------------------------------------------- input.nn
def _read_settings(path: Path) -> tuple[dict[str, list[_Entry]], list[str]]:
    """Keyword → entries (n2p2's parser: '#' and '!' start comments), and the comment texts."""
    if not path.is_file():
        raise FileNotFoundError(f"n2p2 potential: no such file {path}")
    entries: dict[str, list[_Entry]] = {}
    comments: list[str] = []
    for number, raw in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        cut = len(raw)
        for mark in "#!":
            if mark in raw:
                cut = min(cut, raw.index(mark))
        comments.append(raw[cut:])
        tokens = raw[:cut].split()
        if tokens:
            entries.setdefault(tokens[0], []).append(_Entry(number, tuple(tokens[1:])))
    return entries, comments


def _number(token: str, where: str, what: str, kind: type = float):
    try:
        value = kind(token)
    except ValueError:
        raise N2P2Error(f"{where}: {what} must be {'an integer' if kind is int else 'a number'}, "
                        f"got {token!r}") from None
    if kind is float and not math.isfinite(value):
        raise N2P2Error(f"{where}: {what} must be finite, got {token!r}")
    return value


def _units_from_comments(comments: list[str]) -> tuple[str | None, str | None]:
    found: dict[str, str] = {}
    for text in comments:
        m = re.search(r"(length|energy)\s+unit\s*:\s*(\S+)", text, re.IGNORECASE)
        if m:
            found.setdefault(m.group(1).lower(), m.group(2).lower())
    return found.get("length"), found.get("energy")


_LENGTH_NAMES = {"bohr": "bohr", "a0": "bohr", "angstrom": "angstrom", "ang": "angstrom",
                 "å": "angstrom", "a": "angstrom"}
_ENERGY_NAMES = {"ha": "hartree", "hartree": "hartree", "eh": "hartree", "ev": "ev"}


def _resolve_units(units, comments: list[str], path: Path) -> tuple[float, float, str | None]:
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


def _single(settings: dict[str, list[_Entry]], key: str, where: Path, required: bool = True) -> _Entry | None:
    entries = settings.get(key, [])
    if not entries:
        if required:
            raise N2P2Error(f"{where}: required keyword {key!r} is missing")
        return None
    return entries[0]


def _check_keywords(settings: dict[str, list[_Entry]], path: Path) -> None:
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
        # n2p2 itself only warns about unknown keywords.
        warnings.warn(f"{path}: unknown n2p2 keyword(s) ignored: "
                      + ", ".join(f"{k!r} (line {n})" for k, n in unknown), stacklevel=3)


def _parse_sf(entry: _Entry, elements: tuple[str, ...], path: Path) -> _SF:
    where = f"{path}:{entry.line}"
    a = entry.args
    if len(a) < 2:
        raise N2P2Error(f"{where}: symfunction_short needs a centre element and a type")
    centre = a[0]
    if centre not in elements:
        raise N2P2Error(f"{where}: symfunction_short centre element {centre!r} is not in elements {list(elements)}")
    sf_type = _number(a[1], where, "symmetry function type", int)
    if sf_type not in _SF_KINDS:
        raise N2P2Error(f"{where}: symmetry function type {sf_type} is not supported "
                        "(mlpot has types 2, 3 and 9: radial, narrow and wide angular)")
    n_nb = 1 if sf_type == 2 else 2
    n_num = 3 if sf_type == 2 else 4  # η r_s r_c | η λ ζ r_c
    if len(a) not in (2 + n_nb + n_num, 2 + n_nb + n_num + (sf_type != 2)):
        raise N2P2Error(f"{where}: symfunction_short type {sf_type} needs "
                        + ("'ec 2 e1 eta rs rc'" if sf_type == 2 else f"'ec {sf_type} e1 e2 eta lambda zeta rc [rs]'")
                        + f", got {len(a)} fields")
    neighbours = a[2:2 + n_nb]
    for el in neighbours:
        if el not in elements:
            raise N2P2Error(f"{where}: neighbour element {el!r} is not in elements {list(elements)}")
    nums = [_number(t, where, name, float) for t, name in
            zip(a[2 + n_nb:], ("eta", "rs", "rc") if sf_type == 2 else ("eta", "lambda", "zeta", "rc", "rs"))]
    neighbours = tuple(sorted(neighbours, key=lambda e: atomic_numbers[e]))
    if sf_type == 2:
        eta, rs, rc = nums
        sf = _SF(entry.line, centre, 2, neighbours, eta, rs, rc)
    else:
        eta, lam, zeta, rc = nums[:4]
        rs = nums[4] if len(nums) > 4 else 0.0
        sf = _SF(entry.line, centre, sf_type, neighbours, eta, rs, rc, lam, zeta)
    if not (sf.rc > 0 and sf.eta >= 0 and sf.rs >= 0):
        raise N2P2Error(f"{where}: need rc > 0, eta >= 0 and rs >= 0")
    if sf_type != 2 and (sf.lam not in (-1.0, 1.0) or sf.zeta < 1):
        raise N2P2Error(f"{where}: need lambda = ±1 and zeta >= 1")
    return sf


# ---------------------------------------------------------------------- scaling and weights
def _data_lines(path: Path) -> list[tuple[int, list[str]]]:
    if not path.is_file():
        raise FileNotFoundError(f"n2p2 potential: no such file {path}")
    out = []
    for number, raw in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if raw.strip() and not raw.lstrip().startswith("#"):
            out.append((number, raw.split()))
    return out


def _read_scaling(path: Path, n_sf: list[int]) -> list[np.ndarray]:
    """Per element, (n_sf, 4) min, max, mean, sigma rows in n2p2 order."""
    lines = _data_lines(path)
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
            ie, isf = (_number(t, where, name, int) for t, name in zip(tok[:2], ("element index", "sf index")))
            if (ie, isf) != (e + 1, s + 1):
                raise N2P2Error(f"{where}: expected element {e + 1}, symmetry function {s + 1} "
                                f"(input.nn order), got {ie}, {isf}")
            vals = [_number(t, where, name) for t, name in zip(tok[2:6], ("min", "max", "mean", "sigma"))]
            rows[s] = vals + [0.0] * (4 - len(vals))  # old files have no sigma
        out.append(rows)
    # n2p2 ignores trailing lines; more rows than functions means a mismatch, though.
    if k != len(lines):
        raise N2P2Error(f"{path}:{lines[k][0]}: more data lines than the {total} symmetry functions of input.nn")
    return out


def _read_weights(path: Path, sizes: list[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
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
    lines = _data_lines(path)
    if len(lines) != expected:
        raise N2P2Error(f"{path}: {len(lines)} connections, but the {arch} network of input.nn "
                        f"needs {expected}")
    position = 0
    for number, tok in lines:
        where = f"{path}:{number}"
        if len(tok) < 2 or tok[1] not in ("a", "b") or len(tok) != (7 if tok[1] == "a" else 5):
            raise N2P2Error(f"{where}: expected 'value a index l_s n_s l_e n_e' or 'value b index l_e n_e'")
        value = _number(tok[0], where, "connection value")
        idx = [_number(t, where, "index", int) for t in tok[2:]]
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


# ---------------------------------------------------------------------- import
def read_potential(folder, units: str | tuple[float, float] = "auto", dtype: torch.dtype = torch.float64):
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
    from ..descriptors import AngularTerm, RadialTerm, SymmetryFunctionSpec
    from ..descriptors.scaling import FeatureScaler, FeatureStatistics
    from ..models import NetworkConfig, Potential

    folder = Path(folder)
    path = folder / "input.nn"
    settings, comments = _read_settings(path)
    _check_keywords(settings, path)
    length, energy, unit_name = _resolve_units(units, comments, path)

    # mlpot indexes elements in the order of the elements line (so that write_potential's
    # files give the model's own order back); n2p2 orders them by atomic number, which is
    # the order of scaling.data.
    entry = _single(settings, "elements", path)
    for el in entry.args:
        if el not in atomic_numbers or el == "X":
            raise N2P2Error(f"{path}:{entry.line}: unknown element {el!r}")
    elements = tuple(dict.fromkeys(entry.args))
    if len(elements) != len(entry.args) or not elements:
        raise N2P2Error(f"{path}:{entry.line}: elements must be distinct and non-empty")
    n_entry = _single(settings, "number_of_elements", path)
    if not n_entry.args or _number(n_entry.args[0], f"{path}:{n_entry.line}", "number_of_elements", int) != len(elements):
        raise N2P2Error(f"{path}:{n_entry.line}: number_of_elements does not match the {len(elements)} elements")

    # Energies: E = Σ_i [mean + offset(Z_i) + NN_i / conv_energy] in file units.
    norm = {k: _single(settings, k, path, required=False) for k in ("mean_energy", "conv_energy", "conv_length")}
    given = [k for k, v in norm.items() if v is not None]
    if given and len(given) != 3:
        raise N2P2Error(f"{path}:{norm[given[0]].line}: use all or none of mean_energy, conv_energy "
                        "and conv_length")
    values = {k: (_number(v.args[0] if v.args else "", f"{path}:{v.line}", k) if v else None)
              for k, v in norm.items()}
    mean_energy = values["mean_energy"] or 0.0
    conv_energy = values["conv_energy"] if given else 1.0
    if not conv_energy > 0:
        raise N2P2Error(f"{path}:{norm['conv_energy'].line}: conv_energy must be positive")
    offsets = dict.fromkeys(elements, 0.0)
    for e in settings.get("atom_energy", []):
        where = f"{path}:{e.line}"
        if len(e.args) < 2 or e.args[0] not in elements:
            raise N2P2Error(f"{where}: atom_energy needs an element of {list(elements)} and a value")
        offsets[e.args[0]] = _number(e.args[1], where, "atom_energy")

    # Cutoff function.
    entry = _single(settings, "cutoff_type", path)
    where = f"{path}:{entry.line}"
    ctype = _number(entry.args[0] if entry.args else "", where, "cutoff_type", int)
    if ctype not in CUTOFF_TYPES:
        raise N2P2Error(f"{where}: cutoff_type {ctype} is not supported (mlpot has "
                        + ", ".join(f"{k} {v}" for k, v in CUTOFF_TYPES.items()) + "; 0 is a hard cutoff)")
    alpha = _number(entry.args[1], where, "cutoff alpha") if len(entry.args) > 1 else 0.0
    if not 0.0 <= alpha < 1.0:
        raise N2P2Error(f"{where}: cutoff alpha must be in [0, 1), got {alpha}")

    # Scaling type, with n2p2's precedence.
    scale, center, sigma = (k in settings for k in ("scale_symmetry_functions", "center_symmetry_functions",
                                                    "scale_symmetry_functions_sigma"))
    mode = ("scale_center" if scale and center else "scale" if scale else "center" if center
            else "scale_sigma" if sigma else "none")
    s_min, s_max = 0.0, 1.0
    if mode in ("scale", "scale_center", "scale_sigma"):
        for key in ("scale_min_short", "scale_max_short"):
            e = _single(settings, key, path, required=False)
            if e is not None:
                v = _number(e.args[0] if e.args else "", f"{path}:{e.line}", key)
                s_min, s_max = (v, s_max) if key == "scale_min_short" else (s_min, v)
        if not s_max > s_min:
            raise N2P2Error(f"{path}: scale_max_short must exceed scale_min_short")

    # Network architecture.
    entry = _single(settings, "global_hidden_layers_short", path)
    n_hidden = _number(entry.args[0] if entry.args else "", f"{path}:{entry.line}", "global_hidden_layers_short", int)
    if n_hidden < 1:
        raise N2P2Error(f"{path}:{entry.line}: at least one hidden layer is needed")
    entry = _single(settings, "global_nodes_short", path)
    if len(entry.args) != n_hidden:
        raise N2P2Error(f"{path}:{entry.line}: global_nodes_short needs {n_hidden} widths, got {len(entry.args)}")
    widths = [_number(t, f"{path}:{entry.line}", "global_nodes_short", int) for t in entry.args]
    if min(widths) < 1:
        raise N2P2Error(f"{path}:{entry.line}: widths must be positive")
    entry = _single(settings, "global_activation_short", path)
    if len(entry.args) != n_hidden + 1:
        raise N2P2Error(f"{path}:{entry.line}: global_activation_short needs {n_hidden + 1} letters "
                        f"(hidden layers and output), got {len(entry.args)}")
    acts = []
    for letter in entry.args:
        if letter not in ACTIVATION_LETTERS:
            what = _UNSUPPORTED_ACTIVATIONS.get(letter, "unknown to n2p2")
            raise N2P2Error(f"{path}:{entry.line}: global_activation_short: activation {letter!r} ({what}) "
                            f"is not supported; mlpot has {sorted(ACTIVATION_LETTERS)}")
        acts.append(ACTIVATION_LETTERS[letter])

    # Terms in input.nn order (so a file written by write_potential gives back the model's
    # own feature order); n2p2's network-input order is the sorted one, a stable sort
    # keeping input order on exact ties.
    sfs = [_parse_sf(e, elements, path) for e in settings.get("symfunction_short", [])]
    sorted_index: dict[int, int] = {}  # position in sfs -> index in its element's n2p2 order
    for el in elements:
        mine = sorted((i for i, s in enumerate(sfs) if s.centre == el), key=lambda i: sfs[i].sort_key())
        if not mine:
            raise N2P2Error(f"{path}: element {el} has no symfunction_short lines")
        sorted_index.update({i: k for k, i in enumerate(mine)})
    terms: dict[int, int] = {}  # id(term) -> n2p2 index within its centre element
    radial, angular = [], []
    for i, s in enumerate(sfs):
        common = dict(eta=_eta(s.eta, length), r_s=_length(s.rs, length), cutoff=_length(s.rc, length),
                      centre=s.centre)
        if s.type == 2:
            t = RadialTerm(neighbour=s.neighbours[0], **common)
            radial.append(t)
        else:
            t = AngularTerm(kind=_SF_KINDS[s.type], zeta=s.zeta, lam=s.lam, neighbours=s.neighbours, **common)
            angular.append(t)
        terms[id(t)] = sorted_index[i]
    spec = SymmetryFunctionSpec(elements=elements, cutoff=max(t.cutoff for t in radial + angular),
                                cutoff_function=CUTOFF_TYPES[ctype], cutoff_alpha=alpha,
                                radial=tuple(radial), angular=tuple(angular))
    # perm[el][k] = n2p2 index of mlpot feature k.
    perm = {el: [terms[id(f.term)] for f in spec.features(el)] for el in elements}

    config = NetworkConfig(hidden=tuple(widths), layer_activations=tuple(acts[:-1]),
                           activation=acts[0], output_activation=acts[-1], block="plain")
    model = Potential(spec, config).to(dtype)
    n_sf = [len(perm[el]) for el in elements]
    by_number = sorted(elements, key=lambda e: atomic_numbers[e])
    rows = _read_scaling(folder / "scaling.data", [len(perm[el]) for el in by_number])
    scaling = [rows[by_number.index(el)] for el in elements]

    # scaling.data holds n2p2's min, max, mean and sigma; FeatureStatistics keeps sigma as
    # M2 = count·sigma², so count 1 and M2 = sigma² (sqrt(sigma²) is sigma again, bit for bit,
    # in binary floating point). FeatureScaler.from_statistics then derives n2p2's map.
    stats = FeatureStatistics(len(elements), n_sf)
    stats.count.fill_(1.0)
    for e, el in enumerate(elements):
        g_min, g_max, g_mean, g_sigma = torch.as_tensor(scaling[e][perm[el]].T)
        if bool((g_sigma < 0).any()):
            k = int(torch.nonzero(g_sigma < 0)[0])
            raise N2P2Error(f"{folder / 'scaling.data'}: element {el}, symmetry function {perm[el][k] + 1} "
                            f"has a negative sigma")
        stats.min[e, : n_sf[e]], stats.max[e, : n_sf[e]], stats.mean[e, : n_sf[e]] = g_min, g_max, g_mean
        stats.m2[e, : n_sf[e]] = g_sigma**2
        spread = {"scale": g_max - g_min, "scale_center": g_max - g_min, "scale_sigma": g_sigma}.get(mode)
        if spread is not None and bool((spread <= 0).any()):
            k = int(torch.nonzero(spread <= 0)[0])
            raise N2P2Error(f"{folder / 'scaling.data'}: element {el}, symmetry function {perm[el][k] + 1} "
                            f"has zero range or sigma; n2p2 would divide by zero")
    scaler = FeatureScaler.from_statistics(stats, mode, s_min, s_max)
    if mode in ("scale", "scale_center", "scale_sigma") and bool(scaler.constant_mask.any()):
        # mlpot leaves a feature of range ≤ 1e-12·|max| unscaled, where n2p2 divides by it.
        e, k = torch.nonzero(scaler.constant_mask)[0].tolist()
        raise N2P2Error(f"{folder / 'scaling.data'}: element {elements[e]}, symmetry function "
                        f"{perm[elements[e]][k] + 1} has a range of ~0 (≤ 1e-12 of its values); n2p2 "
                        f"would divide by it")
    model.descriptor.scaler = scaler

    sizes_of = {el: [n_sf[e], *widths, 1] for e, el in enumerate(elements)}
    with torch.no_grad():
        for el in elements:
            wpath = folder / f"weights.{atomic_numbers[el]:03d}.data"
            weights, biases = _read_weights(wpath, sizes_of[el])
            weights[0] = weights[0][:, perm[el]]  # input columns into mlpot's feature order
            linears = model.networks.network(el).linear_layers()
            for lin, w, bias in zip(linears, weights, biases):
                lin.weight.copy_(torch.as_tensor(w))
                lin.bias.copy_(torch.as_tensor(bias))
        model.reference_energies.copy_(torch.tensor([(mean_energy + offsets[el]) * energy for el in elements],
                                                    dtype=torch.float64))
        model.energy_scale.fill_(energy / conv_energy)
    model.metadata = {"n2p2": {
        "source": str(folder), "units": unit_name, "length_to_angstrom": length, "energy_to_ev": energy,
        "mean_energy": mean_energy if given else None, "conv_energy": values["conv_energy"],
        "conv_length": values["conv_length"], "atom_energy": {el: offsets[el] for el in elements},
    }}
    return model.eval()


# ---------------------------------------------------------------------- export
def _check_exportable(model) -> None:
    config = model.config
    if config.block != "plain":
        raise N2P2Error(f"cannot export: {config.block!r} blocks (skip connections"
                        + (", stochastic depth" if config.survival < 1 else "")
                        + ") have no n2p2 equivalent; n2p2 networks are plain MLPs")
    for act in (*config.hidden_activations, config.output_activation):
        if act not in _LETTER_OF:
            raise N2P2Error(f"cannot export: activation {act!r} has no n2p2 equivalent "
                            f"(n2p2 letters map to {sorted(_LETTER_OF)})")
    spec = model.spec
    if spec.cutoff_function not in _CUTOFF_TYPE_OF:
        raise N2P2Error(f"cannot export: cutoff function {spec.cutoff_function!r} has no n2p2 cutoff_type")


def _scaling_rows(model) -> tuple[str, float, float, dict[str, np.ndarray]]:
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
        # The export is only faithful if the scaler's affine map is the one n2p2 derives
        # from these statistics.
        spread = {"scale": r[:, 1] - r[:, 0], "scale_center": r[:, 1] - r[:, 0], "scale_sigma": r[:, 3]}.get(mode)
        centre = {"scale": r[:, 0], "center": r[:, 2], "scale_center": r[:, 2], "scale_sigma": r[:, 2]}.get(mode)
        a = np.ones(n[el]) if spread is None else (s_max - s_min) / spread
        b = np.zeros(n[el]) if centre is None else (s_min - a * centre if spread is not None else -centre)
        w, bb = scaler.weight[e, : n[el]].double().cpu().numpy(), scaler.bias[e, : n[el]].double().cpu().numpy()
        # Bitwise in float64 (same formula as FeatureScaler.from_statistics); a float32
        # model rounded its statistics and its map separately.
        rtol = 1e-12 if scaler.weight.dtype == torch.float64 else 1e3 * torch.finfo(scaler.weight.dtype).eps
        tol = rtol * max(1.0, float(np.abs(bb).max(initial=0.0)))
        if not (np.allclose(a, w, rtol=rtol, atol=0) and np.allclose(b, bb, rtol=rtol, atol=tol)):
            raise N2P2Error(f"cannot export: the descriptor scaling of {el} is not the n2p2 "
                            f"{mode!r} map of its stored statistics (was the scaler edited?)")
    return mode, s_min, s_max, rows


def _n2p2_lines(model, length: float) -> dict[str, list[tuple[tuple, str, int]]]:
    """Per element, (n2p2 sort key, input.nn line, mlpot feature index) in n2p2's order.

    The numbers are the shortest decimals that read back (through :func:`_eta` and
    :func:`_length`) to the model's values exactly, and the sort keys are computed from
    those numbers, as n2p2 will see them.
    """
    fmt = _shortest
    per_element: dict[str, list[tuple[tuple, str, int]]] = {}
    for el in model.elements:
        lst = []
        for k, f in enumerate(model.descriptor.features[el]):
            t = f.term
            eta = fmt(t.eta, lambda x: _eta(x, length), t.eta * length * length)
            rs = fmt(t.r_s, lambda x: _length(x, length), t.r_s / length)
            rc = fmt(t.cutoff, lambda x: _length(x, length), t.cutoff / length)
            nb = tuple(sorted(f.neighbours, key=lambda e: atomic_numbers[e]))
            if len(nb) == 1:
                sf = _SF(0, el, 2, nb, float(eta), float(rs), float(rc))
                text = f"symfunction_short {el:2s} 2 {nb[0]:2s} {eta} {rs} {rc}"
            else:
                sf = _SF(0, el, _SF_TYPE_OF[t.kind], nb, float(eta), float(rs), float(rc), t.lam, t.zeta)
                text = (f"symfunction_short {el:2s} {sf.type} {nb[0]:2s} {nb[1]:2s} {eta} {t.lam:g} "
                        f"{t.zeta:.17g} {rc}" + (f" {rs}" if t.r_s != 0 else ""))
            lst.append((sf.sort_key(), text, k))
        # n2p2's order; a stable sort keeps exact duplicates in mlpot order.
        per_element[el] = sorted(lst, key=lambda x: x[0])
    return per_element


def n2p2_feature_order(model, units: str | tuple[float, float] | None = None) -> dict[str, list[int]]:
    """Per element, the mlpot descriptor column of each n2p2 symmetry function, in n2p2's
    order (the order of n2p2's network inputs and of scaling.data rows): ``G_n2p2 =
    G_mlpot[:, order[element]]`` for that element's atoms.

    Args:
        model: a :class:`~mlpot.models.Potential` with G2/G4/G5 terms.
        units: the file units the order is taken in (only exact ties can depend on them);
            default as for :func:`write_potential`.
    """
    return {el: [k for _, _, k in lst] for el, lst in _n2p2_lines(model, _export_units(model, units)[0]).items()}


def _export_units(model, units) -> tuple[float, float]:
    meta = (getattr(model, "metadata", None) or {}).get("n2p2") or {}
    if units is None:
        units = (meta.get("units") or (meta["length_to_angstrom"], meta["energy_to_ev"])) if meta else "angstrom_ev"
    return unit_factors(units)


def write_potential(model, folder, units: str | tuple[float, float] | None = None) -> Path:
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
    meta = (getattr(model, "metadata", None) or {}).get("n2p2") or {}
    length, energy = _export_units(model, units)
    names = {(1.0, 1.0): ("Angstrom", "eV")}
    bohr, hartree = unit_factors("bohr_hartree")
    names[(bohr, hartree)] = ("Bohr", "Ha")
    unit_names = names.get((length, energy))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    elements = model.elements
    spec = model.spec
    fmt = _shortest

    per_element = _n2p2_lines(model, length)
    mode, s_min, s_max, rows = _scaling_rows(model)

    # Energies: model E = Σ [ref(Z) + s NN]; n2p2 E = Σ [mean + offset(Z) + NN / conv_energy].
    # An imported model gets its own mean_energy/atom_energy back when they still reproduce
    # its reference energies; otherwise mean_energy = 0 and the offsets carry everything.
    ref = model.reference_energies.double().tolist()
    scale = float(model.energy_scale)
    conv_length = float(meta.get("conv_length") or 1.0)
    mean_text = "0.0"
    offsets_text = {el: fmt(r, lambda x: (0.0 + x) * energy, r / energy) for el, r in zip(elements, ref)}
    conv_text = fmt(scale, lambda x: energy / x, energy / scale)
    if meta.get("mean_energy") is not None and (length, energy) == (meta["length_to_angstrom"], meta["energy_to_ev"]):
        m, offs, ce = meta["mean_energy"], meta["atom_energy"], meta["conv_energy"]
        if [(m + offs.get(el, 0.0)) * energy for el in elements] == ref and energy / ce == scale:
            mean_text, conv_text = repr(m), repr(ce)
            offsets_text = {el: repr(offs.get(el, 0.0)) for el in elements}

    cfg = model.config
    letters = [_LETTER_OF[a] for a in (*cfg.hidden_activations, cfg.output_activation)]
    out = ["#" * 79, "# n2p2 HDNNP written by mlpot (mlpot.io.n2p2.write_potential)"]
    if unit_names:
        out += [f"# Length unit     : {unit_names[0]}", f"# Energy unit     : {unit_names[1]}"]
    else:
        out += [f"# Units: 1 length unit = {length!r} Angstrom, 1 energy unit = {energy!r} eV"]
    out += ["#" * 79, "",
            f"mean_energy {mean_text}", f"conv_energy {conv_text}", f"conv_length {conv_length!r}", "",
            f"number_of_elements {len(elements)}",
            "elements " + " ".join(elements)]  # n2p2 sorts them; read_potential keeps this order
    out += [f"atom_energy {el:2s} {offsets_text[el]}" for el in elements]
    out.append(f"cutoff_type {_CUTOFF_TYPE_OF[spec.cutoff_function]} {spec.cutoff_alpha!r}")
    out += {"scale": ["scale_symmetry_functions"], "center": ["center_symmetry_functions"],
            "scale_center": ["scale_symmetry_functions", "center_symmetry_functions"],
            "scale_sigma": ["scale_symmetry_functions_sigma"], "none": []}[mode]
    if mode in ("scale", "scale_center", "scale_sigma"):
        out += [f"scale_min_short {s_min!r}", f"scale_max_short {s_max!r}"]
    out += [f"global_hidden_layers_short {len(cfg.hidden_sizes)}",
            "global_nodes_short " + " ".join(map(str, cfg.hidden_sizes)),
            "global_activation_short " + " ".join(letters), ""]
    # In mlpot's feature order, which read_potential keeps; n2p2 sorts them itself.
    out += ["# symmetry functions (n2p2 sorts them per element; scaling.data follows that order)"]
    for el in sorted(elements, key=lambda e: atomic_numbers[e]):
        out += [text for _, text, _ in sorted(per_element[el], key=lambda x: x[2])]
    from .files import atomic_write_text

    atomic_write_text(folder / "input.nn", "\n".join(out) + "\n")

    # scaling.data rows: elements by atomic number (n2p2's element index), n2p2 SF order.
    lines = ["#" * 79, "# Symmetry function scaling data (mlpot).",
             "# e_index sf_index sf_min sf_max sf_mean sf_sigma", "#" * 79]
    for e, el in enumerate(sorted(elements, key=lambda x: atomic_numbers[x]), start=1):
        for j, (_, _, k) in enumerate(per_element[el], start=1):
            lines.append(f"{e:10d} {j:10d} " + " ".join(f"{v:24.16E}" for v in rows[el][k]))
    atomic_write_text(folder / "scaling.data", "\n".join(lines) + "\n")

    for el in elements:
        order = [k for _, _, k in per_element[el]]
        linears = model.networks.network(el).linear_layers()
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
        atomic_write_text(folder / f"weights.{atomic_numbers[el]:03d}.data", "\n".join(lines) + "\n")
    return folder

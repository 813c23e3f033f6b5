"""What every part of the n2p2 reader and writer shares: the error type, n2p2's activation
letters, cutoff types and symmetry-function types, and the unit conversions of parameters."""

from __future__ import annotations

import math
from typing import Callable

__all__ = ["N2P2Error", "ACTIVATION_LETTERS", "LETTER_OF", "UNSUPPORTED_ACTIVATIONS", "CUTOFF_TYPES",
           "CUTOFF_TYPE_OF", "SF_KINDS", "SF_TYPE_OF", "length_from_file", "eta_from_file", "shortest"]

#: n2p2 activation letter → mlpot activation name.
ACTIVATION_LETTERS = {"t": "tanh", "p": "softplus", "l": "identity", "s": "sigmoid",
                      "g": "gaussian", "c": "cos"}
LETTER_OF = {v: k for k, v in ACTIVATION_LETTERS.items()}
UNSUPPORTED_ACTIVATIONS = {"r": "ReLU", "S": "reversed logistic 1 − σ(x)", "e": "exp(−x)",
                           "h": "harmonic x²"}
#: n2p2 ``cutoff_type`` → mlpot cutoff function (0, the hard cutoff, has no equivalent).
CUTOFF_TYPES = {1: "cos", 2: "tanhu", 3: "tanh", 4: "exp", 5: "poly1", 6: "poly2",
                7: "poly3", 8: "poly4"}
CUTOFF_TYPE_OF = {v: k for k, v in CUTOFF_TYPES.items()}
#: n2p2 symmetry-function type → mlpot term kind (2 radial, 3 narrow and 9 wide angular).
SF_KINDS = {2: "G2", 3: "G4", 9: "G5"}
SF_TYPE_OF = {"G4": 3, "G5": 9}


class N2P2Error(ValueError):
    """An n2p2 file is missing, malformed or describes something mlpot cannot represent;
    the message names the file and, where there is one, the line."""


# The single place where file units become Å/eV; the export searches the shortest decimal
# that these same functions map back onto the model's value, so a round trip is exact.
def length_from_file(x: float, length: float) -> float:
    """A length (r_s, r_c) in file units → Å; ``length`` is Å per file length unit."""
    return x * length


def eta_from_file(x: float, length: float) -> float:
    """η in file units (length⁻²) → Å⁻²; ``length`` is Å per file length unit."""
    return x / (length * length)


def shortest(value: float, forward: Callable[[float], float], guess: float) -> str:
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

"""Scalar float64 math for the compiled kernels (numba): a vectorisable exp, expm1 and tanh,
and the cutoff functions compiled from their shared formulas.

libm's exp is a call that stops LLVM from vectorising a loop (~10 ns each here); the exp
here is inlined arithmetic (Cody–Waite reduction, degree-13 Taylor polynomial on
|r| ≤ ln2/2, scaling by 2^n through the exponent bits): within 1 ulp of libm, ~3 ns, and
loops over triplets that use it vectorise.

The cutoff functions are not written here: :func:`_compiled_cutoffs` compiles the formulas
and slopes registered in :mod:`mlpot.descriptors.cutoffs` (the ones torch differentiates),
with ``exp``/``tanh`` bound to the inlined functions below and ``cos``/``sin`` to libm's.
Importing this module needs numba.

On-disk cache: numba keys a cached kernel on its own source file (time stamp and size) and
bytecode only, not on the code it compiles in from elsewhere. The kernels of
:mod:`~mlpot.descriptors.angular_kernel` compile in this module's functions and the cutoff
formulas of :mod:`~mlpot.descriptors.cutoffs` (through a routine generated with ``exec``,
which numba cannot cache by itself): an edit of either would leave a stale kernel in the
cache. :func:`cache_with_dependencies` therefore adds :data:`DEPENDENCY_DIGEST`, a hash of
this file and of the generated routine with its formulas' bytecode, to numba's cache key;
and where numba finds no writable cache folder (neither ``__pycache__`` beside the source,
nor ``NUMBA_CACHE_DIR``, nor the user's cache folder), it compiles in every process and says
so once, instead of failing at import.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from pathlib import Path

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

__all__ = ["NUMBA_CUTOFF_CODES", "DEPENDENCY_DIGEST", "cache_with_dependencies"]

_warned_uncached = False


def _warn_uncached(exc: Exception) -> None:
    global _warned_uncached
    if not _warned_uncached:
        _warned_uncached = True
        warnings.warn(f"numba cannot cache mlpot's compiled descriptor kernels ({exc}); every new process "
                      "compiles them on first use (~20 s). Set NUMBA_CACHE_DIR to a writable folder to "
                      "keep them.", RuntimeWarning, stacklevel=3)


def _njit_cached(**options):
    """``njit(cache=True, **options)``, or without the cache (and a warning, once) where
    numba has no writable cache folder: numba would raise at import otherwise."""
    def decorate(fn):
        try:
            return njit(cache=True, **options)(fn)
        except RuntimeError as exc:
            _warn_uncached(exc)
            return njit(**options)(fn)
    return decorate


@intrinsic
def _float_bits(typingctx, x):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int64))
    return types.int64(types.float64), codegen


@intrinsic
def _bits_float(typingctx, x):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))
    return types.float64(types.int64), codegen


_ROUND = 6755399441055744.0  # 1.5 · 2^52: adding it rounds to an integer in the low bits
_LOG2E = 1.4426950408889634
_LN2_HI = 0.693147180369123816490
_LN2_LO = 1.90821492927058770002e-10
_INV_FACT = tuple(1.0 / math.factorial(k) for k in range(14))
(_C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12, _C13) = _INV_FACT[2:]


@_njit_cached(nogil=True, error_model="numpy", inline="always")
def _expm1_reduced(r):
    """e^r − 1 for |r| ≤ ln2/2 (no constant term: exact for small r)."""
    p = _C13
    p = p * r + _C12
    p = p * r + _C11
    p = p * r + _C10
    p = p * r + _C9
    p = p * r + _C8
    p = p * r + _C7
    p = p * r + _C6
    p = p * r + _C5
    p = p * r + _C4
    p = p * r + _C3
    p = p * r + _C2
    p = p * r + 1.0
    return p * r


@_njit_cached(nogil=True, error_model="numpy", inline="always")
def _exp(x):
    """e^x: 0 below −708 (where e^x is below the normal range), the value at 709 above 709."""
    y = min(max(x, -708.0), 709.0)
    t = y * _LOG2E + _ROUND
    n = t - _ROUND
    r = (y - n * _LN2_HI) - n * _LN2_LO
    value = (_expm1_reduced(r) + 1.0) * _bits_float((_float_bits(t) + 1023) << 52)
    return value if x >= -708.0 else 0.0


@_njit_cached(nogil=True, error_model="numpy", inline="always")
def _expm1(x):
    """e^x − 1 for −708 ≤ x ≤ 0, exact to rounding also near 0."""
    return _expm1_reduced(x) if x > -0.34657359027997264 else _exp(x) - 1.0


@_njit_cached(nogil=True, error_model="numpy", inline="always")
def _tanh(y):
    """tanh y = −expm1(−2|y|) / (2 + expm1(−2|y|)) with the sign of y (vectorisable)."""
    em = _expm1(-2.0 * abs(y))
    th = -em / (2.0 + em)
    return th if y >= 0.0 else -th


#: The scalar functions a cutoff formula's names are bound to (see cutoffs.scalar_form).
_FORMULA_FUNCTIONS = {"cos": math.cos, "sin": math.sin, "exp": _exp, "tanh": _tanh}


def _compiled_cutoffs():
    """``(name → code, _cutoffs, digest)``: every registered cutoff function with a slope and
    a formula in the shared names, one compiled routine that evaluates code k's formula and
    slope in a loop of its own (vectorisable except for cos and sin), and the hex digest of
    what the kernels compile in from outside their own file (see the module docstring).

    The routine is generated from the registry (:mod:`mlpot.descriptors.cutoffs`), so
    torch and the kernels evaluate the very same formulas; its callers are cached by
    numba with the digest in their cache key."""
    from .cutoffs import CUTOFF_FUNCTIONS, scalar_form

    scope, codes = {"np": np}, {}
    digest = hashlib.sha256(Path(__file__).read_bytes())
    lines = ["def _cutoffs(code, r, m, rc, alpha, fc, dfc):"]
    for name, entry in CUTOFF_FUNCTIONS.items():
        value = scalar_form(entry.value, _FORMULA_FUNCTIONS)
        slope = None if entry.slope is None else scalar_form(entry.slope, _FORMULA_FUNCTIONS)
        if value is None or slope is None:
            continue
        k = codes[name] = len(codes)
        for fn in (value, slope):
            digest.update(_code_fingerprint(fn.__code__))
        scope[f"value_{k}"] = njit(inline="always", error_model="numpy")(value)
        scope[f"slope_{k}"] = njit(inline="always", error_model="numpy")(slope)
        inner = "alpha * rc" if entry.uses_inner_radius else "0.0"
        lines += [f"    if code == {k}:",
                  f"        inner = {inner}",
                  "        width = rc - inner",
                  "        for t in range(m):",
                  "            x = min(max((r[t] - inner) / width, 0.0), 1.0)",
                  f"            fc[t] = value_{k}(x)",
                  f"            dfc[t] = slope_{k}(x) / width"]
    lines += ["    for t in range(m):  # exact zeros from r_c on, as the torch cutoffs",
              "        if r[t] >= rc:",
              "            fc[t] = 0.0",
              "            dfc[t] = 0.0"]
    source = "\n".join(lines)
    digest.update(source.encode())
    exec(compile(source, "<mlpot compiled cutoffs>", "exec"), scope)
    routine = njit(nogil=True, error_model="numpy")(scope["_cutoffs"])
    routine.__doc__ = ("f_c and df_c/dr of the cutoff function ``code`` (see NUMBA_CUTOFF_CODES) "
                       "of r[:m] into fc[:m], dfc[:m], for the pairs and the triplets' r_jk.")
    return codes, routine, digest.hexdigest()


def _code_fingerprint(code) -> bytes:
    """Bytes that change when a formula's code does (bytecode, constants, names), nested
    code objects included."""
    parts = [code.co_code, repr(code.co_names).encode()]
    for const in code.co_consts:
        parts.append(_code_fingerprint(const) if hasattr(const, "co_code") else repr(const).encode())
    return b"\0".join(parts)


#: cutoff function name → its code in the compiled kernels (derived from the registry at
#: import; functions registered later, or without a shared formula, use the torch path).
#: DEPENDENCY_DIGEST: hash of this file and of the generated cutoff routine with its formulas.
NUMBA_CUTOFF_CODES, _cutoffs, DEPENDENCY_DIGEST = _compiled_cutoffs()


def cache_with_dependencies(dispatcher, salt: str = DEPENDENCY_DIGEST):
    """Turn on numba's on-disk cache for ``dispatcher`` (an ``njit`` function created
    without ``cache=True``) with ``salt`` in its cache key, so a change of the code it
    compiles in from other files gives a new cache entry instead of a stale kernel.

    Where numba has no writable cache folder the dispatcher stays uncached (it compiles on
    first use in every process) and a :class:`RuntimeWarning` says so once.

    Returns:
        ``dispatcher``.
    """
    try:
        dispatcher._cache = _SaltedFunctionCache(dispatcher.py_func, salt)
    except RuntimeError as exc:  # numba: "cannot cache function ...: no locator available"
        _warn_uncached(exc)
    return dispatcher


def _salted_cache_class():
    from numba.core.caching import FunctionCache

    class SaltedFunctionCache(FunctionCache):
        """numba's per-function cache with one more component in the index key."""

        def __init__(self, py_func, salt: str):
            super().__init__(py_func)
            self._salt = salt

        def _index_key(self, sig, codegen):
            return (*super()._index_key(sig, codegen), self._salt)

    return SaltedFunctionCache


_SaltedFunctionCache = _salted_cache_class()

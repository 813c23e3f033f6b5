"""numba's on-disk cache of the angular kernels: a second process loads them instead of
compiling (seconds instead of ~20-45 s), the cache key follows the code compiled in from
other files (scalar_math, the cutoff formulas), and no writable cache folder means compiling
in every process with one warning, not an import error."""

import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest

pytest.importorskip("numba")

from numba import njit  # noqa: E402

from mlpot.descriptors import scalar_math  # noqa: E402
from mlpot.descriptors.angular_kernel import _kernel, _pair_factors  # noqa: E402

FIRST_USE = textwrap.dedent("""
    import json, time
    t = time.perf_counter()
    import torch
    from dataclasses import replace
    from ase.build import molecule
    from mlpot.data import collate
    from mlpot.descriptors import SymmetryFunctions, SymmetryFunctionSpec
    from mlpot.descriptors.angular_kernel import _kernel
    spec = SymmetryFunctionSpec.from_dict({
        "elements": ["H", "C", "O"], "cutoff": 4.5, "cutoff_function": "poly2",
        "radial": [{"grid": {"count": 4, "mode": "shift", "r_lower": 0.6}}],
        "angular": [{"kind": "G5", "zetas": [1, 4], "lambdas": [-1, 1],
                     "grid": {"count": 2, "mode": "center", "r_lower": 1.0, "r_upper": 3.0}}]})
    sf = SymmetryFunctions(spec, kernel="numba")
    batch = collate([molecule("CH3CH2OH")], cutoff=sf.cutoff)
    start = time.perf_counter()
    positions = batch.positions.clone().requires_grad_(True)
    sf(replace(batch, positions=positions), scaled=False).sum().backward()
    stats = _kernel.stats
    print(json.dumps({"first_call_s": time.perf_counter() - start,
                      "hits": sum(stats.cache_hits.values()), "misses": sum(stats.cache_misses.values())}))
""")


def _first_use(cache_dir) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
    done = subprocess.run([sys.executable, "-c", FIRST_USE], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # one cold compile of the kernels: ~20 s on 2 idle cores
def test_second_process_loads_the_kernels_from_the_cache(tmp_path):
    cold = _first_use(tmp_path / "numba-cache")
    warm = _first_use(tmp_path / "numba-cache")
    assert cold["misses"] >= 1 and cold["hits"] == 0
    assert warm["hits"] >= 1 and warm["misses"] == 0, warm
    assert warm["first_call_s"] < cold["first_call_s"] / 3, (cold, warm)


def test_the_kernels_cache_under_numba_and_the_dependency_digest():
    for dispatcher in (_kernel, _pair_factors):
        cache = dispatcher._cache
        assert type(cache).__name__ == "SaltedFunctionCache"
        assert cache._salt == scalar_math.DEPENDENCY_DIGEST
        # The digest is the last component of every index key the kernel stores.
        from numba.core.registry import cpu_target

        key = cache._index_key((), cpu_target.target_context.codegen())
        assert key[-1] == scalar_math.DEPENDENCY_DIGEST


def test_the_digest_follows_the_formulas():
    """A changed cutoff formula (or slope) changes the bytes the digest is made of, so its
    kernels get a new cache entry instead of a stale one."""
    def poly(x):
        return ((15.0 - 6.0 * x) * x - 10.0) * x ** 3 + 1.0

    def poly_changed(x):
        return ((15.0 - 6.0 * x) * x - 10.0) * x ** 3 + 2.0

    def poly_same(x):
        return ((15.0 - 6.0 * x) * x - 10.0) * x ** 3 + 1.0

    fingerprint = scalar_math._code_fingerprint
    assert fingerprint(poly.__code__) == fingerprint(poly_same.__code__)
    assert fingerprint(poly.__code__) != fingerprint(poly_changed.__code__)
    assert len(scalar_math.DEPENDENCY_DIGEST) == 64


def test_no_writable_cache_folder_compiles_with_one_warning(monkeypatch):
    """Where numba finds no cache folder it would raise at import; mlpot compiles in every
    process instead and says so once."""
    from numba.core import caching

    monkeypatch.setattr(caching.CacheImpl, "_locator_classes", [])
    monkeypatch.setattr(scalar_math, "_warned_uncached", False)

    def twice(x):
        return 2.0 * x

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = scalar_math.cache_with_dependencies(njit(twice))
        second = scalar_math.cache_with_dependencies(njit(lambda x: 3.0 * x))
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "NUMBA_CACHE_DIR" in messages[0]
    assert first(2.0) == 4.0 and second(2.0) == 6.0

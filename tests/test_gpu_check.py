"""scripts/gpu_check.py: its bookkeeping (time caps, skipped and failed sections, the results
file), its helpers, and (slow) an end-to-end run on the CPU with --quick."""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scripts_for_tests import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_check():
    return load_script("gpu_check")


def test_a_section_past_its_cap_stops_and_keeps_its_figures(gpu_check, tmp_path):
    report = gpu_check.Report(tmp_path, budget_s=60)
    with report.section("slow", cap_s=0.3, minimum_s=0) as entry:
        entry["measured"] = 1.0
        while True:  # stopped by the cap's alarm
            time.sleep(0.01)
    with report.section("next", cap_s=5, minimum_s=0) as entry:
        entry["ran"] = True
    saved = json.loads((tmp_path / "gpu-results.json").read_text())["sections"]
    assert saved["slow"]["status"] == "timed out" and saved["slow"]["measured"] == 1.0
    assert saved["next"] == {**saved["next"], "status": "ok", "ran": True}
    assert "== slow" in (tmp_path / "gpu-check.log").read_text()


def test_failed_and_skipped_sections_are_recorded(gpu_check, tmp_path):
    report = gpu_check.Report(tmp_path, budget_s=60)
    with report.section("broken", cap_s=5, minimum_s=0):
        raise ValueError("no such thing")
    report.budget_s = 0.0  # the budget is spent: the next section does not start
    with report.section("late", cap_s=5) as entry:
        assert entry is None
    saved = json.loads((tmp_path / "gpu-results.json").read_text())["sections"]
    assert saved["broken"]["status"] == "failed" and "no such thing" in saved["broken"]["error"]
    assert saved["late"]["status"] == "skipped"


def test_synthetic_water_box_has_water_density_and_geometry(gpu_check):
    atoms = gpu_check.synthetic_water(64, seed=1)
    assert atoms.get_chemical_formula() == "H128O64"
    grams_per_cm3 = atoms.get_masses().sum() / 0.6022 / atoms.get_volume()
    assert grams_per_cm3 == pytest.approx(1.0, rel=0.01)
    d = atoms.get_all_distances(mic=True)
    np.testing.assert_allclose(d[0, 1:3], 0.9572, rtol=1e-9)
    assert d[np.triu_indices(len(atoms), 1)].min() > 0.9  # no atoms on top of each other


def test_n2p2_figure_is_the_median_of_the_total_lines(gpu_check, tmp_path):
    folder = tmp_path / gpu_check.POTENTIAL / "reference"
    folder.mkdir(parents=True)
    (folder / "timing.txt").write_text("# header\ntotal 0.4 0.4 400.0\ntotal 0.5 0.5 500.0\ntotal 0.45 0.4 450.0\n")
    rate, source = gpu_check.n2p2_atoms_per_s(tmp_path)
    assert rate == pytest.approx(1e6 / 450.0) and "450.0 µs/atom" in source
    assert gpu_check.n2p2_atoms_per_s(None)[0] is None


def test_nothing_is_installed_when_every_package_imports(gpu_check, tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "NEEDED", ("ase", "vesin"))
    monkeypatch.setattr(sys, "path", list(sys.path))  # it adds the repository (and the site folder)
    monkeypatch.setenv("PYTHONPATH", "")
    info = gpu_check.install_carried_wheels(tmp_path, print)
    assert info["missing_before"] == [] and "pip" not in info


def test_summary_names_every_section_and_figure(gpu_check):
    results = {"sections": {
        "tests": {"status": "ok", "seconds": 1.0, "summary": "3 passed"},
        "throughput": {"status": "ok", "seconds": 2.0, "rows": [
            {"device": "cuda", "atoms": 1080, "dtype": "float32", "atoms_per_s": 1e6, "with_pairs_atoms_per_s": 9e5,
             "vs_n2p2": 380.0}]},
        "md": {"status": "timed out", "seconds": 3.0, "note": "stopped"}}}
    text = "\n".join(gpu_check.summary(results))
    assert "3 passed" in text and "380.0x n2p2" in text and "timed out" in text


@pytest.mark.slow
def test_quick_cpu_run_end_to_end(tmp_path):
    """The whole check on the CPU with --quick (1-3 minutes on 2 cores): every section runs
    (or stops at its cap under load), nothing fails, the three files are written."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), str(tmp_path), "--device", "cpu",
                           "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "gpu-results.json").read_text())
    statuses = {name: s["status"] for name, s in results["sections"].items()}
    assert set(statuses) == {"environment", "tests", "correctness", "throughput", "md", "training"}
    assert set(statuses.values()) <= {"ok", "timed out"}, statuses
    assert (tmp_path / "gpu-check.log").is_file() and (tmp_path / "pytest.log").is_file()
    correctness = results["sections"]["correctness"]
    assert correctness["frames"]["float64_max_dE_eV_per_atom"] <= 1e-10

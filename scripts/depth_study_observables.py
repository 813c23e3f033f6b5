"""Physical observables of the depth study's models (docs/depth-study.md, "What is measured").

Si/Mo, every full-stage model: elastic constants against DFT on the data set's Elastic
cells, the equation of state of the cubic cell (lattice constant, bulk modulus) against the
DFT lattice and bulk modulus of those cells, and the relaxed vacancy formation energy (no DFT
value in the data: compared across models). Water, the median run of each cell: g(r) of a
300 K NVT run against the teacher's, by one protocol (:data:`RDF_PROTOCOL`). Each model's
values are cached beside it in ``observables.json`` (:func:`observables`).
"""

from __future__ import annotations

import json
from pathlib import Path

#: Vacancy supercells of the cubic cell, as in the data's Vacancy group (63 Si, 53 Mo atoms).
VACANCY_SUPERCELL = {"Si": (2, 2, 2), "Mo": (3, 3, 3)}
#: The water g(r) runs (student and teacher alike): NVT at the teacher data's 300 K from two
#: held-out frames, 0.25 ps to forget the start, then 1 ps sampled every 10 fs.
RDF_PROTOCOL = {"temperature_K": 300.0, "timestep_fs": 0.5, "equilibrate": 500, "steps": 2000, "every": 20,
                "replicas": 2, "r_max": 6.0, "bins": 120, "pairs": [["O", "O"], ["O", "H"], ["H", "H"]]}


def observables(run_dir: Path, data: dict, runs_dir: Path, rdf: bool = False) -> dict | None:
    """A model's physical observables, cached in ``run_dir/observables.json``: for Si/Mo
    (:func:`crystal_observables`) always, for water the g(r) against the teacher's
    (:func:`water_rdf`) only when ``rdf`` (one model per cell: a 1.25 ps MD each);
    ``None`` when there is nothing to report."""
    import torch

    import mlpot
    from mlpot.io.files import atomic_write_text

    cached = run_dir / "observables.json"
    values = json.loads(cached.read_text()) if cached.is_file() else {}
    crystal = data.get("format") == "mlearn"
    if (crystal and "eos" in values) or (not crystal and (values or not rdf)):
        return values or None
    model = mlpot.load(run_dir / "model.pt", dtype=torch.float64)
    values = crystal_observables(model, data) if crystal else {"rdf": water_rdf(model, data, runs_dir)}
    atomic_write_text(cached, json.dumps(values) + "\n")
    return values


def crystal_observables(model, data: dict) -> dict:
    """Elastic constants against DFT (:func:`mlpot.elastic.cubic_properties`); the equation
    of state of the cubic cell (lattice constant a0 in Å, bulk modulus in GPa) beside the
    DFT lattice constant of the Elastic cells (their unstrained cell) and the DFT bulk
    modulus (C11 + 2 C12)/3; the relaxed vacancy formation energy (eV) at the model's own a0."""
    import numpy as np
    from ase.build import bulk

    from mlpot.data import read
    from mlpot.elastic import cubic_properties, reference_cell
    from mlpot.observables import equation_of_state, vacancy_formation_energy

    elastic = [a for a in read(data["train"], format="mlearn", **data["read_options"])
               if a.info.get("group") == "Elastic"]
    result = cubic_properties(model, elastic)
    size = max({len(a) for a in elastic}, key=[len(a) for a in elastic].count)  # the supercell of most cells
    supercells = [a for a in elastic if len(a) == size]
    element = supercells[0].get_chemical_symbols()[0]
    conventional = bulk(element, cubic=True)  # diamond Si, bcc Mo
    volume = abs(np.linalg.det(reference_cell([a.cell.array for a in supercells]))) / size
    a_dft = float((volume * len(conventional)) ** (1 / 3))
    eos = equation_of_state(model, bulk(element, cubic=True, a=a_dft))
    a0 = a_dft * eos["scale0"] if eos["scale0"] else None
    n = len(conventional)
    result["eos"] = {"a0_a": a0, "bulk_modulus_gpa": eos["bulk_modulus_gpa"], "fit_error": eos["fit_error"],
                     "v0_a3_per_atom": eos["v0_a3"] / n if eos["v0_a3"] else None,
                     "e0_ev_per_atom": eos["e0_ev"] / n if eos["e0_ev"] is not None else None}
    result["eos_reference"] = {"a0_a": a_dft, "bulk_modulus_gpa": result["elastic_reference"]["B"],
                               "source": "DFT (PBE) labels of the data set's Elastic group"}
    # Relaxed at the model's own lattice constant; rattled so Si's Jahn–Teller distortion can form.
    result["vacancy"] = (vacancy_formation_energy(model, bulk(element, cubic=True, a=a0),
                                                  supercell=VACANCY_SUPERCELL.get(element, (2, 2, 2)), rattle=0.02)
                         if a0 else None)
    return result


def _rdf(model, data: dict) -> dict:
    """g(r) per pair of :data:`RDF_PROTOCOL` from an NVT run of ``model`` (lists, for JSON)."""
    import depth_study_md

    from mlpot.observables import nvt_frames, radial_distribution

    p = RDF_PROTOCOL
    starts = depth_study_md.start_structures(data, p["temperature_K"], p["replicas"])
    frames = nvt_frames(model, starts, p["temperature_K"], p["timestep_fs"], p["steps"], p["every"],
                        p["equilibrate"])
    r, g = radial_distribution(frames, p["r_max"], p["bins"], pairs=[tuple(x) for x in p["pairs"]])
    return {"r_a": r.tolist(), "g": {k: v.tolist() for k, v in g.items()}}


def teacher_path(data: dict) -> Path:
    """The teacher potential that labelled a water data set: ``teacher.pt`` beside its test
    file (``scripts/make_teacher_water.py`` writes both into one folder)."""
    return Path(data["test"]).parent / "teacher.pt"


def water_rdf(model, data: dict, runs_dir: Path) -> dict:
    """The model's g(r) (O–O, O–H, H–H) and its RMS difference from the teacher's, both by
    :data:`RDF_PROTOCOL`; the teacher's is computed once and kept in
    ``runs_dir/teacher-rdf.json`` (the teacher and the protocol are the same for every water
    study)."""
    import torch

    import mlpot
    from mlpot.io.files import atomic_write_text
    from mlpot.observables import rdf_difference

    cache = runs_dir / "teacher-rdf.json"
    teacher = json.loads(cache.read_text()) if cache.is_file() else None
    if teacher is None or teacher.get("protocol") != RDF_PROTOCOL:
        teacher_model = mlpot.load(teacher_path(data), dtype=torch.float64)
        teacher = {"protocol": RDF_PROTOCOL, **_rdf(teacher_model, data)}
        runs_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache, json.dumps(teacher) + "\n")
    student = _rdf(model, data)
    return {"protocol": RDF_PROTOCOL, **student,
            "difference_vs_teacher": {k: rdf_difference(student["g"][k], teacher["g"][k]) for k in student["g"]}}


def cell_observables(study: tuple[str, dict, str], runs: list[tuple[dict, Path]], runs_dir: Path) -> None:
    """The observables of a finished cell (cached): every run's for Si/Mo, the median run's
    g(r) for water (the model the md stage ran)."""
    import depth_study_md

    data = study[1]
    if data.get("format") == "mlearn":
        for _, run_dir in runs:
            observables(run_dir, data, runs_dir)
    else:
        observables(depth_study_md.representative(runs)[1], data, runs_dir, rdf=True)

"""Compute symmetry functions of a dataset and summarise them.

Reads any format mlpot knows, builds neighbour lists, computes the descriptors in batches
(with a progress bar), and prints structure, label, neighbour and feature statistics;
optionally writes the raw features to HDF5. The descriptor comes from a YAML file (a bare
descriptor mapping, or a training config with a ``descriptor:`` section) or, without one,
from :meth:`SymmetryFunctionSpec.default` for the elements found in the data. A descriptor
that names no ``elements`` takes the data's, as training does.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..io.files import atomic_path

if TYPE_CHECKING:
    from ..descriptors import SymmetryFunctionSpec

HELP = "compute and summarise symmetry functions of a dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="dataset path (extxyz, mlearn JSON, DeePMD dir, input.data, npz, h5)")
    parser.add_argument("--format", help="override the detected format")
    parser.add_argument("--config", help="descriptor YAML (bare, or with a 'descriptor:' section)")
    parser.add_argument("--cutoff", type=float, default=5.0, help="cutoff of the default descriptor, Å (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="structures per batch (default: %(default)s)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64",
                        help="precision of the features (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default: %(default)s)")
    parser.add_argument("--out", help="write raw features to this HDF5 file")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def descriptor_from_file(path: str | Path, cutoff: float) -> Callable[[list[str]], SymmetryFunctionSpec]:
    """The symmetry functions a YAML file describes, as a function of the data's elements.

    The file is a bare descriptor mapping or a training config (its ``descriptor:``
    section; ``null`` or absent there: the default set at its ``descriptor_cutoff``, as
    training does, else at ``cutoff`` Å). A section that names ``elements`` keeps them.

    Raises:
        ConfigError: invalid YAML, unknown keys or bad values, or another descriptor kind.
    """
    from ..config import ConfigError, read_yaml_mapping
    from ..descriptors import DescriptorConfig, SymmetryFunctionSpec
    from ..descriptors.sf_config import SymmetryFunctionsConfig

    config = read_yaml_mapping(path)
    training = any(key in config for key in ("data", "descriptor", "descriptor_cutoff"))
    section = config.get("descriptor") if training else config
    if section is None:
        default_cutoff = config.get("descriptor_cutoff", cutoff)
        if isinstance(default_cutoff, bool) or not isinstance(default_cutoff, (int, float)):
            raise ConfigError(f"{path}: descriptor_cutoff must be a distance in Å, got {default_cutoff!r}")
        return lambda elements: SymmetryFunctionSpec.default(elements, cutoff=float(default_cutoff))
    parsed = DescriptorConfig.from_config_value(section, "descriptor")
    if not isinstance(parsed, SymmetryFunctionsConfig):
        raise ConfigError(f"{path}: descriptor kind {parsed.kind!r}; mlpot describe computes symmetry "
                          "functions only")
    return parsed.spec


def run(args: argparse.Namespace) -> int:
    import torch
    from ase.data import chemical_symbols
    from tqdm import tqdm

    from ..data import collate, detect_format, get_labels, read
    from ..descriptors import SymmetryFunctions, SymmetryFunctionSpec

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    # A bad config fails before the (possibly long) read of the data.
    make_spec = descriptor_from_file(args.config, args.cutoff) if args.config else None
    structures = read(args.data, format=args.format)
    counts = Counter(int(z) for atoms in structures for z in atoms.numbers)
    elements = [chemical_symbols[z] for z in sorted(counts)]
    if make_spec is not None:
        spec = make_spec(elements)
        _check_elements(structures, elements, spec.elements, args)
    else:
        spec = SymmetryFunctionSpec.default(elements, cutoff=args.cutoff)
    dtype = getattr(torch, args.dtype)
    sf = SymmetryFunctions(spec).to(device=args.device)

    features, species, neighbours = [], [], []
    start = time.perf_counter()
    n = len(structures)
    with torch.no_grad():
        for lo in tqdm(range(0, n, args.batch_size), desc="descriptors", unit="batch",
                       disable=args.json):
            batch = collate(structures[lo:lo + args.batch_size], cutoff=sf.cutoff, dtype=dtype,
                            device=args.device, labels=False)
            s = sf.species(batch.numbers)
            features.append(sf(batch, scaled=False).cpu())
            species.append(s.cpu())
            neighbours.append(torch.bincount(batch.edge_index[0], minlength=len(s)).cpu())
    elapsed = time.perf_counter() - start
    g, s, nb = torch.cat(features), torch.cat(species), torch.cat(neighbours)
    labels = [get_labels(a) for a in structures]
    summary = {
        "data": str(args.data),
        "format": args.format or detect_format(args.data),
        "n_structures": n,
        "n_atoms": int(g.shape[0]),
        "atoms_per_element": {chemical_symbols[z]: c for z, c in sorted(counts.items())},
        "labels": {k: sum(getattr(lab, k) is not None for lab in labels)
                   for k in ("energy", "forces", "stress")},
        "descriptor": {"elements": list(spec.elements), "cutoff": spec.max_cutoff,
                       "cutoff_function": spec.cutoff_function,
                       "features_per_element": sf.n_features},
        "neighbours_per_atom": {"mean": float(nb.double().mean()), "min": int(nb.min()),
                                "max": int(nb.max())},
        "atoms_without_neighbours": int((nb == 0).sum()),
        "seconds": elapsed,
        "us_per_atom": 1e6 * elapsed / max(int(g.shape[0]), 1),
        "per_element": {},
    }
    for e, el in enumerate(spec.elements):
        block = g[s == e][:, : sf.n_features[el]]
        if block.shape[0] == 0:
            continue
        spread = block.max(0).values - block.min(0).values
        summary["per_element"][el] = {
            "atoms": int(block.shape[0]),
            "min": float(block.min()), "max": float(block.max()), "mean": float(block.mean()),
            "constant_features": int((spread <= 1e-12).sum()),
        }
    if args.out:
        _write_features(Path(args.out), g.numpy(), s.numpy(), structures, sf, spec)
        summary["out"] = args.out
    if args.json:
        print(json.dumps(summary))
    else:
        _print_summary(summary)
    return 0


def _check_elements(structures, elements: list[str], known, args: argparse.Namespace) -> None:
    """Raise ``ValueError`` naming the first structure with an element the config's
    descriptor (its ``elements``) does not know, before any descriptor is computed."""
    unknown = sorted(set(elements) - set(known))
    if unknown:
        k = next(k for k, atoms in enumerate(structures) if set(atoms.get_chemical_symbols()) & set(unknown))
        raise ValueError(f"{args.data}, structure {k}: element(s) {unknown} are not among the descriptor's "
                         f"{list(known)} ('elements' in {args.config})")


def _write_features(path, features, species, structures, sf, spec) -> None:
    """Raw features (N, F), species (N,), atom offsets (B+1,) and the spec, atomically."""
    import h5py
    import numpy as np

    offsets = np.concatenate([[0], np.cumsum([len(a) for a in structures])])
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("features", data=features, compression="gzip", chunks=True)
        f.create_dataset("species", data=species.astype(np.int16))
        f.create_dataset("atom_offsets", data=offsets.astype(np.int64))
        f.attrs["descriptor"] = json.dumps(spec.to_dict())
        for el in spec.elements:
            f.attrs[f"feature_names/{el}"] = json.dumps(sf.feature_names(el))


def _print_summary(s: dict) -> None:
    per_el = ", ".join(f"{k} {v}" for k, v in s["atoms_per_element"].items())
    print(f"data        {s['data']} ({s['format']}): {s['n_structures']} structures, "
          f"{s['n_atoms']} atoms ({per_el})")
    print("labels      " + ", ".join(f"{k} {v}/{s['n_structures']}" for k, v in s["labels"].items()))
    d = s["descriptor"]
    print(f"descriptor  {d['elements']}, r_c {d['cutoff']} Å, {d['cutoff_function']} cutoff, "
          f"features {d['features_per_element']}")
    nb = s["neighbours_per_atom"]
    print(f"neighbours  {nb['mean']:.1f} per atom (min {nb['min']}, max {nb['max']}); "
          f"atoms without neighbours: {s['atoms_without_neighbours']}")
    print(f"time        {s['seconds']:.2f} s ({s['us_per_atom']:.1f} µs/atom, neighbour lists included)")
    print(f"{'element':<8}{'atoms':>8}{'min':>12}{'max':>12}{'mean':>12}{'constant':>10}")
    for el, v in s["per_element"].items():
        print(f"{el:<8}{v['atoms']:>8}{v['min']:>12.4g}{v['max']:>12.4g}{v['mean']:>12.4g}"
              f"{v['constant_features']:>10}")
    if "out" in s:
        print(f"features written to {s['out']}")

"""Export a model as a TorchScript file that runs with torch alone (no mlpot, ASE or vesin).

The file holds the descriptor, scaling and networks (traced), its own brute-force neighbour
search (O(N²) per structure, with periodic images) and forces and stress by autograd.
Before writing, the export is checked against the Python model on two structures.

Use it with plain torch:

  module = torch.jit.load("model-deploy.pt")
  out = module(positions, numbers, cell, pbc)   # (N,3) Å, (N,) long, (3,3) Å, (3,) bool
  out["energy"], out["forces"], out["stress"]   # eV, eV/Å, eV/Å³ (NaN unless periodic)

example:
  mlpot export runs/ethanol/model.pt model-deploy.pt
  mlpot export runs/ethanol/model.pt model-deploy-f32.pt --dtype float32
"""

from __future__ import annotations

import argparse

HELP = "export a model as TorchScript for deployment without mlpot"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model file (model.pt)")
    parser.add_argument("out", help="TorchScript file to write, e.g. model-deploy.pt")
    parser.add_argument("--device", default="cpu",
                        help="device the exported module runs on: cpu or cuda[:N] (default: %(default)s)")
    parser.add_argument("--dtype", choices=("float32", "float64"),
                        help="cast the model to this precision first (default: as saved)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from .. import load
    from ..io.export import export_model

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available")
    model = load(args.model, dtype=None if args.dtype is None else getattr(torch, args.dtype))
    path = export_model(model, args.out, device=args.device,
                        metadata={"source": str(Path(args.model).resolve())})
    print(f"exported {args.model} ({', '.join(model.elements)}; cutoff {model.cutoff:g} Å; "
          f"{str(model.dtype).replace('torch.', '')}; {args.device}) → {path} "
          f"({path.stat().st_size / 2**10:.0f} KiB); load with torch.jit.load")
    return 0

"""Train → evaluate → predict with the Python API, on a slice of the ethanol data.

Runs in about a minute on a laptop CPU (a small model, 300 training structures and a few
epochs, so the errors are far from converged; examples/ethanol.yaml is the full recipe).

    python examples/api_example.py [--out runs/api-example] [--epochs 8]

Steps:
1. read the labelled structures and write a training and a test slice (mlpot's HDF5 store);
2. train a potential from a config dict (the same schema as the YAML files here);
3. load the best model and compute its test errors, with a parity plot if matplotlib is
   installed;
4. predict energy and forces of one structure, through the model and through the ASE
   calculator.

Units: Å, eV, eV/Å.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import mlpot
from mlpot.calculator import MLPotCalculator
from mlpot.data import collate, read, write
from mlpot.evaluation import evaluate, parity_plot
from mlpot.training import TrainConfig, train

DATA = Path(__file__).resolve().parents[1] / "datasets" / "ethanol" / "ethanol.extxyz.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/api-example", help="run folder")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # 1. Data: a list of ase.Atoms carrying energy and forces (eV, eV/Å).
    structures = read(DATA)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(structures))
    write(out / "train.h5", [structures[k] for k in order[:300]])
    write(out / "test.h5", [structures[k] for k in order[300:400]])

    # 2. Train. Every key not given here takes the defaults of mlpot.training.config.
    config = TrainConfig.from_dict({
        "data": {"train": str(out / "train.h5"), "test": str(out / "test.h5"), "val_fraction": 0.1},
        "descriptor": {
            "cutoff": 4.5, "cutoff_function": "poly2",
            "radial": [{"grid": {"count": 8, "mode": "shift", "r_lower": 0.6}}],
            "angular": [{"kind": "G5", "zetas": [1, 4], "lambdas": [-1, 1],
                         "grid": {"count": 2, "mode": "center", "r_lower": 1.0, "r_upper": 3.0}}],
        },
        "model": {"depth": 3, "width": 32, "block": "residual", "activation": "tanh"},
        "loss": {"energy_weight": 1.0, "forces_weight": 1.0},
        "optimizer": {"lr": 3e-3},
        "training": {"epochs": args.epochs, "batch_size": 16, "seed": 0, "device": "cpu"},
    })
    result = train(config, out / "run", overwrite=True, progress=False)
    print(f"trained {result['epochs']} epochs, best epoch {result['best_epoch']}")

    # 3. Evaluate the saved best model on the test slice.
    model = mlpot.load(out / "run" / "model.pt")
    test = read(out / "test.h5")
    metrics, predictions = evaluate(model, test, batch_size=32)
    print(f"test: energy RMSE {metrics['energy_rmse_mev_per_atom']:.1f} meV/atom, "
          f"force RMSE {metrics['force_rmse_mev_per_a']:.0f} meV/Å "
          f"({metrics['n_structures']} structures)")
    try:
        parity_plot(predictions, out / "parity.png")
        print(f"parity plot: {out / 'parity.png'}")
    except ImportError as exc:  # matplotlib is the optional 'plot' extra
        print(f"no parity plot: {exc}")

    # 4. Predict one structure: directly with the model (batched tensors) ...
    atoms = test[0]
    result = model(collate([atoms], cutoff=model.cutoff, dtype=model.dtype), forces=True)
    forces = result["forces"].detach().numpy()  # (9, 3) eV/Å
    print(f"energy {result['energy'].item():.4f} eV (reference {atoms.get_potential_energy():.4f} eV)")
    # ... or through ASE, e.g. for geometry optimisation or molecular dynamics.
    atoms = atoms.copy()
    atoms.calc = MLPotCalculator(model, device="cpu")
    print("forces (eV/Å), model vs ASE calculator, first atom:", forces[0], atoms.get_forces()[0])
    assert np.allclose(forces, atoms.get_forces(), atol=1e-4)


if __name__ == "__main__":
    main()

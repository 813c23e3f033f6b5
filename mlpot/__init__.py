"""mlpot: Behler–Parrinello machine-learned interatomic potentials in PyTorch.

Units everywhere in the API: eV, Å, eV/Å, eV/Å³ (ASE conventions).
"""

__version__ = "0.1.0"

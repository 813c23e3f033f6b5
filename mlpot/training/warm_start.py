"""Warm start: a training run that begins from the weights of a trained model file.

``training.init_weights: runs/x/model.pt`` continues the training of a model under a new
config, e.g. a Kalman-filter finish after Adam (``optimizer.name: kalman``), a fine-tune on
new data, or a lower learning rate (n2p2's ``use_old_weights_short``). The model file brings
everything the weights depend on: the descriptor (with its selected terms), the network, the
descriptor scaling and the reference energies, so nothing is refitted to the new data (a new
scaling would change what the weights mean).
"""

from __future__ import annotations

from pathlib import Path

from ..config import ConfigError, to_dict
from ..io import load_model
from ..models import Potential
from .config import TrainConfig

__all__ = ["warm_start_model"]


def warm_start_model(config: TrainConfig, elements: list[str]) -> Potential:
    """The model of ``config.training.init_weights``, in training mode, on the CPU.

    Args:
        config: the run's config; its ``model`` section must describe the file's network
            (so that the run's config.yaml tells the truth about the model it trains).
        elements: the elements of the training data; the model must know all of them.

    Raises:
        FileNotFoundError: no such file.
        ConfigError: the model lacks an element of the data, or its network differs from
            ``config.model`` (the message names the differing keys).
    """
    path = Path(config.training.init_weights)
    model = load_model(path)
    missing = sorted(set(elements) - set(model.elements))
    if missing:
        raise ConfigError(f"training.init_weights: {path} was trained for {list(model.elements)} and has no "
                          f"network for {missing}, which the training data contain")
    saved, wanted = to_dict(model.config), to_dict(config.model)
    differing = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
    if differing:
        detail = ", ".join(f"{k}: file {saved.get(k)!r}, config {wanted.get(k)!r}" for k in differing)
        raise ConfigError(f"training.init_weights: the network of {path} differs from the config's model "
                          f"section ({detail}); make the model section match the file")
    return model.train()

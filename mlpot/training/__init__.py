"""Training: configs, losses, metrics, checkpoints, the trainer and the parts it is made of."""

from .cache import DescriptorCache
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .distributed import Distributed, SingleProcess
from .gradients import LayerGradientMonitor, layer_norms
from .loop import EpochResult, StepSettings, epoch_order, train_epoch
from .loss import loss_from_metrics, loss_terms
from .metrics import METRIC_KEYS, ErrorAccumulator
from .state import Learner, RunState
from .trainer import METRIC_COLUMNS, TrainingError, build_model, evaluate_store, train

__all__ = [
    "CheckpointError",
    "DescriptorCache",
    "Distributed",
    "EpochResult",
    "ErrorAccumulator",
    "LayerGradientMonitor",
    "Learner",
    "METRIC_COLUMNS",
    "METRIC_KEYS",
    "RunState",
    "SingleProcess",
    "StepSettings",
    "TrainConfig",
    "TrainingError",
    "build_model",
    "epoch_order",
    "evaluate_store",
    "layer_norms",
    "load_checkpoint",
    "loss_from_metrics",
    "loss_terms",
    "save_checkpoint",
    "train",
    "train_epoch",
]

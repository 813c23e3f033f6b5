"""Device and dtype names as users type them, resolved in one place.

Every entry point that takes a device (training, evaluation, the calculator, model loading,
MD) accepts ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"`` (CUDA when available) or a
:class:`torch.device`, and every one that takes a floating dtype accepts ``torch.float32``,
``torch.float64`` or the names ``"float32"``/``"float64"`` (also ``"float"``, ``"double"``,
``"fp32"``, ``"fp64"``, ``"single"``).
"""

from __future__ import annotations

import torch

__all__ = ["resolve_device", "resolve_dtype", "synchronize", "DTYPE_NAMES"]

#: Names accepted for the two floating dtypes mlpot computes in.
DTYPE_NAMES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float": torch.float32, "fp32": torch.float32, "single": torch.float32,
    "float64": torch.float64, "double": torch.float64, "fp64": torch.float64,
}


def resolve_device(device: str | torch.device, what: str = "device") -> torch.device:
    """The :class:`torch.device` for ``device``; ``"auto"`` is CUDA when available, else CPU.

    Args:
        device: a name or a device.
        what: how the caller's option is called, for the error message (``"training.device"``).

    Raises:
        ValueError: a CUDA device is asked for where CUDA is not available, or the name is
            not a device.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"{what} {device!r} is not a device (cpu, cuda, cuda:N or auto): {exc}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{what} is {str(device)!r} but CUDA is not available (use 'cpu' or 'auto')")
    return resolved


def resolve_dtype(dtype: str | torch.dtype, what: str = "dtype") -> torch.dtype:
    """``torch.float32``/``torch.float64`` from a dtype or one of :data:`DTYPE_NAMES`.

    Raises:
        ValueError: anything else (integer dtypes, half precision, unknown names).
    """
    if isinstance(dtype, torch.dtype):
        if dtype in (torch.float32, torch.float64):
            return dtype
        raise ValueError(f"{what} must be float32 or float64, got {dtype}")
    name = str(dtype).strip().lower().removeprefix("torch.")
    if name not in DTYPE_NAMES:
        raise ValueError(f"{what} must be one of {sorted(DTYPE_NAMES)}, got {dtype!r}")
    return DTYPE_NAMES[name]


def synchronize(device: str | torch.device) -> None:
    """Wait for the work queued on ``device`` (a no-op off CUDA): wall times around a call on
    a GPU mean nothing without it, since CUDA kernels run asynchronously."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)

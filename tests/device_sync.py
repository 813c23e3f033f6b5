"""Count, on the CPU, the operations that would stall the host on a GPU.

On CUDA every one of these waits for the device to finish what it was given (a *host
synchronisation*): reading a value (``.item()``, ``bool(t)``, ``int(t)``, ``.tolist()``), an
output whose size depends on the data (``nonzero``, boolean-mask indexing,
``repeat_interleave`` without ``output_size``, ``unique``, ``masked_select``) and a tensor
made from Python data (``torch.tensor([...])``, ``t.new_tensor([...])``: a pageable copy to
the device, which PyTorch waits for). A CPU run of the same code dispatches the same
operators, so counting them here bounds the synchronisations of the CUDA path without a GPU
(``torch.cuda.set_sync_debug_mode`` shows the real ones on a device, see
scripts/gpu_check.py).
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["HostSyncCounter"]

#: operator name (without overload) -> kind of stall on CUDA
_SYNCING = {
    "_local_scalar_dense": "value",  # .item(), bool(), int(), float()
    "nonzero": "data-dependent size",
    "masked_select": "data-dependent size",
    "unique": "data-dependent size",
    "_unique2": "data-dependent size",
    "unique_consecutive": "data-dependent size",
    "lift_fresh": "host data",  # torch.tensor(list) / new_tensor(list)
}


class HostSyncCounter(TorchDispatchMode):
    """Context manager: ``counts`` (kind -> number) and ``events`` (operator names, in
    order) of the host-synchronising operations dispatched inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter = Counter()
        self.events: list[str] = []
        self._tolist = None

    def _record(self, kind: str, name: str) -> None:
        self.counts[kind] += 1
        self.events.append(name)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name in _SYNCING:
            self._record(_SYNCING[name], name)
        elif name == "repeat_interleave" and len(args) + len(kwargs) >= 1 and kwargs.get("output_size") is None \
                and not (len(args) > 3 and args[3] is not None):
            # repeat_interleave(repeats) / (self, repeats, dim) needs sum(repeats) on the host.
            if func._overloadname in ("Tensor", "self_Tensor"):
                self._record("data-dependent size", name)
        elif name in ("index", "index_put", "index_put_") and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else ())
                if i is not None):
            self._record("data-dependent size", f"{name} (boolean mask)")
        return func(*args, **kwargs)

    def __enter__(self):
        # .tolist() reads CPU memory without dispatching an operator: count it by hand.
        self._tolist = torch.Tensor.tolist
        counter, original = self, self._tolist

        def tolist(tensor):
            counter._record("value", "tolist")
            return original(tensor)

        torch.Tensor.tolist = tolist
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Tensor.tolist = self._tolist
        return super().__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

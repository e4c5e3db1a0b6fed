"""A bounded ring of host-memory snapshots taken at healthy points of a run.

One snapshot holds copies (on the host) of every watched model's ``state_dict``, every
registered optimizer's ``state_dict``, the LR schedulers' and a GradScaler's ``state_dict``
when there are any, and the torch (CPU and CUDA), numpy and python RNG states. ``restore``
loads them back *in place* (``load_state_dict`` on the very same objects), so the user's loop
keeps its own model, optimizer and scheduler.

Memory: the ring holds at most ``capacity`` snapshots (default 1), i.e. about ``capacity``
extra copies of the parameters and the optimizer state in host memory; the oldest is dropped
when a new one is taken.

LR schedulers are registered nowhere: they are taken from ``schedulers`` given explicitly, and
also found with ``gc.get_referrers(optimizer)``, keeping the ``LRScheduler`` instances that
point at one of the optimizers (a scheduler holds its optimizer as ``.optimizer``).
"""

from __future__ import annotations

import collections
import gc
import random
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch


def _to_host(obj: Any) -> Any:
    """A deep copy of a state dict with every tensor cloned to the CPU."""
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return type(obj)((k, _to_host(v)) for k, v in obj.items()) if not isinstance(
            obj, collections.defaultdict) else {k: _to_host(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_host(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_to_host(v) for v in obj)
    return obj


def find_schedulers(optimizers: Iterable[torch.optim.Optimizer]) -> list[Any]:
    """LR schedulers (``torch.optim.lr_scheduler.LRScheduler``) that hold one of ``optimizers``."""
    from torch.optim.lr_scheduler import LRScheduler
    out: list[Any] = []
    for opt in optimizers:
        for ref in gc.get_referrers(opt):
            # a scheduler refers to its optimizer through its instance __dict__
            if isinstance(ref, dict):
                for owner in gc.get_referrers(ref):
                    if (isinstance(owner, LRScheduler) and owner.__dict__ is ref
                            and getattr(owner, "optimizer", None) is opt
                            and not any(owner is s for s in out)):
                        out.append(owner)
            elif isinstance(ref, LRScheduler) and not any(ref is s for s in out):
                out.append(ref)
    return out


@dataclass
class Snapshot:
    step: int
    loss: float | None                    # the smoothed loss when it was taken (None: no loss yet)
    models: list[dict[str, Any]] = field(default_factory=list)
    optimizers: list[dict[str, Any]] = field(default_factory=list)
    schedulers: list[dict[str, Any]] = field(default_factory=list)
    scaler: dict[str, Any] | None = None
    rng: dict[str, Any] = field(default_factory=dict)
    objects: tuple = ()                   # (models, optimizers, schedulers) it was taken of


class SnapshotRing:
    """At most ``capacity`` snapshots of the same objects, newest last."""

    def __init__(self, capacity: int = 1) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity={capacity!r}: expected an int >= 1")
        self.capacity = capacity
        self._ring: collections.deque[Snapshot] = collections.deque(maxlen=capacity)
        self.taken = 0

    def __len__(self) -> int:
        return len(self._ring)

    def __iter__(self):
        return iter(self._ring)

    @property
    def newest(self) -> Snapshot | None:
        return self._ring[-1] if self._ring else None

    def back(self, k: int) -> Snapshot | None:
        """The ``k``-th newest snapshot (0: newest), or the oldest when there are fewer."""
        if not self._ring:
            return None
        return self._ring[max(0, len(self._ring) - 1 - k)]

    def take(self, step: int, loss: float | None, models: list[torch.nn.Module],
             optimizers: list[torch.optim.Optimizer], schedulers: list[Any] = (),
             scaler: Any = None) -> Snapshot:
        snap = Snapshot(step=step, loss=loss)
        snap.models = [_to_host(m.state_dict()) for m in models]
        snap.optimizers = [_to_host(o.state_dict()) for o in optimizers]
        snap.schedulers = [_to_host(s.state_dict()) for s in schedulers]
        snap.scaler = _to_host(scaler.state_dict()) if scaler is not None else None
        snap.rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                    "python": random.getstate(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None}
        self._ring.append(snap)          # the deque drops the oldest beyond capacity
        self.taken += 1
        return snap

    @staticmethod
    def restore(snap: Snapshot, models: list[torch.nn.Module], optimizers: list[torch.optim.Optimizer],
                schedulers: list[Any] = (), scaler: Any = None) -> None:
        """Load ``snap`` back into the same objects it was taken from (same order)."""
        with torch.no_grad():
            for m, sd in zip(models, snap.models):
                m.load_state_dict(sd)
        for o, sd in zip(optimizers, snap.optimizers):
            o.load_state_dict(sd)    # copies tensors onto the parameters' devices; empty state clears
        for s, sd in zip(schedulers, snap.schedulers):
            s.load_state_dict(sd)
        if scaler is not None and snap.scaler is not None:
            scaler.load_state_dict(snap.scaler)
        torch.set_rng_state(snap.rng["torch"])
        np.random.set_state(snap.rng["numpy"])
        random.setstate(snap.rng["python"])
        if snap.rng.get("cuda") is not None:
            torch.cuda.set_rng_state_all(snap.rng["cuda"])

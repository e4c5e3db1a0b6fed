"""Early stopping for plain loops, in the manner of Lightning's EarlyStopping callback.

    stopper = trainmedic.EarlyStopping(patience=5)
    for epoch in range(100):
        train(...)
        if stopper.step(val_loss, model):
            break
    stopper.restore(model)        # back to the best epoch's weights (restore_best=True)
"""

from __future__ import annotations

import copy
import enum
import math
from typing import Any

import torch


class StopReason(str, enum.Enum):
    IMPROVED = "improved"
    WAITING = "no improvement, waiting"
    PATIENCE = "no improvement for `patience` epochs"
    NONFINITE = "the monitored value is not finite"


class EarlyStopping:
    def __init__(self, patience: int = 5, min_delta: float = 0.0, mode: str = "min",
                 restore_best: bool = True) -> None:
        if not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience={patience!r} is not valid; expected an int >= 0")
        if min_delta < 0:
            raise ValueError(f"min_delta={min_delta!r} is not valid; expected a number >= 0")
        if mode not in ("min", "max"):
            raise ValueError(f"mode={mode!r} is not valid; expected 'min' (losses) or 'max' (accuracy)")
        self.patience, self.min_delta, self.mode, self.restore_best = patience, min_delta, mode, restore_best
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.epoch = 0
        self.wait = 0
        self.reason = StopReason.WAITING
        self.stopped = False
        self._best_state: dict[str, Any] | None = None

    def step(self, value: "float | torch.Tensor", model: torch.nn.Module | None = None) -> bool:
        """Record this epoch's value; returns True when training should stop."""
        value = float(value)
        self.epoch += 1
        if not math.isfinite(value):
            self.reason, self.stopped = StopReason.NONFINITE, True
            return True
        better = self.best is None or (value < self.best - self.min_delta if self.mode == "min"
                                       else value > self.best + self.min_delta)
        if better:
            self.best, self.best_epoch, self.wait, self.reason = value, self.epoch, 0, StopReason.IMPROVED
            if model is not None and self.restore_best:
                self._best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            return False
        self.wait += 1
        self.stopped = self.wait >= self.patience
        self.reason = StopReason.PATIENCE if self.stopped else StopReason.WAITING
        return self.stopped

    def restore(self, model: torch.nn.Module) -> bool:
        """Load the best epoch's weights into ``model``; False when none were kept."""
        if self._best_state is None:
            return False
        model.load_state_dict(self._best_state)
        return True

    def state_dict(self) -> dict[str, Any]:
        return {k: copy.deepcopy(getattr(self, k)) for k in ("best", "best_epoch", "epoch", "wait", "stopped")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)

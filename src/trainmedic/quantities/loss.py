"""The loss, captured from ``backward()``: a device-side running sum per optimizer step.

Losses scaled by a GradScaler are divided by the scaler's (device) scale, so the recorded value
is the user's loss, not the scaled one.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch


class LossRecorder:
    """Per step: a reference to the loss tensor (or the device sum of several backward calls);
    the host stacks and reads them once per tick."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.values: list[torch.Tensor | None] = [None] * every
        self.counts = [0] * every
        self._sum: torch.Tensor | None = None
        self._count = 0
        self._scaled: tuple[weakref.ref, object] | None = None
        self.epoch_sum: torch.Tensor | None = None
        self.epoch_steps = 0

    def note_scaled(self, scaled: torch.Tensor, scaler) -> None:
        """Remember that ``scaled`` is ``loss * scaler.scale``."""
        self._scaled = (weakref.ref(scaled), scaler)

    def on_backward(self, loss: torch.Tensor) -> None:
        if loss.numel() != 1 or not loss.is_floating_point():
            return
        value = loss.detach()
        if self._scaled is not None and self._scaled[0]() is loss:
            scale = getattr(self._scaled[1], "_scale", None)
            if scale is not None:
                value = value / scale
        self._sum = value if self._sum is None else self._sum + value
        self._count += 1

    def commit(self, slot: int) -> None:
        """The loss of this step (the sum of its backward calls) goes to row ``slot``."""
        self.values[slot], self.counts[slot] = self._sum, self._count
        if self._sum is not None:          # running sum since the last validation phase
            mean = self._sum / self._count if self._count > 1 else self._sum
            self.epoch_sum = mean if self.epoch_sum is None else self.epoch_sum + mean
            self.epoch_steps += 1
        self._sum, self._count = None, 0

    def take_epoch(self) -> float | None:
        """Mean training loss of the steps since the last call (one host read per epoch)."""
        value = None if self.epoch_sum is None else float(self.epoch_sum) / self.epoch_steps
        self.epoch_sum, self.epoch_steps = None, 0
        return value

    def take(self, rows: int):
        """(mean loss per step, whether the step had a loss) for the first ``rows`` rows."""
        seen = np.array([c > 0 for c in self.counts[:rows]], dtype=bool)
        values = np.full(rows, np.nan)
        if seen.any():
            present = [v for v in self.values[:rows] if v is not None]
            try:
                stacked = torch.stack(present)
            except RuntimeError:                   # mixed shapes/dtypes: () and (1,), bf16...
                stacked = torch.stack([v.reshape(()).float() for v in present])
            host = stacked.reshape(len(present)).float().cpu().numpy()
            values[seen] = host / np.array(self.counts[:rows])[seen]
        self.values, self.counts = [None] * self.every, [0] * self.every
        return values, seen

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
        self.epoch_sum = 0.0            # host sum of per-step losses since the last epoch
        self.epoch_steps = 0
        self.epoch_base = 0             # rows of the current window already in a past epoch

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
        self._sum, self._count = None, 0

    def take_epoch(self, rows: int) -> float | None:
        """Mean training loss of the steps since the last call: the host sums of past ticks
        plus the first ``rows`` rows of the current window (one host read per epoch)."""
        total, steps = self.epoch_sum, self.epoch_steps
        present = [(v, c) for v, c in zip(self.values[:rows], self.counts[:rows]) if v is not None]
        if present:
            host = torch.stack([v.reshape(()).float() for v, _ in present]).cpu().numpy()
            total += float(sum(h / c for h, (_, c) in zip(host, present)))
            steps += len(present)
            self.epoch_base = rows             # these rows are counted; take() skips them
        self.epoch_sum, self.epoch_steps = 0.0, 0
        return total / steps if steps else None

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
        fresh = values[self.epoch_base:rows]
        fresh = fresh[np.isfinite(fresh)]
        self.epoch_sum += float(fresh.sum())
        self.epoch_steps += len(fresh)
        self.epoch_base = 0
        self.values, self.counts = [None] * self.every, [0] * self.every
        return values, seen

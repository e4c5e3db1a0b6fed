"""The loss, captured from ``backward()``: a device-side running sum per optimizer step.

Losses scaled by a GradScaler are divided by the scaler's (device) scale, so the recorded value
is the user's loss, not the scaled one.
"""

from __future__ import annotations

import weakref

import torch


class LossRecorder:
    def __init__(self, every: int) -> None:
        self.every = every
        self.buf: torch.Tensor | None = None
        self.seen = [False] * every
        self._sum: torch.Tensor | None = None
        self._count = 0
        self._scaled: tuple[weakref.ref, object] | None = None

    def note_scaled(self, scaled: torch.Tensor, scaler) -> None:
        """Remember that ``scaled`` is ``loss * scaler.scale``."""
        self._scaled = (weakref.ref(scaled), scaler)

    def on_backward(self, loss: torch.Tensor) -> None:
        if loss.numel() != 1 or not loss.is_floating_point():
            return
        value = loss.detach().float().reshape(())
        if self._scaled is not None and self._scaled[0]() is loss:
            scale = getattr(self._scaled[1], "_scale", None)
            if scale is not None:
                value = value / scale.reshape(())
        self._sum = value if self._sum is None else self._sum + value
        self._count += 1

    def commit(self, slot: int) -> None:
        """Store the mean loss of this step's backward calls into row ``slot``."""
        if self._sum is None:
            self.seen[slot] = False
            return
        if self.buf is None or self.buf.device != self._sum.device:
            self.buf = torch.zeros(self.every, device=self._sum.device)
        self.buf[slot] = self._sum / self._count
        self.seen[slot] = True
        self._sum, self._count = None, 0

    def take(self, rows: int):
        import numpy as np
        seen = np.array(self.seen[:rows], dtype=bool)
        values = np.full(rows, np.nan)
        if self.buf is not None and seen.any():
            values[seen] = self.buf[:rows].cpu().numpy()[seen]
        self.seen = [False] * self.every
        return values, seen

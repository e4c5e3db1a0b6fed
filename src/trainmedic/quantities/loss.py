"""The loss, captured from ``backward()``: a device-side running sum per optimizer step.

With several optimizers, the curve is the primary optimizer's: a loss whose backward is
followed by another optimizer's step belongs to that one. Losses scaled by a GradScaler are divided by the scaler's (device) scale, so the recorded value
is the user's loss, not the scaled one.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch


class LossRecorder:
    """Per step: the loss (the sum of the step's backward calls) copied into one preallocated
    device buffer; the host reads the buffer once per tick. Nothing allocated per step
    outlives the step (long-lived small allocations between big temporaries pin the heap)."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.buf: torch.Tensor | None = None      # (every,) float32 on the loss's device
        self.counts = [0] * every
        self._sum: torch.Tensor | None = None
        self._count = 0
        self._scaled: tuple[weakref.ref, object] | None = None
        self._claimed: tuple[torch.Tensor | None, int] | None = None
        self.separate = 0        # steps where another optimizer stepped on a loss of its own
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

    def claim(self) -> None:
        """Another optimizer steps: the losses since the last step are its own (a GAN's
        generator loss), unless the primary optimizer steps next without a new backward (one
        loss shared by two optimizers), in which case ``commit`` takes them back."""
        if self._count:
            self._claimed = (self._sum, self._count)
            self._sum, self._count = None, 0

    def commit(self, slot: int) -> None:
        """The loss of this step (the sum of its backward calls) goes to row ``slot``."""
        if not self._count and self._claimed is not None:
            self._sum, self._count = self._claimed
        elif self._count and self._claimed is not None:
            self.separate += 1             # the other optimizer had a loss of its own
        if self._sum is not None:
            value = self._sum.reshape(()).float()
            if self.buf is None:                 # on the first loss's device
                self.buf = torch.zeros(self.every, device=value.device)
            self.buf[slot] = value.to(self.buf.device)
        self.counts[slot] = self._count if self._sum is not None else 0
        self._sum, self._count, self._claimed = None, 0, None

    def _host(self, rows: int) -> np.ndarray:
        """Mean loss per step of the first ``rows`` rows (NaN where none), one host copy."""
        values = np.full(rows, np.nan)
        counts = np.array(self.counts[:rows], dtype=float)
        seen = counts > 0
        if seen.any() and self.buf is not None:
            values[seen] = self.buf[:rows].cpu().numpy()[seen] / counts[seen]
        return values

    def take_epoch(self, rows: int) -> float | None:
        """Mean training loss of the steps since the last call: the host sums of past ticks
        plus the first ``rows`` rows of the current window (one host read per epoch)."""
        total, steps = self.epoch_sum, self.epoch_steps
        if any(self.counts[:rows]):
            host = self._host(rows)[self.epoch_base:]
            total += float(np.nansum(host))
            steps += int(np.isfinite(host).sum())
            self.epoch_base = rows             # these rows are counted; take() skips them
        self.epoch_sum, self.epoch_steps = 0.0, 0
        return total / steps if steps else None

    def take(self, rows: int):
        """(mean loss per step, whether the step had a loss) for the first ``rows`` rows."""
        seen = np.array([c > 0 for c in self.counts[:rows]], dtype=bool)
        values = self._host(rows)
        fresh = values[self.epoch_base:rows]
        fresh = fresh[np.isfinite(fresh)]
        self.epoch_sum += float(fresh.sum())
        self.epoch_steps += len(fresh)
        self.epoch_base = 0
        self.counts = [0] * self.every
        return values, seen

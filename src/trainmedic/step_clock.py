"""The step clock: which optimizer's steps count, and when the host reads the buffers.

A step of the *primary* optimizer fills one slot of the current window; a full window is a
*tick*. The first DENSE_TICKS windows are ``every`` steps long, later ones SPARSE_FACTOR times
longer (at most MAX_EVERY), so long runs pay less. Another optimizer that steps SWITCH_AFTER
times in a row while the primary does not becomes the primary (the next trial, a fine-tuning
stage, a resumed copy).
"""

from __future__ import annotations

MAX_EVERY = 10_000            # the per-step buffers hold one window of this many rows
DENSE_TICKS = 10              # the first reads come every `every` steps, later ones 8x sparser
SPARSE_FACTOR = 8
SWITCH_AFTER = 10             # steps in a row of another optimizer before it is followed


class StepClock:
    def __init__(self, every: int) -> None:
        self.every = every
        self.interval = every                     # steps in the current window
        self.slot = 0                             # steps taken in the current window
        self.step = 0                             # steps taken in the run
        self.ticks = 0
        self.primary: int | None = None           # the optimizer whose steps count
        self._last_stepper: int | None = None
        self._run_length = 0                      # consecutive steps of the last optimizer

    @property
    def window(self) -> int:
        """Rows the per-step buffers need: the longest window."""
        return min(self.every * SPARSE_FACTOR, MAX_EVERY)

    def advance(self) -> bool:
        """A step of the primary ended; True when the window is full (time to tick)."""
        self.slot += 1
        self.step += 1
        return self.slot == self.interval

    def take_window(self) -> tuple[int, int]:
        """(rows, first step) of the window being read; the next window starts empty."""
        rows, first = self.slot, self.step - self.slot
        self.slot = 0
        return rows, first

    def ticked(self) -> None:
        self.ticks += 1
        if self.ticks == DENSE_TICKS:
            self.interval = self.window

    def dense(self, on: bool) -> None:
        """Windows of ``every`` steps while ``on`` (a control waiting for something it must see
        promptly), the usual pace otherwise. Only between two windows: right after a tick."""
        if self.ticks >= DENSE_TICKS:
            self.interval = self.every if on else self.window

    def stepping(self, k: int) -> bool:
        """Optimizer ``k`` is stepping; True when it becomes the primary now: it stepped
        SWITCH_AFTER times in a row while the primary did not (a head stepping every step beside
        a backbone stepping every few steps never gets there). Its earlier steps then count too
        (their losses are lost)."""
        switched = False
        if k != self.primary:
            self._run_length = self._run_length + 1 if self._last_stepper == k else 1
            if self._run_length >= SWITCH_AFTER:
                self.primary = k
                self.step += self._run_length - 1
                switched = True
        self._last_stepper = k
        return switched

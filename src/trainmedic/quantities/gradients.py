"""Per-step gradient norms for every watched parameter (one foreach kernel per optimizer step)
and probes that tell whether gradients were cleared between optimizer steps."""

from __future__ import annotations

import numpy as np
import torch

from trainmedic.params import ParamTable

ABSENT = -1.0


class GradNormRecorder:
    """Writes |grad| of each parameter into row ``slot`` of an (every, P) device buffer."""

    def __init__(self, table: ParamTable, every: int) -> None:
        self.table = table
        self.every = every
        self.buf: torch.Tensor | None = None
        self._index_cache: dict[tuple[int, ...], torch.Tensor] = {}

    @property
    def width(self) -> int:
        return 0 if self.buf is None else self.buf.shape[1]

    def record(self, params: list[torch.Tensor], indices: list[int], slot: int) -> bool:
        """Norms of the dense gradients of ``params`` (table ``indices``) into row ``slot``,
        without a host sync. Returns whether any parameter had a gradient."""
        grads = [p.grad for p in params]
        keep = [j for j, gr in enumerate(grads) if gr is not None and not gr.is_sparse]
        if not keep:
            return any(gr is not None for gr in grads)
        sel = tuple(indices[j] for j in keep)
        grads = [grads[j] for j in keep]
        norms = torch.stack(torch._foreach_norm(grads)).float()
        buf = self._buffer(norms.device)
        idx = self._index_cache.get(sel)
        if idx is None or idx.device != norms.device:
            idx = self._index_cache[sel] = torch.tensor(sel, device=norms.device)
        buf[slot].index_copy_(0, idx, norms)
        return True

    def _buffer(self, device: torch.device) -> torch.Tensor:
        p = len(self.table)
        if self.buf is None or self.buf.shape[1] < p:
            old = self.buf
            self.buf = torch.full((self.every, p), ABSENT, device=device)
            if old is not None:
                self.buf[:, :old.shape[1]] = old.to(device)
        return self.buf

    def take(self, rows: int) -> np.ndarray:
        """Host copy of the first ``rows`` rows (one sync), then reset the buffer."""
        p = len(self.table)
        if self.buf is None or rows == 0:
            return np.full((rows, p), ABSENT)
        out = np.full((rows, p), ABSENT)
        host = self.buf[:rows].cpu().numpy()
        out[:, :host.shape[1]] = host
        self.buf.fill_(ABSENT)
        return out


class StaleGradProbe:
    """Watches one parameter's gradient arrivals between two steps of its optimizer.

    A tensor hook runs just before autograd accumulates into ``p.grad``: if, at every arrival
    since the last step, ``p.grad`` still held a non-zero tensor, the step used gradients that
    were never cleared. Deliberate accumulation clears right after each step, so it is not stale.
    """

    def __init__(self, p: torch.Tensor, guard) -> None:
        self.p = p
        self.armed = False
        self.arrived = False
        self.cleared = False
        self.zero: torch.Tensor | None = None
        self.handle = p.register_hook(guard.wrap("stale-gradient probe", self._on_grad))

    def _on_grad(self, _grad: torch.Tensor) -> None:
        if not self.armed:
            return
        self.arrived = True
        g = self.p.grad
        if g is None:
            self.cleared = True
        elif not self.cleared and not g.is_sparse:
            z = g.detach().abs().amax() == 0
            self.zero = z if self.zero is None else self.zero | z

    def verdict(self) -> "bool | torch.Tensor | None":
        """None when nothing arrived since the last step, else whether the step was stale."""
        if not (self.armed and self.arrived):
            return None
        if self.cleared:
            return False
        return True if self.zero is None else ~self.zero

    def rearm(self) -> None:
        self.armed, self.arrived, self.cleared, self.zero = True, False, False, None

    def remove(self) -> None:
        self.handle.remove()


class StaleGradCounter:
    """Per-optimizer count of steps taken with uncleared gradients, kept on the device."""

    def __init__(self) -> None:
        self.probes: dict[int, list[StaleGradProbe]] = {}
        self.stale: dict[int, "int | torch.Tensor"] = {}
        self.checked: dict[int, int] = {}

    def attach(self, k: int, params: list[torch.Tensor], guard) -> None:
        trainable = [p for p in params if p.requires_grad]
        picks = trainable[:1] + trainable[-1:] if len(trainable) > 1 else trainable
        self.probes[k] = [StaleGradProbe(p, guard) for p in picks]

    def before_step(self, k: int) -> None:
        verdicts = [v for v in (pr.verdict() for pr in self.probes.get(k, ())) if v is not None]
        if not verdicts:
            return
        self.checked[k] = self.checked.get(k, 0) + 1
        if any(v is False for v in verdicts):
            return
        step_stale = verdicts[0]
        for v in verdicts[1:]:
            step_stale = step_stale & v
        self.stale[k] = self.stale.get(k, 0) + (step_stale.int() if torch.is_tensor(step_stale) else 1)

    def after_step(self, k: int) -> None:
        for pr in self.probes.get(k, ()):
            pr.rearm()

    def take(self) -> dict[int, tuple[int, int]]:
        out = {k: (int(self.stale.get(k, 0)), n) for k, n in self.checked.items()}
        self.stale, self.checked = {}, {}
        return out

    def remove(self) -> None:
        for probes in self.probes.values():
            for pr in probes:
                pr.remove()
        self.probes = {}

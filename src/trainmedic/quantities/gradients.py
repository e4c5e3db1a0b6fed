"""Per-step gradient norms for every watched parameter (one foreach kernel per optimizer step)
and probes that tell whether gradients were cleared between optimizer steps."""

from __future__ import annotations

import numpy as np
import torch

from trainmedic.params import ParamTable

ABSENT = -1.0


class GradNormRecorder:
    """Per optimizer step: |grad| of each parameter as one stacked device vector (one foreach
    kernel); the host gathers a window's vectors into an (every, P) array once per tick."""

    def __init__(self, table: ParamTable, every: int) -> None:
        self.table = table
        self.every = every
        self.rows: list[list[tuple[tuple[int, ...], torch.Tensor]]] = [[] for _ in range(every)]

    def record(self, params: list[torch.Tensor], indices: "list[int] | range", slot: int) -> bool:
        """Norms of the dense gradients of ``params`` (table ``indices``) for row ``slot``,
        without a host sync. Returns whether any parameter had a gradient."""
        grads = [p.grad for p in params]
        keep = [j for j, gr in enumerate(grads) if gr is not None and not gr.is_sparse]
        if not keep:
            return any(gr is not None for gr in grads)
        if len(keep) == len(grads):
            sel = tuple(indices)
        else:
            sel, grads = tuple(indices[j] for j in keep), [grads[j] for j in keep]
        self.rows[slot].append((sel, torch.stack(torch._foreach_norm(grads))))
        return True

    def take(self, rows: int) -> np.ndarray:
        """(rows, P) host array of this window's norms, ABSENT where a parameter had no
        gradient; one device-to-host copy."""
        out = np.full((rows, len(self.table)), ABSENT)
        entries = [(r, sel, v) for r in range(rows) for sel, v in self.rows[r]]
        if entries:
            dev = entries[0][2].device
            flat = torch.cat([v.float().to(dev) for _, _, v in entries]).cpu().numpy()
            at = 0
            for r, sel, v in entries:
                out[r, list(sel)] = flat[at:at + len(sel)]
                at += len(sel)
        self.rows = [[] for _ in range(self.every)]
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

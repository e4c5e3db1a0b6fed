"""Per-step gradient norms for every watched parameter (one foreach kernel per optimizer step)
and probes that tell whether gradients were cleared between optimizer steps.

A sharded parameter's gradient (FSDP2's DTensor, FSDP's flat piece) is measured on the shard
this rank holds (its local tensor, no communication) and stated on the whole parameter's scale:
shard norm x sqrt(parameter size / shard size) (``trainmedic.params.SHARDED_NOTE``)."""

from __future__ import annotations

import math

import numpy as np
import torch

from trainmedic.params import ParamTable, local_view

ABSENT = -1.0


class GradNormRecorder:
    """Per optimizer step: |grad| of each parameter (one foreach kernel) written into one
    preallocated (every, P) device buffer; the host reads the window once per tick. Nothing
    allocated per step outlives the step."""

    def __init__(self, table: ParamTable, every: int) -> None:
        self.table = table
        self.every = every
        self.buf: torch.Tensor | None = None
        # per set of parameters with a gradient: (their indices, the norm's accumulation dtype,
        # the sharded ones' scale to the whole parameter or None)
        self._index: dict[tuple[int, ...], tuple[torch.Tensor, torch.dtype | None, torch.Tensor | None]] = {}

    def record(self, params: list[torch.Tensor], indices: "list[int] | range", slot: int) -> bool:
        """Norms of the dense gradients of ``params`` (table ``indices``) for row ``slot``,
        without a host sync. Returns whether any parameter had a gradient. Sharded
        parameters: the local shard's gradient (a rank holding none of a parameter measures
        nothing for it)."""
        grads = [p.grad for p in params]
        if self.table.sharded:
            grads = [None if gr is None else _local_or_none(gr) for gr in grads]
        keep = [j for j, gr in enumerate(grads) if gr is not None and not gr.is_sparse]
        if not keep:
            return any(p.grad is not None for p in params)
        if len(keep) == len(grads):
            sel = tuple(indices)
        else:
            sel, grads = tuple(indices[j] for j in keep), [grads[j] for j in keep]
        cached = self._index.get(sel)
        if cached is None:
            if len(self._index) >= 64:            # gradient presence varies step to step (MoE)
                self._index.clear()
            # float32 accumulation for half precision: fp16 norms overflow at 65504 long before
            # the gradient does (float64 and complex gradients keep their own precision)
            half = all(gr.dtype in (torch.float16, torch.bfloat16, torch.float32) for gr in grads)
            cached = self._index[sel] = (torch.tensor(sel), torch.float32 if half else None,
                                         self._scale(sel, grads))
        idx, dtype, scale = cached
        norms = torch.stack(torch._foreach_norm(grads, 2, dtype=dtype) if dtype else torch._foreach_norm(grads))
        buf = self._buffer(norms.device)
        if idx.device != buf.device or (scale is not None and scale.device != norms.device):
            idx = idx.to(buf.device)
            scale = None if scale is None else scale.to(norms.device)
            self._index[sel] = (idx, dtype, scale)
        if scale is not None:
            norms.mul_(scale)                     # norms is stack()'s own tensor
        buf[slot].index_copy_(0, idx, norms.to(buf.device, torch.float32))
        return True

    def _scale(self, sel: tuple[int, ...], grads: list[torch.Tensor]) -> torch.Tensor | None:
        """sqrt(parameter size / shard size) per gradient (local shards of sharded
        parameters), None when every gradient is whole."""
        if not self.table.sharded:
            return None
        infos = self.table.infos
        scale = [shard_scale(infos[i].numel, gr.numel()) if infos[i].sharded else 1.0
                 for i, gr in zip(sel, grads)]
        return None if all(s == 1.0 for s in scale) else torch.tensor(scale, dtype=torch.float32)

    def _buffer(self, device: torch.device) -> torch.Tensor:
        """The window buffer, on the first gradients' device, grown when parameters were
        added since (rare)."""
        p = len(self.table)
        if self.buf is None or self.buf.shape[1] < p:
            dev = device if self.buf is None else self.buf.device
            old, self.buf = self.buf, torch.full((self.every, max(p, 1)), ABSENT, device=dev)
            if old is not None:
                self.buf[:, :old.shape[1]] = old
        return self.buf

    def take(self, rows: int) -> np.ndarray:
        """(rows, P) host array of this window's norms, ABSENT where a parameter had no
        gradient; one device-to-host copy."""
        out = np.full((rows, len(self.table)), ABSENT)
        if self.buf is not None:
            host = self.buf[:rows].cpu().numpy()
            w = min(host.shape[1], out.shape[1])
            out[:, :w] = host[:, :w]
            self.buf.fill_(ABSENT)
        return out


def shard_scale(whole: int, local: int) -> float:
    """The factor that states a norm taken on ``local`` of a parameter's ``whole`` elements on
    the whole parameter's scale: sqrt(whole / local) (sqrt(whole) x the shard's RMS)."""
    return math.sqrt(whole / local) if local else float("nan")


def _local_or_none(t: torch.Tensor) -> torch.Tensor | None:
    """This rank's shard of ``t``; None when it holds no element of it."""
    t = local_view(t)
    return t if t.numel() else None


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
            g = local_view(g)                     # a shard: its own elements, no communication
            if not g.numel():                     # none here: no verdict of staleness
                self.cleared = True
                return
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
        if torch.is_tensor(step_stale):
            counter = self.stale.get(k)
            if not torch.is_tensor(counter) or counter.device != step_stale.device:
                counter = self.stale[k] = torch.zeros((), dtype=torch.int64, device=step_stale.device) + (counter or 0)
            counter.add_(step_stale.long())           # in place: nothing new lives until the tick
        else:
            self.stale[k] = self.stale.get(k, 0) + 1

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

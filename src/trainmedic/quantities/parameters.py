"""Parameter statistics taken on a schedule: the update-to-weight ratio of one sampled step per
optimizer (foreach copy before the step, foreach difference after) and symmetric-row checks."""

from __future__ import annotations

import numpy as np
import torch


class UpdateSampler:
    """On the next step of each optimizer marked due, measures per parameter the gradient norm
    and weight norm before the step and |w_after - w_before|. Costs one transient copy of that
    optimizer's parameters, once per tick."""

    def __init__(self) -> None:
        self.due: set[int] = set()
        self._before: dict[int, tuple] = {}
        self._done: list[tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def before_step(self, k: int, indices: list[int], params: list[torch.Tensor]) -> None:
        if k not in self.due:
            return
        self.due.discard(k)
        with torch.no_grad():
            weights = [p.detach() for p in params]
            norms = torch.stack(torch._foreach_norm(weights)).float()
            grads = [p.grad if p.grad is not None and not p.grad.is_sparse else torch.zeros(())
                     for p in params]
            gnorms = torch.stack([n.to(norms.device) for n in torch._foreach_norm(grads)]).float()
            self._before[k] = (indices, params, torch._foreach_mul(weights, 1.0), norms, gnorms)

    def after_step(self, k: int) -> None:
        snap = self._before.pop(k, None)
        if snap is None:
            return
        indices, params, before, norms, gnorms = snap
        with torch.no_grad():
            torch._foreach_sub_(before, [p.detach() for p in params])
            delta = torch.stack(torch._foreach_norm(before)).float()
        self._done.append((indices, delta, norms, gnorms))

    def take(self, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(update/weight ratio, weight norm, gradient norm) per parameter, NaN where unsampled."""
        if not self._done:
            return None
        out = np.full((3, width), np.nan)
        for indices, delta, norms, gnorms in self._done:
            d, w, gr = delta.cpu().numpy(), norms.cpu().numpy(), gnorms.cpu().numpy()
            with np.errstate(all="ignore"):
                out[0, indices] = d / np.maximum(w, 1e-12)
            out[1, indices], out[2, indices] = w, gr
        self._done = []
        return out[0], out[1], out[2]


def symmetric_rows(params: list[torch.Tensor]) -> list[bool]:
    """For each matrix-shaped parameter: are all its rows (output units) identical?"""
    if not params:
        return []
    with torch.no_grad():
        flags = [(w.detach().flatten(1) == w.detach().flatten(1)[:1]).all() for w in params]
        return [bool(v) for v in torch.stack(flags).cpu()]

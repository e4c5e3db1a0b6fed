"""Parameter statistics taken on a schedule: the update-to-weight ratio of one sampled step per
optimizer (foreach copy before the step, foreach difference after) and symmetric-row checks."""

from __future__ import annotations

import numpy as np
import torch


class UpdateSampler:
    """Measures |w_after - w_before| / |w_after| per parameter on the next step of each optimizer
    that is marked due. Costs one transient copy of that optimizer's parameters."""

    def __init__(self) -> None:
        self.due: set[int] = set()
        self._before: dict[int, tuple[list[int], list[torch.Tensor], list[torch.Tensor]]] = {}
        self._done: list[tuple[list[int], torch.Tensor, torch.Tensor]] = []

    def before_step(self, k: int, indices: list[int], params: list[torch.Tensor]) -> None:
        if k not in self.due:
            return
        self.due.discard(k)
        with torch.no_grad():
            self._before[k] = (indices, params, torch._foreach_mul([p.detach() for p in params], 1.0))

    def after_step(self, k: int) -> None:
        snap = self._before.pop(k, None)
        if snap is None:
            return
        indices, params, before = snap
        with torch.no_grad():
            torch._foreach_sub_(before, [p.detach() for p in params])
            delta = torch.stack(torch._foreach_norm(before)).float()
            weight = torch.stack(torch._foreach_norm([p.detach() for p in params])).float()
        self._done.append((indices, delta, weight))

    def take(self, width: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        if not self._done:
            return None, None
        ratio, norm = np.full(width, np.nan), np.full(width, np.nan)
        for indices, delta, weight in self._done:
            d, w = delta.cpu().numpy(), weight.cpu().numpy()
            with np.errstate(all="ignore"):
                ratio[indices] = d / np.maximum(w, 1e-12)
            norm[indices] = w
        self._done = []
        return ratio, norm


def symmetric_rows(params: list[torch.Tensor]) -> list[bool]:
    """For each matrix-shaped parameter: are all its rows (output units) identical?"""
    if not params:
        return []
    with torch.no_grad():
        flags = [(w.detach().flatten(1) == w.detach().flatten(1)[:1]).all() for w in params]
        return [bool(v) for v in torch.stack(flags).cpu()]

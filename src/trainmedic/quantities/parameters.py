"""Parameter statistics taken on a schedule: the update-to-weight ratio of one sampled step per
optimizer (foreach copy before the step, foreach difference after) and symmetric-row checks.

Sharded parameters (FSDP) are measured on the shard this rank holds, no communication: norms
are stated on the whole parameter's scale (shard norm x sqrt(parameter size / shard size),
``trainmedic.params.SHARDED_NOTE``), ratios are the shard's own; a parameter of which this rank
holds nothing is not sampled here."""

from __future__ import annotations

import numpy as np
import torch

from trainmedic.params import ParamTable, local_view
from trainmedic.quantities.gradients import shard_scale


class UpdateSampler:
    """On the next step of each optimizer marked due, measures per parameter the gradient norm
    and weight norm before the step and |w_after - w_before|. Costs one transient copy of that
    optimizer's parameters, once per tick."""

    def __init__(self, table: ParamTable) -> None:
        self.table = table               # for sharded parameters: their whole sizes
        self.due: set[int] = set()
        self._before: dict[int, tuple] = {}
        self._done: list[tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray | None]] = []

    def before_step(self, k: int, indices: list[int], params: list[torch.Tensor]) -> None:
        if k not in self.due:
            return
        self.due.discard(k)
        scale = None
        with torch.no_grad():
            if self.table.sharded:
                indices, params, scale = self._shards(indices, params)
                if not params:
                    return
            weights = _weights(params, scale is not None)
            norms = torch.stack(torch._foreach_norm(weights)).float()
            grads = [_grad(p, scale is not None) for p in params]
            gnorms = torch.stack([n.to(norms.device) for n in torch._foreach_norm(grads)]).float()
            self._before[k] = (indices, params, torch._foreach_mul(weights, 1.0), norms, gnorms, scale)

    def _shards(self, indices: list[int], params: list[torch.Tensor]):
        """The parameters of which this rank holds elements, and each one's scale to the
        whole parameter (1 for a parameter that is not sharded)."""
        infos, keep, scale = self.table.infos, [], []
        for j, (i, p) in enumerate(zip(indices, params)):
            n = local_view(p).numel()
            if n:
                keep.append(j)
                scale.append(shard_scale(infos[i].numel, n) if infos[i].sharded else 1.0)
        return [indices[j] for j in keep], [params[j] for j in keep], np.array(scale)

    def after_step(self, k: int) -> None:
        snap = self._before.pop(k, None)
        if snap is None:
            return
        indices, params, before, norms, gnorms, scale = snap
        with torch.no_grad():
            torch._foreach_sub_(before, _weights(params, scale is not None))
            delta = torch.stack(torch._foreach_norm(before)).float()
        self._done.append((indices, delta, norms, gnorms, scale))

    def take(self, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(update/weight ratio, weight norm, gradient norm) per parameter, NaN where unsampled."""
        if not self._done:
            return None
        out = np.full((3, width), np.nan)
        for indices, delta, norms, gnorms, scale in self._done:
            d, w, gr = delta.cpu().numpy(), norms.cpu().numpy(), gnorms.cpu().numpy()
            with np.errstate(all="ignore"):
                out[0, indices] = d / np.maximum(w, 1e-12)
            if scale is not None:                 # shards: norms on the whole parameter's scale
                w, gr = w * scale, gr * scale
            out[1, indices], out[2, indices] = w, gr
        self._done = []
        return out[0], out[1], out[2]


def _weights(params: list[torch.Tensor], sharded: bool) -> list[torch.Tensor]:
    """The parameters' values (their local shards when ``sharded``), detached."""
    if sharded:
        return [local_view(p).detach() for p in params]
    return [p.detach() for p in params]


def _grad(p: torch.Tensor, sharded: bool) -> torch.Tensor:
    g = p.grad
    if g is None or g.is_sparse:
        return torch.zeros(())
    return local_view(g) if sharded else g


def symmetric_rows(params: list[torch.Tensor]) -> list[bool]:
    """For each matrix-shaped parameter: are all its rows (output units) identical? A shard
    (FSDP) is checked on the rows this rank holds; fewer than two rows, or a flat shard: False
    (nothing to compare here)."""
    if not params:
        return []
    with torch.no_grad():
        local = [local_view(w).detach() for w in params]
        check = [j for j, w in enumerate(local) if w.dim() >= 2 and w.shape[0] >= 2]
        out = [False] * len(params)
        if check:
            flags = [(local[j].flatten(1) == local[j].flatten(1)[:1]).all() for j in check]
            for j, v in zip(check, torch.stack(flags).cpu()):
                out[j] = bool(v)
        return out

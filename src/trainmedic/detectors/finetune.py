"""Fine-tuning: a pretrained backbone that moves too far, too fast, and loses what it knew.

The monitor knows weights are pretrained only when it is told: the ``trainmedic.finetune``
helpers and ``trainmedic.watch(..., pretrained=True)`` *mark* each pretrained weight matrix with
a fixed random sample of its values (all of them for small tensors). Statistics cannot tell:
initialisations differ (He, Xavier, N(0, 0.02), orthogonal, zero) and a briefly pretrained model
still looks freshly initialised, so guessing would both miss fine-tunings and invent them.

When a validation epoch closes (the weights exactly as validated), the detector measures each
marked matrix's drift from its pretrained values, |w - w_pretrained| / |w_pretrained| on the
sample, and the backbone's (the norm-weighted drift of the marked matrices being trained).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from trainmedic.detectors.base import Detector, Verdict, g, short_list

MARK = "_trainmedic_pretrained"
SAMPLE = 4096       # values kept per marked tensor: the drift estimate's relative error ~1/sqrt(SAMPLE)
STILL = 0.05        # backbone drift up to which an epoch shows the pretrained features (the baseline)
FAR = 0.3           # drift from which the pretrained weights are largely replaced (fine-tuning: ~1e-2)
ACC_DROP = 0.05     # validation accuracy this far below the baseline is a loss, not noise
LOSS_RISE = 1.25    # ... or validation loss this many times the baseline's


@dataclass
class PretrainedMark:
    """A pretrained weight as it was when marked: ``values`` at flat positions ``index``."""

    name: str
    index: torch.Tensor       # int64, CPU
    values: torch.Tensor      # float32, CPU
    _copies: dict = field(default_factory=dict, repr=False)

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``index`` and ``values`` on ``device`` (copied once)."""
        if device not in self._copies:
            self._copies[device] = (self.index.to(device), self.values.to(device))
        return self._copies[device]


def mark(p: torch.Tensor, name: str) -> None:
    """Mark weight matrix ``p`` (>= 2 dimensions) as pretrained, unless it is marked already."""
    if p.dim() < 2 or getattr(p, MARK, None) is not None:
        return
    n = p.numel()
    if n <= SAMPLE:
        index = torch.arange(n)
    else:
        index = torch.randint(n, (SAMPLE,), generator=torch.Generator().manual_seed(n))
    with torch.no_grad():
        values = p.detach().reshape(-1)[index.to(p.device)].float().cpu()
    setattr(p, MARK, PretrainedMark(name, index, values))


class PretrainedFeaturesDestroyed(Detector):
    """Marked pretrained weights being trained moved >= 0.3 of their norm from their pretrained
    values (backbone drift), and the latest validation is worse than the best validation of an
    epoch whose backbone had moved <= 0.05 (frozen, not yet trained, or barely moved: what the
    pretrained features give) by >= 0.05 accuracy (or >= 1.25x the loss without accuracy)."""

    id = "pretrained_features_destroyed"

    def __init__(self) -> None:
        self._drift: dict[int, dict[str, Any]] = {}     # id(epoch record) -> its measurement

    def after_epoch(self, run, record: dict[str, Any]) -> None:
        """A validation epoch closed: measure the backbone's drift as it was validated."""
        self._drift[id(record)] = _measure(run)

    def evaluate(self, run, reported, final):
        ep = [(e, self._drift[id(e)]) for e in run.epochs if id(e) in self._drift]
        if len(ep) < 2:
            return None
        now, moved = ep[-1]
        if not moved["drift"] >= FAR:
            return None
        base = [(e, d) for e, d in ep[:-1] if d["drift"] <= STILL]
        key = "val_acc" if all(_finite(e, "val_acc") for e, _ in base + [ep[-1]]) else "val_loss"
        base = [(e, d) for e, d in base if _finite(e, key)]
        if not base or not _finite(now, key):
            return None
        pick = max if key == "val_acc" else min
        b, bd = pick(base, key=lambda x: x[0][key])
        v0, v1 = b[key], now[key]
        worse = v1 <= v0 - ACC_DROP if key == "val_acc" else v0 > 0 and v1 >= LOSS_RISE * v0
        if not worse:
            return None
        far = sorted(((n, d) for n, d in moved["layers"].items() if d >= FAR), key=lambda x: -x[1])
        names = [n.removesuffix(".weight") for n, _ in far]
        what = "accuracy" if key == "val_acc" else "loss"
        ratios = _update_ratios(run)
        at = "at its pretrained weights" if bd["drift"] == 0 else f"moved {g(bd['drift'])} of its norm"
        after = ep[next(k for k, (e, _) in enumerate(ep) if e is b) + 1:]
        e1, d1 = next(x for x in after if x[1]["drift"] >= FAR)         # the first epoch that far
        fast = f"{g(d1['drift'])}x its norm within {e1['step'] - b['step']} steps after epoch {b['epoch']}"
        layers = ", ".join(f"{n} {g(d)}" for n, (_, d) in zip(names, far[:5])) + (", ..." if len(far) > 5 else "")
        return Verdict(
            f"Fine-tuning moved the pretrained backbone away from its pretrained weights by {fast}"
            + (f", {g(moved['drift'])}x by epoch {now['epoch']}" if e1 is not now else "")
            + f" ({layers}); validation {what} went from {g(v0)} at epoch {b['epoch']} (backbone {at}) to "
            f"{g(v1)} at epoch {now['epoch']}: worse than the pretrained features gave."
            + (f" Per step the backbone changes by {g(ratios['backbone'])} of its norm, the new "
               f"layers by {g(ratios['head'])}." if ratios else ""),
            where=short_list(names, 3), step=now["step"],
            evidence={"metric": key, "baseline_epoch": b["epoch"], "baseline_value": v0,
                      "baseline_drift": bd["drift"], "epoch": now["epoch"], "value": v1,
                      "backbone_drift": moved["drift"], "layers": dict(far),
                      "far_epoch": e1["epoch"], "far_drift": d1["drift"],
                      "steps_to_far": e1["step"] - b["step"],
                      **{f"{k}_update_ratio": v for k, v in ratios.items()}})


def _measure(run) -> dict[str, Any]:
    """Drift of the marked matrices being trained: per matrix, and their norm-weighted total
    (0 when none is trained: a frozen backbone does not move). One host copy per device."""
    per_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for info, p in zip(run.params.infos, run.params.params):
        m = getattr(p, MARK, None)
        if m is None or info.optimizer is None or not p.requires_grad:
            continue
        index, ref = m.on(p.device)
        with torch.no_grad():
            now = p.detach().reshape(-1)[index].float()
            pair = torch.stack([torch.linalg.vector_norm(now - ref), torch.linalg.vector_norm(ref)])
        name = m.name if info.name.startswith("optimizer") else info.name    # a generated name
        per_device.setdefault(p.device, []).append((name, pair))
    if not per_device:
        return {"drift": 0.0, "layers": {}}
    names = [n for items in per_device.values() for n, _ in items]
    norms = np.concatenate([torch.stack([t for _, t in items]).cpu().numpy()
                            for items in per_device.values()])
    with np.errstate(all="ignore"):
        layers = {n: float(a / b) for n, (a, b) in zip(names, norms) if b > 0}
        total = float(np.sqrt((norms[:, 0] ** 2).sum() / (norms[:, 1] ** 2).sum()))
    return {"drift": total, "layers": layers}        # NaN (non-finite weights) never counts


def _finite(e: dict, key: str) -> bool:
    v = e.get(key)
    return v is not None and bool(np.isfinite(v))


def _update_ratios(run) -> dict[str, float]:
    """Median per-step update/weight ratio of the trained marked matrices (backbone) and of the
    other trained matrices (the new layers), at the latest tick that sampled both."""
    marked = {i.index for i, p in zip(run.params.infos, run.params.params)
              if i.is_matrix and i.optimizer is not None and getattr(p, MARK, None) is not None}
    new = {i.index for i in run.params.infos if i.is_matrix and i.optimizer is not None} - marked
    for row in reversed(run.ticks.rows):
        u = row.get("update_ratio")
        if u is None:
            continue
        parts = {k: u[[i for i in idx if i < len(u)]] for k, idx in (("backbone", marked), ("head", new))}
        parts = {k: v[np.isfinite(v) & (v > 0)] for k, v in parts.items()}
        if all(len(v) for v in parts.values()):
            return {k: float(np.median(v)) for k, v in parts.items()}
    return {}

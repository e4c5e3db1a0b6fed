"""Fine-tuning: a pretrained backbone that moves too far, too fast, and loses what it knew.

The monitor knows weights are pretrained only when it is told: the ``trainmedic.finetune``
helpers and ``trainmedic.watch(..., pretrained=True)`` *mark* each pretrained weight matrix with
a fixed random sample of its values (all of them for small tensors). Statistics cannot tell:
initialisations differ (He, Xavier, N(0, 0.02), orthogonal, zero) and a briefly pretrained model
still looks freshly initialised, so guessing would both miss fine-tunings and invent them.

When a validation epoch closes (the weights exactly as validated), the detector measures each
marked matrix's drift from its pretrained values, |w - w_pretrained| / |w_pretrained| on the
sample, and the backbone's (the norm-weighted drift of the marked matrices being trained).

Why the thresholds are where they are. Drift alone is no fault: a healthy fine-tuning of small
layers moves far (a CNN with BatchNorm pretrained on digits 0-4 and fine-tuned on 5-9, a program
no test runs, reached drift 0.2-0.45 under Adam 1e-3..3e-3, validation better every epoch), so
the verdict rests on validation getting worse than with the pretrained features, and drift says
whether the backbone's moving is to blame.

- ``STILL = 0.05``: a baseline epoch shows the pretrained features themselves. Frozen and
  not-yet-trained epochs measure exactly 0; 0.05 also admits the first epochs of a gentle
  fine-tuning, and a matrix moved 0.05 keeps a cosine >= 0.998 with its pretrained values (the
  same features). It is 6x below ``FAR``, so no baseline epoch is itself far.
- ``FAR = 0.3``: the change is a third of the weight's norm (a re-initialised matrix of the same
  scale is at sqrt(2) = 1.41): below it a drop in validation is more likely the new head or
  noise than lost features. In the sweep above (Adam, AdamW, SGD, 3-6 learning rates each, 3
  seeds, 400 validation samples) 50 of the 52 epochs that lost >= 0.05 accuracy were at drift
  >= 0.3 (the other 2, SGD at a too-high 0.1, crossed 0.3 one epoch later).
- ``ACC_DROP = 0.05``: beyond the sampling noise of an accuracy (standard deviation
  <= 0.5/sqrt(n): 2 of them at n = 400 validation samples, 3 at 1000). No run of the sweep at the
  usual learning rates (Adam/AdamW <= 3e-3, SGD <= 0.03) lost 0.05 against its baseline in any
  epoch, and none fired with only 100 validation samples either.
- ``LOSS_RISE = 1.25`` (used only without an accuracy): in the sweep, runs at the usual learning
  rates never had a validation loss above 0.97x their baseline's, and 49 of the 52 epochs that
  lost >= 0.05 accuracy had >= 1.27x it (the other 3 were recovering: loss back below the
  baseline's, accuracy not yet): the two criteria agree.
- ``SAMPLE = 4096``: the drift estimate's relative error is about 1/sqrt(SAMPLE), 2%: far below
  the factor 6 between ``STILL`` and ``FAR``, for 48 KB of host memory per matrix.

Only the latest validation is judged (at a tick): a dip that has recovered by then is not
"destroyed" and is not reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from trainmedic.detectors.base import Detector, Verdict, g, short_list

MARK = "_trainmedic_pretrained"
SAMPLE = 4096       # values kept per marked tensor (the module docstring says why each is here)
STILL = 0.05        # backbone drift up to which an epoch shows the pretrained features (the baseline)
FAR = 0.3           # drift from which a validation drop is blamed on the backbone's moving
ACC_DROP = 0.05     # validation accuracy this far below the baseline is a loss, not noise
LOSS_RISE = 1.25    # ... or validation loss this many times the baseline's


@dataclass
class PretrainedMark:
    """A pretrained weight as it was when marked: ``values`` at flat positions ``index``.
    ``scale`` = sqrt(numel / len(index)) turns a norm on the sample into an estimate of the whole
    tensor's (so a sampled large matrix weighs in the backbone's drift as much as it holds);
    ``norm``: |w_pretrained| so estimated (fixed: a measurement only computes |w - w_pretrained|)."""

    name: str
    index: torch.Tensor       # int64, CPU
    values: torch.Tensor      # float32, CPU
    scale: float
    norm: float
    _copies: dict = field(default_factory=dict, repr=False)

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``index`` and ``values`` on ``device`` (copied once; a model moved after marking
        keeps its marks)."""
        if device not in self._copies:
            self._copies[device] = (self.index.to(device), self.values.to(device))
        return self._copies[device]


def mark(p: torch.Tensor, name: str) -> None:
    """Mark weight matrix ``p`` (>= 2 dimensions) as pretrained, unless it is marked already or
    holds no values yet (a lazy module's, one on the meta device). A one-off host copy of the
    sample (at marking, not during training)."""
    if torch.nn.parameter.is_lazy(p) or p.is_meta or p.dim() < 2 or getattr(p, MARK, None) is not None:
        return
    n = p.numel()
    if n <= SAMPLE:
        index = torch.arange(n)
    else:
        index = torch.randint(n, (SAMPLE,), generator=torch.Generator().manual_seed(n))
    with torch.no_grad():
        values = torch.take(p.detach(), index.to(p.device)).float().cpu()
    scale = (n / len(index)) ** 0.5
    norm = scale * float(torch.linalg.vector_norm(values))
    setattr(p, MARK, PretrainedMark(name, index, values, scale, norm))


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
        base = [k for k, (_, d) in enumerate(ep[:-1]) if d["drift"] <= STILL]
        key = "val_acc" if all(_finite(ep[k][0], "val_acc") for k in base + [-1]) else "val_loss"
        base = [k for k in base if _finite(ep[k][0], key)]
        if not base or not _finite(now, key):
            return None
        kb = (max if key == "val_acc" else min)(base, key=lambda k: ep[k][0][key])
        b, bd = ep[kb]
        v0, v1 = b[key], now[key]
        worse = v1 <= v0 - ACC_DROP if key == "val_acc" else v0 > 0 and v1 >= LOSS_RISE * v0
        if not worse:
            return None
        far = sorted(((n, d) for n, d in moved["layers"].items() if d >= FAR), key=lambda x: -x[1])
        names = [n.removesuffix(".weight") for n, _ in far]
        what = "accuracy" if key == "val_acc" else "loss"
        ratios = _update_ratios(run)
        at = "at its pretrained weights" if bd["drift"] == 0 else f"moved {g(bd['drift'])} of its norm"
        e1, d1 = next(x for x in ep[kb + 1:] if x[1]["drift"] >= FAR)     # the first epoch that far
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
    (0 when none is trained: a frozen backbone does not move). One gather per matrix (there is
    no foreach gather), then one foreach subtraction and norm and one host read for them all."""
    names, now, ref, marks = [], [], [], []
    for info, p in zip(run.params.infos, run.params.params):
        m = getattr(p, MARK, None)
        if m is None or info.optimizer is None or not p.requires_grad:
            continue
        index, values = m.on(p.device)
        with torch.no_grad():
            now.append(torch.take(p.detach(), index).float())
        ref.append(values)
        marks.append(m)
        names.append(m.name if info.name.startswith("optimizer") else info.name)   # a generated name
    if not names:
        return {"drift": 0.0, "layers": {}}
    with torch.no_grad():
        torch._foreach_sub_(now, ref)
        moved = torch._foreach_norm(now)
        moved = torch.stack([d.to(moved[0].device) for d in moved]).cpu().numpy()
    moved = moved * np.array([m.scale for m in marks])          # whole-tensor estimates
    ref_norm = np.array([m.norm for m in marks])
    with np.errstate(all="ignore"):
        layers = {n: float(a / b) for n, a, b in zip(names, moved, ref_norm) if b > 0}
        total = float(np.sqrt((moved ** 2).sum() / (ref_norm ** 2).sum()))
    return {"drift": total, "layers": layers}        # NaN (non-finite weights) never counts


def _finite(e: dict, key: str) -> bool:
    v = e.get(key)
    return v is not None and bool(np.isfinite(v))


def _update_ratios(run) -> dict[str, float]:
    """Median per-step update/weight ratio of the trained marked matrices (backbone) and of the
    other trained matrices (the new layers), at the latest tick that sampled both."""
    marked = {i.index for i, p in zip(run.params.infos, run.params.params)
              if i.optimizer is not None and getattr(p, MARK, None) is not None}    # marks: matrices
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

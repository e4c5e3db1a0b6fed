"""Host-side history of a run: one row of summaries per tick (every N steps), bounded in size.

Recorders fill a ``Tick`` from their device buffers once per schedule; ``RunState`` keeps the
bounded history the detectors read. Nothing here touches the device.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainmedic.params import ParamTable

MAX_ROWS = 2048
MAX_LOSSES = 16384


class History:
    """Rows of named columns; past ``cap`` rows, every other old row is dropped (the first and
    the newest rows always survive), so memory stays bounded on any run length."""

    def __init__(self, cap: int = MAX_ROWS) -> None:
        self.cap = cap
        self.rows: list[dict[str, Any]] = []

    def append(self, **row: Any) -> None:
        self.rows.append(row)
        if len(self.rows) > self.cap:
            keep = self.rows[:-self.cap // 4]
            self.rows = keep[::2] + self.rows[-self.cap // 4:]

    def column(self, name: str) -> np.ndarray:
        return np.array([r.get(name, np.nan) for r in self.rows], dtype=float)

    def __len__(self) -> int:
        return len(self.rows)

    def scan(self, head: int = 16, tail: int = 256) -> list[dict[str, Any]]:
        """The rows detectors look at: the first ``head`` (how training started) and the last
        ``tail``, so a detector's cost per tick does not grow with the run."""
        if len(self.rows) <= head + tail:
            return self.rows
        return self.rows[:head] + self.rows[-tail:]


@dataclass
class Tick:
    """What the host learned at one synchronisation point."""

    step: int                                   # steps completed at the end of the window
    first_step: int                             # step number of the window's first row
    losses: np.ndarray                          # (n,) per-step loss, NaN where no loss was seen
    loss_seen: np.ndarray                       # (n,) bool
    grad_norms: np.ndarray                      # (n, P) per-step grad norm, -1 where no grad
    lrs: np.ndarray                             # (n,) LR of the primary optimizer's first group
    update_ratio: np.ndarray | None = None      # (P,) |Δw|/|w| at the sampled step, NaN unknown
    weight_norm: np.ndarray | None = None       # (P,) before the sampled step
    sample_grad: np.ndarray | None = None       # (P,) gradient norm at the sampled step
    activations: dict[str, dict[str, Any]] = field(default_factory=dict)
    predictions: list[dict[str, float]] = field(default_factory=list)
    stale: dict[int, tuple[int, int]] = field(default_factory=dict)   # opt -> (stale, checked)
    empty_steps: dict[int, tuple[int, int]] = field(default_factory=dict)  # opt -> (no-grad, steps)
    symmetric: dict[int, bool] | None = None     # param index -> all rows identical
    loss_inputs: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class RunState:
    """Everything detectors may read: the parameter table and the bounded history."""

    params: ParamTable
    step: int = 0
    ticks: History = field(default_factory=History)
    loss_steps: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (step, loss) rows
    first_nonfinite_loss: int | None = None
    first_nonfinite_grad: tuple[int, int] | None = None      # (step, param index)
    grad_seen: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    grad_ever_nonzero: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    update_ever_nonzero: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    update_samples: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    stale: dict[int, list[int]] = field(default_factory=dict)
    empty_steps: dict[int, list[int]] = field(default_factory=dict)
    activation_sites: dict[str, dict[str, Any]] = field(default_factory=dict)
    loss_inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    symmetric: dict[int, bool] = field(default_factory=dict)
    layer_order: list[str] = field(default_factory=list)     # parameterised modules, forward order
    epochs: list[dict[str, Any]] = field(default_factory=list)  # one record per validation phase
    goal: Any = None                                          # trainmedic.goals.Goal or None
    unowned_with_grad: set[int] = field(default_factory=set)  # got a gradient, in no optimizer
    lr_max: float = 0.0
    separate_losses: int = 0        # steps where another optimizer stepped on its own loss (GAN)
    segment_start: int = 0          # first step of the model trained now (sequential trials)
    eval_mode_backwards: list[int] = field(default_factory=lambda: [0, 0])  # (eval-mode, all)
    initial_hint: float | None = None   # the segment's starting loss when known (a rollback's snapshot)
    frozen: bool = False            # no further updates on purpose (early stopping): no loss trends
    _smoothed: tuple[np.ndarray, np.ndarray] | None = None

    def new_segment(self, step: int) -> None:
        """Another model is trained from step ``step`` on: forget the loss and tick history
        (findings already made stay)."""
        self.segment_start = step
        self.initial_hint = None
        self.loss_steps = np.zeros((0, 2))
        self.ticks = History()
        self.lr_max = 0.0
        self.separate_losses = 0
        self._smoothed = None

    @property
    def adversarial(self) -> bool:
        """Two optimizers take turns, each on a loss of its own (GAN, actor-critic): each loss
        moves with the other model, so its trend is not a verdict on learning."""
        return self.separate_losses >= 10

    def _grow(self, p: int) -> None:
        for name in ("grad_seen", "grad_ever_nonzero", "update_ever_nonzero", "update_samples"):
            old = getattr(self, name)
            if len(old) < p:
                new = np.zeros(p, dtype=old.dtype)
                new[:len(old)] = old
                setattr(self, name, new)

    def ingest(self, t: Tick) -> None:
        p = len(self.params)
        self._grow(p)
        self.step = t.step
        steps = t.first_step + np.arange(len(t.losses))
        seen = t.loss_seen & (steps >= self.segment_start)
        rows = np.stack([steps[seen], t.losses[seen]], axis=1)
        self.loss_steps = np.concatenate([self.loss_steps, rows])
        if len(self.loss_steps) > MAX_LOSSES:   # keep the newest quarter whole, thin the rest
            keep = MAX_LOSSES // 4
            self.loss_steps = np.concatenate([self.loss_steps[:-keep:2], self.loss_steps[-keep:]])
        self._smoothed = None
        bad = seen & ~np.isfinite(t.losses)
        if bad.any() and self.first_nonfinite_loss is None:
            self.first_nonfinite_loss = int(steps[bad][0])

        g = t.grad_norms
        present = g != -1.0                     # -1 marks "no gradient"; NaN/Inf are present
        gnan = present & ~np.isfinite(g)
        finite = present & np.isfinite(g)
        if gnan.any() and self.first_nonfinite_grad is None:
            r, c = np.argwhere(gnan)[0]
            self.first_nonfinite_grad = (int(steps[r]), int(c))
        w = g.shape[1]
        self.grad_seen[:w] |= present.any(0)
        self.grad_ever_nonzero[:w] |= (finite & (g > 0)).any(0)
        if not len(g):
            gmed = gmax = np.full(w, np.nan)
        elif finite.all():
            gmed, gmax = np.median(g, axis=0), g.max(axis=0)
        else:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN columns are expected
                gmed = np.nanmedian(np.where(finite, g, np.nan), axis=0)
                gmax = np.nanmax(np.where(finite, g, np.nan), axis=0)
        if t.update_ratio is not None:
            known = np.isfinite(t.update_ratio)
            u = len(t.update_ratio)
            self.update_samples[:u] += known
            self.update_ever_nonzero[:u] |= known & (t.update_ratio > 0)
        for src, dst in ((t.stale, self.stale), (t.empty_steps, self.empty_steps)):
            for k, (hits, total) in src.items():
                acc = dst.setdefault(k, [0, 0])
                acc[0] += hits
                acc[1] += total
        for name, site in t.activations.items():
            self.activation_sites.setdefault(name, {}).update(
                {k: v for k, v in site.items() if k in ("kind", "output", "units")})
        if t.symmetric:
            self.symmetric.update(t.symmetric)
        for name, entry in t.loss_inputs.items():
            acc = self.loss_inputs.setdefault(name, {**entry, "hits": 0, "calls": 0})
            acc["hits"] += entry["hits"]
            acc["calls"] += entry["calls"]
        finite_losses = t.losses[seen & np.isfinite(t.losses)]
        finite_lrs = t.lrs[np.isfinite(t.lrs)]
        if len(finite_lrs):
            self.lr_max = max(self.lr_max, float(finite_lrs.max()))
        self.ticks.append(
            step=t.step, first_step=t.first_step,
            loss_median=float(np.median(finite_losses)) if len(finite_losses) else np.nan,
            loss_n=int(len(finite_losses)),
            loss_swing=float(np.median(np.abs(np.diff(finite_losses)))) if len(finite_losses) > 2 else np.nan,
            lr=float(finite_lrs[-1]) if len(finite_lrs) else np.nan,
            grad_median=gmed, grad_max=gmax,
            update_ratio=t.update_ratio, weight_norm=t.weight_norm, sample_grad=t.sample_grad,
            activations=t.activations, predictions=t.predictions,
            grad_total=_total(gmed), grad_total_max=_total(gmax),
            sample_grad_total=_total(t.sample_grad) if t.sample_grad is not None else np.nan,
            **self._sampled_step_summary(t),
        )

    def _sampled_step_summary(self, t: Tick) -> dict[str, Any]:
        """Per-row numbers derived once from the sampled step (weight matrices only):
        median update ratio, and the largest relative gradient |g|/|w| with its parameter."""
        mats = [c for c in self.matrix_params() if t.update_ratio is not None and c < len(t.update_ratio)]
        if not mats:
            return {}
        out: dict[str, Any] = {}
        u = t.update_ratio[mats]
        u = u[np.isfinite(u)]
        if len(u):
            out["update_median"] = float(np.median(u))
        gr = t.sample_grad[mats]
        with np.errstate(all="ignore"):
            rel = gr / t.weight_norm[mats]
        out["sample_finite"] = bool(np.isfinite(gr).all())
        if np.isfinite(rel).any():
            j = int(np.nanargmax(np.where(np.isfinite(rel), rel, np.nan)))
            out["rel_grad_peak"], out["rel_grad_param"] = float(rel[j]), self.params.infos[mats[j]].name
        return out

    # -- views the detectors share ---------------------------------------------------------
    def loss_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(steps, losses) of every finite recorded per-step loss."""
        s, v = self.loss_steps[:, 0], self.loss_steps[:, 1]
        ok = np.isfinite(v)
        return s[ok], v[ok]

    def initial_loss(self) -> float:
        """The loss at initialisation: the median of the first three steps, or the very first
        step when they already differ by more than 2x (a blow-up in the first steps). After a
        rollback: the smoothed loss at the snapshot (one batch of a trained model is too noisy
        a start)."""
        if self.initial_hint is not None:
            return self.initial_hint
        _, v = self.loss_curve()
        if not len(v):
            return float("nan")
        first = np.abs(v[:3])
        return float(np.median(v[:3])) if first.max() <= 2 * first.min() else float(v[0])

    def smoothed_loss(self) -> tuple[np.ndarray, np.ndarray]:
        """Medians of consecutive windows of the per-step loss (robust to batch noise);
        computed once per tick."""
        if self._smoothed is None:
            self._smoothed = self._smooth()
        return self._smoothed

    def _smooth(self) -> tuple[np.ndarray, np.ndarray]:
        s, v = self.loss_curve()
        if len(v) == 0:
            return s, v
        w = max(5, min(50, len(v) // 12))
        n = len(v) // w
        if n == 0:
            return s[-1:], np.array([np.median(v)])
        cut = len(v) - n * w        # drop the oldest remainder so the newest window is full
        vs = v[cut:].reshape(n, w)
        ss = s[cut:].reshape(n, w)
        return ss[:, -1], np.median(vs, axis=1)

    def matrix_params(self) -> list[int]:
        return [i.index for i in self.params.infos if i.is_matrix]


def _total(norms: np.ndarray) -> float:
    """The global norm of per-parameter norms, non-finite entries left out."""
    return float(np.sqrt(np.nansum(np.where(np.isfinite(norms), norms, 0) ** 2)))

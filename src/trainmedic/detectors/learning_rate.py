"""Causes on the learning-rate axis: too high, too low, a schedule that collapsed early.

Healthy training changes each weight matrix by about 1e-3 of its norm per step (Karpathy's rule
of thumb); the update/weight ratio is measured on one sampled step per tick.
"""

from __future__ import annotations

import numpy as np

from trainmedic.detectors.base import Detector, Verdict, g, matrix_update_medians
from trainmedic.detectors.gradients import relative_gradient_peaks
from trainmedic.detectors.loss import relative_decrease

# Big steps that these findings already explain are not the learning rate's fault.
EXPLAINED_BY = {"grads_not_cleared", "regularization_dominates"}
HIGH_SYMPTOMS = ("nonfinite_loss", "loss_diverging", "loss_oscillating", "nonfinite_gradient",
                 "dead_relu")


def _lr(run) -> float | None:
    lrs = run.ticks.column("lr")
    lrs = lrs[np.isfinite(lrs)]
    return float(lrs[0]) if len(lrs) else None


class LearningRateTooHigh(Detector):
    """A symptom of overshooting plus weight matrices changing by >= 1% of their norm per step."""

    id = "learning_rate_too_high"

    def evaluate(self, run, reported, final):
        symptoms = [s for s in HIGH_SYMPTOMS if s in reported]
        if not symptoms or reported & EXPLAINED_BY:
            return None
        # Only steps whose gradients are of healthy size count: huge steps from exploding
        # gradients are the gradients' fault, not the learning rate's.
        healthy = {step for step, rel, _, finite in relative_gradient_peaks(run)
                   if finite and rel < 1e3}
        rows = [r for r in run.ticks.scan() if r["step"] in healthy]
        meds = matrix_update_medians(run, rows)
        if not len(meds):
            return None
        peak = float(np.max(meds))
        if peak < 1e-2:
            return None
        return Verdict(
            f"Weight matrices change by {g(peak)} of their norm in one step (healthy is about "
            f"1e-3) and the run shows {', '.join(symptoms)}; initial learning rate {_lr(run)}.",
            evidence={"update_ratio_peak": peak, "learning_rate": _lr(run), "symptoms": symptoms})


class LearningRateTooLow(Detector):
    """Update ratios never above 1e-4 (10x below healthy) while the loss barely moved."""

    id = "learning_rate_too_low"

    def evaluate(self, run, reported, final):
        if "params_not_updating" in reported:
            return None
        meds = matrix_update_medians(run)
        decrease = relative_decrease(run)
        if len(meds) < 3 or decrease is None:
            return None
        peak = float(np.max(meds))
        if peak <= 1e-4 and decrease < 0.10 and peak > 0:
            return Verdict(
                f"Weight matrices change by at most {g(peak)} of their norm per step (healthy is "
                f"about 1e-3) and the loss fell only {decrease:.1%}; learning rate {_lr(run)}.",
                evidence={"update_ratio_peak": peak, "relative_decrease": decrease,
                          "learning_rate": _lr(run)})
        return None


class LrScheduleCollapsed(Detector):
    """The LR fell below 1% of its peak, the run went on at least as long again, and the loss
    stalled at >= 30% of its starting value."""

    id = "lr_schedule_collapsed"

    def evaluate(self, run, reported, final):
        steps, lrs = run.ticks.column("step"), run.ticks.column("lr")
        ok = np.isfinite(lrs)
        steps, lrs = steps[ok], lrs[ok]
        if len(lrs) < 3 or run.lr_max <= 0:
            return None
        peak = int(np.argmax(lrs))
        low = np.nonzero(lrs[peak:] <= 0.01 * run.lr_max)[0]
        if not len(low):
            return None
        c = peak + int(low[0])
        collapse_step = int(steps[c])
        after = run.step - collapse_step
        if after < max(50, collapse_step):
            return None
        s, m = run.smoothed_loss()
        start = run.initial_loss()
        if len(m) < 3 or abs(start) < 1e-8:
            return None
        at = m[s <= collapse_step]
        at_collapse = float(at[-1]) if len(at) else start
        now = float(m[-1])
        stalled = (at_collapse - now) < 0.05 * abs(at_collapse)
        if stalled and now >= 0.3 * start:
            return Verdict(
                f"The learning rate fell from {g(run.lr_max)} to {g(lrs[c])} by step "
                f"{collapse_step} and the loss has stalled at {g(now)} since (started at "
                f"{g(start)}).", step=collapse_step,
                evidence={"lr_peak": run.lr_max, "lr_now": float(lrs[-1]),
                          "collapse_step": collapse_step, "loss_at_collapse": at_collapse,
                          "loss_now": now})
        return None

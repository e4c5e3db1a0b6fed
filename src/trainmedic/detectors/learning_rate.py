"""Causes on the learning-rate axis: too high, too low, a schedule that collapsed early.

Healthy training changes each weight matrix by about 1e-3 of its norm per step (Karpathy's rule
of thumb); the update/weight ratio is measured on one sampled step per tick.
"""

from __future__ import annotations

import numpy as np

from trainmedic.detectors.base import Detector, Verdict, g, matrix_update_medians
from trainmedic.detectors.gradients import relative_gradient_peaks, spiking_ticks
from trainmedic.detectors.loss import relative_decrease

# Big steps that these findings already explain are not the learning rate's fault.
EXPLAINED_BY = {"grads_not_cleared", "regularization_dominates"}
HIGH_SYMPTOMS = ("nonfinite_loss", "loss_diverging", "loss_oscillating", "nonfinite_gradient",
                 "dead_relu")


# Optimizers whose step is about lr per weight whatever the gradient's size (Adam family, sign
# methods, RMSprop, Adagrad): their healthy update/weight ratio is lr / rms(w), e.g. 3e-2 for a
# GPT-style std-0.02 init at lr 6e-4, so "too big" starts 10x higher than for SGD.
ADAPTIVE = ("Adam", "AdamW", "NAdam", "RAdam", "Adamax", "Adagrad", "Adadelta", "RMSprop", "SparseAdam",
            "Lion", "Adafactor", "LAMB", "Lamb")
TOO_BIG_SGD = 1e-2       # 10x the 1e-3 rule of thumb
TOO_BIG_ADAPTIVE = 1e-1


def adaptive(run) -> bool:
    """Whether most weight matrices are stepped by an adaptive optimizer."""
    kinds = [type(run.params.optimizers[i.optimizer]).__name__ in ADAPTIVE
             for i in run.params.infos if i.is_matrix and i.optimizer is not None]
    return bool(kinds) and sum(kinds) > len(kinds) / 2


def too_big(run) -> float:
    """The update/weight ratio per step above which steps are too big for this optimizer."""
    return TOO_BIG_ADAPTIVE if adaptive(run) else TOO_BIG_SGD


def _lr(run) -> float | None:
    lrs = run.ticks.column("lr")
    lrs = lrs[np.isfinite(lrs)]
    return float(lrs[0]) if len(lrs) else None


class LearningRateTooHigh(Detector):
    """Steps too big for the optimizer (update/weight ratio >= 1e-2 per step under SGD, >= 1e-1
    under adaptive optimizers; measured on steps whose gradients were of normal size) plus a
    symptom: overshooting (divergence, NaN, oscillation, dead units), or, under an adaptive
    optimizer, a noise floor: the loss stopped improving while every recent sampled step was
    that big (too high a learning rate under Adam settles above the right one's loss instead
    of exploding)."""

    id = "learning_rate_too_high"

    def evaluate(self, run, reported, final):
        if reported & EXPLAINED_BY:
            return None
        symptoms = [s for s in HIGH_SYMPTOMS if s in reported]
        # Only steps whose gradients are of healthy size count: huge steps from exploding
        # gradients or a gradient spike are the gradients' fault, not the learning rate's.
        spiking = spiking_ticks(run)
        healthy = {step for step, rel, _, finite in relative_gradient_peaks(run)
                   if finite and rel < 1e3 and step not in spiking}
        rows = [r for r in run.ticks.scan() if r["step"] in healthy]
        meds = matrix_update_medians(run, rows)
        limit = too_big(run)
        if not len(meds):
            return None
        peak = float(np.max(meds))
        if symptoms and peak >= limit:
            return Verdict(
                f"Weight matrices change by {g(peak)} of their norm in one step (too big beyond "
                f"{g(limit)} for {self._kind(run)}) and the run shows {', '.join(symptoms)}; "
                f"initial learning rate {_lr(run)}.",
                evidence={"update_ratio_peak": peak, "learning_rate": _lr(run), "symptoms": symptoms,
                          "too_big": limit})
        blowup = _weight_blowup(run) if adaptive(run) and run.step >= 200 else None
        if blowup is not None:
            floor = _noise_floor(run)
            if floor is not None:
                return Verdict(
                    f"Under an adaptive optimizer one step changed the weight matrices by "
                    f"{g(blowup['jump'])}x their norm (healthy: lr/rms(w), about 1e-2 to 1e-1), the "
                    f"weights grew {g(blowup['growth'])}x to {g(blowup['scale'])}x a He-initialised "
                    f"scale, and the loss stopped improving at {g(floor['level'])} (step-to-step "
                    f"noise {floor['noise']:.1%} of it): the steps are too big to settle lower; "
                    f"learning rate {_lr(run)}.",
                    evidence={"learning_rate": _lr(run), **blowup, **floor})
        return None

    @staticmethod
    def _kind(run) -> str:
        return "an adaptive optimizer" if adaptive(run) else "SGD-like optimizers"


def _weight_blowup(run) -> dict | None:
    """Adaptive steps of about lr per weight: too high a learning rate shows as a first step
    bigger than the weights themselves (update ratio >= 1) after which the weights inflate by
    random-walk steps (>= 10x their initial norm, ending >= 3x a He-initialised scale), so
    later ratios look normal. Medians over weight matrices; None when healthy."""
    rows = [r for r in run.ticks.scan() if r.get("weight_norm") is not None]
    mats = run.matrix_params()
    if len(rows) < 3 or not mats:
        return None
    jump = float(np.nanmax(matrix_update_medians(run, rows))) if any("update_median" in r for r in rows) else 0.0
    w0, w1 = (np.asarray(rows[k]["weight_norm"], dtype=float) for k in (0, -1))
    mats = [i for i in mats if i < len(w0) and i < len(w1) and w0[i] > 0]
    if not mats:
        return None
    growth = float(np.median(w1[mats] / w0[mats]))
    he = np.array([np.sqrt(2 / max(np.prod(run.params.infos[i].shape[1:]), 1)) for i in mats])
    size = np.array([np.sqrt(np.prod(run.params.infos[i].shape)) for i in mats])
    scale = float(np.median(w1[mats] / size / he))
    if jump >= 1.0 and growth >= 10 and scale >= 3:
        return {"jump": jump, "growth": growth, "scale": scale}
    return None


def _noise_floor(run) -> dict | None:
    """The loss's last third is no lower than its middle third (no trend left) while it
    fell from the start: a floor. Returns its level and relative step-to-step noise."""
    s, v = run.loss_curve()
    if len(v) < 150:
        return None
    third = len(v) // 3
    middle, last = float(np.median(v[third:2 * third])), float(np.median(v[2 * third:]))
    start = run.initial_loss()
    if last < 0.98 * middle or not last < start:
        return None
    noise = float(np.median(np.abs(np.diff(v[2 * third:])))) / max(abs(last), 1e-12)
    return {"level": last, "noise": noise, "middle_level": middle}


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

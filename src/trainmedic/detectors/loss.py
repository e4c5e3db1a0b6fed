"""Symptoms read from the loss curve: non-finite, diverging, not decreasing, oscillating."""

from __future__ import annotations

import numpy as np

from trainmedic.detectors.base import Detector, Verdict, g
from trainmedic.history import RunState

MIN_STEPS = 100          # "a long stretch": evidence needs at least this many recorded steps
EXPLODED = 100.0         # a single loss this many times the starting loss is a divergence
RISE_STEPS = 50          # a rise of the loss is judged on at least this many steps


class NonfiniteLoss(Detector):
    id = "nonfinite_loss"

    def evaluate(self, run, reported, final):
        step = run.first_nonfinite_loss
        if step is None:
            return None
        s, v = run.loss_curve()
        before = v[s < step]
        last = f"; the last finite loss was {g(before[-1])}" if len(before) else ""
        return Verdict(f"The loss became NaN/Inf at step {step}{last}.", step=step,
                       evidence={"first_step": step,
                                 "last_finite_loss": float(before[-1]) if len(before) else None})


class LossDiverging(Detector):
    """The loss exploded (one step at >= 100x the starting loss), or the smoothed loss rose well
    above its best: by half of what it had gained, for two consecutive windows, and clearly
    beyond window-to-window noise, over at least RISE_STEPS steps (fewer, e.g. just after a
    rollback, give windows of a few batches: noise)."""

    id = "loss_diverging"

    def evaluate(self, run, reported, final):
        s, v = run.loss_curve()
        if len(v) >= 10:
            start = abs(run.initial_loss())
            peak = int(np.argmax(v))
            if start > 0 and v[peak] >= EXPLODED * start:
                return Verdict(
                    f"The loss exploded to {g(v[peak])} at step {int(s[peak])} from {g(start)} "
                    f"at the start.", step=int(s[peak]),
                    evidence={"initial": start, "peak": float(v[peak]), "peak_step": int(s[peak])})
        s, m = run.smoothed_loss()
        if len(m) < 4 or len(v) < RISE_STEPS or run.adversarial or run.frozen:
            return None
        initial, b = run.initial_loss(), int(np.argmin(m))
        best, cur = m[b], m[-1]
        if b >= len(m) - 2:
            return None
        rise = cur - best
        noise = float(np.median(np.abs(np.diff(m)))) if len(m) > 2 else 0.0
        level = max(abs(best), abs(initial - best), 1e-8)
        sustained = m[-2] - best > 0.5 * rise
        if (rise > max(0.5 * (initial - best), 0.25 * level, 3 * noise) and sustained
                and rise / level > 0.25):
            return Verdict(
                f"The loss rose from its best {g(best)} (step {int(s[b])}) to {g(cur)} "
                f"(step {int(s[-1])}); it started at {g(initial)}.", step=int(s[-1]),
                evidence={"best": float(best), "best_step": int(s[b]), "current": float(cur),
                          "initial": float(initial)})
        return None


class LossNotDecreasing(Detector):
    """After MIN_STEPS steps the best smoothed loss is within 5% of the starting loss."""

    id = "loss_not_decreasing"

    def evaluate(self, run, reported, final):
        s, v = run.loss_curve()
        if len(v) < MIN_STEPS or run.adversarial or run.frozen:
            return None
        _, m = run.smoothed_loss()
        if len(m) < 5:
            return None
        initial, best = run.initial_loss(), float(np.min(m))
        if abs(initial) < 1e-6:
            return None
        decrease = (initial - best) / abs(initial)
        if decrease < 0.05:
            return Verdict(
                f"After {len(v)} steps the loss is {g(m[-1])}; it started at {g(initial)} and "
                f"its best was {g(best)} ({abs(decrease):.1%} {'lower' if decrease >= 0 else 'higher'}).",
                step=int(s[-1]),
                evidence={"initial": float(initial), "best": best, "current": float(m[-1]),
                          "relative_decrease": float(decrease), "steps": int(len(v))})
        return None


class LossOscillating(Detector):
    """In the recent half of the run the median step-to-step swing is at least half the loss
    level and a quarter of the starting loss, the level is still at least a quarter of the
    start (a loss that fell 4x is not stuck swinging), and it has no downward trend."""

    id = "loss_oscillating"

    def evaluate(self, run, reported, final):
        s, v = run.loss_curve()
        if len(v) < 60 or run.adversarial or run.frozen:
            return None
        recent = v[len(v) // 2:]
        initial = abs(run.initial_loss())
        level = float(np.median(np.abs(recent)))
        swing = float(np.median(np.abs(np.diff(recent))))
        third = max(len(recent) // 3, 1)
        no_trend = np.median(recent[-third:]) >= 0.95 * np.median(recent[:third])
        if swing >= 0.25 * initial and swing >= 0.5 * level and level >= 0.25 * initial and no_trend:
            return Verdict(
                f"Over the last {len(recent)} steps the loss swings by {g(swing)} from step to "
                f"step (typical level {g(level)}, start {g(initial)}) without going down.",
                step=int(s[-1]),
                evidence={"median_swing": swing, "level": level, "initial": initial,
                          "window_steps": int(len(recent))})
        return None


def relative_decrease(run: RunState) -> float | None:
    """(start - best) / |start| of the smoothed loss, or None without enough evidence."""
    s, v = run.loss_curve()
    _, m = run.smoothed_loss()
    start = run.initial_loss()
    if len(v) < MIN_STEPS or len(m) < 5 or abs(start) < 1e-8:
        return None
    return float((start - np.min(m)) / abs(start))

"""Gradient pathologies: non-finite, vanishing or exploding (with depth or over time), and
gradients that were never cleared between optimizer steps."""

from __future__ import annotations

import numpy as np

from trainmedic.detectors.base import Detector, Verdict, g
from trainmedic.history import RunState

HUGE_RELATIVE_GRADIENT = 1e4     # |g|/|w| of a weight matrix; healthy runs stay below ~10
SPIKE = 100          # a step's gradient norm this many times its window's median is a spike
SPIKE_SAMPLE = 10    # a sampled step this far above its window's median is part of a spike


def relative_gradient_peaks(run: RunState) -> list[tuple[int, float, str, bool]]:
    """Per tick with a sampled step: (step, max finite |g|/|w| over weight matrices at that
    step, its name, whether every sampled gradient was finite)."""
    return [(int(r["step"]), r["rel_grad_peak"], r["rel_grad_param"], r["sample_finite"])
            for r in run.ticks.scan() if "rel_grad_peak" in r]


def spiking_ticks(run: RunState) -> set[int]:
    """Ticks whose sampled step had a gradient norm >= SPIKE_SAMPLE x its window's median: its
    update ratio measures the spike, not the learning rate."""
    return {int(r["step"]) for r in run.ticks.scan()
            if r.get("grad_total", 0) > 0 and r.get("sample_grad_total", 0) >= SPIKE_SAMPLE * r["grad_total"]}


def _spike_before_jump(run: RunState) -> dict | None:
    """A tick window where one step's gradient norm was >= SPIKE x the window's median, and
    the loss peaked inside that window or right after it."""
    s, v = run.loss_curve()
    if not len(v):
        return None
    peak = int(s[int(np.argmax(v))])
    for r in run.ticks.scan():
        med, top = r.get("grad_total", 0), r.get("grad_total_max", 0)
        if med > 0 and top >= SPIKE * med and r["first_step"] <= peak <= r["step"]:
            return {"spike_ratio": top / med, "peak_norm": top, "median_norm": med,
                    "steps": [int(r["first_step"]), int(r["step"]) - 1], "loss_peak_step": peak}
    return None


class NonfiniteGradient(Detector):
    """A NaN/Inf gradient, unless the loss was already non-finite at or before that step (the
    gradient of a NaN loss is NaN: nonfinite_loss says it)."""

    id = "nonfinite_gradient"

    def evaluate(self, run, reported, final):
        hit = run.first_nonfinite_grad
        if hit is None:
            return None
        step, i = hit
        if run.first_nonfinite_loss is not None and run.first_nonfinite_loss <= step:
            return None
        name = run.params.infos[i].name
        return Verdict(f"The gradient of {name} was NaN/Inf at step {step}.", where=name,
                       step=step, evidence={"first_step": step, "parameter": name})


def _depth_profile(run: RunState, row: dict) -> tuple[list[str], np.ndarray] | None:
    """Relative gradient |g|/|w| of each weight matrix, in forward-execution order."""
    gm, wn = row.get("grad_median"), row.get("weight_norm")
    if gm is None or wn is None:
        return None
    order = {layer: k for k, layer in enumerate(run.layer_order)}
    mats = [i for i in run.params.infos if i.is_matrix and i.index < len(gm) and i.index < len(wn)]
    mats.sort(key=lambda i: order.get(i.layer, len(order) + i.index))
    prof = [(i.name, gm[i.index] / wn[i.index]) for i in mats
            if np.isfinite(gm[i.index]) and np.isfinite(wn[i.index]) and wn[i.index] > 0]
    if len(prof) < 4:
        return None
    return [p[0] for p in prof], np.array([p[1] for p in prof])


def _depth_ratio(run: RunState) -> list[tuple[float, float, list[str], np.ndarray]]:
    """For the latest ticks: (first/last ratio, monotone share, names, profile)."""
    out = []
    for row in run.ticks.rows[-2:]:
        got = _depth_profile(run, row)
        if got is None:
            continue
        nm, r = got
        k = max(1, len(r) // 4)
        first, last = float(np.median(r[:k])), float(np.median(r[-k:]))
        up = float(np.mean(np.diff(np.log(np.maximum(r, 1e-30))) > 0))
        out.append((first / max(last, 1e-30), up, nm, r))
    return out


class VanishingGradient(Detector):
    """In the last two ticks: the relative gradient of the first quarter of weight matrices is
    < 1e-3 of the last quarter's, it shrinks steadily toward the input, and the first layers'
    update ratio is < 1e-5 (they barely learn)."""

    id = "vanishing_gradient"

    def evaluate(self, run, reported, final):
        rows = _depth_ratio(run)
        if len(rows) < 2:
            return None
        if not all(ratio < 1e-3 and up >= 0.7 for ratio, up, _, _ in rows):
            return None
        ratio, _, nm, r = rows[-1]
        upd = run.ticks.rows[-1].get("update_ratio")
        k = max(1, len(r) // 4)
        first_idx = [run.params.infos[i].index for i in range(len(run.params))
                     if run.params.infos[i].name in nm[:k]]
        first_upd = float(np.nanmedian(np.asarray(upd)[first_idx])) if upd is not None else np.nan
        if np.isfinite(first_upd) and first_upd > 1e-5:
            return None
        return Verdict(
            f"Relative gradients shrink toward the input: {nm[0]} gets {g(r[0])} vs {g(r[-1])} "
            f"at {nm[-1]} (ratio {g(ratio)}); the first layers change by {g(first_upd)} per step.",
            where=nm[0],
            evidence={"first_last_ratio": ratio, "profile": dict(zip(nm, r.tolist())),
                      "first_layers_update_ratio": first_upd})


class ExplodingGradient(Detector):
    """Relative gradients grow >= 1000x steadily toward the input (last two ticks); or a weight
    matrix's gradient is >= 1e4x its norm (two ticks, or with non-finite values); or the loss
    diverged right after a step whose gradient norm was >= 100x its window's median (a spike);
    or the gradient norm grew >= 1000x from its early level and the run diverged."""

    id = "exploding_gradient"

    def evaluate(self, run, reported, final):
        rows = _depth_ratio(run)
        if len(rows) >= 2 and all(ratio > 1e3 and up <= 0.3 for ratio, up, _, _ in rows):
            ratio, _, nm, r = rows[-1]
            return Verdict(
                f"Relative gradients grow toward the input: {nm[0]} gets {g(r[0])} vs {g(r[-1])} "
                f"at {nm[-1]} (ratio {g(ratio)}).", where=nm[0],
                evidence={"first_last_ratio": ratio, "profile": dict(zip(nm, r.tolist()))})
        rel = relative_gradient_peaks(run)
        if len(rel) >= 1 and rel[-1][1] >= HUGE_RELATIVE_GRADIENT and (
                len(rel) >= 2 and rel[-2][1] >= HUGE_RELATIVE_GRADIENT
                or "nonfinite_loss" in reported or "nonfinite_gradient" in reported):
            step, peak, name, _ = rel[-1]
            return Verdict(
                f"The gradient of {name} is {g(peak)}x the weight's own norm at step {step} "
                f"(healthy: below about 10): one step at lr 1e-3 would change it "
                f"{g(peak * 1e-3)}x its size.", where=name, step=int(step),
                evidence={"relative_gradient": peak, "parameter": name})
        spike = _spike_before_jump(run) if "loss_diverging" in reported else None
        if spike is not None:
            first, last = spike["steps"]
            return Verdict(
                f"One step's gradient norm reached {g(spike['peak_norm'])}, {g(spike['spike_ratio'])}x "
                f"the median of steps {first}-{last} ({g(spike['median_norm'])}), and the loss peaked "
                f"right after, at step {spike['loss_peak_step']}: a gradient spike threw the weights "
                f"off.", step=spike["loss_peak_step"], evidence=spike)
        totals = [(r["step"], r["grad_total"]) for r in run.ticks.scan() if r["grad_total"] > 0]
        if len(totals) < 3:
            return None
        early = min(t for _, t in totals[:2])
        step, late = max(totals, key=lambda t: t[1])
        consequence = "nonfinite_gradient" in reported or "loss_diverging" in reported
        if early > 0 and late / early >= 1e3 and consequence:
            return Verdict(
                f"The gradient norm grew from {g(early)} to {g(late)} (x{g(late / early)}) by "
                f"step {step}.", step=int(step),
                evidence={"early_norm": early, "peak_norm": late, "growth": late / early})
        return None


class GradsNotCleared(Detector):
    """>= 80% of >= 10 optimizer steps used gradients that were never cleared since the
    optimizer's previous step (measured by probes on the gradients' arrival)."""

    id = "grads_not_cleared"

    def evaluate(self, run, reported, final):
        for k, (stale, checked) in sorted(run.stale.items()):
            if checked >= 10 and stale >= 0.8 * checked:
                opt = run.params.optimizers[k]
                where = f"optimizer {k} ({type(opt).__name__})"
                growth = _grad_growth(run, run.params.optimizer_indices(k))
                msg = (f"{stale} of {checked} steps of {where} used gradients still holding the "
                       f"previous steps' values: nothing cleared them between steps")
                if growth is not None:
                    msg += f"; the gradient norm grew x{g(growth)} over the run"
                return Verdict(msg + ".", where=where,
                               evidence={"stale_steps": stale, "checked_steps": checked,
                                         "grad_norm_growth": growth})
        return None


def _grad_growth(run: RunState, indices: list[int]) -> float | None:
    rows = [r["grad_median"] for r in run.ticks.scan() if r.get("grad_median") is not None]
    if len(rows) < 2:
        return None

    def total(gm):
        v = np.asarray(gm)[[i for i in indices if i < len(gm)]]
        return float(np.sqrt(np.nansum(np.where(np.isfinite(v), v, 0) ** 2)))
    first, last = total(rows[0]), total(rows[-1])
    return last / first if first > 0 else None


"""Checks that train a copy of the model for a few steps: overfit a tiny subset, find the
learning rate, weigh the regulariser. The user's model and optimizer are never stepped."""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from trainmedic.checks.base import CheckContext, Skip, check, fresh_optimizer
from trainmedic.findings import Finding
from trainmedic.quantities.activations import main_tensor

OVERFIT_STEPS = 300
OVERFIT_SECONDS = 10.0
SWEEP = (1e-7, 10.0)
SWEEP_STEPS = 100
DIVERGE_FACTOR = 4.0


def _no_dropout(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.p = 0.0
    return model


def _step(model, opt, loss_fn, x, y) -> float:
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
    return float(loss.detach())


def _accuracy(model, x, y) -> float | None:
    out = main_tensor(model(x))
    if out is None or not torch.is_tensor(y) or y.is_floating_point() or out.dim() < 2:
        return None
    return float((out.argmax(1) == y).float().mean())


def train_copy(ctx: CheckContext, steps: int, lr: float | None = None, *, weight_decay: float | None = None,
               batches: list | None = None, optimizer: Any = "user", seconds: float = 30.0) -> list[float]:
    """Losses of ``steps`` steps of a deep copy of the model on ``batches`` (cycled); stops early
    on a non-finite loss or after ``seconds``."""
    model = copy.deepcopy(ctx.model).train()
    user = ctx.optimizer if optimizer == "user" else None
    opt = fresh_optimizer(user, model.parameters(), lr=lr, weight_decay=weight_decay)
    batches = batches or ctx.train_batches()
    losses, start = [], time.perf_counter()
    for i in range(steps):
        x, y = batches[i % len(batches)]
        losses.append(_step(model, opt, ctx.loss_fn, x, y))
        if not math.isfinite(losses[-1]) or time.perf_counter() - start > seconds:
            break
    return losses


def _fits_subset(ctx: CheckContext, optimizer, lr, x, y) -> tuple[bool, str]:
    """Train a copy (dropout and weight decay off) on one small batch until it reaches ~100%
    accuracy or 5% of its first loss; (fitted, summary)."""
    model = _no_dropout(copy.deepcopy(ctx.model)).train()
    opt = fresh_optimizer(optimizer, model.parameters(), lr=lr, weight_decay=0.0)
    first = last = acc = None
    start = time.perf_counter()
    for step in range(OVERFIT_STEPS):
        last = _step(model, opt, ctx.loss_fn, x, y)
        first = last if first is None else first
        if not math.isfinite(last) or time.perf_counter() - start > OVERFIT_SECONDS:
            break
        if step % 20 == 19:
            with torch.no_grad():
                acc = _accuracy(model.eval(), x, y)
            model.train()
            if (acc is not None and acc >= 1.0) or last <= 0.05 * first or last < 1e-3:
                return True, f"fitted in {step + 1} steps"
    return False, f"loss {first:.4g} -> {last:.4g}" + (f", accuracy {acc:.0%}" if acc is not None else "")


@check("cannot_overfit_small_batch", ["cannot_overfit_small_batch"])
def check_overfit_small_batch(ctx: CheckContext):
    x, y = ctx.train_batches()[0]
    n = min(len(x), 32) if torch.is_tensor(x) else len(y)
    if torch.is_tensor(x):
        x, y = x[:n], (y[:n] if torch.is_tensor(y) else y)
    tries = {}
    if ctx.optimizer is not None:
        fitted, tries["your optimizer"] = _fits_subset(ctx, ctx.optimizer, None, x, y)
        if fitted:
            return None
    fitted, tries["Adam(lr=1e-3)"] = _fits_subset(ctx, None, 1e-3, x, y)
    if fitted and ctx.optimizer is not None:
        return [Finding.make(
            "cannot_overfit_small_batch",
            f"With your optimizer settings the model could not fit {n} samples "
            f"({tries['your optimizer']}), but Adam(lr=1e-3) {tries['Adam(lr=1e-3)']}: the wiring "
            f"works, the optimizer settings (learning rate) do not.", severity="warning",
            evidence={"samples": n, "tries": tries})]
    if fitted:
        return None
    return [Finding.make("cannot_overfit_small_batch",
                         f"The model cannot fit {n} training samples with regularisation and dropout "
                         f"off: " + "; ".join(f"{k}: {v}" for k, v in tries.items()) + ".",
                         evidence={"samples": n, "tries": tries})]


def _smooth(losses: list[float], beta: float = 0.98) -> np.ndarray:
    out, avg = [], 0.0
    for i, v in enumerate(losses, 1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta ** i))
    return np.array(out)


def lr_range_test(ctx: CheckContext, steps: int = SWEEP_STEPS, lo: float = SWEEP[0], hi: float = SWEEP[1]) -> dict:
    """Exponential LR sweep on a copy (one step per LR), smoothed (EMA 0.98), stopped once the
    smoothed loss exceeds 4x its best. Returns the curve and the suggestions of three rules."""
    model = copy.deepcopy(ctx.model).train()
    opt = fresh_optimizer(ctx.optimizer, model.parameters(), lr=lo)
    batches = ctx.train_batches()
    lrs, raw = [], []
    for i, lr in enumerate(np.geomspace(lo, hi, steps)):
        for g in opt.param_groups:
            g["lr"] = float(lr)
        x, y = batches[i % len(batches)]
        loss = _step(model, opt, ctx.loss_fn, x, y)
        if not math.isfinite(loss):
            break
        lrs.append(float(lr))
        raw.append(loss)
        sm = _smooth(raw)
        if len(sm) > 10 and sm[-1] > DIVERGE_FACTOR * sm.min():
            break
    sm = _smooth(raw)
    if len(sm) < 20:
        raise Skip(f"the sweep diverged after {len(sm)} steps")
    lr_arr = np.array(lrs)
    cut = sm[: len(sm) - 1] if len(sm) > 15 else sm
    slope = np.gradient(cut[10:], np.log(lr_arr[10:len(cut)]))
    steepest = float(lr_arr[10 + int(np.argmin(slope))])
    return {"lrs": lrs, "losses": raw, "smoothed": sm.tolist(), "steepest": steepest,
            "valley": _valley(lr_arr, sm), "min_over_10": float(lr_arr[int(np.argmin(sm))] / 10),
            "diverged_at": lrs[-1]}


def _valley(lrs: np.ndarray, losses: np.ndarray) -> float:
    """fastai's valley rule: 2/3 down the longest stretch of decreasing loss."""
    n = len(losses)
    lds = [1] * n
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end, max_start = i, i - lds[i]
    sections = (max_end - max_start) / 3
    return float(lrs[max_start + int(sections) + int(sections / 2)])


def largest_stable_lr(ctx: CheckContext, start: float = 3.0, steps: int = 30, tries: int = 12) -> dict:
    """The seed's heuristic: start large and divide by 3 until a short training run no longer
    diverges: it stays finite, never spikes above 2x its first loss, and ends at least 5% lower
    (a run that blows up and then sits dead at chance level counts as diverged)."""
    lr, log = start, []
    for _ in range(tries):
        losses = train_copy(ctx, steps, lr=lr, seconds=5.0)
        ok = len(losses) == steps and all(map(math.isfinite, losses)) and \
            max(losses) <= 2 * losses[0] and np.mean(losses[-5:]) < 0.95 * np.mean(losses[:3])
        log.append({"lr": lr, "first": losses[0], "last": losses[-1], "diverged": not ok})
        if ok:
            return {"largest_stable": lr, "tries": log}
        lr /= 3
    raise Skip(f"training diverged at every LR down to {lr * 3:.3g}")


@check("learning_rate", ["learning_rate_too_high", "learning_rate_too_low"])
def check_learning_rate(ctx: CheckContext):
    if ctx.optimizer is None:
        raise Skip("no optimizer given")
    user = float(ctx.optimizer.param_groups[0]["lr"])
    sweep = lr_range_test(ctx)
    stable = largest_stable_lr(ctx)
    suggested = suggestion(sweep, stable)
    evidence = {"your_lr": user, "suggested": suggested, "largest_stable": stable["largest_stable"],
                "valley": sweep["valley"], "steepest": sweep["steepest"],
                "min_over_10": sweep["min_over_10"], "diverged_at": sweep["diverged_at"],
                "curve": {"lr": sweep["lrs"], "loss": sweep["smoothed"]}, "stable_tries": stable["tries"]}
    ctx.details["learning_rate"] = evidence
    if user > 10 * suggested or user > 3 * stable["largest_stable"]:
        return [Finding.make("learning_rate_too_high",
                             f"Your learning rate {user:.3g} is above what this model trains stably "
                             f"with: the LR range test suggests {suggested:.3g}, and short runs diverge "
                             f"above {stable['largest_stable']:.3g}.", evidence=evidence)]
    if user < suggested / 30:
        return [Finding.make("learning_rate_too_low",
                             f"Your learning rate {user:.3g} is {suggested / user:.3g}x below the LR "
                             f"range test's suggestion {suggested:.3g}.", evidence=evidence)]
    return None


def suggestion(sweep: dict, stable: dict) -> float:
    """The LR to suggest: the geometric mean of two independent estimates, the largest LR that
    trains without diverging (the seed's rule: the best LR is usually close to it) and the
    range test's loss minimum / 10. benchmarks/lr_suggestion.py compares it with a grid search."""
    return float(math.sqrt(stable["largest_stable"] * sweep["min_over_10"]))


@check("regularization_dominates", ["regularization_dominates"])
def check_regularization(ctx: CheckContext):
    if ctx.optimizer is None:
        raise Skip("no optimizer given")
    wd = float(ctx.optimizer.param_groups[0].get("weight_decay", 0) or 0)
    if wd <= 0:
        raise Skip("no weight decay in the optimizer")
    decoupled = "AdamW" in type(ctx.optimizer).__name__
    sq = sum(float(p.detach().float().pow(2).sum()) for g in ctx.optimizer.param_groups for p in g["params"])
    model = copy.deepcopy(ctx.model).eval()
    with torch.no_grad():
        data = float(np.mean([float(ctx.loss_fn(model(x), y)) for x, y in ctx.train_batches()[:5]]))
    reg = 0.5 * wd * sq
    sweep = {}
    for factor in (0.0, 1.0, 10.0):
        losses = train_copy(ctx, 30, weight_decay=wd * factor, seconds=5.0)
        sweep[factor] = float(np.mean(losses[-5:]))
    rises = sweep[0.0] <= sweep[1.0] * 1.05 <= sweep[10.0] * 1.1
    evidence = {"weight_decay": wd, "reg_term": reg, "data_loss": data, "reg_to_loss": reg / max(data, 1e-12),
                "loss_by_strength": {f"{k}x": v for k, v in sweep.items()}, "loss_rises_with_strength": rises}
    ctx.details["regularization_dominates"] = evidence
    if (not decoupled and reg >= data) or sweep[1.0] > 1.5 * sweep[0.0] + 1e-3:
        return [Finding.make("regularization_dominates",
                             f"With weight_decay={wd:g} the penalty 0.5*wd*|w|^2 = {reg:.4g} vs a data loss "
                             f"of {data:.4g}; after 30 steps the loss is {sweep[1.0]:.4g} with it and "
                             f"{sweep[0.0]:.4g} without.", evidence=evidence)]
    return None

"""Remedies: changes the repair loop can make to a running training, and undo.

Each remedy acts on a :class:`RepairContext` (the monitor, the primary optimizer, the LR
schedulers) and keeps what it needs to undo itself. The order in which remedies are tried per
finding is the table ``ORDER`` below (data, in one place), following the troubleshooting guide:
the most likely and cheapest first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class RepairContext:
    monitor: Any
    optimizer: torch.optim.Optimizer            # the primary (the one the run is clocked by)
    schedulers: list[Any] = field(default_factory=list)


class Remedy:
    """One change: ``apply(ctx)`` makes it, ``undo(ctx)`` restores the user's setting."""

    id: str = ""
    answers: tuple[str, ...] = ()
    cost: str = "cheap"                          # cheap | moderate
    description: str = ""

    def apply(self, ctx: RepairContext) -> None:
        raise NotImplementedError

    def undo(self, ctx: RepairContext) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<remedy {self.id}>"


class ScaleLearningRate(Remedy):
    """Multiply the learning rate of every param group of the primary optimizer (and the LR
    schedulers' base LRs, so a schedule keeps its shape) by ``factor``."""

    cost = "cheap"
    answers = ("learning_rate_too_high", "loss_diverging", "nonfinite_loss", "nonfinite_gradient",
               "exploding_gradient", "loss_oscillating")

    def __init__(self, factor: float = 0.1) -> None:
        self.factor = factor
        self.id = f"lr_scale_{factor:g}"
        self.description = f"learning rate x{factor:g} (all param groups and the schedulers' base LRs)"
        self._saved: tuple[list[dict], list[list[float]]] | None = None

    def apply(self, ctx: RepairContext) -> None:
        groups = [{k: g[k] for k in ("lr", "initial_lr") if k in g} for g in ctx.optimizer.param_groups]
        bases = [list(s.base_lrs) for s in ctx.schedulers]
        self._saved = (groups, bases)
        for g in ctx.optimizer.param_groups:
            for k in ("lr", "initial_lr"):
                if k in g:
                    g[k] = _scaled(g[k], self.factor)
        for s in ctx.schedulers:
            s.base_lrs = [_scaled(b, self.factor) for b in s.base_lrs]
            if hasattr(s, "_last_lr"):
                s._last_lr = [g["lr"] for g in s.optimizer.param_groups]

    def undo(self, ctx: RepairContext) -> None:
        if self._saved is None:
            return
        groups, bases = self._saved
        for g, saved in zip(ctx.optimizer.param_groups, groups):
            g.update(saved)
        for s, b in zip(ctx.schedulers, bases):
            s.base_lrs = b
        self._saved = None


def _scaled(v: Any, factor: float) -> Any:
    if torch.is_tensor(v):
        return v * factor
    return float(v) * factor


class _HookRemedy(Remedy):
    """A remedy that is an optimizer step hook. Undo switches it off at once; a pre-hook is also
    removed, a post-hook stays in place as a no-op (undo runs inside the optimizer's post-hooks,
    while torch iterates over them: removing one there is not safe)."""

    post = False

    def __init__(self) -> None:
        self._handle = None
        self.enabled = False

    def undo(self, ctx: RepairContext) -> None:
        self.enabled = False
        if self._handle is not None and not self.post:
            self._handle.remove()
        self._handle = None


class ClipGradNorm(_HookRemedy):
    """Clip the gradient norm of the primary optimizer's parameters to ``max_norm`` before each
    step (an optimizer step pre-hook)."""

    cost = "cheap"
    answers = ("exploding_gradient", "learning_rate_too_high", "loss_diverging", "nonfinite_loss",
               "nonfinite_gradient")

    def __init__(self, max_norm: float = 1.0) -> None:
        super().__init__()
        self.max_norm = max_norm
        self.id = "clip_grad_norm"
        self.description = f"clip the gradient norm to {max_norm:g} before every optimizer step"

    def apply(self, ctx: RepairContext) -> None:
        max_norm = self.max_norm

        def clip(opt, _args, _kwargs):
            if not self.enabled:
                return
            params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
            if params:
                torch.nn.utils.clip_grad_norm_(params, max_norm)
        self.enabled = True
        self._handle = ctx.optimizer.register_step_pre_hook(clip)
        # run first, so the monitor's own pre-hook measures the clipped gradients
        hooks = getattr(ctx.optimizer, "_optimizer_step_pre_hooks", None)
        if hooks is not None and self._handle.id in hooks:
            hooks.move_to_end(self._handle.id, last=False)


class ZeroGradEachStep(_HookRemedy):
    """Clear the gradients after every optimizer step (a step post-hook calling
    ``optimizer.zero_grad(set_to_none=True)``): for a loop that forgot ``zero_grad()``."""

    id = "zero_grad_each_step"
    cost = "cheap"
    answers = ("grads_not_cleared",)
    description = "clear the gradients after every optimizer step (zero_grad(set_to_none=True))"
    post = True

    def apply(self, ctx: RepairContext) -> None:
        def clear(opt, _args, _kwargs):
            if self.enabled:
                opt.zero_grad(set_to_none=True)
        ctx.optimizer.zero_grad(set_to_none=True)   # the accumulated gradient goes too
        self.enabled = True
        self._handle = ctx.optimizer.register_step_post_hook(clear)


class AddMissingParams(Remedy):
    """Add the parameters that receive gradients but belong to no optimizer to the primary
    optimizer, as one new param group with the first group's settings."""

    id = "add_missing_params"
    cost = "cheap"
    answers = ("params_not_in_optimizer",)
    description = "add the parameters that get gradients but are in no optimizer (add_param_group)"

    def __init__(self) -> None:
        self._added: dict | None = None

    def apply(self, ctx: RepairContext) -> None:
        table, run = ctx.monitor.table, ctx.monitor.run
        owned = {id(p) for o in table.optimizers for g in o.param_groups for p in g["params"]}
        params = [table.params[i] for i in sorted(run.unowned_with_grad)
                  if i < len(table.params) and id(table.params[i]) not in owned]
        if not params:
            raise RuntimeError("no parameter is missing from the optimizers")
        ctx.optimizer.add_param_group({"params": params})
        self._added = ctx.optimizer.param_groups[-1]
        ctx.monitor.run.unowned_with_grad.clear()

    def undo(self, ctx: RepairContext) -> None:
        if self._added is None:
            return
        opt = ctx.optimizer
        opt.param_groups[:] = [g for g in opt.param_groups if g is not self._added]
        for p in self._added["params"]:
            opt.state.pop(p, None)
        self._added = None


class ScaleWeightDecay(Remedy):
    """Multiply every param group's weight decay by ``factor``."""

    cost = "cheap"
    answers = ("regularization_dominates",)

    def __init__(self, factor: float = 0.1) -> None:
        self.factor = factor
        self.id = f"weight_decay_{factor:g}"
        self.description = f"weight decay x{factor:g} (all param groups)"
        self._saved: list[Any] | None = None

    def apply(self, ctx: RepairContext) -> None:
        groups = ctx.optimizer.param_groups
        if not any(float(g.get("weight_decay", 0) or 0) > 0 for g in groups):
            raise RuntimeError("the optimizer has no weight decay to lower")
        self._saved = [g.get("weight_decay") for g in groups]
        for g in groups:
            if "weight_decay" in g:
                g["weight_decay"] = g["weight_decay"] * self.factor

    def undo(self, ctx: RepairContext) -> None:
        if self._saved is None:
            return
        for g, wd in zip(ctx.optimizer.param_groups, self._saved):
            if wd is not None:
                g["weight_decay"] = wd
        self._saved = None


# Remedies by id: factories, so every attempt gets a fresh object.
REMEDIES = {
    "lr_scale_0.1": lambda: ScaleLearningRate(0.1),
    "clip_grad_norm": lambda: ClipGradNorm(1.0),
    "zero_grad_each_step": ZeroGradEachStep,
    "add_missing_params": AddMissingParams,
    "weight_decay_0.1": lambda: ScaleWeightDecay(0.1),
}

# The order of remedies per finding (most likely and cheapest first, after the troubleshooting
# guide). Findings not listed here (data leakage, label problems, ...) are never repaired in place.
ORDER: dict[str, list[str]] = {
    "learning_rate_too_high": ["lr_scale_0.1", "clip_grad_norm"],
    "loss_diverging": ["lr_scale_0.1", "clip_grad_norm"],
    "nonfinite_loss": ["lr_scale_0.1", "clip_grad_norm"],
    "nonfinite_gradient": ["clip_grad_norm", "lr_scale_0.1"],
    "exploding_gradient": ["clip_grad_norm", "lr_scale_0.1"],
    "grads_not_cleared": ["zero_grad_each_step"],
    "params_not_in_optimizer": ["add_missing_params"],
    "regularization_dominates": ["weight_decay_0.1"],
}

# When several repairable findings are active at once, the one answered first (a cause before
# its symptoms: uncleared gradients make the loss diverge, not the other way round).
PRIORITY = ["grads_not_cleared", "params_not_in_optimizer", "regularization_dominates",
            "learning_rate_too_high", "exploding_gradient", "nonfinite_gradient", "nonfinite_loss",
            "loss_diverging"]


def make(remedy_id: str) -> Remedy:
    return REMEDIES[remedy_id]()

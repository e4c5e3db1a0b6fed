"""Remedies on the optimizer: changes the repair loop can make to a running training, and undo.

Each remedy acts on a :class:`RepairContext` (the monitor, the primary optimizer, its LR
schedulers, the watched models) and keeps what it needs to undo itself. ``verify`` says how an
attempt is judged: ``"loss"`` (the finding stays away and the training loss ends below both the
loss at the snapshot and the unrepaired run's loss at the same point), ``"finding"`` (the
finding stays away; for remedies that do not aim at the training loss) or ``"val"`` (the
validation loss, for overfitting). Which remedies are tried for which finding, in what order,
is the data in :mod:`trainmedic.repair.order`.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

import torch

from trainmedic._patches import own_work


class NotApplicable(Exception):
    """The remedy does not apply to this run (no dropout layer to raise, inputs already
    standardised...): the next remedy is tried; repair stays on."""


@dataclass
class RepairContext:
    monitor: Any
    optimizer: torch.optim.Optimizer            # the primary (the one the run is clocked by)
    schedulers: list[Any] = field(default_factory=list)
    finding: Any = None                         # the finding being answered (its evidence)

    @property
    def models(self) -> list[torch.nn.Module]:
        return list(self.monitor.models)


class Remedy:
    """One change: ``apply(ctx)`` makes it, ``undo(ctx)`` restores the user's setting."""

    id: str = ""
    cost: str = "cheap"                          # cheap | moderate (adds work to every step)
    description: str = ""
    verify: str = "loss"                         # loss | finding | val
    rollback: bool = True                        # go back to a snapshot before applying
    from_start: bool = True                      # meaningful from step 0 (a `trainmedic fix` candidate)
    ramp_steps: int = 0                          # steps before it takes full effect (a warmup)
    new_objective: bool = False                  # the training loss measures another thing after it
                                                 # (augmented inputs): its start is its first steps

    @property
    def moves(self) -> tuple[str, int] | None:
        """The setting this remedy turns and which way (+1 up, -1 down): the repair loop never
        tries a remedy that turns back a setting a kept remedy turned."""
        return None

    def check(self, ctx: RepairContext) -> None:
        """Raise NotApplicable when the remedy cannot apply to this run, before any rollback
        (``apply`` may still raise it, after one)."""

    def apply(self, ctx: RepairContext) -> None:
        raise NotImplementedError

    def undo(self, ctx: RepairContext) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<remedy {self.id}>"


class ScaleLearningRate(Remedy):
    """Multiply the learning rate of every param group of the primary optimizer (and the LR
    schedulers' base LRs, so a schedule keeps its shape) by ``factor``. Without a factor, the
    one that brings the finding's peak update ratio (``update_ratio_peak``) to 1e-2 (the top of
    the healthy range: a remedy that overshoots is caught as a learning rate too high),
    within [3, 1000] and rounded to one significant digit."""

    cost = "cheap"
    HEALTHY_UPDATE_RATIO = 1e-2

    def __init__(self, factor: float | None = 0.1) -> None:
        self.factor = factor
        self.id = f"lr_scale_{factor:g}" if factor is not None else "lr_to_healthy_updates"
        self.description = (f"learning rate x{factor:g} (all param groups and the schedulers' base LRs)"
                            if factor is not None else
                            "learning rate scaled so weights change by about 1e-2 of their norm per step")
        self._saved: tuple[list[dict], list[list[float]]] | None = None

    @property
    def moves(self) -> tuple[str, int]:
        return ("learning rate", -1 if self.factor is not None and self.factor < 1 else 1)

    def apply(self, ctx: RepairContext) -> None:
        if self.factor is None:
            peak = (ctx.finding.evidence if ctx.finding is not None else {}).get("update_ratio_peak")
            if not peak or not peak > 0:
                raise NotApplicable("the finding gives no update ratio to scale the learning rate by")
            self.factor = self.healthy_factor(peak)
            self.description = f"learning rate x{self.factor:g} (brings the update ratio to about 1e-2)"
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

    @classmethod
    def healthy_factor(cls, update_ratio_peak: float) -> float:
        """The factor bringing ``update_ratio_peak`` to HEALTHY_UPDATE_RATIO, in [3, 1000], one
        significant digit."""
        f = min(max(cls.HEALTHY_UPDATE_RATIO / update_ratio_peak, 3.0), 1000.0)
        return float(f"{f:.0e}")

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


def _first_pre_hook(opt: torch.optim.Optimizer, fn: Any) -> Any:
    """Register ``fn`` as a step pre-hook that runs before the ones already there (the
    monitor's, the user's), so they see the clipped gradients and the warmed-up LR."""
    handle = opt.register_step_pre_hook(fn)
    hooks = getattr(opt, "_optimizer_step_pre_hooks", None)
    if hooks is not None and handle.id in hooks:
        hooks.move_to_end(handle.id, last=False)
    return handle


class ClipGradNorm(_HookRemedy):
    """Clip the gradient norm of the primary optimizer's parameters to ``max_norm`` before each
    step (an optimizer step pre-hook)."""

    cost = "cheap"

    def __init__(self, max_norm: float = 1.0) -> None:
        super().__init__()
        self.max_norm = max_norm
        self.id = "clip_grad_norm"
        self.description = f"clip the gradient norm to {max_norm:g} before every optimizer step"

    def apply(self, ctx: RepairContext) -> None:
        max_norm = self.max_norm

        def clip(opt, _args, _kwargs):
            if self.enabled:                 # every group, those added since included; clip_grad_norm_
                torch.nn.utils.clip_grad_norm_(   # skips parameters without a gradient
                    [p for g in opt.param_groups for p in g["params"]], max_norm)
        self.enabled = True
        self._handle = _first_pre_hook(ctx.optimizer, clip)


class ZeroGradEachStep(_HookRemedy):
    """Clear the gradients after every optimizer step (a step post-hook calling
    ``optimizer.zero_grad(set_to_none=True)``): for a loop that forgot ``zero_grad()``."""

    id = "zero_grad_each_step"
    cost = "cheap"
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
    description = "add the parameters that get gradients but are in no optimizer (add_param_group)"

    def __init__(self) -> None:
        self._added: dict | None = None

    def apply(self, ctx: RepairContext) -> None:
        table, run = ctx.monitor.table, ctx.monitor.run
        owned = {id(p) for o in [*table.optimizers, ctx.optimizer] for g in o.param_groups
                 for p in g["params"]}
        params = [table.params[i] for i in sorted(run.unowned_with_grad)
                  if i < len(table.params) and id(table.params[i]) not in owned]
        if not params and not run.unowned_with_grad:     # before the first tick: from the grads
            params = [p for m in ctx.models for p in m.parameters()
                      if p.grad is not None and id(p) not in owned]
        if not params:
            raise NotApplicable("no parameter is missing from the optimizers")
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

    def __init__(self, factor: float = 0.1) -> None:
        self.factor = factor
        self.id = f"weight_decay_{factor:g}"
        self.description = f"weight decay x{factor:g} (all param groups)"
        self._saved: list[Any] | None = None

    @property
    def moves(self) -> tuple[str, int]:
        return ("weight decay", -1 if self.factor < 1 else 1)

    def apply(self, ctx: RepairContext) -> None:
        groups = ctx.optimizer.param_groups
        if not any(float(g.get("weight_decay", 0) or 0) > 0 for g in groups):
            raise NotApplicable("the optimizer has no weight decay to lower")
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


class Warmup(_HookRemedy):
    """Linear learning-rate warmup over ``steps`` optimizer steps: a pre-hook scales every
    group's LR by ``(k + 1) / steps`` for the step and a post-hook puts it back, so the user's
    scheduler keeps setting (and reading) its own values. ``ramp_steps`` (= ``steps``): the
    repair loop's verification window starts once the ramp is done."""

    cost = "cheap"

    def __init__(self, steps: int = 200) -> None:
        super().__init__()
        self.steps = self.ramp_steps = steps
        self.id = "warmup"
        self.description = f"linear learning-rate warmup over the first {steps} steps"

    def apply(self, ctx: RepairContext) -> None:
        state = {"k": 0, "saved": None}

        def before(opt, _args, _kwargs):
            if not self.enabled or state["k"] >= self.steps:
                return
            f = (state["k"] + 1) / self.steps
            state["saved"] = [g["lr"] for g in opt.param_groups]
            for g in opt.param_groups:
                g["lr"] = _scaled(g["lr"], f)

        def after(opt, _args, _kwargs):
            if state["saved"] is not None:
                for g, lr in zip(opt.param_groups, state["saved"]):
                    g["lr"] = lr
                state["saved"] = None
            state["k"] += 1

        self.enabled = True
        self._handle = _first_pre_hook(ctx.optimizer, before)
        # the post-hook stays registered after undo, as a no-op once the pre-hook is gone
        ctx.optimizer.register_step_post_hook(after)


class SgdToAdam(Remedy):
    """Turn the primary SGD optimizer into Adam (lr 1e-3) in place: the same object, the same
    parameters and param groups, the user's hooks kept; its state (momentum) starts afresh."""

    id = "sgd_to_adam"
    cost = "cheap"
    description = "switch SGD to Adam (lr 1e-3), keeping the same parameters"

    def __init__(self, lr: float = 1e-3) -> None:
        self.lr = lr
        self._saved: tuple[type, dict, list[dict], list[list[float]]] | None = None

    def apply(self, ctx: RepairContext) -> None:
        opt = ctx.optimizer
        if not isinstance(opt, torch.optim.SGD):
            raise NotApplicable(f"the optimizer is {type(opt).__name__}, not SGD")
        keep = {"_optimizer_step_pre_hooks", "_optimizer_step_post_hooks",
                "_optimizer_state_dict_pre_hooks", "_optimizer_state_dict_post_hooks",
                "_optimizer_load_state_dict_pre_hooks", "_optimizer_load_state_dict_post_hooks"}
        self._saved = (type(opt), dict(opt.__dict__), [dict(g) for g in opt.param_groups],
                       [list(s.base_lrs) for s in ctx.schedulers])
        groups = [{"params": g["params"], "lr": self.lr,
                   "weight_decay": g.get("weight_decay", 0.0)} for g in opt.param_groups]
        with own_work():
            fresh = torch.optim.Adam(groups)
        for k, v in fresh.__dict__.items():
            if k not in keep:
                opt.__dict__[k] = v
        opt.__class__ = torch.optim.Adam
        for s in ctx.schedulers:
            s.base_lrs = [self.lr] * len(s.base_lrs)

    def undo(self, ctx: RepairContext) -> None:
        if self._saved is None:
            return
        cls, saved, groups, bases = self._saved
        opt = ctx.optimizer
        opt.__class__ = cls
        hooks = {k: v for k, v in opt.__dict__.items() if k.startswith("_optimizer_") and k.endswith("hooks")}
        opt.__dict__.clear()
        opt.__dict__.update(saved)
        opt.__dict__.update(hooks)
        for g, old in zip(opt.param_groups, groups):
            g.clear()
            g.update(old)
        opt.state = collections.defaultdict(dict)
        for s, b in zip(ctx.schedulers, bases):
            s.base_lrs = b
        self._saved = None


class RaiseWeightDecay(ScaleWeightDecay):
    """More weight decay against overfitting: x10, or 5e-4 where a group has none."""

    verify = "val"

    def __init__(self) -> None:
        super().__init__(10.0)
        self.id = "weight_decay_up"
        self.description = "weight decay x10 (5e-4 where there was none)"

    def apply(self, ctx: RepairContext) -> None:
        groups = ctx.optimizer.param_groups
        self._saved = [g.get("weight_decay") for g in groups]
        for g in groups:
            wd = float(g.get("weight_decay") or 0.0)
            g["weight_decay"] = wd * self.factor if wd > 0 else 5e-4


class EarlyStopping(Remedy):
    """Stop learning at the best validation point: go back to the snapshot (taken at the best
    validation loss) and set every learning rate to 0 from there on (the user's loop runs on,
    the weights no longer change)."""

    id = "early_stopping"
    cost = "cheap"
    description = "early stopping: back to the best validation point, no further updates"
    verify = "finding"
    from_start = False                           # needs a best point to go back to

    def __init__(self) -> None:
        self._scale = ScaleLearningRate(0.0)

    def apply(self, ctx: RepairContext) -> None:
        self._scale.apply(ctx)
        ctx.monitor.run.frozen = True

    def undo(self, ctx: RepairContext) -> None:
        self._scale.undo(ctx)
        ctx.monitor.run.frozen = False

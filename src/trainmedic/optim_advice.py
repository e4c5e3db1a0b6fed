"""Optimiser and schedule guidance tied to findings: which optimizer or LR schedule to switch to,
and why, for the run's actual setup (SGD, momentum, Nesterov, AdaGrad, RMSprop, Adam, AdamW; step,
exponential, cosine, warmup, one-cycle, reduce-on-plateau). Nothing is re-implemented: the advice
names the torch call to make, and the repair remedy that applies it where one exists.

    from trainmedic import optim_advice
    setup = optim_advice.describe(opt, [scheduler])          # what the run uses, read from the objects
    tips = optim_advice.advise("loss_oscillating", setup)    # [] where the finding has no optimiser angle
    for line in optim_advice.advice_text(tips):
        print(line)

The rules follow the Deep Learning book (Goodfellow et al. 2016, ch. 8 and 11), Smith's LR range
test and one-cycle policy, Goyal et al. 2017 (linear warmup), Loshchilov & Hutter (AdamW, SGDR
cosine annealing) and Wilson et al. 2017 (adaptive methods can generalise worse than SGD). An
advice never suggests what the setup already has (no "add momentum" to SGD(momentum=0.9), no
"add warmup" next to a warmup scheduler). :func:`describe` reads Python values only (class names,
hyper-parameters, scheduler counters) and never raises on an optimizer it does not know: its
family is then ``"other"``.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch

from trainmedic.catalog import finding_type
from trainmedic.detectors.learning_rate import ADAPTIVE
from trainmedic.regularize import decouples
from trainmedic.repair.order import EARLY_STEPS

FAMILIES = ("sgd", "sgd_momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "other")
LARGE_BATCH = 512          # Goyal et al.: warmup matters once the linear scaling rule makes lr large
DECAYED = 0.1              # current lr at or below this share of its peak: the schedule has decayed it
LR_SCHED = "torch.optim.lr_scheduler."
_ADAM_LIKE = ("Adam", "AdamW", "NAdam", "RAdam", "Adamax")


# -- what the run uses -----------------------------------------------------------------------------

@dataclass(frozen=True)
class SchedulerInfo:
    """One LR scheduler (SequentialLR/ChainedScheduler are flattened into their parts, ``part_of``
    naming the container). ``kind``: step | exponential | cosine | linear (a decaying LinearLR) |
    polynomial | warmup | constant | one_cycle | plateau | cyclic | custom. ``decays``: whether it
    lowers the LR over time (None: cannot tell). ``in_warmup``: it is ramping the LR up now."""
    name: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    last_epoch: int | None = None
    warms_up: bool = False
    decays: bool | None = False
    in_warmup: bool = False
    part_of: str | None = None


@dataclass(frozen=True)
class Setup:
    """What a run uses: the optimizer's class ``name``, its ``family`` (see FAMILIES), ``adaptive``
    (per-parameter step sizes), ``lr`` (first param group, now), ``lrs_differ`` (groups have other
    lrs), ``peak_lr`` (the schedule's reference: OneCycleLR's max_lr, else the initial lr the
    schedulers scale; None without a scheduler), ``momentum`` (SGD/RMSprop momentum or Adam's
    beta1), ``betas``, ``nesterov``, ``weight_decay`` (the largest over groups), ``decoupled``
    (AdamW-style decay), ``schedulers``, ``sparse`` (sparse embedding gradients: True, False, or
    None when it cannot tell) and ``default_lr`` (the class's default, e.g. 1e-3 for Adam, 2e-3
    for NAdam and Adamax)."""
    name: str
    family: str
    adaptive: bool = False
    lr: float | None = None
    lrs_differ: bool = False
    peak_lr: float | None = None
    momentum: float | None = None
    betas: tuple[float, ...] | None = None
    nesterov: bool = False
    weight_decay: float = 0.0
    decoupled: bool = False
    schedulers: tuple[SchedulerInfo, ...] = ()
    sparse: bool | None = None
    default_lr: float | None = None      # the optimizer class's own default lr (torch's signature)

    @property
    def kinds(self) -> set[str]:
        return {s.kind for s in self.schedulers}

    @property
    def has_warmup(self) -> bool:
        """A scheduler ramps the LR up at the start (RAdam's rectification counts as one)."""
        return self.name == "RAdam" or any(s.warms_up for s in self.schedulers)

    @property
    def in_warmup(self) -> bool:
        return any(s.in_warmup for s in self.schedulers)

    @property
    def constant_lr(self) -> bool | None:
        """True when nothing lowers the LR over time (no scheduler, or only warmups), None when a
        custom schedule hides it."""
        d = [s.decays for s in self.schedulers]
        return False if any(d) else (None if None in d else True)

    @property
    def lr_ratio(self) -> float | None:
        """The current LR as a share of the schedule's peak (None without both)."""
        if self.lr is None or not self.peak_lr:
            return None
        return self.lr / self.peak_lr

    @property
    def decayed(self) -> bool:
        """The schedule has already cut the LR to <= DECAYED of its peak (not a warmup's start)."""
        r = self.lr_ratio
        return r is not None and r <= DECAYED and not self.in_warmup

    def decaying(self) -> list[SchedulerInfo]:
        return [s for s in self.schedulers if s.decays is not False]


def describe(optimizer: Any, schedulers: Any = (), *, model: torch.nn.Module | None = None) -> Setup:
    """What the run uses, read from ``optimizer`` (a torch optimizer, or a wrapper holding one as
    ``.optimizer``), its LR ``schedulers`` (a scheduler or a list of them) and, optionally, the
    ``model`` (for sparse embeddings). Cheap: Python floats from ``param_groups`` only."""
    opt = _unwrap(optimizer)
    groups = getattr(opt, "param_groups", None)
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise TypeError(f"optimizer={_short(optimizer)} is not an optimizer; expected a "
                        f"torch.optim.Optimizer (an object with a param_groups list of dicts)")
    scheds = _scheduler_list(schedulers)
    name = type(opt).__name__
    g0 = groups[0] if groups else {}
    lrs = [_num(g.get("lr")) for g in groups]
    lr = lrs[0] if lrs else None
    momentum = _num(g0.get("momentum"))
    betas = g0.get("betas")
    betas = tuple(b for b in (_num(x) for x in betas) if b is not None) if isinstance(betas, (tuple, list)) else None
    nesterov = bool(g0.get("nesterov", False))
    decoupled = decouples(type(opt), g0)
    wds = [w for w in (_num(g.get("weight_decay")) for g in groups) if w is not None]
    infos = tuple(i for s in scheds for i in _scheduler_infos(s))
    peaks = [_num(g0.get(k)) for k in ("max_lr", "initial_lr")]
    peaks += [_num(s.base_lrs[0]) for s in scheds if isinstance(getattr(s, "base_lrs", None), list) and s.base_lrs]
    peaks = [p for p in peaks if p]
    return Setup(
        name=name, family=_family(name, momentum or 0.0, nesterov, decoupled),
        adaptive=name in ADAPTIVE, lr=lr, lrs_differ=len({x for x in lrs}) > 1,
        peak_lr=max(peaks) if peaks and infos else None,
        momentum=momentum if momentum is not None else (betas[0] if betas else None),
        betas=betas, nesterov=nesterov, weight_decay=max(wds, default=0.0), decoupled=decoupled,
        schedulers=infos, sparse=_sparse(groups, model), default_lr=_default_lr(type(opt)))


def _default_lr(cls: type) -> float | None:
    """The ``lr`` default of an optimizer class's constructor (None: none, or not a number)."""
    try:
        default = inspect.signature(cls).parameters["lr"].default
    except (KeyError, TypeError, ValueError):
        return None
    return _num(default)


def _unwrap(optimizer: Any) -> Any:
    """The torch optimizer inside a wrapper (accelerate's ``.optimizer``, Lightning's ``._optimizer``)."""
    for _ in range(5):
        inner = getattr(optimizer, "optimizer", None) or getattr(optimizer, "_optimizer", None)
        if inner is None or inner is optimizer or not isinstance(inner, torch.optim.Optimizer):
            return optimizer
        optimizer = inner
    return optimizer


def _family(name: str, momentum: float, nesterov: bool, decoupled: bool) -> str:
    if name == "SGD":
        return "nesterov" if nesterov and momentum > 0 else ("sgd_momentum" if momentum > 0 else "sgd")
    if name in _ADAM_LIKE:
        return "adamw" if decoupled else "adam"
    return {"Adagrad": "adagrad", "RMSprop": "rmsprop"}.get(name, "other")


def _num(x: Any) -> float | None:
    """A Python float from a hyper-parameter; a CPU scalar tensor is read, a device tensor is not."""
    if isinstance(x, torch.Tensor):
        if x.device.type != "cpu" or x.numel() != 1:
            return None
        x = x.item()
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _short(x: Any) -> str:
    """A one-line repr for error messages (a type name for long or multi-line ones)."""
    try:
        r = repr(x)
    except Exception:
        r = "\n"
    return r if len(r) <= 80 and "\n" not in r else f"<{type(x).__module__}.{type(x).__qualname__} object>"


def _scheduler_list(schedulers: Any) -> list[Any]:
    if schedulers is None:
        return []
    if hasattr(schedulers, "step") and hasattr(schedulers, "optimizer"):
        return [schedulers]
    if isinstance(schedulers, (str, bytes)) or not isinstance(schedulers, Iterable):
        raise TypeError(f"schedulers={_short(schedulers)} is not a list of LR schedulers; expected "
                        f"torch.optim.lr_scheduler objects (or an empty list)")
    out = list(schedulers)
    for i, s in enumerate(out):
        if not callable(getattr(s, "step", None)):
            raise TypeError(f"schedulers[{i}]={_short(s)} is not an LR scheduler; expected a "
                            f"torch.optim.lr_scheduler object (with a step() method)")
    return out


def _scheduler_infos(s: Any, part_of: str | None = None, active: bool = True) -> list[SchedulerInfo]:
    """One SchedulerInfo per scheduler, containers flattened (robust: a scheduler it does not
    know is ``custom`` with unknown decay)."""
    L = torch.optim.lr_scheduler
    name = type(s).__name__
    last = getattr(s, "last_epoch", None)
    last = int(last) if isinstance(last, (int, float)) and math.isfinite(last) else None
    try:
        if isinstance(s, (L.SequentialLR, L.ChainedScheduler)):
            parts = list(getattr(s, "_schedulers", []))
            miles = list(getattr(s, "_milestones", []))
            out = []
            for k, p in enumerate(parts):
                # a SequentialLR part is active between its milestones; a ChainedScheduler's all are
                now = (active if not miles else
                       active and last is not None and (k == 0 or last >= miles[k - 1])
                       and (k >= len(miles) or last < miles[k]))
                out += _scheduler_infos(p, name, now)
            return out
        kind, params, warms, decays, ramping = _classify(s, last)
    except Exception:                                       # an odd subclass: say what we can
        kind, params, warms, decays, ramping = "custom", {}, False, None, False
    return [SchedulerInfo(name, kind, params, last, warms, decays, bool(active and ramping), part_of)]


def _classify(s: Any, last: int | None) -> tuple[str, dict, bool, bool | None, bool]:
    """(kind, params, warms_up, decays, ramping now) for one non-container scheduler."""
    L = torch.optim.lr_scheduler
    n = last if last is not None else 0
    if isinstance(s, L.StepLR):
        return "step", {"step_size": s.step_size, "gamma": s.gamma}, False, s.gamma < 1, False
    if isinstance(s, L.MultiStepLR):
        return "step", {"milestones": sorted(s.milestones), "gamma": s.gamma}, False, s.gamma < 1, False
    if isinstance(s, L.ExponentialLR):
        return "exponential", {"gamma": s.gamma}, False, s.gamma < 1, False
    if isinstance(s, L.CosineAnnealingLR):
        return "cosine", {"T_max": s.T_max, "eta_min": s.eta_min}, False, True, False
    if isinstance(s, L.CosineAnnealingWarmRestarts):
        return "cosine", {"T_0": s.T_0, "T_mult": s.T_mult, "eta_min": s.eta_min}, False, True, False
    if isinstance(s, L.OneCycleLR):
        up = float(s._schedule_phases[0]["end_step"]) if getattr(s, "_schedule_phases", None) else 0.0
        return ("one_cycle", {"total_steps": s.total_steps}, True, True, n < up)
    if isinstance(s, L.ReduceLROnPlateau):
        return ("plateau", {"mode": s.mode, "factor": s.factor, "patience": s.patience,
                            "min_lr": min(s.min_lrs) if s.min_lrs else 0.0}, False, s.factor < 1, False)
    if isinstance(s, L.LinearLR):
        p = {"start_factor": s.start_factor, "end_factor": s.end_factor, "total_iters": s.total_iters}
        if s.start_factor < s.end_factor:
            return "warmup", p, True, False, n < s.total_iters
        if s.start_factor > s.end_factor:
            return "linear", p, False, True, False
        return "constant", p, False, False, False
    if isinstance(s, L.ConstantLR):      # a constant warmup (He et al. 2016) while factor < 1
        p = {"factor": s.factor, "total_iters": s.total_iters}
        if s.factor < 1:
            return "warmup", p, True, False, n < s.total_iters
        return "constant", p, False, False, False
    if isinstance(s, L.PolynomialLR):
        return "polynomial", {"total_iters": s.total_iters, "power": s.power}, False, s.power > 0, False
    if isinstance(s, L.CyclicLR):
        return "cyclic", {"mode": getattr(s, "mode", None)}, True, True, False
    if isinstance(s, L.MultiplicativeLR):
        f = _factors(s, (1,))
        return "custom", {}, False, (None if f is None else f[0] < 1), False
    if isinstance(s, L.LambdaLR):
        return _lambda_kind(s, n)
    return "custom", {}, False, None, False


_SAMPLES = (0, 1, 2, 5, 10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000)


def _factors(s: Any, steps: Iterable[int]) -> list[float] | None:
    """The first group's lambda at ``steps`` (None if it fails or is not a number)."""
    try:
        out = [float(s.lr_lambdas[0](k)) for k in steps]
    except Exception:
        return None
    return out if all(math.isfinite(v) for v in out) else None


def _lambda_kind(s: Any, n: int) -> tuple[str, dict, bool, bool | None, bool]:
    f = _factors(s, _SAMPLES)
    if f is None:
        return "custom", {}, False, None, False
    warms = f[1] > f[0]
    top = max(f)
    decays = min(f[f.index(top):]) < 0.5 * top
    now = _factors(s, (n, n + 1))
    ramping = bool(warms and now is not None and now[1] > now[0])
    return ("warmup" if warms else "custom"), {}, warms, decays, ramping


def _sparse(groups: list[dict], model: torch.nn.Module | None) -> bool | None:
    if model is not None:
        return any(isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag)) and m.sparse
                   for m in model.modules())
    for g in groups:
        for p in g.get("params", ()):
            grad = getattr(p, "grad", None)
            if grad is not None and getattr(grad, "is_sparse", False) is True:
                return True
    return None


# -- advice ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Advice:
    """One piece of guidance: ``text`` (what to do, with the torch call), ``why`` (the reason),
    ``switch_to`` (the optimizer family or schedule kind it moves to; None when it changes a
    setting of the same one), ``remedy_id`` (the repair remedy that applies it, if any),
    ``source`` (the literature) and ``rule`` (which rule fired)."""
    text: str
    why: str
    switch_to: str | None = None
    remedy_id: str | None = None
    source: str = ""
    rule: str = ""


HIGH = ("learning_rate_too_high", "loss_diverging", "nonfinite_loss")
LOW = ("learning_rate_too_low", "loss_not_decreasing", "underfitting")
_STEP_KEYS = ("first_step", "peak_step", "best_step", "collapse_step", "step")


def advise(finding_id: str, setup: Setup, evidence: dict[str, Any] | None = None, *,
           step: int | None = None, batch_size: int | None = None) -> list[Advice]:
    """The optimizer/schedule advice for ``finding_id`` under ``setup`` (from :func:`describe`);
    [] where the finding has no optimiser angle. ``evidence`` (the finding's), ``step`` (the
    finding's optimizer step, ``finding.step``) and ``batch_size`` refine the rules: trouble is
    "early" at step <= EARLY_STEPS (the evidence's first/peak/best step, else ``step``); a
    scheduler stepped about as often as the optimizer (``step``) is stepped per batch."""
    finding_type(finding_id)                                 # ValueError naming the known ids
    if not isinstance(setup, Setup):
        raise TypeError(f"setup={_short(setup)} is not a Setup; expected the result of "
                        f"trainmedic.optim_advice.describe(optimizer, schedulers)")
    if evidence is not None and not isinstance(evidence, dict):
        raise TypeError(f"evidence={_short(evidence)} is not a dict; expected a finding's evidence or None")
    ev = evidence or {}
    at = next((ev[k] for k in _STEP_KEYS if isinstance(ev.get(k), (int, float))), step)
    bs = ev.get("batch_size", batch_size)
    rules = _RULES.get(finding_id, ())
    out: list[Advice] = []
    for rule in rules:
        for a in rule(finding_id, setup, ev, at, bs, step):
            if a.switch_to is None or a.switch_to not in (setup.family, *setup.kinds):
                out.append(a)
    return out


def advice_text(advice: Iterable[Advice]) -> list[str]:
    """One line (< 300 characters) per advice: what, why, the source and the repair remedy (the
    source is left out of a line that would be too long, then the remedy)."""
    lines = []
    for a in advice:
        if not isinstance(a, Advice):
            raise TypeError(f"advice={_short(a)} is not an Advice; expected items from advise()")
        remedy = a.remedy_id and f"`--repair` tries remedy `{a.remedy_id}`"
        for tail in ([a.source, remedy], [remedy], []):
            tail = "; ".join(x for x in tail if x)
            line = f"{a.text} — {a.why}" + (f" ({tail})." if tail else ".")
            if len(line) < 300:
                break
        lines.append(line if len(line) < 300 else line[:296] + "...")
    return lines


# -- rules: each takes (finding_id, setup, evidence, step it started, batch_size, step now) ---------

def _g(x: float | None) -> str:
    return "?" if x is None else f"{x:.3g}"


def _ctor(setup: Setup, name: str | None = None, **over: Any) -> str:
    """The torch call building the setup's optimizer (or ``name``) with ``over`` changed; its lr
    is the schedule's peak (the value the user passed), not the scheduled value now."""
    name = name or setup.name
    args: dict[str, Any] = {"lr": setup.peak_lr or setup.lr}
    if name == "SGD" and setup.name == "SGD":
        args.update(momentum=setup.momentum or None, nesterov=setup.nesterov or None)
    if setup.weight_decay and (name == setup.name or name == "SGD"):
        args["weight_decay"] = setup.weight_decay
    if setup.decoupled and name == setup.name and name != "AdamW":
        args["decoupled_weight_decay"] = True
    args.update(over)
    shown = ", ".join(f"{k}={_g(v) if isinstance(v, float) else v}" for k, v in args.items()
                      if v is not None and v is not False)
    return f"torch.optim.{name}(params, {shown})"


def _takes(name: str, arg: str) -> bool:
    """Whether torch.optim.<name> accepts ``arg`` in this torch version."""
    try:
        return arg in inspect.signature(getattr(torch.optim, name)).parameters
    except (AttributeError, TypeError, ValueError):
        return False


def _sgd(setup: Setup) -> bool:
    return setup.family in ("sgd", "sgd_momentum", "nesterov")


def _warmup_call(setup: Setup) -> str:
    warm = f"LinearLR(opt, start_factor=0.01, total_iters={EARLY_STEPS})"
    tops = [s for s in setup.schedulers if s.part_of is None]
    if not tops:
        return f"{LR_SCHED}{warm}, stepped per batch"
    if any(s.kind == "plateau" for s in tops) or len(tops) > 1:
        return f"a {LR_SCHED}{warm} stepped per batch next to your {tops[0].name}"
    return f"{LR_SCHED}SequentialLR(opt, [{warm}, <your {tops[0].name}>], milestones=[{EARLY_STEPS}])"


def _lower_lr(setup: Setup, factor: float = 0.1) -> str:
    peak = setup.peak_lr or setup.lr
    if "one_cycle" in setup.kinds and peak:
        return f"lower OneCycleLR's max_lr {_g(peak)} -> {_g(peak * factor)}"
    if not peak:
        return f"lower your {setup.name}'s lr {1 / factor:g}x"
    return f"lower your {setup.name}'s lr {_g(peak)} -> {_g(peak * factor)}: {_ctor(setup, lr=peak * factor)}"


def _rule_high(fid, setup, ev, at, bs, now) -> list[Advice]:
    """Early trouble under an adaptive optimizer (or SGD at a large batch) without warmup: warm
    up; otherwise, or when it cannot tell when it started, lower the lr."""
    early = None if at is None else at <= EARLY_STEPS
    large = isinstance(bs, (int, float)) and bs >= LARGE_BATCH
    out = []
    if not setup.has_warmup and early is not False:
        if setup.adaptive:
            out.append(Advice(
                f"Your {setup.name} has no warmup: add {_warmup_call(setup)}",
                "its first steps are ~lr per weight while its second-moment estimates are poor",
                "warmup", "warmup", "Goyal et al. 2017", "warmup_adaptive"))
        elif _sgd(setup) and large:
            out.append(Advice(
                f"Your SGD at batch {int(bs)} has no warmup: add {_warmup_call(setup)}",
                "a large batch's large lr overshoots from the random init", "warmup", "warmup",
                "Goyal et al. 2017", "warmup_large_batch"))
    if not out or early is None:
        lower = _lower_lr(setup)
        out.append(Advice(lower[0].upper() + lower[1:],
                          "the steps overshoot: beyond 2/curvature gradient descent diverges", None, "lr_scale_0.1",
                          "LeCun et al. 1998; Goodfellow et al. 2016, §8.2.1", "lower_lr"))
    return out


def _rule_oscillating(fid, setup, ev, at, bs, now) -> list[Advice]:
    out = []
    if setup.family == "sgd":
        lr = setup.peak_lr or setup.lr or 0.1
        out.append(Advice(
            f"Your SGD has no momentum: {_ctor(setup, lr=lr * 0.1, momentum=0.9, nesterov=True)} "
            f"(lr/10: momentum 0.9 makes steps 10x larger)",
            "momentum averages ~10 gradients, cancelling the swings across steep directions",
            "nesterov", None, "Goodfellow et al. 2016, §8.3.2-8.3.3", "momentum"))
    if setup.constant_lr:
        out.append(Advice(
            f"Your lr is constant: decay it, {LR_SCHED}CosineAnnealingLR(opt, T_max=<total steps>) per "
            f"batch, or {LR_SCHED}ReduceLROnPlateau(opt, factor=0.1, patience=5) on the val loss",
            "stochastic gradient steps converge only if the lr shrinks", "cosine", None,
            "Goodfellow et al. 2016, §8.3.1", "decay_schedule"))
    default = setup.default_lr
    lr = setup.peak_lr or setup.lr
    if setup.adaptive and default and lr is not None and lr > default:
        out.append(Advice(
            f"Your {setup.name}'s lr {_g(lr)} is above its usual {_g(default)}: {_lower_lr(setup)}",
            "adaptive steps are ~lr per weight, so a large lr keeps them swinging", None,
            "lr_scale_0.1", "Kingma & Ba 2015", "lower_adaptive_lr"))
    return out


def _rule_low(fid, setup, ev, at, bs, now) -> list[Advice]:
    out = []
    peak = max([p for p in (setup.peak_lr, _num(ev.get("lr_peak")), _num(ev.get("learning_rate"))) if p],
               default=None)
    decayed = bool(setup.schedulers) and not setup.in_warmup and peak is not None \
        and setup.lr is not None and setup.lr <= DECAYED * peak
    if setup.family == "sgd":
        out.append(Advice(
            "Your SGD has no momentum: use SGD(params, lr, momentum=0.9, nesterov=True) or "
            "torch.optim.Adam(params, lr=1e-3)",
            "plain SGD crawls along ill-conditioned ravines; momentum and per-parameter steps "
            "speed it up", "adam", "sgd_to_adam", "Goodfellow et al. 2016, §8.3.2, §8.5", "sgd_to_adam"))
    if decayed:
        scheds = setup.decaying() or list(setup.schedulers)
        out.append(Advice(
            f"Your {scheds[0].name} already cut the lr to {_g(setup.lr / peak)}x its peak {_g(peak)}, "
            f"decaying too fast: {_schedule_fix(scheds[0], now, None)}",
            "a collapsed lr stops learning early (lr_schedule_collapsed)", None, None, "", "schedule_decayed"))
    elif "one_cycle" not in setup.kinds:
        out.append(Advice(
            "Find the lr by a range test (raise it exponentially from 1e-7 until the loss blows up; take "
            f"1/10 of that), then {LR_SCHED}OneCycleLR(opt, max_lr, total_steps)",
            "one-cycle trains fast at the largest stable lr", "one_cycle",
            "lr_to_healthy_updates" if fid == "learning_rate_too_low" else None, "Smith 2017, 2018",
            "range_test"))
    if (setup.sparse or ev.get("sparse_gradients")) and setup.name not in ("Adagrad", "SparseAdam"):
        out.append(Advice(
            f"Your sparse embedding gradients go to {setup.name}: use torch.optim.SparseAdam on the "
            f"embeddings (Adam on the rest) or torch.optim.Adagrad",
            "rare rows get few, small updates; per-parameter step sizes make them large",
            "adagrad", None, "Duchi et al. 2011; Goodfellow et al. 2016, §8.5.1", "sparse"))
    return out


def _schedule_fix(s: SchedulerInfo, now: Any, collapse: Any) -> str:
    """What to change in scheduler ``s``, which drove the lr down too early. It is stepped per
    batch when it has been stepped about as often as the optimizer (``now``: the optimizer step),
    or when the lr collapsed (optimizer step ``collapse``) as soon as the scheduler alone would
    take to 1% in as many of its steps."""
    p, last = s.params, s.last_epoch
    need = _steps_to_one_percent(s)
    per_batch = ((isinstance(now, (int, float)) and last is not None and now >= 100 and last >= 0.5 * now)
                 or (isinstance(collapse, (int, float)) and need is not None and 10 <= collapse <= 1.5 * need))
    batch = "; you step it every batch: step it once per epoch" if per_batch else ""
    if s.name == "StepLR":
        return (f"StepLR(step_size={p['step_size']}, gamma={_g(p['gamma'])}) hits 1% after "
                f"{_to_one_percent(p['gamma']) * p['step_size']} steps: raise step_size or gamma{batch}")
    if s.name == "MultiStepLR":
        return f"move MultiStepLR's milestones {p['milestones'][:4]} to ~50%/75% of the run{batch}"
    if s.kind == "exponential":
        return (f"ExponentialLR(gamma={_g(p['gamma'])}) hits 1% after {_to_one_percent(p['gamma'])} steps: "
                f"use gamma=0.01**(1/<total steps>){batch}")
    if s.name == "CosineAnnealingLR":           # stepped per batch or per epoch, T_max must match
        return (f"set T_max (now {p['T_max']}) to the number of scheduler.step() calls of the whole run"
                + ("; you step it every batch: that is the run's total batches" if per_batch else ""))
    if s.name == "CosineAnnealingWarmRestarts":
        return f"lengthen the cycles: raise T_0 (now {p['T_0']}) or T_mult (now {p['T_mult']}){batch}"
    if s.kind == "plateau":
        return (f"ReduceLROnPlateau(factor={_g(p['factor'])}, patience={p['patience']}) cuts too often: "
                f"raise patience, factor=0.5, set min_lr; feed it the val loss (mode='{p['mode']}')")
    if s.kind == "one_cycle":
        return f"OneCycleLR anneals to ~0 by total_steps={p['total_steps']}: train longer or raise max_lr"
    if s.kind in ("linear", "polynomial"):
        return (f"set {s.name}'s total_iters (now {p['total_iters']}) to the number of scheduler.step() "
                f"calls of the whole run" + ("; you step it every batch: that is the run's total batches"
                                             if per_batch else ""))
    return f"check whether {s.name}'s lambda counts epochs or batches, and its decay{batch}"


def _steps_to_one_percent(s: SchedulerInfo) -> float | None:
    """Scheduler steps until ``s`` alone brings the lr to 1% of its start (None: not known)."""
    p = s.params
    if s.name == "StepLR":
        return _to_one_percent(p["gamma"]) * p["step_size"] or None
    if s.name == "MultiStepLR":
        k = _to_one_percent(p["gamma"])
        return p["milestones"][k - 1] if 0 < k <= len(p["milestones"]) else None
    if s.kind == "exponential":
        return _to_one_percent(p["gamma"]) or None
    if s.name == "CosineAnnealingLR":
        return 0.936 * p["T_max"]                    # 0.5 * (1 + cos(pi t / T)) = 0.01
    if s.kind in ("linear", "polynomial"):
        return p["total_iters"]
    return None


def _to_one_percent(gamma: float) -> int:
    return math.ceil(math.log(0.01) / math.log(gamma)) if 0 < gamma < 1 else 0


def _rule_collapsed(fid, setup, ev, at, bs, now) -> list[Advice]:
    scheds = setup.decaying()
    if not scheds:
        if not setup.schedulers and ev.get("lr_peak") is not None:
            return [Advice(
                f"No torch scheduler is attached, yet the lr fell from {_g(_num(ev['lr_peak']))} to "
                f"{_g(_num(ev.get('lr_now')))}: find what sets param_groups' lr (a manual decay, a callback)",
                "a collapsed lr stops learning while the loss is still high", None, None, "", "collapsed_manual")]
        return []
    return [Advice(f"Your {s.name}{f' (in {s.part_of})' if s.part_of else ''} did it: "
                   f"{_schedule_fix(s, now, ev.get('collapse_step'))}",
                   "the lr reached ~0 while the loss is still high", None, None, "", "collapsed_" + s.kind)
            for s in scheds]


def _rule_vanishing(fid, setup, ev, at, bs, now) -> list[Advice]:
    if not _sgd(setup):
        return []
    return [Advice(
        "Adam's per-parameter steps move the early layers: torch.optim.Adam(params, lr=1e-3); but "
        "the real fix is the init/activation: trainmedic.initialize.reinit(model, sample)",
        "tiny gradients still get lr-sized steps", "adam", "sgd_to_adam",
        "Goodfellow et al. 2016, §8.5", "adaptive_for_vanishing")]


def _rule_overfitting(fid, setup, ev, at, bs, now) -> list[Advice]:
    out = []
    if setup.family == "adam":
        have = f"L2 weight_decay={_g(setup.weight_decay)}" if setup.weight_decay else "no weight decay"
        call = (_ctor(setup, weight_decay=0.05, decoupled_weight_decay=True)
                if setup.name != "Adam" and _takes(setup.name, "decoupled_weight_decay")
                else _ctor(setup, "AdamW", weight_decay=0.05))
        out.append(Advice(
            f"Your {setup.name} has {have}: use {call} (decoupled; 1e-2..1e-1)",
            "Adam scales L2's gradient by 1/sqrt(v), so weights with large gradients are barely "
            "regularised", "adamw", None, "Loshchilov & Hutter 2019", "adamw"))
    elif setup.family == "adamw" and setup.weight_decay < 1e-2:
        out.append(Advice(
            f"Your {setup.name}'s weight_decay {_g(setup.weight_decay)} is small: raise it to 0.05 (1e-2..1e-1)",
            "decoupled decay is the regulariser AdamW is built for", None,
            "weight_decay_up" if setup.weight_decay > 0 else None, "Loshchilov & Hutter 2019", "adamw_decay"))
    elif _sgd(setup) and not setup.weight_decay:
        out.append(Advice(
            f"Your SGD has no weight decay: {_ctor(setup, weight_decay=5e-4)}",
            "for SGD, L2 and decoupled decay are the same: it keeps weights small", None,
            "weight_decay_up", "Goodfellow et al. 2016, §7.1.1", "sgd_decay"))
    if setup.adaptive:
        out.append(Advice(
            "For the final run consider torch.optim.SGD(params, lr=<tuned>, momentum=0.9, nesterov=True) "
            f"with a decaying schedule instead of {setup.name}",
            "adaptive methods can find solutions that generalise worse than SGD's", "nesterov", None,
            "Wilson et al. 2017", "sgd_for_generalisation"))
    if setup.constant_lr:
        out.append(Advice(
            f"Your lr never decays: anneal it to 0, {LR_SCHED}CosineAnnealingLR(opt, T_max=<total steps>, eta_min=0)",
            "annealing settles the weights instead of leaving them bouncing at a high lr", "cosine", None,
            "Loshchilov & Hutter 2017", "cosine_to_zero"))
    return out


def _rule_regularization(fid, setup, ev, at, bs, now) -> list[Advice]:
    wd = setup.weight_decay
    if not wd:
        return []
    if setup.decoupled:
        kind = f"decoupled: each step shrinks weights by lr*wd = {_g((setup.lr or 0) * wd)}"
    elif _sgd(setup):
        kind = "L2, which for SGD equals decoupled decay"
    else:
        kind = f"L2, added to the gradient and then scaled by {setup.name}"
    return [Advice(f"Lower weight_decay {wd:g} -> {wd * 0.1:g}: {_ctor(setup, weight_decay=wd * 0.1)}",
                   f"your decay is {kind}", None, "weight_decay_0.1", "Goodfellow et al. 2016, §7.1",
                   "lower_decay")]


def _rule_finetune(fid, setup, ev, at, bs, now) -> list[Advice]:
    out = []
    if not setup.lrs_differ:
        out.append(Advice(
            "Give the pretrained layers 10-100x lower lrs than the head: "
            "trainmedic.finetune.discriminative_param_groups(model, base_lr=...)",
            "one lr for all layers moves the pretrained features as fast as the new head", None, None,
            "Howard & Ruder 2018", "discriminative_lr"))
    if not setup.has_warmup:
        out.append(Advice(f"Warm up: add {_warmup_call(setup)}",
                          "the new head's random gradients hit the backbone hardest at the start",
                          "warmup", "warmup", "Howard & Ruder 2018", "finetune_warmup"))
    return out


_RULES = {
    **{f: (_rule_high,) for f in HIGH},
    "loss_oscillating": (_rule_oscillating,),
    **{f: (_rule_low,) for f in LOW},
    "lr_schedule_collapsed": (_rule_collapsed,),
    "vanishing_gradient": (_rule_vanishing,),
    "saturated_activation": (_rule_vanishing,),
    "overfitting": (_rule_overfitting,),
    "regularization_dominates": (_rule_regularization,),
    "pretrained_features_destroyed": (_rule_finetune,),
}
ADVISED = frozenset(_RULES)          # the findings :func:`advise` can have advice for

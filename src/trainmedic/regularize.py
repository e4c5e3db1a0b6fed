"""Regularisation, each technique usable on its own: DropConnect, label smoothing, stochastic
depth, weight decay (decoupled or L2: what the optimizer actually does) and checks of where the
dropout layers sit. Early stopping is :class:`trainmedic.EarlyStopping`.

    from trainmedic import regularize as R
    R.drop_connect(model, p=0.2, pattern="classifier.*")     # DropConnect on those layers' weights
    loss = F.cross_entropy(logits, y, label_smoothing=0.1)   # torch smooths index and soft targets
    soft = R.smooth_labels(y, num_classes=10, eps=0.1)       # the same targets, for other losses
    self.drop_path = R.StochasticDepth(p)                    # in a block: x + self.drop_path(f(x))
    opt = torch.optim.AdamW(R.param_groups_without_decay(model, weight_decay=0.05), lr=1e-3)
    print(R.explain_weight_decay(opt))                       # decoupled or L2, and what it means
    for note in R.check_dropout_placement(model, x[:8]):     # dropout before BatchNorm, on logits...
        print(note)

Randomness: DropConnect and :class:`StochasticDepth` draw from torch's global RNG, as
``nn.Dropout`` does; :func:`stochastic_depth` also takes a ``generator``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from trainmedic._samples import call_with, cuda_devices, tensors_in
from trainmedic.augment._common import check_int, check_labels, check_number, check_tensor
from trainmedic.detectors.learning_rate import ADAPTIVE
from trainmedic.finetune import Pattern, name_matcher
from trainmedic.initialize import NORMS


def _check_p(name: str, p: Any, allow_one: bool = False) -> float:
    ok = isinstance(p, numbers.Real) and not isinstance(p, bool) and math.isfinite(p)
    if ok and 0 <= p < 1 or (ok and allow_one and p == 1):
        return float(p)
    raise ValueError(f"{name}={p!r}: expected a probability in [0, 1{']' if allow_one else ')'}")


def _check_module(name: str, module: Any) -> nn.Module:
    if not isinstance(module, nn.Module):
        raise TypeError(f"{name}={module!r} is not a torch.nn.Module")
    return module


# -- DropConnect ------------------------------------------------------------------------------------

class DropConnect(nn.Module):
    """The parametrization :func:`drop_connect` registers: in training mode, the weight times a
    Bernoulli(1 - p) mask divided by 1 - p, a fresh mask at every access of the weight (once per
    forward for Linear and ConvNd; once per ``parametrize.cached()`` block); the weight itself in
    eval mode. It is ``F.dropout`` applied to the weight (Wan et al., 2013, in its inverted form)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = _check_p("p", p)
        self.order: list[str] = []      # the module's parameter names in their order before it
                                        # (remove_drop_connect puts them back in that order)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return F.dropout(weight, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def drop_connect(module: nn.Module, p: float = 0.5, names: Sequence[str] = ("weight",),
                 pattern: Pattern | None = None) -> list[str]:
    """DropConnect: register a :class:`DropConnect` parametrization (``torch.nn.utils.parametrize``)
    on the tensors ``names`` of ``module`` when it holds them itself; otherwise on those of every
    ``nn.Linear`` and ``nn.ConvNd`` under it, or of those whose module name matches ``pattern``
    (a glob such as ``"classifier.*"`` or a ``re.Pattern``). Returns the tensors' names.

    The Parameter objects stay the same (each becomes ``<module>.parametrizations.<name>.original``),
    so an optimizer built before the call still updates them: nothing to do about it. What changes
    are the parameter and ``state_dict`` names: load a checkpoint saved without DropConnect before
    the call (or after :func:`remove_drop_connect`), and save with ``state_dict()`` (a parametrized
    model cannot be pickled whole)."""
    _check_module("module", module)
    p = _check_p("p", p)
    if isinstance(names, str) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"names={names!r}: expected a non-empty sequence of parameter names such as "
                         f"('weight',)")
    own = dict(module.named_parameters(recurse=False))
    if pattern is None and any(n in own for n in names):
        missing = [n for n in names if n not in own]
        if missing:
            raise ValueError(f"names={tuple(names)!r}: {type(module).__name__} has no parameter "
                             f"{missing[0]!r}; expected some of {sorted(own)}")
        targets = [("", module)]
    else:
        match = name_matcher(pattern) if pattern is not None else (lambda n: True)
        targets = [(n, m) for n, m in module.named_modules()
                   if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) and match(n)]
        if not targets:
            what = f"matches pattern={pattern!r}" if pattern is not None else "is under it"
            raise ValueError(f"module={type(module).__name__}: no nn.Linear or nn.ConvNd {what}; "
                             f"expected layers to apply DropConnect to (or a module holding "
                             f"{tuple(names)!r} itself)")
    done = []
    for prefix, m in targets:
        order = list(m._parameters)
        for n in names:
            w = m._parameters.get(n) if not parametrize.is_parametrized(m, n) else getattr(
                m.parametrizations, n).original
            if w is None:
                continue
            full = f"{prefix}.{n}" if prefix else n
            if isinstance(w, nn.parameter.UninitializedParameter):
                raise ValueError(f"{full} is not initialised yet (a lazy module); expected one forward "
                                 f"pass before drop_connect")
            if parametrize.is_parametrized(m, n) and any(
                    isinstance(q, DropConnect) for q in getattr(m.parametrizations, n)):
                raise ValueError(f"{full} already has DropConnect; expected remove_drop_connect() first "
                                 f"to change p")
            dc = DropConnect(p)
            dc.order = order
            parametrize.register_parametrization(m, n, dc)
            done.append(full)
    if not done:
        raise ValueError(f"names={tuple(names)!r}: none of the chosen layers has such a parameter")
    return done


def remove_drop_connect(model: nn.Module) -> list[str]:
    """Undo :func:`drop_connect` everywhere under ``model``: each tensor becomes a plain Parameter
    again, the same object with its current (trained) values, under its original name. Other
    parametrizations stay. Returns the names of the tensors restored."""
    _check_module("model", model)
    done = []
    for prefix, m in list(model.named_modules()):
        if not parametrize.is_parametrized(m):
            continue
        order: list[str] = []
        for n in list(m.parametrizations.keys()):
            plist = m.parametrizations[n]
            ours = [i for i, q in enumerate(plist) if isinstance(q, DropConnect)]
            if not ours:
                continue
            order = max([order] + [plist[i].order for i in ours], key=len)
            if len(ours) == len(plist):
                parametrize.remove_parametrizations(m, n, leave_parametrized=False)
            else:
                for i in reversed(ours):
                    del plist[i]
            done.append(f"{prefix}.{n}" if prefix else n)
        if order:                       # the parameters back in their order (state_dict, optimizers)
            params = dict(m._parameters)
            m._parameters.clear()
            m._parameters.update({k: params.pop(k) for k in order if k in params})
            m._parameters.update(params)
    return done


# -- label smoothing --------------------------------------------------------------------------------

def smooth_labels(y: torch.Tensor, num_classes: int, eps: float = 0.1) -> torch.Tensor:
    """Label-smoothed targets ``(1 - eps) * t + eps / num_classes``, rows summing to 1, where ``t``
    is ``one_hot(y)`` for class indices ``y`` (B,) or ``y`` itself for class probabilities
    (B, num_classes), e.g. the soft targets of ``trainmedic.augment.mixup`` or ``cutmix``.

    With ``F.cross_entropy`` there is no need for it: ``label_smoothing=eps`` does exactly this, on
    index and probability targets alike (without ``weight=``, the losses are then equal). Use it for
    losses without that argument (KL divergence, BCE, a custom soft-target loss). Typical
    ``eps=0.1``; it makes a poor teacher for distillation (Mueller et al., 2019)."""
    eps = check_number("eps", eps, 0, 1)
    num_classes = check_int("num_classes", num_classes, 1)
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y is a {type(y).__name__}; expected a tensor of class indices (B,) or of "
                        f"class probabilities (B, num_classes)")
    if not y.is_floating_point():
        check_labels(y, len(y) if y.ndim else 0, num_classes)
        return F.one_hot(y, num_classes).to(torch.get_default_dtype()) * (1 - eps) + eps / num_classes
    if y.ndim != 2 or y.shape[1] != num_classes:
        raise ValueError(f"y has shape {tuple(y.shape)}; expected class indices (B,) or class "
                         f"probabilities (B, num_classes={num_classes})")
    if len(y):
        tol = 1e-2 if y.element_size() < 4 else 1e-4
        sums = y.sum(1)
        if bool((y.amin() < 0) | ((sums - 1).abs().amax() > tol)):            # one host sync
            raise ValueError(f"y has a row with a negative value or not summing to 1 (sums from "
                             f"{float(sums.min()):g} to {float(sums.max()):g}); expected class "
                             f"probabilities")
    return y * (1 - eps) + eps / num_classes


# -- stochastic depth -------------------------------------------------------------------------------

def stochastic_depth(x: torch.Tensor, p: float, training: bool, mode: str = "row", *,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Stochastic depth (Huang et al., 2016), a.k.a. drop path, on the output ``x`` (B, ...) of a
    residual branch, before it is added to the skip path: in training, zero it with probability
    ``p`` and scale what survives by ``1 / (1 - p)``, so the expectation is ``x``. ``mode="row"``
    draws once per sample, ``"batch"`` once for the whole batch. ``x`` itself when not
    ``training`` or ``p == 0``. The draws come from ``generator`` (on any device) if given, else
    from torch's global RNG."""
    check_tensor("x", x, tuple(range(1, 9)), "of branch outputs (B, ...)")
    p = _check_p("p", p, allow_one=True)
    if not isinstance(training, bool):
        raise TypeError(f"training={training!r}: expected a bool (usually module.training)")
    if mode not in ("row", "batch"):
        raise ValueError(f"mode={mode!r}: expected 'row' (one draw per sample) or 'batch'")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator={generator!r}: expected a torch.Generator or None")
    if not training or p == 0:
        return x
    shape = (len(x),) + (1,) * (x.ndim - 1) if mode == "row" else (1,) * x.ndim
    device = generator.device if generator is not None else x.device
    keep = torch.rand(shape, generator=generator, device=device) >= p
    scale = keep.to(device=x.device, dtype=x.dtype)
    return x * (scale / (1 - p) if p < 1 else scale)


class StochasticDepth(nn.Module):
    """:func:`stochastic_depth` as a layer, active in training mode: put it on the residual branch,
    ``x + self.drop_path(self.block(x))``, with the block's rate from :func:`linear_decay`."""

    def __init__(self, p: float, mode: str = "row") -> None:
        super().__init__()
        self.p = _check_p("p", p, allow_one=True)
        if mode not in ("row", "batch"):
            raise ValueError(f"mode={mode!r}: expected 'row' (one draw per sample) or 'batch'")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return stochastic_depth(x, self.p, self.training, self.mode)

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode!r}"


def linear_decay(num_blocks: int, p_last: float) -> list[float]:
    """Per-block drop rates of the linear decay rule (Huang et al., 2016), as timm and torchvision
    use it: 0 at the first block, rising linearly to ``p_last`` at the last (``[p_last]`` for a
    single block). Huang et al. count from the input, so their first block gets
    ``p_last / num_blocks``; the difference is one block. Typical ``p_last`` 0.1 to 0.5."""
    num_blocks = check_int("num_blocks", num_blocks, 1)
    p_last = _check_p("p_last", p_last)
    if num_blocks == 1:
        return [p_last]
    return [p_last * i / (num_blocks - 1) for i in range(num_blocks)]


# -- weight decay -----------------------------------------------------------------------------------

def _optims(*names: str) -> dict[type, str]:
    return {getattr(torch.optim, n): n for n in names if hasattr(torch.optim, n)}


_COUPLED = _optims("SGD", "ASGD", "Adam", "Adamax", "NAdam", "RAdam", "RMSprop", "Adagrad", "Adadelta")
_DECOUPLED = _optims("AdamW", "Muon", "Adafactor")
_FLAGGED = _optims("Adam", "NAdam", "RAdam")          # decoupled_weight_decay=True makes them decoupled
_NO_DECAY = _optims("Rprop", "LBFGS", "SparseAdam")   # no weight_decay setting at all


def decouples(cls: type, group: dict) -> bool:
    """Whether optimizer class ``cls`` applies a param group's weight decay decoupled from the
    gradient (``w -= lr * wd * w``), whatever its value."""
    return cls in _DECOUPLED or (cls in _FLAGGED and bool(group.get("decoupled_weight_decay", False)))


@dataclass(frozen=True)
class DecayGroup:
    """What one param group's weight decay does. ``kind``: "none", "l2" (coupled: ``wd * w`` added
    to the gradient), "decoupled" (``w -= lr * wd * w`` apart from the gradient) or "unknown" (an
    optimizer class trainmedic does not know). ``adaptive``: the optimizer divides the gradient,
    L2 term included, by a per-weight scale. ``decayed_1d``: tensors of ndim <= 1 (biases, norm
    weights) the group decays."""
    index: int
    name: str | None
    optimizer: str
    lr: float
    weight_decay: float | None
    kind: str
    adaptive: bool
    params: int
    decayed_1d: int


def weight_decay_kind(optimizer: Any) -> list[DecayGroup]:
    """One :class:`DecayGroup` per param group of ``optimizer``, read from its class and settings
    (not guessed from names: a subclass of a torch optimizer is "unknown", its ``step`` may differ)."""
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, list) or not all(isinstance(g, dict) and "params" in g for g in groups):
        raise TypeError(f"optimizer={type(optimizer).__name__}: expected a torch.optim.Optimizer (an "
                        f"object with param_groups, a list of dicts with 'params')")
    cls = type(optimizer)
    out = []
    for i, g in enumerate(groups):
        wd = g.get("weight_decay")
        wd = None if wd is None else float(wd)
        lr = g.get("lr")
        lr = float(lr) if isinstance(lr, (numbers.Real, torch.Tensor)) else math.nan
        if cls in _NO_DECAY or (cls in _COUPLED or cls in _DECOUPLED) and not wd:
            kind = "none"
        elif decouples(cls, g):
            kind = "decoupled"
        elif cls in _COUPLED:
            kind = "l2"
        else:
            kind = "unknown"
        params = list(g["params"])
        flat = sum(1 for q in params if q.ndim <= 1) if kind in ("l2", "decoupled") else 0
        out.append(DecayGroup(i, g.get("name"), cls.__name__, lr, wd, kind, cls.__name__ in ADAPTIVE,
                              len(params), flat))
    return out


def _suggest(cls_name: str) -> str:
    if cls_name in ("NAdam", "RAdam"):
        return f"torch.optim.{cls_name}(..., weight_decay=1e-2, decoupled_weight_decay=True)"
    return "torch.optim.AdamW(..., weight_decay=1e-2)"


def explain_weight_decay(optimizer: Any) -> str:
    """What ``optimizer``'s weight decay does, in plain English, one sentence per distinct setting
    of its param groups, with what to use instead when it regularises poorly."""
    groups = weight_decay_kind(optimizer)
    cls = type(optimizer)
    name = cls.__name__
    settings: dict[tuple, list[DecayGroup]] = {}
    for g in groups:
        settings.setdefault((g.kind, g.weight_decay), []).append(g)
    lines = []
    for (kind, wd), gs in settings.items():
        where = "" if len(settings) == 1 else (
            " in group " if len(gs) == 1 else " in groups ") + ", ".join(
            f"{g.index}" + (f" ({g.name!r})" if g.name else "") for g in gs)
        lr = gs[0].lr
        shrink = lr * wd if wd else 0.0
        if kind == "unknown":
            base = next((b for b in cls.__mro__[1:] if b in _COUPLED or b in _DECOUPLED
                         or b in _NO_DECAY), None)
            sub = f" (a subclass of torch.optim.{base.__name__}; its step() may differ)" if base else ""
            lines.append(f"{name}{sub} is not an optimizer trainmedic knows: whether its "
                         f"weight_decay={wd}{where} is L2 or decoupled depends on its step(): unknown.")
        elif kind == "none" and cls in _NO_DECAY:
            lines.append(f"{name} has no weight decay setting; to regularise with weight decay use "
                         f"{_suggest(name)} (decoupled; typical 1e-2 to 1e-1).")
        elif kind == "none":
            lines.append(f"{name} applies no weight decay{where} (weight_decay=0).")
        elif kind == "l2" and gs[0].adaptive:
            lines.append(f"{name} with weight_decay={wd:g}{where} adds L2 to the gradient (coupled); "
                         f"{name} then divides it by its adaptive denominator, so weights with large "
                         f"gradients are barely decayed. For regularisation use {_suggest(name)} "
                         f"(decoupled; typical 1e-2 to 1e-1).")
        elif kind == "l2":
            mom = float(optimizer.param_groups[gs[0].index].get("momentum", 0) or 0)
            extra = (f", about {shrink / (1 - mom):.2g} once momentum={mom:g} has built up"
                     if 0 < mom < 1 else "")
            lines.append(f"{name} with weight_decay={wd:g}{where} adds L2 to the gradient; for {name} "
                         f"that is decoupled decay up to a rescaling by lr (exactly so without "
                         f"momentum): each step shrinks the "
                         f"weights by lr*weight_decay={shrink:.2g} (at lr={lr:g}){extra}. Typical "
                         f"1e-4 to 5e-4.")
        else:
            lines.append(f"{name} with weight_decay={wd:g}{where} decays the weights directly "
                         f"(decoupled from the gradient: w -= lr*weight_decay*w, {shrink:.2g} per step "
                         f"at lr={lr:g}), every weight alike; it follows the lr schedule. Typical "
                         f"1e-2 to 1e-1.")
        if kind in ("l2", "decoupled") and not (kind == "l2" and gs[0].adaptive) and shrink >= 1e-2:
            lines.append(f"That shrink is large: without gradient, the weights{where} halve every "
                         f"{math.log(2) / -math.log1p(-min(shrink, 0.999)):.0f} steps.")
    flat = sum(g.decayed_1d for g in groups)
    if flat:
        lines.append(f"{flat} parameter tensor{'s' if flat > 1 else ''} of ndim <= 1 (biases, norm "
                     f"weights) {'are' if flat > 1 else 'is'} decayed; the usual practice excludes "
                     f"them: build the optimizer from trainmedic.regularize.param_groups_without_decay("
                     f"model, weight_decay).")
    return "\n".join(lines)


def param_groups_without_decay(model: nn.Module, weight_decay: float) -> list[dict]:
    """Optimizer param groups: ``{"params": [...], "weight_decay": weight_decay, "name": "decay"}``
    for the weight matrices and kernels, and ``weight_decay=0.0`` ("no_decay") for the parameters of
    ndim <= 1 (biases, norm weights) and those of normalisation layers. Empty groups are left out;
    frozen parameters are included (so unfreezing needs no new group)."""
    _check_module("model", model)
    weight_decay = check_number("weight_decay", weight_decay, 0)
    in_norm = {id(q) for m in model.modules() if isinstance(m, NORMS) for q in m.parameters()}
    decay, no_decay = [], []
    for q in model.parameters():
        (no_decay if q.ndim <= 1 or id(q) in in_norm else decay).append(q)
    if not decay and not no_decay:
        raise ValueError(f"model={type(model).__name__} has no parameters; expected a model to optimise")
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
              {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]
    return [g for g in groups if g["params"]]


# -- dropout placement ------------------------------------------------------------------------------

def _is_dropout_like(m: nn.Module) -> bool:
    """Dropout, DropConnect, stochastic depth, drop path or DropBlock (by class name) layers."""
    return isinstance(m, (nn.modules.dropout._DropoutNd, DropConnect, StochasticDepth)) or \
        "drop" in type(m).__name__.lower()


def check_dropout_placement(model: nn.Module, sample: Any) -> list[str]:
    """Notes, in plain English with the module names, on where ``model``'s dropout layers sit;
    an empty list when nothing stands out. ``sample`` is a batch the model takes (``model(sample)``;
    a tuple is unpacked, a dict passed as keywords). One forward is traced, in eval mode, under
    ``no_grad``; the modes of every module, the RNG state and the buffers are as before afterwards.

    Noted: dropout feeding a BatchNorm directly (the variance shift of Li et al., 2019), dropout
    after the last layer with parameters (on the logits), dropout layers in eval mode in a model in
    training mode (they never drop), p >= 0.8 (on the inputs or anywhere: torch's p is the drop
    probability, not TF1's keep_prob), and as a hint, no dropout at all in a model of more than 1M
    parameters. Dropout called as ``F.dropout`` inside a forward is not seen."""
    _check_module("model", model)
    if not any(True for _ in tensors_in(sample)):
        raise TypeError(f"sample is a {type(sample).__name__}; expected a tensor, a tuple of inputs or "
                        f"a dict of keyword inputs, holding at least one tensor")
    root = type(model).__name__
    label = {id(m): n or root for n, m in model.named_modules()}
    dropouts = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    notes = []
    if dropouts and model.training:
        idle = [n for n, m in dropouts if not m.training]
        if idle:
            notes.append(f"Dropout {', '.join(map(repr, idle))} {'is' if len(idle) == 1 else 'are'} in eval mode "
                         f"while the model is in training mode: {'it' if len(idle) == 1 else 'they'} "
                         f"never drop{'s' if len(idle) == 1 else ''} (an .eval() on a submodule or a "
                         f"custom train()?).")
    elif dropouts:
        notes.append(f"{root!r} is in eval mode: its {len(dropouts)} dropout layer"
                     f"{'s are' if len(dropouts) > 1 else ' is'} inactive. If it trains like this, "
                     f"call model.train() before training (and model.eval() to evaluate).")
    total = sum(q.numel() for q in model.parameters())
    if total > 1_000_000 and not any(_is_dropout_like(m) for m in model.modules()):
        notes.append(f"Hint: {root!r} has {total / 1e6:.1f}M parameters and no dropout layer; if it "
                     f"overfits, dropout before the classifier (p=0.1 to 0.5) is one regulariser, "
                     f"weight decay and augmentation are others.")
    events: list[tuple[nn.Module, tuple, Any]] = []

    def record(m: nn.Module, args: tuple, out: Any) -> Any:
        if isinstance(m, nn.modules.dropout._DropoutNd) and isinstance(out, torch.Tensor):
            out = out.view_as(out)          # a tensor of its own, whatever eval-mode dropout returns
        events.append((m, args, out))
        return out

    leaves = [m for n, m in model.named_modules() if "parametrizations" not in n.split(".")
              and not any(c != "parametrizations" for c, _ in m.named_children())]
    modes = [(m, m.training) for m in model.modules()]
    state = [(b, b.clone()) for b in model.buffers()]
    devices = cuda_devices([*tensors_in(sample), *model.parameters()])
    handles = [m.register_forward_hook(record) for m in leaves]
    try:
        model.eval()
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            output = call_with(model, sample)
    finally:
        for h in handles:
            h.remove()
        for m, t in modes:
            m.training = t
        with torch.no_grad():
            for b, v in state:
                b.copy_(v)
    outputs = {id(t) for t in tensors_in(output)}
    layered = [i for i, (m, _, _) in enumerate(events) if m._parameters or parametrize.is_parametrized(m)]
    said = set()
    for i, (m, args, out) in enumerate(events):
        if not isinstance(m, nn.modules.dropout._DropoutNd) or m.p == 0 or id(m) in said:
            continue
        said.add(id(m))
        name = label[id(m)]
        what = f"{name!r} ({type(m).__name__}, p={m.p:g})"
        if m.p >= 0.8:
            if not layered or i < layered[0]:
                notes.append(f"{what} drops {m.p:.0%} of the model's inputs: torch's p is the drop "
                             f"probability; for inputs the usual is p=0.2 (keep 0.8, Srivastava et al., "
                             f"2014).")
            else:
                notes.append(f"{what} drops {m.p:.0%} of the units: torch's p is the drop probability "
                             f"(TF1's keep_prob was the opposite); the usual is 0.1 to 0.5.")
        if layered and i > layered[-1]:
            last = repr(label[id(events[layered[-1]][0])])
            where = "on the model's output" if id(out) in outputs else "after the last layer"
            notes.append(f"{what} is {where} ({last} is the last layer with parameters): it zeroes "
                         f"logits at random rather than features. Put it before the last layer.")
        nxt = events[i + 1] if i + 1 < len(events) else None
        if nxt is not None and isinstance(nxt[0], nn.modules.batchnorm._BatchNorm) and nxt[1] \
                and nxt[1][0] is out:
            notes.append(f"{what} feeds {label[id(nxt[0])]!r} ({type(nxt[0]).__name__}) directly: the "
                         f"BatchNorm's running variance, estimated with dropout on, does not match "
                         f"evaluation (variance shift, Li et al., 2019). Put dropout after the last "
                         f"BatchNorm (e.g. before the classifier) or drop it.")
    return notes


__all__ = ["DecayGroup", "DropConnect", "StochasticDepth", "check_dropout_placement", "drop_connect",
           "explain_weight_decay", "linear_decay", "param_groups_without_decay", "remove_drop_connect",
           "smooth_labels", "stochastic_depth", "weight_decay_kind"]

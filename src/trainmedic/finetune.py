"""Transfer learning and fine-tuning: freeze and unfreeze parts of a pretrained model, unfreeze
gradually, give layer groups discriminative learning rates, replace the head.

    from trainmedic import finetune
    head = finetune.replace_head(model, num_classes=5)       # the rest of the model is pretrained
    opt = torch.optim.AdamW(finetune.discriminative_param_groups(model, base_lr=1e-3))
    unfreezer = finetune.gradual_unfreeze(model, opt)        # only the top group trains at first
    for epoch in range(epochs):
        train_one_epoch(...)
        unfreezer.step()                                     # the next group down joins in

Parameters are selected by a name pattern (a glob string such as ``"features.*"``, or a compiled
``re.Pattern`` searched in each name) or by ``depth``: the first N top-level children of the
model (the input side). Layer groups default to the model's top-level children that hold
parameters, ordered from the input to the output.

BatchNorm layers of a frozen part stay in eval mode even when ``model.train()`` is called (their
running statistics are neither used from the batch nor updated, so the frozen features do not
drift): ``freeze`` gives each such layer an instance-level ``train()`` that always selects eval
mode; ``unfreeze`` removes it and sets the layer back to the mode of the model it was given.

The model's pretrained weights are marked for trainmedic's ``pretrained_features_destroyed``
detector (which measures how far they move from these values) by :func:`replace_head`,
:func:`gradual_unfreeze`, :func:`mark_pretrained` and ``trainmedic.watch(..., pretrained=True)``.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Callable, Sequence, Union

import torch
from torch import nn

from trainmedic.detectors.finetune import mark

Pattern = Union[str, "re.Pattern[str]"]


# -- marking pretrained weights ---------------------------------------------------------------------

def mark_pretrained(module: nn.Module, *, except_head: bool = False) -> None:
    """Record ``module``'s weight matrices as pretrained: their values now are the starting point
    that the ``pretrained_features_destroyed`` detector measures drift from. Weights already
    marked keep their mark. ``except_head``: leave the last ``nn.Linear`` (the head, as
    :func:`replace_head` finds it) unmarked; it is what a fine-tuning trains from scratch."""
    head = _last_linear(module) if except_head else None
    skip = {id(p) for p in head[1].parameters()} if head is not None else set()
    for name, p in module.named_parameters():
        if id(p) not in skip:
            mark(p, name)


# -- freeze / unfreeze ------------------------------------------------------------------------------

def freeze(model: nn.Module, pattern: Pattern | None = None, depth: int | None = None, *,
           bn_eval: bool = True) -> list[str]:
    """Set ``requires_grad=False`` on the parameters selected by ``pattern`` or ``depth`` (all of
    them when neither is given); returns their names. With ``bn_eval``, BatchNorm layers of the
    frozen part stay in eval mode whatever ``model.train()`` says (see the module docstring)."""
    names, norms = _select(model, pattern, depth)
    params = dict(model.named_parameters())
    for n in names:
        params[n].requires_grad_(False)
    if bn_eval:
        for bn in norms:
            bn.train = _EvalWhileFrozen(bn)
            nn.Module.train(bn, False)
    return names


def unfreeze(model: nn.Module, pattern: Pattern | None = None, depth: int | None = None) -> list[str]:
    """Set ``requires_grad=True`` on the parameters selected by ``pattern`` or ``depth`` (all of
    them when neither is given) and let their BatchNorm layers follow ``model.train()`` again;
    returns the parameter names."""
    names, norms = _select(model, pattern, depth)
    params = dict(model.named_parameters())
    for n in names:
        params[n].requires_grad_(True)
    for bn in norms:
        if isinstance(bn.__dict__.get("train"), _EvalWhileFrozen):
            del bn.train
            nn.Module.train(bn, model.training)
    return names


class _EvalWhileFrozen:
    """A frozen BatchNorm layer's ``train()``: eval mode whatever ``mode`` is asked for. A
    picklable callable (not a lambda), so ``torch.save(model)`` still works."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, mode: bool = True) -> nn.Module:
        return nn.Module.train(self.module, False)


def _select(model: nn.Module, pattern: Pattern | None,
            depth: int | None) -> tuple[list[str], list[nn.Module]]:
    """Parameter names chosen by ``pattern`` or ``depth`` and the BatchNorm layers of that part
    (all their parameters chosen; for affine-free ones, their ``running_mean`` name matched or
    their child chosen)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model={model!r} is not a torch.nn.Module")
    if pattern is not None and depth is not None:
        raise ValueError(f"pattern={pattern!r} and depth={depth!r} were both given; expected one "
                         f"of them (or neither, for the whole model)")
    names = [n for n, _ in model.named_parameters()]
    if not names:
        raise ValueError(f"model={type(model).__name__} has no parameters; expected a model to "
                         f"freeze or unfreeze")
    if depth is not None:
        children = _children(model)
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= len(children):
            raise ValueError(f"depth={depth!r} is out of range; expected an int from 1 to "
                             f"{len(children)} (the top-level children of {type(model).__name__} "
                             f"with parameters: {', '.join(n for n, _ in children)})")
        prefixes = tuple(n + "." for n, _ in children[:depth])
        match = lambda n: n.startswith(prefixes)                     # noqa: E731
    elif pattern is not None:
        match = name_matcher(pattern)
    else:
        match = lambda n: True                                       # noqa: E731
    chosen = [n for n in names if match(n)]
    if not chosen:
        raise ValueError(f"pattern={pattern!r} matches no parameter name of {type(model).__name__}; "
                         f"expected a glob like 'features.*' or a re.Pattern matching names such "
                         f"as {', '.join(names[:5])}")
    picked = set(chosen)
    norms = []
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            own = [f"{name}.{n}" if name else n for n, _ in m.named_parameters(recurse=False)]
            if (own and picked.issuperset(own)) or (not own and match(f"{name}.running_mean")):
                norms.append(m)
    return chosen, norms


def name_matcher(pattern: Pattern) -> Callable[[str], bool]:
    """A test of names: a glob string matches whole names, a re.Pattern is searched in them."""
    if isinstance(pattern, re.Pattern):
        return lambda n: pattern.search(n) is not None
    if isinstance(pattern, str):
        return lambda n: fnmatch.fnmatchcase(n, pattern)
    raise TypeError(f"pattern={pattern!r} is not a glob string or a re.Pattern")


def _children(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Top-level children that hold parameters, in registration order (input side first)."""
    return [(n, c) for n, c in model.named_children() if any(True for _ in c.parameters())]


# -- layer groups -----------------------------------------------------------------------------------

def _groups(model: nn.Module, groups: Sequence[nn.Module] | None) -> list[nn.Module]:
    """Layer groups, input side first: ``groups`` checked, or the model's top-level children
    with parameters."""
    if groups is None:
        found = [c for _, c in _children(model)]
        if len(found) < 2:
            raise ValueError(f"groups=None but {type(model).__name__} has {len(found)} top-level "
                             f"child with parameters; expected >= 2 (or pass groups=[modules, "
                             f"input side first])")
        return found
    groups = list(groups)
    inside = {id(m) for m in model.modules()}
    for gm in groups:
        if not isinstance(gm, nn.Module) or id(gm) not in inside:
            raise ValueError(f"groups contains {gm!r}; expected submodules of {type(model).__name__}")
    if not groups:
        raise ValueError("groups=[] is empty; expected submodules of the model, input side first")
    return groups


def discriminative_param_groups(model: nn.Module, base_lr: float, decay: float = 2.6,
                                groups: Sequence[nn.Module] | None = None) -> list[dict]:
    """Optimizer param groups with learning rates decreasing toward the input (ULMFiT's
    discriminative fine-tuning): the top group (the head) gets ``base_lr``, each group below it
    the one above's divided by ``decay``. Every parameter of a group is included, frozen ones
    too (so unfreezing later needs no new group); each group carries a ``name``. Parameters in
    none of ``groups`` form a group "other" at the lowest rate."""
    if not isinstance(base_lr, (int, float)) or isinstance(base_lr, bool) or not base_lr > 0:
        raise ValueError(f"base_lr={base_lr!r} is not valid; expected a number > 0")
    if not isinstance(decay, (int, float)) or isinstance(decay, bool) or not decay >= 1:
        raise ValueError(f"decay={decay!r} is not valid; expected a number >= 1 (the factor "
                         f"between a group's learning rate and the one above it)")
    mods = _groups(model, groups)
    names = _module_names(model)
    out, seen = [], set()
    for depth, gm in enumerate(reversed(mods)):
        params = [p for p in gm.parameters() if id(p) not in seen]
        seen |= {id(p) for p in params}
        if params:
            out.append({"params": params, "lr": base_lr / decay ** depth, "name": names[id(gm)]})
    rest = [p for p in model.parameters() if id(p) not in seen]
    if rest:
        out.append({"params": rest, "lr": base_lr / decay ** (len(mods) - 1), "name": "other"})
    return out[::-1]


def _module_names(model: nn.Module) -> dict[int, str]:
    return {id(m): n or type(model).__name__ for n, m in model.named_modules()}


class GradualUnfreeze:
    """Unfreezes layer groups from the top, one every ``every`` calls of :meth:`step` (call it
    once per epoch, like an LR scheduler). Built by :func:`gradual_unfreeze`. An LR scheduler
    built before a param group is added does not schedule that group."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, groups: list[nn.Module],
                 every: int, lr_decay: float) -> None:
        self.model, self.optimizer, self.groups = model, optimizer, groups
        self.every, self.lr_decay = every, lr_decay
        self.epoch = 0
        self.trainable = 1              # groups trainable, counted from the top

    def step(self) -> list[str]:
        """One epoch done: every ``every`` epochs, unfreeze the next group down and add its
        parameters the optimizer lacks as a new param group. Returns the names unfrozen."""
        self.epoch += 1
        if self.epoch % self.every or self.trainable >= len(self.groups):
            return []
        self.trainable += 1
        group = self.groups[-self.trainable]
        prefix = _module_names(self.model)[id(group)]
        names = [f"{prefix}.{n}" for n in unfreeze(group)]
        owned = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
        missing = [p for p in group.parameters() if id(p) not in owned]
        if missing:
            lr = self.optimizer.param_groups[0]["lr"] / self.lr_decay ** (self.trainable - 1)
            self.optimizer.add_param_group({"params": missing, "lr": lr, "initial_lr": lr, "name": prefix})
        return names


def gradual_unfreeze(model: nn.Module, optimizer: torch.optim.Optimizer,
                     groups: Sequence[nn.Module] | None = None, every: int = 1,
                     lr_decay: float = 1.0) -> GradualUnfreeze:
    """Freeze every layer group but the top one (the head), mark the frozen ones as pretrained,
    and return the scheduler that unfreezes them from the top, one every ``every`` epochs. A
    group whose parameters the optimizer lacks joins it as a new param group with the learning
    rate of the optimizer's first group divided by ``lr_decay`` per group below the top."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer={optimizer!r} is not a torch.optim.Optimizer")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every={every!r} is not valid; expected an int >= 1 (epochs between unfreezes)")
    if not isinstance(lr_decay, (int, float)) or isinstance(lr_decay, bool) or not lr_decay >= 1:
        raise ValueError(f"lr_decay={lr_decay!r} is not valid; expected a number >= 1")
    mods = _groups(model, groups)
    if len(mods) < 2:
        raise ValueError(f"groups has {len(mods)} module; expected >= 2 (the top one trains from "
                         f"the start)")
    for gm in mods[:-1]:
        mark_pretrained(gm)
        freeze(gm)
    return GradualUnfreeze(model, optimizer, mods, every, lr_decay)


# -- the head ---------------------------------------------------------------------------------------

def replace_head(model: nn.Module, num_classes: int) -> nn.Linear:
    """Replace the model's last ``nn.Linear`` (in registration order) by a fresh one with
    ``num_classes`` outputs, on the same device and dtype, and mark the rest of the model as
    pretrained. Returns the new head (add its parameters to the optimizer if it exists already)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r} is not valid; expected an int >= 1")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model={model!r} is not a torch.nn.Module")
    found = _last_linear(model)
    if found is None:
        raise ValueError(f"model={type(model).__name__} has no nn.Linear layer; expected one as its "
                         f"head (replace a non-linear head by assignment)")
    name, old = found
    if not name:
        raise ValueError("model is itself an nn.Linear; expected a model whose head is a submodule "
                         "(or build the new nn.Linear directly)")
    head = nn.Linear(old.in_features, num_classes, bias=old.bias is not None,
                     device=old.weight.device, dtype=old.weight.dtype)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    mark_pretrained(model)
    setattr(parent, attr, head)
    return head


def _last_linear(model: nn.Module) -> tuple[str, nn.Linear] | None:
    """The last ``nn.Linear`` in registration order (the head) and its name; None without one."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return found[-1] if found else None


__all__ = ["GradualUnfreeze", "discriminative_param_groups", "freeze", "gradual_unfreeze",
           "mark_pretrained", "replace_head", "unfreeze"]

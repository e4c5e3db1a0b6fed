"""Remedies on the model: re-initialisation, activations, dropout, train/eval mode, input
normalisation. Each keeps what it needs to undo itself (see :mod:`trainmedic.repair.remedies`)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from trainmedic.repair.remedies import NotApplicable, RepairContext, Remedy

_LAYERS = (torch.nn.Linear, torch.nn.modules.conv._ConvNd)


def _symmetric(weight: torch.Tensor) -> bool:
    """Every output unit has the same incoming weights (a constant init): no symmetry breaking."""
    w = weight.detach().reshape(weight.shape[0], -1)
    return weight.shape[0] > 1 and bool((w - w[:1]).abs().max() <= 1e-6 * (1 + w.abs().max()))


class ReinitLayers(Remedy):
    """Re-initialise the Linear/Conv layers whose units are symmetric (constant weights), or all
    of them when ``only_symmetric`` is off, each by the activation its output feeds as
    :mod:`trainmedic.initialize` finds it without an input batch (registration order): He for
    the ReLU family, Xavier for tanh/sigmoid, LeCun for SELU and for layers that feed no
    activation; biases to zero. Frozen layers are left alone. The optimizer's state for those
    parameters is dropped (their momentum belonged to the old weights)."""

    id = "reinit_layers"
    cost = "cheap"

    def __init__(self, only_symmetric: bool = True) -> None:
        self.only_symmetric = only_symmetric
        self.description = ("re-initialise the symmetric (constant) layers, He/Xavier/LeCun by activation"
                            if only_symmetric else
                            "re-initialise every Linear/Conv layer, He/Xavier/LeCun by activation")
        self._saved: list[tuple[torch.Tensor, torch.Tensor]] = []

    def apply(self, ctx: RepairContext) -> None:
        from trainmedic import initialize
        self._saved = []
        for model in ctx.models:
            plan = {li.name: li for li in initialize.plan(model)}
            for name, m in model.named_modules():
                li = plan.get(name)
                if (li is None or li.skipped or not isinstance(m, _LAYERS)
                        or not isinstance(getattr(m, "weight", None), torch.Tensor)):
                    continue
                if self.only_symmetric and not _symmetric(m.weight):
                    continue
                with torch.no_grad():
                    for p in (m.weight, m.bias):
                        if p is not None and p.requires_grad:
                            self._saved.append((p, p.detach().clone()))
                            for opt in ctx.monitor.table.optimizers:
                                opt.state.pop(p, None)
                initialize.init_layer(m, li.scheme, li.activation, slope=li.slope)
        if not self._saved:
            raise NotApplicable("no symmetric Linear/Conv layer to re-initialise")

    def undo(self, ctx: RepairContext) -> None:
        with torch.no_grad():
            for p, old in self._saved:
                p.copy_(old)
        self._saved = []


class _LeakyMode(TorchFunctionMode):
    """Inside a watched model's forward: functional ReLU calls become leaky ReLU. ``active``
    goes False when the forward ends; the mode leaves the stack if it is on top then (else it
    stays, inert, as trainmedic's sampling mode does)."""

    RELU = {F.relu, torch.relu, torch.Tensor.relu}
    RELU_ = {torch.relu_, torch.Tensor.relu_, *([F.relu_] if hasattr(F, "relu_") else [])}

    def __init__(self, slope: float) -> None:
        super().__init__()
        self.slope = slope
        self.active = True

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.active and func in self.RELU:
            return F.leaky_relu(args[0], self.slope)
        if self.active and func in self.RELU_:
            return F.leaky_relu_(args[0], self.slope)
        return func(*args, **(kwargs or {}))

    def leave(self) -> None:
        self.active = False
        n = torch._C._len_torch_function_stack()
        if n and torch._C._get_function_stack_at(n - 1) is self:
            self.__exit__(None, None, None)


class LeakyRelu(Remedy):
    """Swap ReLU for leaky ReLU (slope 0.01), so dead units get a gradient again: ``nn.ReLU``
    modules are replaced in their parents, and functional calls (``F.relu``, ``torch.relu``,
    ``x.relu()``) inside the watched models' forward go through a torch-function mode, entered
    after trainmedic's own forward hooks (on top of its sampling mode) and left before it."""

    id = "leaky_relu"
    cost = "moderate"
    description = "swap ReLU for LeakyReLU(0.01), module and functional calls"

    def __init__(self, slope: float = 0.01) -> None:
        self.slope = slope
        self._swapped: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []
        self._hooks: list[Any] = []

    def apply(self, ctx: RepairContext) -> None:
        for model in ctx.models:
            for parent in model.modules():
                for name, child in list(parent.named_children()):
                    if type(child) is torch.nn.ReLU:
                        parent._modules[name] = torch.nn.LeakyReLU(self.slope, inplace=child.inplace)
                        self._swapped.append((parent, name, child))
            modes: list[_LeakyMode] = []

            def enter(_m, _args, modes=modes):
                modes.append(_LeakyMode(self.slope))
                modes[-1].__enter__()

            def leave(_m, _args, _out, modes=modes):
                if modes:
                    modes.pop().leave()

            self._hooks += [model.register_forward_pre_hook(enter),
                            model.register_forward_hook(leave, always_call=True)]

    def undo(self, ctx: RepairContext) -> None:
        for h in self._hooks:
            h.remove()
        for parent, name, child in self._swapped:
            parent._modules[name] = child
        self._hooks, self._swapped = [], []


class RaiseDropout(Remedy):
    """More dropout against overfitting: every dropout layer's p to at least ``p`` (0.5, the
    rate Srivastava et al. 2014 found close to optimal for hidden units across tasks)."""

    id = "dropout_up"
    cost = "cheap"
    verify = "val"

    moves = ("dropout", 1)

    def __init__(self, p: float = 0.5) -> None:
        self.p = p
        self.description = f"raise every dropout layer's p to at least {p:g}"
        self._saved: list[tuple[torch.nn.Module, float]] = []

    def _layers(self, ctx: RepairContext) -> list[torch.nn.Module]:
        return [m for model in ctx.models for m in model.modules()
                if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p < self.p]

    def check(self, ctx: RepairContext) -> None:
        if not self._layers(ctx):
            raise NotApplicable("the model has no dropout layer below p=%g" % self.p)

    def apply(self, ctx: RepairContext) -> None:
        self.check(ctx)
        for m in self._layers(ctx):
            self._saved.append((m, m.p))
            m.p = self.p

    def undo(self, ctx: RepairContext) -> None:
        for m, p in self._saved:
            m.p = p
        self._saved = []


class _ModeSwitch(Remedy):
    """A forward pre-hook on each watched model that puts it in the right mode for the pass:
    evaluation (no gradients) or training (gradients on)."""

    cost = "cheap"
    verify = "finding"
    rollback = False

    def __init__(self) -> None:
        self._hooks: list[Any] = []

    def _pre(self, model: torch.nn.Module, _args: Any) -> None:
        raise NotImplementedError

    def apply(self, ctx: RepairContext) -> None:
        self._hooks = [m.register_forward_pre_hook(self._pre) for m in ctx.models]

    def undo(self, ctx: RepairContext) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []


class EvalModeForEvaluation(_ModeSwitch):
    """Evaluation forwards (no gradients) run in eval mode; the next forward with gradients puts
    the model back in training mode."""

    id = "eval_mode_for_evaluation"
    description = "model.eval() for evaluation forwards, model.train() again for training"

    def _pre(self, model: torch.nn.Module, _args: Any) -> None:
        grad = torch.is_grad_enabled()
        if model.training != grad:
            model.train(grad)


class TrainModeForTraining(_ModeSwitch):
    """Forwards with gradients (training) run in training mode."""

    id = "train_mode_for_training"
    description = "model.train() for training forwards (those with gradients)"

    def _pre(self, model: torch.nn.Module, _args: Any) -> None:
        if torch.is_grad_enabled() and not model.training:
            model.train()


class NormalizeInputs(Remedy):
    """Standardise the first input of each watched model, per channel (dim 1 of N,C,...) or per
    feature (last dim), with the training-input statistics the stream has gathered."""

    id = "normalize_inputs"
    cost = "cheap"
    description = "standardise the inputs per channel with the training data's mean and std"

    def __init__(self) -> None:
        self._hooks: list[Any] = []

    def apply(self, ctx: RepairContext) -> None:
        moments = ctx.monitor.stream._moments
        if moments is None:
            raise NotApplicable("no training-input statistics were gathered")
        n, s, ss = moments.double().cpu()
        mean = s / n
        std = (ss / n - mean ** 2).clamp_min(0).sqrt()
        std = torch.where(std > 1e-8, std, torch.ones_like(std))
        if bool(((mean.abs() < 0.1) & ((std - 1).abs() < 0.1)).all()):
            raise NotApplicable("the inputs are standardised already")

        placed: dict[tuple[Any, Any], tuple[torch.Tensor, torch.Tensor]] = {}

        def pre(_model, args):
            if not args or not torch.is_tensor(args[0]) or not args[0].is_floating_point():
                return None
            x = args[0]
            if x.dim() < 2:
                return None
            if x.dim() == 2 or x.dim() == 3:
                shape = (1,) * (x.dim() - 1) + (-1,)
            else:
                shape = (1, -1) + (1,) * (x.dim() - 2)
            c = x.shape[-1] if x.dim() in (2, 3) else x.shape[1]
            if c != len(mean):
                return None
            key = (x.device, x.dtype)                # copied to the device once, not per forward
            if key not in placed:
                placed[key] = (mean.to(x.device, x.dtype), std.to(x.device, x.dtype))
            m, sd = placed[key]
            return ((x - m.reshape(shape)) / sd.reshape(shape),) + tuple(args[1:])

        self._hooks = [m.register_forward_pre_hook(pre) for m in ctx.models]

    def undo(self, ctx: RepairContext) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

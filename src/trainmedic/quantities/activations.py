"""Activation, prediction and loss-input statistics from one scheduled forward pass.

On a sampled training step a ``TorchFunctionMode`` is pushed from the model's forward until the
backward starts. It sees every ReLU/sigmoid/tanh call, functional (``F.relu``, ``torch.relu``,
``x.relu()``) and module alike, and every loss function call, and records device-side stats
(dead units, saturation, probabilities fed to a logits loss). No activation is stored; the
mode is absent on all other steps, so the hot path pays nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.overrides import TorchFunctionMode

from trainmedic.params import user_name

_RELU = (F.relu, torch.relu, torch.relu_, F.relu6, torch.Tensor.relu, torch.Tensor.relu_)
_SIGMOID = (F.sigmoid, torch.sigmoid, torch.sigmoid_, torch.Tensor.sigmoid, torch.Tensor.sigmoid_)
_TANH = (F.tanh, torch.tanh, torch.tanh_, torch.Tensor.tanh, torch.Tensor.tanh_)
if hasattr(F, "relu_"):
    _RELU += (F.relu_,)
KIND: dict[Any, str] = {**{f: "relu" for f in _RELU}, **{f: "sigmoid" for f in _SIGMOID},
                        **{f: "tanh" for f in _TANH}}
_REGRESSION_LOSSES = (F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.huber_loss)
LOSSES = {F.cross_entropy: "cross_entropy", F.nll_loss: "nll_loss",
          F.binary_cross_entropy_with_logits: "binary_cross_entropy_with_logits",
          **{f: f.__name__ for f in _REGRESSION_LOSSES}}
LOSS_NAMES = set(LOSSES.values())


def loss_name(func: Any) -> str | None:
    """The name of a torch.nn.functional loss (also when trainmedic has wrapped it)."""
    name = getattr(func, "__name__", None)
    return name if name in LOSS_NAMES and getattr(func, "__module__", "") == "torch.nn.functional" else None

# Saturated: the local derivative is below 2.7% of its peak, i.e. |pre-activation| >= 5 for
# sigmoid and >= 2.5 for tanh; measured on outputs so in-place calls are covered too.
SIGMOID_LOW, SIGMOID_HIGH = float(torch.sigmoid(torch.tensor(-5.0))), float(torch.sigmoid(torch.tensor(5.0)))
TANH_EDGE = float(torch.tanh(torch.tensor(2.5)))
MIN_SAMPLES_PER_UNIT = 64


class _Mode(TorchFunctionMode):
    def __init__(self, sampler: "ActivationSampler") -> None:
        super().__init__()
        self.sampler = sampler

    def __torch_function__(self, func, _types, args=(), kwargs=None):
        kwargs = kwargs or {}
        s = self.sampler
        name = loss_name(func) if s.recording and not s.busy else None
        if name is not None:
            # before the call: a loss that is about to crash (labels out of range) is explained
            s.guard.call("loss-input checks", s.observe_loss, name, args, kwargs)
        out = func(*args, **kwargs)
        if s.recording and not s.busy and s.in_forward:
            kind = KIND.get(func)
            if kind is not None:
                s.guard.call("activation statistics", s.observe_activation, kind, out)
        return out


HIST_BINS = 40
HIST_SAMPLE = 4096
HIST_RANGE = {"relu": (0.0, 10.0), "sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}


class _Site:
    __slots__ = ("kind", "alive", "samples", "zero", "saturated", "calls", "param_calls_at", "hist")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.alive: torch.Tensor | None = None
        self.samples = 0
        self.zero: list[torch.Tensor] = []
        self.saturated: list[torch.Tensor] = []
        self.calls = 0
        self.param_calls_at = 0
        self.hist: torch.Tensor | None = None


class ActivationSampler:
    """Samples one training forward pass (plus its loss call) whenever ``due`` is set."""

    def __init__(self, guard) -> None:
        self.guard = guard
        self.due = True
        self.recording = False
        self.in_forward = False
        self.busy = False
        self.mode: _Mode | None = None
        self.names: dict[int, str] = {}
        self.sites: dict[str, _Site] = {}
        self.outputs: set[str] = set()
        self.layer_order: list[str] = []
        self.predictions: list[dict[str, torch.Tensor]] = []
        self.loss_issues: dict[str, dict[str, Any]] = {}
        self.first_loss: tuple[str, Any, Any, dict] | None = None   # (name, input, target, kwargs) of the first loss call
        self.on_first_loss: Callable[[], None] | None = None
        self.on_loss: Callable[[str, Any, Any, dict], None] | None = None   # each sampled loss call
        self.train_acc: list[torch.Tensor] = []       # accuracy of sampled training batches
        self._stack: list[str] = []
        self._counts: dict[tuple[str, str], int] = {}
        self._param_calls = 0
        self._has_params: dict[int, bool] = {}
        self._handles: list = []

    # -- lifecycle, driven by the monitor's root-module hooks -------------------------------
    def name_modules(self, root: torch.nn.Module, prefix: str = "") -> None:
        top = prefix.rstrip(".") or type(root).__name__
        for name, m in root.named_modules():
            own = user_name(name, root)        # wrappers' path components left out
            self.names[id(m)] = (prefix + own) if own else top

    def name_layer(self, module: Any, name: str, has_params: bool) -> None:
        """Name a layer that is not a torch submodule of the root (Keras layers), and say whether
        it holds weights (a layer with weights is where activations are measured)."""
        self.names[id(module)] = name
        self._has_params[id(module)] = has_params

    def begin(self, root: torch.nn.Module) -> None:
        if self.recording:
            self.end()
        self.due = False
        self._stack = [self.names.get(id(root), type(root).__name__)]
        self._counts = {}
        self._param_calls = 0
        self._handles = [register_module_forward_pre_hook(self._pre),
                         register_module_forward_hook(self._post, always_call=True)]
        self.mode = _Mode(self)
        self.mode.__enter__()
        self.recording = self.in_forward = True

    def forward_done(self, output: Any) -> None:
        """The root forward returned: mark output-side activations, take prediction stats."""
        self.in_forward = False
        self._remove_module_hooks()
        for name, site in self.sites.items():
            if site.calls and site.param_calls_at == self._param_calls:
                self.outputs.add(name)
        self.busy = True
        try:
            self._observe_predictions(output)
        finally:
            self.busy = False

    def end(self) -> None:
        """Stop recording; pop the mode if it is on top of the mode stack (else leave it inert)."""
        self.recording = self.in_forward = False
        self._remove_module_hooks()
        mode = self.mode
        if mode is None:
            return
        n = torch._C._len_torch_function_stack()
        if n and torch._C._get_function_stack_at(n - 1) is mode:
            mode.__exit__(None, None, None)
            self.mode = None

    def _remove_module_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _pre(self, module, _args) -> None:
        name = self.names.get(id(module), type(module).__name__)
        self._stack.append(name)
        has = self._has_params.get(id(module))
        if has is None:
            has = self._has_params[id(module)] = next(module.parameters(recurse=False), None) is not None
        if has:
            self._param_calls += 1
            if name not in self.layer_order:
                self.layer_order.append(name)

    def _post(self, module, _args, _out) -> None:
        if len(self._stack) > 1:
            self._stack.pop()

    # -- observations -------------------------------------------------------------------------
    def observe_activation(self, kind: str, out: Any) -> None:
        if not torch.is_tensor(out) or out.dim() == 0 or not out.is_floating_point():
            return
        self.busy = True
        try:
            owner = self._stack[-1]
            k = self._counts.get((owner, kind), 0)
            self._counts[(owner, kind)] = k + 1
            name = f"{owner}/{kind}{k}"
            site = self.sites.get(name) or self.sites.setdefault(name, _Site(kind))
            site.calls += 1
            site.param_calls_at = self._param_calls
            y = out.detach()
            lo, hi = HIST_RANGE[kind]
            flat = y.reshape(-1)
            if flat.numel() > HIST_SAMPLE:       # a strided subsample keeps the distribution
                flat = flat[:: flat.numel() // HIST_SAMPLE]
            h = torch.histc(flat.float(), bins=HIST_BINS, min=lo, max=hi)
            site.hist = h if site.hist is None else site.hist + h
            if kind == "relu":
                nz = y != 0
                if y.dim() == 3:                 # (N, L, F): features are the last dim
                    alive = nz.flatten(0, 1).any(0)
                elif y.dim() > 2:                # (N, C, ...): channels
                    alive = nz.flatten(2).any(2).any(0)
                else:                            # (N, F) or (F,)
                    alive = nz.any(0) if y.dim() == 2 else nz
                units = alive.shape[0]
                if site.alive is None or site.alive.shape[0] != units:
                    site.alive, site.samples = alive, 0
                else:
                    site.alive = site.alive | alive
                site.samples += y.numel() // max(units, 1)
                site.zero.append(1 - nz.float().mean())
            elif kind == "sigmoid":
                site.saturated.append(((y <= SIGMOID_LOW) | (y >= SIGMOID_HIGH)).float().mean())
            else:
                site.saturated.append((y.abs() >= TANH_EDGE).float().mean())
        finally:
            self.busy = False

    def observe_loss(self, name: str, args: tuple, kwargs: dict) -> None:
        x = args[0] if args else kwargs.get("input")
        target = args[1] if len(args) > 1 else kwargs.get("target")
        if self.first_loss is None and torch.is_tensor(x):
            self.first_loss = (name, x.detach(), target.detach() if torch.is_tensor(target) else target,
                               {k: v for k, v in kwargs.items() if k not in ("input", "target")})
            if self.on_first_loss is not None:
                self.on_first_loss()
        if self.on_loss is not None and torch.is_tensor(x):
            self.on_loss(name, x, target, kwargs)
        if not torch.is_tensor(x) or not x.is_floating_point() or x.numel() == 0:
            return
        self.busy = True
        try:
            source, graph = _producers(x), x.requires_grad
            x = x.detach()
            if name in ("cross_entropy", "nll_loss") and x.dim() == 2 and torch.is_tensor(target) \
                    and not target.is_floating_point() and target.shape == x.shape[:1]:
                counted = target != kwargs.get("ignore_index", -100)
                hits = ((x.argmax(1) == target) & counted).sum()
                self.train_acc.append(hits.float() / counted.sum().clamp_min(1))
            issue = None
            if name == "cross_entropy" and x.dim() >= 2 and source & {"Softmax"}:
                rows = x.sum(1)
                flag = (x.min() >= 0) & (x.max() <= 1) & ((rows - 1).abs().max() < 1e-3)
                issue = (flag, "softmax outputs (rows in [0, 1] summing to 1) were passed to "
                               "cross_entropy, which applies log-softmax itself")
            elif name == "nll_loss" and graph and not source & {"LogSoftmax", "Log"}:
                flag = x.max() > 1e-6
                issue = (flag, "nll_loss got positive scores that no log_softmax produced; it "
                               "expects log-probabilities")
            elif name == "binary_cross_entropy_with_logits" and x.numel() >= 16 and source & {"Sigmoid"}:
                flag = (x.min() >= 0) & (x.max() <= 1) & (x.max() > 0)
                issue = (flag, "sigmoid outputs were passed to binary_cross_entropy_with_logits, "
                               "which applies sigmoid itself")
            elif name in {f.__name__ for f in _REGRESSION_LOSSES} and torch.is_tensor(target) \
                    and tuple(target.shape) != tuple(x.shape):
                issue = (True, f"{name} got prediction shape {tuple(x.shape)} and target shape "
                               f"{tuple(target.shape)}: they broadcast to "
                               f"{tuple(torch.broadcast_shapes(x.shape, target.shape))} silently")
            if issue is not None:
                entry = self.loss_issues.setdefault(name, {"flags": [], "message": issue[1]})
                entry["flags"].append(issue[0])
                entry["shape"] = tuple(x.shape)
        finally:
            self.busy = False

    def _observe_predictions(self, output: Any) -> None:
        out = main_tensor(output)
        if out is None or out.dim() == 0 or out.shape[0] < 8 or not out.is_floating_point():
            return
        x = out.detach().float()
        stats = {"spread": (x - x[:1]).abs().amax(), "scale": x.abs().amax(),
                 "batch": torch.tensor(float(x.shape[0]))}
        d = -1 if x.dim() == 3 else 1
        if x.dim() >= 2 and x.shape[d] >= 2:
            pred = x.argmax(d).flatten()
            stats["top_share"] = torch.bincount(pred, minlength=x.shape[d]).max().float() / pred.numel()
        self.predictions.append(stats)

    # -- host read, once per tick -----------------------------------------------------------------
    def discard(self) -> None:
        """Drop what was sampled since the last tick (a rollback, a remedy applied after the
        first forward: that evidence is not about the run that goes on)."""
        self.sites, self.outputs, self.predictions, self.loss_issues = {}, set(), [], {}
        self.train_acc = []

    def take(self) -> tuple[dict[str, dict[str, Any]], list[dict[str, float]], dict[str, dict[str, Any]]]:
        """Host copies of everything sampled since the last tick (one device-to-host copy)."""
        pending: list[tuple[dict, str, torch.Tensor]] = []
        acts: dict[str, dict[str, Any]] = {}
        for name, site in self.sites.items():
            row: dict[str, Any] = {"kind": site.kind, "output": name in self.outputs}
            if site.kind == "relu":
                if site.alive is None or site.samples < MIN_SAMPLES_PER_UNIT:
                    continue
                row["units"], row["samples_per_unit"] = int(site.alive.numel()), site.samples
                pending += [(row, "dead_fraction", 1 - site.alive.float().mean()),
                            (row, "zero_fraction", torch.stack(site.zero).mean())]
                site.alive, site.samples, site.zero = None, 0, []
            else:
                if not site.saturated:
                    continue
                pending.append((row, "saturated_fraction", torch.stack(site.saturated).mean()))
                site.saturated = []
            if site.hist is not None:
                row["hist_range"] = list(HIST_RANGE[site.kind])
                pending.append((row, "hist", site.hist / site.hist.sum().clamp_min(1)))
                site.hist = None
            acts[name] = row
        preds = [{} for _ in self.predictions]
        for row, p in zip(preds, self.predictions):
            pending += [(row, k, v) for k, v in p.items()]
        self.predictions = []
        issues = {}
        for name, entry in self.loss_issues.items():
            row = {"message": entry["message"], "calls": len(entry["flags"]), "shape": entry.get("shape")}
            flags = [f for f in entry["flags"] if torch.is_tensor(f)]
            row["hits"] = sum(1 for f in entry["flags"] if f is True)
            if flags:
                pending.append((row, "tensor_hits", torch.stack(flags).sum()))
            issues[name] = row
        self.loss_issues = {}
        if pending:
            dev = pending[0][2].device
            flat = [v.float().to(dev).reshape(-1) for _, _, v in pending]
            host = torch.cat(flat).cpu().tolist()
            at = 0
            for (row, key, _), v in zip(pending, flat):
                n = v.numel()
                row[key] = host[at] if key != "hist" else [round(x, 5) for x in host[at:at + n]]
                at += n
        for row in issues.values():
            row["hits"] += int(row.pop("tensor_hits", 0))
        return acts, preds, issues


# Autograd nodes that a probability passes through unchanged in kind (reshapes, clamps, a
# small epsilon added); a layer (matmul, convolution) ends the search.
_PASS_THROUGH = frozenset((
    "View", "UnsafeView", "Reshape", "ReshapeAlias", "AsStrided", "Squeeze", "Unsqueeze", "Clamp",
    "ClampMin", "ClampMax", "Add", "Sub", "Mul", "Div", "Select", "Slice", "Index", "Permute",
    "Transpose", "T", "Expand", "ToCopy", "Clone", "Cat", "Stack", "Split", "SplitWithSizes",
    "Narrow", "Where", "MaskedFill", "Contiguous"))
_PRODUCERS = ("LogSoftmax", "Softmax", "Sigmoid", "Log")


def _producers(t: torch.Tensor, depth: int = 6) -> set[str]:
    """Which of Softmax/LogSoftmax/Sigmoid/Log produced ``t``, read from its autograd graph
    through shape and elementwise ops (structural evidence, unlike a value range that a
    collapsed model shows as well). Empty without a graph."""
    found: set[str] = set()
    frontier = [t.grad_fn] if t.grad_fn is not None else []
    for _ in range(depth):
        nxt = []
        for node in frontier:
            kind = re.sub(r"Backward\d*$", "", type(node).__name__).lstrip("_")
            if kind in _PRODUCERS:
                found.add(kind)
            elif kind in _PASS_THROUGH:
                nxt += [f for f, _ in node.next_functions if f is not None]
        frontier = nxt
    return found


def main_tensor(output: Any) -> torch.Tensor | None:
    """The tensor that holds the predictions in a model's output (tensor, tuple, dict, HF output)."""
    if torch.is_tensor(output):
        return output
    if isinstance(output, Mapping):
        if torch.is_tensor(output.get("logits")):
            return output["logits"]
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        for item in output:
            if torch.is_tensor(item) and item.is_floating_point():
                return item
    return None


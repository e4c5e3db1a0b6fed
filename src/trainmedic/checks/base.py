"""The checkup's building blocks: the context every check reads, a check's result, the
registry of named checks, and the guard that leaves the user's objects exactly as they were.

A check is ``check_<name>(ctx) -> list[Finding] | None`` decorated with ``@check``; it fails
when it returns findings, passes on None/[], and is skipped by raising ``Skip(reason)``.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from trainmedic.findings import Finding

CLASSIFICATION_LOSSES = ("CrossEntropyLoss", "NLLLoss", "cross_entropy", "nll_loss")
BINARY_LOSSES = ("BCEWithLogitsLoss", "BCELoss", "binary_cross_entropy_with_logits",
                 "binary_cross_entropy")
REGRESSION_LOSSES = ("MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss", "mse_loss", "l1_loss",
                     "smooth_l1_loss", "huber_loss")


class Skip(Exception):
    """Raised by a check that does not apply; the message is the reason shown to the user."""


@dataclass
class CheckResult:
    name: str
    status: str                       # passed | failed | skipped | error
    seconds: float
    reason: str = ""
    findings: list[Finding] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "seconds": round(self.seconds, 3),
                "reason": self.reason, "findings": [f.id for f in self.findings],
                "details": self.details}


@dataclass
class CheckSpec:
    name: str
    fn: Callable[["CheckContext"], "list[Finding] | None"]
    ids: tuple[str, ...]
    cheap: bool       # also run on the first training batch of every watched run (no model copy)


REGISTRY: dict[str, CheckSpec] = {}


def check(name: str, ids: Iterable[str], cheap: bool = False):
    def register(fn):
        REGISTRY[name] = CheckSpec(name, fn, tuple(ids), cheap)
        return fn
    return register


def split_batch(batch: Any) -> tuple[Any, Any]:
    """(inputs, target) of a batch: (x, y, ...) tuples/lists, dicts with common key names, or a
    bare tensor (no target)."""
    if torch.is_tensor(batch):
        return batch, None
    if isinstance(batch, Mapping):
        x = next((batch[k] for k in ("x", "input", "inputs", "image", "images", "pixel_values",
                                     "input_ids", "features") if k in batch), None)
        y = next((batch[k] for k in ("y", "label", "labels", "target", "targets") if k in batch), None)
        if x is None:
            raise ValueError(f"batch keys {sorted(batch)} name no input; expected one of x, input, "
                             f"inputs, image(s), pixel_values, input_ids, features (or pass batch_fn)")
        return x, y
    if isinstance(batch, (list, tuple)) and batch:
        return batch[0], (batch[1] if len(batch) > 1 else None)
    raise ValueError(f"batch of type {type(batch).__name__} is not (inputs, target), a dict or a "
                     f"tensor; pass batch_fn=lambda batch: (inputs, target)")


def loss_name(loss_fn: Any) -> str:
    return type(loss_fn).__name__ if isinstance(loss_fn, nn.Module) else getattr(loss_fn, "__name__", "")


@dataclass
class CheckContext:
    """What the checks may read. Batches are pulled once (RNG restored by the caller's guard)."""

    model: nn.Module
    loss_fn: Callable[[Any, Any], torch.Tensor]
    train_loader: Iterable | None = None
    optimizer: torch.optim.Optimizer | None = None
    val_loader: Iterable | None = None
    batch_fn: Callable[[Any], tuple[Any, Any]] = split_batch
    max_batches: int = 20
    details: dict[str, Any] = field(default_factory=dict)   # per check name, shown in the report
    loss_inputs: tuple[Any, Any] | None = None    # (input, target) of a captured real loss call
    loss_kwargs: dict[str, Any] = field(default_factory=dict)   # ... and its keyword arguments
    _train: list[tuple[Any, Any]] | None = None
    _val: list[tuple[Any, Any]] | None = None
    _out: Any = None
    _init_losses: list[float] | None = None

    @property
    def device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def _take(self, loader, n) -> list[tuple[Any, Any]]:
        out = []
        for batch in loader:
            x, y = self.batch_fn(batch)
            out.append((_to(x, self.device), _to(y, self.device)))
            if len(out) >= n:
                break
        return out

    def train_batches(self) -> list[tuple[Any, Any]]:
        return self._batches("train")

    def val_batches(self) -> list[tuple[Any, Any]]:
        return self._batches("val")

    def _batches(self, split: str) -> list[tuple[Any, Any]]:
        """Up to ``max_batches`` batches of ``split``, pulled once (or given directly)."""
        cached, loader = getattr(self, f"_{split}"), getattr(self, f"{split}_loader")
        if cached is None:
            if loader is None:
                raise Skip(f"no {split}_loader given")
            cached = self._take(loader, self.max_batches)
            setattr(self, f"_{split}", cached)
        if not cached:
            raise Skip(f"{split}_loader yielded no batches")
        return cached

    def task(self) -> str:
        """classification | binary | regression | unknown, from the loss function's type."""
        name = loss_name(self.loss_fn)
        if name in CLASSIFICATION_LOSSES:
            return "classification"
        if name in BINARY_LOSSES:
            return "binary"
        if name in REGRESSION_LOSSES:
            return "regression"
        return "unknown"

    def output_at_init(self) -> torch.Tensor:
        """The model's output on the first training batch, from a copy in eval mode."""
        if self._out is None:
            x, _ = self.train_batches()[0]
            model = copy.deepcopy(self.model).eval()
            with torch.no_grad():
                from trainmedic.quantities.activations import main_tensor
                out = main_tensor(model(x))
            if out is None:
                raise Skip("the model's output holds no floating tensor")
            self._out = out.float()
        return self._out

    def initial_losses(self) -> list[float]:
        """The loss at initialisation: from ``loss_inputs`` when a real loss call was captured,
        else from a copy of the model (eval mode) on up to five training batches."""
        if self._init_losses is None:
            with torch.no_grad():
                if self.loss_inputs is not None:
                    self._init_losses = [float(self.loss_fn(*self.loss_inputs, **self.loss_kwargs))]
                else:
                    model = copy.deepcopy(self.model).eval()
                    self._init_losses = [float(self.loss_fn(model(x), y)) for x, y in self.train_batches()[:5]]
        return self._init_losses

    def ignore_index(self) -> int:
        """The label value the loss skips: the captured call's ``ignore_index``, the loss
        module's, or PyTorch's default -100."""
        return int(self.loss_kwargs.get("ignore_index", getattr(self.loss_fn, "ignore_index", -100)))

    def num_classes(self) -> int:
        out = self.output_at_init()
        if out.dim() < 2:
            raise Skip(f"output shape {tuple(out.shape)} has no class dimension")
        return int(out.shape[1])


def _to(value: Any, device: torch.device) -> Any:
    if torch.is_tensor(value):
        return value.to(device)
    if isinstance(value, Mapping):
        return {k: _to(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to(v, device) for v in value)
    return value


@contextmanager
def rng_kept() -> Iterator[None]:
    """Python's, NumPy's and torch's (CPU and CUDA) global RNG states as they were."""
    state = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
             torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    try:
        yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.set_rng_state(state[2])
        if state[3] is not None:
            torch.cuda.set_rng_state_all(state[3])


@contextmanager
def preserved(model: nn.Module, optimizer: torch.optim.Optimizer | None, loaders: Iterable = ()):
    """Snapshot and restore everything a check could disturb: the model's parameters, buffers,
    gradients and train/eval flags, the optimizer's state, and every RNG (Python, NumPy, torch
    CPU and CUDA, and generators owned by the loaders and their samplers)."""
    state = copy.deepcopy(model.state_dict())
    grads = {n: (None if p.grad is None else p.grad.detach().clone()) for n, p in model.named_parameters()}
    modes = {m: m.training for m in model.modules()}
    opt_state = copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None
    gens = [g for ld in loaders if ld is not None
            for g in (getattr(ld, "generator", None), getattr(getattr(ld, "sampler", None), "generator", None))
            if isinstance(g, torch.Generator)]
    gen_states = [g.get_state() for g in gens]
    try:
        with rng_kept():
            yield
    finally:
        model.load_state_dict(state)
        for n, p in model.named_parameters():
            p.grad = grads.get(n)
        for m, training in modes.items():
            m.training = training
        if optimizer is not None:
            optimizer.load_state_dict(opt_state)
        for g, s in zip(gens, gen_states):
            g.set_state(s)


def fresh_optimizer(optimizer: torch.optim.Optimizer | None, params, *, lr: float | None = None,
                    weight_decay: float | None = None) -> torch.optim.Optimizer:
    """A new optimizer of the user's class and settings (Adam 1e-3 when none) for ``params``,
    built as trainmedic's own work (a tuning trial's values do not reach it)."""
    from trainmedic._patches import own_work
    with own_work():
        if optimizer is None:
            return torch.optim.Adam(params, lr=lr or 1e-3)
        defaults = dict(optimizer.defaults)
        for key in ("foreach", "fused", "capturable", "differentiable"):
            defaults.pop(key, None)
        defaults["lr"] = lr if lr is not None else optimizer.param_groups[0]["lr"]
        if weight_decay is not None and "weight_decay" in defaults:
            defaults["weight_decay"] = weight_decay
        return type(optimizer)(params, **defaults)


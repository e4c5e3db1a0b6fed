"""Remedies on what the loss function gets: class weights, logits instead of probabilities,
matching shapes. They act through ``trainmedic._patches.loss_transforms`` (every
``torch.nn.functional`` loss call, so ``nn.CrossEntropyLoss`` modules too)."""

from __future__ import annotations

from typing import Any

import torch

from trainmedic import _patches
from trainmedic.repair.remedies import NotApplicable, RepairContext, Remedy


class _LossTransform(Remedy):
    cost = "cheap"

    def __init__(self) -> None:
        self._transform = None

    def _install(self, transform) -> None:
        self._transform = transform
        _patches.loss_transforms.append(transform)

    def undo(self, ctx: RepairContext) -> None:
        if self._transform is not None and self._transform in _patches.loss_transforms:
            _patches.loss_transforms.remove(self._transform)
        self._transform = None


def release(remedies: list[Remedy]) -> None:
    """The run ended: take out the loss transforms among ``remedies`` (they belong to this
    run's loss calls, not to the next monitor's)."""
    for r in remedies:
        if isinstance(r, _LossTransform):
            r.undo(None)


def _arg(args: tuple, kwargs: dict, i: int, name: str) -> Any:
    return args[i] if len(args) > i else kwargs.get(name)


def _with_input(args: tuple, kwargs: dict, x: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (x,) + tuple(args[1:]), kwargs
    return args, {**kwargs, "input": x}


class ClassWeights(_LossTransform):
    """Weight the training cross-entropy by inverse class frequency (``n / (K * count_k)``, from
    the labels the stream has counted) where the loss has no weights of its own. Evaluation
    losses stay unweighted, so the validation numbers keep their meaning."""

    id = "class_weights"
    description = "weight the training loss by inverse class frequency"
    verify = "finding"

    def apply(self, ctx: RepairContext) -> None:
        counts = ctx.monitor.stream.label_counts()
        if counts is None or len(counts) < 2:
            raise NotApplicable("no class counts to weight by")
        counts = torch.as_tensor(counts, dtype=torch.float32).clamp_min(1)
        weight = counts.sum() / (len(counts) * counts)
        cache: dict[Any, torch.Tensor] = {}

        def transform(name, args, kwargs, evaluating):
            if evaluating or name != "cross_entropy" or kwargs.get("weight") is not None:
                return args, kwargs
            x = _arg(args, kwargs, 0, "input")
            if not torch.is_tensor(x) or x.dim() < 2 or x.shape[1] != len(weight) or len(args) > 2:
                return args, kwargs
            key = (x.device, x.dtype)
            if key not in cache:
                cache[key] = weight.to(x.device, x.dtype)
            return args, {**kwargs, "weight": cache[key]}

        self._install(transform)


class LossGetsLogits(_LossTransform):
    """Give the loss what it expects: log-probabilities instead of softmax outputs for
    ``cross_entropy``/``nll_loss`` (``cross_entropy(log p)`` is exactly the cross-entropy of
    ``p``), logits instead of sigmoid outputs for ``binary_cross_entropy_with_logits``, and a
    prediction reshaped to the target's shape where a regression loss would broadcast."""

    id = "loss_gets_logits"
    description = ("feed the loss log-probabilities/logits instead of softmax/sigmoid outputs, "
                   "and predictions shaped like the targets")

    def apply(self, ctx: RepairContext) -> None:
        def transform(name, args, kwargs, evaluating):
            x = _arg(args, kwargs, 0, "input")
            if not torch.is_tensor(x) or not x.is_floating_point():
                return args, kwargs
            if name in ("cross_entropy", "nll_loss") and x.dim() >= 2:
                probs = (x.min() >= 0) & ((x.sum(1) - 1).abs().max() < 1e-3)
                x = torch.where(probs, x.clamp_min(1e-12).log(), x)
            elif name == "binary_cross_entropy_with_logits":
                probs = (x.min() >= 0) & (x.max() <= 1)
                p = x.clamp(1e-7, 1 - 1e-7)
                x = torch.where(probs, p.log() - (-p).log1p(), x)
            elif name in ("mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss"):
                y = _arg(args, kwargs, 1, "target")
                if not torch.is_tensor(y) or y.shape == x.shape or y.numel() != x.numel():
                    return args, kwargs
                x = x.reshape(y.shape)
            else:
                return args, kwargs
            return _with_input(args, kwargs, x)

        self._install(transform)

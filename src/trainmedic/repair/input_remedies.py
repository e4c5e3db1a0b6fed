"""Remedies on what the model is fed: augmentation of the training inputs against overfitting."""

from __future__ import annotations

from typing import Any

import torch

from trainmedic._hooks import input_keyword
from trainmedic.augment.image import translate
from trainmedic.repair.remedies import NotApplicable, Remedy, RepairContext


class AugmentInputs(Remedy):
    """Against overfitting on images: every training forward of a watched model (training mode,
    gradients on) gets its batch of images ``(B, C, H, W)`` (its first argument, or the first of
    the keyword inputs the monitor reads, e.g. ``pixel_values``) shifted by up to ``max_shift`` of
    the side, per sample, edges repeated (:func:`trainmedic.augment.translate`). A shift of a
    few pixels keeps the label of nearly every image task, unlike flips (a "6" is not a "9")
    or crops that can cut the object out; evaluation forwards are left alone. The shifts come
    from a generator of the remedy's own, so the run's random stream is the user's."""

    id = "augment_inputs"
    cost = "moderate"                 # a gather over every training batch
    verify = "val"
    from_start = False                # `trainmedic fix` has no source rewrite for it
    moves = ("augmentation", 1)
    new_objective = True              # the loss on shifted images starts higher than at the snapshot

    def __init__(self, max_shift: float = 0.125, seed: int = 0) -> None:
        self.max_shift = max_shift
        self.seed = seed
        self.description = f"shift each training image by up to {max_shift:.1%} of its side (edges repeated)"
        self._hooks: list[Any] = []

    def check(self, ctx: RepairContext) -> None:
        kind = ctx.monitor.hooks.train_input_kind
        if kind is None or not (kind[1].is_floating_point and len(kind[0]) == 4 and min(kind[0][-2:]) >= 4):
            raise NotApplicable(f"the training inputs ({tuple(kind[0]) if kind else 'not tensors'}) "
                                f"are not batches of images (B, C, H, W)")

    def apply(self, ctx: RepairContext) -> None:
        self.check(ctx)
        g = torch.Generator().manual_seed(self.seed)    # on the CPU: drawing a seed never waits for a GPU

        def pre(model: torch.nn.Module, args: tuple, kwargs: dict) -> tuple | None:
            if not (model.training and torch.is_grad_enabled()):
                return None
            key = 0 if args else input_keyword(kwargs)
            x = args[0] if args else kwargs.get(key)
            if not (torch.is_tensor(x) and x.is_floating_point() and x.dim() == 4):
                return None
            x = translate(x, max_shift=self.max_shift, generator=g)
            return ((x,) + tuple(args[1:]), kwargs) if args else (args, {**kwargs, key: x})

        self._hooks = [m.register_forward_pre_hook(pre, with_kwargs=True) for m in ctx.models]

    def undo(self, ctx: RepairContext) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

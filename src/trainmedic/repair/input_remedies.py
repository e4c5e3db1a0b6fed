"""Remedies on what the model is fed: augmentation of the training inputs against overfitting."""

from __future__ import annotations

from typing import Any

import torch

from trainmedic.augment.image import translate
from trainmedic.repair.remedies import NotApplicable, Remedy, RepairContext


class AugmentInputs(Remedy):
    """Against overfitting on images: every training forward of a watched model (training mode,
    gradients on) gets its batch of images ``(B, C, H, W)`` shifted by up to ``max_shift`` of
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

    def apply(self, ctx: RepairContext) -> None:
        x = ctx.monitor.hooks.train_input_meta
        if not (torch.is_tensor(x) and x.is_floating_point() and x.dim() == 4 and min(x.shape[-2:]) >= 4):
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise NotApplicable(f"the training inputs ({shape}) are not batches of images (B, C, H, W)")
        g = torch.Generator().manual_seed(self.seed)    # on the CPU: drawing a seed never waits for a GPU

        def pre(model: torch.nn.Module, args: tuple) -> tuple | None:
            if not (model.training and torch.is_grad_enabled() and args and torch.is_tensor(args[0])):
                return None
            x = args[0]
            if not x.is_floating_point() or x.dim() != 4:
                return None
            return (translate(x, max_shift=self.max_shift, generator=g),) + tuple(args[1:])

        self._hooks = [m.register_forward_pre_hook(pre) for m in ctx.models]

    def undo(self, ctx: RepairContext) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

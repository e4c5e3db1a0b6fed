"""MixUp and CutMix: each sample is combined with another sample of the batch (a random
permutation), with its own mixing weight ``lam ~ Beta(alpha, alpha)``, and the targets become
the matching class probabilities ``lam * onehot(y) + (1 - lam) * onehot(y[partner])``, rows
summing to 1. Train on them with ``F.cross_entropy(logits, soft_targets)`` (torch takes class
probabilities as targets)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainmedic.augment._common import check_labels, check_number, check_tensor, seeded


def _soft_targets(y: torch.Tensor, partner: torch.Tensor, lam: torch.Tensor, num_classes: int) -> torch.Tensor:
    lam = lam.to(torch.get_default_dtype())[:, None]
    return lam * F.one_hot(y, num_classes) + (1 - lam) * F.one_hot(y[partner], num_classes)


def mixup(x: torch.Tensor, y: torch.Tensor, *, num_classes: int, alpha: float = 0.2,
          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp (Zhang et al., 2018): ``lam * x + (1 - lam) * x[partner]`` on floating-point inputs
    of any shape ``(B, ...)``. Returns ``(mixed_inputs, soft_targets)``, the targets ``(B,
    num_classes)`` in torch's default dtype."""
    check_tensor("x", x, tuple(range(1, 9)), "of samples (B, ...)")
    num_classes = check_labels(y, len(x), num_classes)
    alpha = check_number("alpha", alpha, 0, low_open=True)
    with seeded(generator, x.device):
        lam = torch.distributions.Beta(alpha, alpha).sample((len(x),)).to(x.device)
        partner = torch.randperm(len(x), device=x.device)
    w = lam.to(x.dtype).reshape(-1, *[1] * (x.ndim - 1))
    return w * x + (1 - w) * x[partner], _soft_targets(y, partner, lam, num_classes)


def cutmix(x: torch.Tensor, y: torch.Tensor, *, num_classes: int, alpha: float = 1.0,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix (Yun et al., 2019): a box of the partner pasted over each sample, in the last two
    dimensions of ``x`` ``(B, ..., H, W)`` (images, spectrograms). The box covers a fraction ``1 -
    lam`` of the area, its centre uniform and its sides clipped at the border; ``lam`` is then the
    area left, exactly. Returns ``(mixed_inputs, soft_targets)`` as :func:`mixup`."""
    check_tensor("x", x, tuple(range(3, 9)), "of samples (B, ..., H, W)", floating=None)
    num_classes = check_labels(y, len(x), num_classes)
    alpha = check_number("alpha", alpha, 0, low_open=True)
    B, H, W = len(x), x.shape[-2], x.shape[-1]
    with seeded(generator, x.device):
        lam = torch.distributions.Beta(alpha, alpha).sample((B,)).to(x.device)
        partner = torch.randperm(B, device=x.device)
        centre = torch.rand(B, 2, device=x.device)
    size = torch.tensor([H, W], device=x.device)
    centre, half = centre * size, (1 - lam).sqrt()[:, None] * size / 2
    start, stop = (centre - half).round(), (centre + half).round()          # (B, 2): rows, columns
    rows, cols = (torch.arange(n, device=x.device) for n in (H, W))
    rows = (rows >= start[:, :1]) & (rows < stop[:, :1])
    cols = (cols >= start[:, 1:]) & (cols < stop[:, 1:])
    box = (rows[:, :, None] & cols[:, None, :]).reshape(B, *[1] * (x.ndim - 3), H, W)
    lam = 1 - rows.sum(1) * cols.sum(1) / (H * W)
    return torch.where(box, x[partner], x), _soft_targets(y, partner, lam, num_classes)

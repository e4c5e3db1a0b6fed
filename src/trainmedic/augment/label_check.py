"""Does an augmentation keep the labels? A horizontal flip turns some digits into other symbols,
a crop can cut the object out: the model that classifies the clean samples well then fails on
the augmented ones. :func:`check_label_preservation` measures that accuracy gap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from trainmedic.augment._common import check_int, check_number, check_tensor


@dataclass(frozen=True)
class LabelPreservation:
    """``verdict``: ``"preserved"`` (gap within the tolerance), ``"degraded"``, ``"changed"``
    (more than half of what the model knows above chance is lost), or ``"inconclusive"`` (the
    model is too close to chance on the clean samples to tell); ``message`` says it in words."""

    clean_acc: float
    augmented_acc: float
    gap: float
    verdict: str
    message: str


def check_label_preservation(model: torch.nn.Module, augment: Callable[[torch.Tensor], torch.Tensor],
                             x: torch.Tensor, y: torch.Tensor, *, tolerance: float = 0.05,
                             batch_size: int = 512) -> LabelPreservation:
    """The accuracy of ``model`` (returning class logits) on ``x`` and on ``augment(x)``, against
    the labels ``y``, in eval mode under ``no_grad`` (every module's mode restored afterwards).
    Use a model that classifies ``x`` well, and an augmentation that always applies (``p=1``):
    with ``p=0.5`` half the samples are untouched and the gap halves. A model never trained with
    the augmentation may also lose accuracy to a label-preserving one that is strong."""
    check_tensor("x", x, tuple(range(1, 9)), "of samples (B, ...)", floating=None)
    check_tensor("y", y, (1,), "of class indices (B,)", floating=False)
    if len(y) != len(x) or len(x) == 0:
        raise ValueError(f"y has {len(y)} labels for {len(x)} samples; expected one per sample, at least one")
    tolerance = check_number("tolerance", tolerance, 0, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    clean = augmented = 0
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                xb, yb = x[i:i + batch_size], y[i:i + batch_size]
                logits = model(xb)
                if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
                    raise ValueError(f"model returned {tuple(getattr(logits, 'shape', ()))}; expected class "
                                     f"logits (B, C)")
                clean += int((logits.argmax(-1) == yb).sum())
                augmented += int((model(augment(xb)).argmax(-1) == yb).sum())
    finally:
        for m, training in modes:
            m.training = training
    clean_acc, augmented_acc = clean / len(x), augmented / len(x)
    gap, chance = clean_acc - augmented_acc, 1 / logits.shape[-1]
    said = f"accuracy {clean_acc:.3f} on the clean samples, {augmented_acc:.3f} on the augmented ones"
    if clean_acc - chance < 0.2:
        verdict, why = "inconclusive", f"the model is too close to chance ({chance:.3f}) on clean samples to tell"
    elif gap <= tolerance:
        verdict, why = "preserved", "the augmentation keeps what the model recognises"
    elif gap > (clean_acc - chance) / 2:
        verdict, why = ("changed", "the augmentation likely changes the labels or removes the object "
                        "(e.g. flipping or rotating digits, a crop that misses it): look at its preview")
    else:
        verdict, why = ("degraded", "the augmentation may change some labels, or is stronger than what the "
                        "model was trained on: look at its preview")
    return LabelPreservation(clean_acc, augmented_acc, gap, verdict, f"{said}: {why}")

"""Image augmentations through kornia (the ``augment`` extra; :func:`translate` is plain torch),
on a batch ``(B, C, H, W)`` of floating-point images (values in [0, 1] for :func:`color_jitter`),
on the batch's device, each sample drawn independently. ``p``: the probability that a sample is
transformed. ``generator``: see :mod:`trainmedic.augment`."""

from __future__ import annotations

import numbers
from typing import Any, Callable

import torch

from trainmedic.augment._common import check_interval, check_number, check_tensor, seeded
from trainmedic.integrations import require

IMAGES = "of images (B, C, H, W)"


def _apply(x: torch.Tensor, p: float, generator: torch.Generator | None,
           make: Callable[[Any], torch.nn.Module]) -> torch.Tensor:
    """``make(kornia.augmentation)``, the augmentation module, applied to ``x``."""
    check_tensor("x", x, (4,), IMAGES)
    check_number("p", p, 0, 1)
    K = require("kornia.augmentation", "augment")
    aug = make(K).to(x.device)
    with seeded(generator, x.device):
        return aug(x)


def hflip(x: torch.Tensor, *, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror left-right."""
    return _apply(x, p, generator, lambda K: K.RandomHorizontalFlip(p=p))


def vflip(x: torch.Tensor, *, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror top-bottom."""
    return _apply(x, p, generator, lambda K: K.RandomVerticalFlip(p=p))


def random_resized_crop(x: torch.Tensor, *, scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), p: float = 1.0,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """A crop covering a fraction ``scale`` of the image with aspect ratio ``ratio``, resized back
    to (H, W) (Inception-style)."""
    scale = check_interval("scale", scale, 0, 1, low_open=True)
    ratio = check_interval("ratio", ratio, 0, low_open=True)
    return _apply(x, p, generator,
                  lambda K: K.RandomResizedCrop(tuple(x.shape[-2:]), scale=scale, ratio=ratio, p=p))


def rotate(x: torch.Tensor, *, degrees: "float | tuple[float, float]" = 15.0, p: float = 1.0,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Rotate by an angle drawn uniformly from ``(-degrees, degrees)``, or from ``degrees`` when
    it is a pair (``(90, 90)``: exactly 90 degrees counter-clockwise); corners filled with 0."""
    if isinstance(degrees, numbers.Real):
        degrees = (-abs(check_number("degrees", degrees)), abs(degrees))
    degrees = check_interval("degrees", degrees, -360, 360)
    return _apply(x, p, generator, lambda K: K.RandomRotation(degrees, p=p))


def color_jitter(x: torch.Tensor, *, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2,
                 hue: float = 0.0, p: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Brightness, contrast and saturation factors drawn from ``[1 - v, 1 + v]``, a hue shift from
    ``[-hue, hue]`` (a fraction of the colour circle), as torchvision's ColorJitter. Saturation
    and hue need RGB images (C = 3); on other images set them to 0."""
    for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        check_number(name, value, 0, 1)
    check_number("hue", hue, 0, 0.5)
    check_tensor("x", x, (4,), IMAGES)
    if x.shape[1] != 3 and (saturation or hue):
        raise ValueError(f"x has {x.shape[1]} channels; saturation={saturation!r} and hue={hue!r} need "
                         f"RGB images (C = 3): set them to 0 for other images")
    return _apply(x, p, generator, lambda K: K.ColorJitter(brightness, contrast, saturation, hue, p=p))


def random_erasing(x: torch.Tensor, *, scale: tuple[float, float] = (0.02, 0.33),
                   ratio: tuple[float, float] = (0.3, 3.3), value: float = 0.0, p: float = 0.5,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Cutout / random erasing: a rectangle covering a fraction ``scale`` of the image, aspect
    ratio ``ratio``, set to ``value``."""
    scale = check_interval("scale", scale, 0, 1, low_open=True)
    ratio = check_interval("ratio", ratio, 0, low_open=True)
    value = check_number("value", value)
    return _apply(x, p, generator, lambda K: K.RandomErasing(scale=scale, ratio=ratio, value=value, p=p))


def gaussian_noise(x: torch.Tensor, *, std: float = 0.05, mean: float = 0.0, p: float = 1.0,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Add noise drawn from N(mean, std²) to every pixel (not clipped)."""
    std, mean = check_number("std", std, 0), check_number("mean", mean)
    return _apply(x, p, generator, lambda K: K.RandomGaussianNoise(mean=mean, std=std, p=p))


def translate(x: torch.Tensor, *, max_shift: "int | float" = 0.125, p: float = 1.0,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image by a whole number of pixels, up to ``max_shift`` each way along each axis
    (an int: pixels; a float in (0, 1): that fraction of the side, at least one pixel), the
    edge pixels repeated into the space it leaves (so a standardised background stays the
    background). Plain torch: no kornia needed."""
    check_tensor("x", x, (4,), IMAGES)
    check_number("p", p, 0, 1)
    if isinstance(max_shift, bool) or not isinstance(max_shift, numbers.Real) or max_shift <= 0 \
            or (not isinstance(max_shift, numbers.Integral) and max_shift >= 1):
        raise ValueError(f"max_shift={max_shift!r} is not valid; expected a number of pixels (an int >= 1) or a "
                         f"fraction of the image side (a float in (0, 1))")
    b, c, h, w = x.shape
    mh, mw = ((int(max_shift),) * 2 if isinstance(max_shift, numbers.Integral) else
              (max(1, round(max_shift * h)), max(1, round(max_shift * w))))
    with seeded(generator, x.device):
        dy = torch.randint(-mh, mh + 1, (b,), device=x.device)
        dx = torch.randint(-mw, mw + 1, (b,), device=x.device)
        keep = torch.rand(b, device=x.device) >= p
    dy, dx = dy.masked_fill(keep, 0), dx.masked_fill(keep, 0)
    padded = torch.nn.functional.pad(x, (mw, mw, mh, mh), mode="replicate")
    rows = (mh - dy)[:, None] + torch.arange(h, device=x.device)            # (B, H)
    cols = (mw - dx)[:, None] + torch.arange(w, device=x.device)            # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]

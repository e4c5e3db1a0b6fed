"""What the augmentations share: seeding from a generator, and the checks of their arguments."""

from __future__ import annotations

import contextlib
import math
import numbers
from typing import Any, Iterator

import torch


@contextlib.contextmanager
def seeded(generator: torch.Generator | None, device: torch.device) -> Iterator[None]:
    """The random draws inside come from torch's global RNG: as it is when ``generator`` is None;
    otherwise seeded from one draw of ``generator``, the global state of the CPU and of ``device``
    restored afterwards. So the same generator state gives the same output on the same device."""
    if generator is None:
        yield
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator={generator!r} is not valid; expected a torch.Generator (e.g. "
                        f"torch.Generator().manual_seed(0)) or None")
    seed = int(torch.randint(2**62, (), generator=generator, device=generator.device))
    accelerator = device.type not in ("cpu", "meta")
    with torch.random.fork_rng(devices=[device] if accelerator else [], device_type=device.type):
        torch.default_generator.manual_seed(seed)
        if accelerator:          # this device's generator only (torch.manual_seed seeds them all)
            module = torch.get_device_module(device.type)
            with module.device(device) if hasattr(module, "device") else contextlib.nullcontext():
                module.manual_seed(seed)
        yield


def check_tensor(name: str, x: Any, ndims: tuple[int, ...], expected: str, floating: bool | None = True) -> None:
    """``x`` is a tensor with one of ``ndims`` dimensions, floating point (``floating``), integer
    (``floating=False``) or of any dtype (None)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} is a {type(x).__name__}; expected a tensor {expected}")
    if x.ndim not in ndims:
        raise ValueError(f"{name} has shape {tuple(x.shape)}; expected {expected}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} has dtype {x.dtype}; expected a floating-point tensor {expected}")
    if floating is False and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise TypeError(f"{name} has dtype {x.dtype}; expected an integer tensor {expected}")


def check_number(name: str, value: Any, low: float = -math.inf, high: float = math.inf,
                 low_open: bool = False) -> float:
    """``value`` as a finite float in [low, high] (``(low, high]`` with ``low_open``)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value > low if low_open else value >= low) and value <= high:
        return float(value)
    bounds = f"{'(' if low_open or low == -math.inf else '['}{low:g}, {high:g}{')' if high == math.inf else ']'}"
    raise ValueError(f"{name}={value!r} is not valid; expected a number in {bounds}")


def check_int(name: str, value: Any, low: int | None = None) -> int:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and (low is None or value >= low):
        return int(value)
    raise ValueError(f"{name}={value!r} is not valid; expected an int{'' if low is None else f' >= {low}'}")


def check_interval(name: str, value: Any, low: float = -math.inf, high: float = math.inf,
                   low_open: bool = False) -> tuple[float, float]:
    """``value`` as a pair ``(a, b)`` with ``low <= a <= b <= high`` (``low < a`` with ``low_open``)."""
    try:
        a, b = (check_number(name, v, low, high, low_open) for v in value)
    except (TypeError, ValueError):
        a = b = math.nan
    if not a <= b:
        raise ValueError(f"{name}={value!r} is not valid; expected a pair (a, b) with "
                         f"{low:g} {'<' if low_open else '<='} a <= b <= {high:g}")
    return a, b


def check_labels(y: Any, batch: int, num_classes: Any) -> int:
    """``y`` holds ``batch`` class indices below ``num_classes``; returns ``num_classes``."""
    num_classes = check_int("num_classes", num_classes, 1)
    check_tensor("y", y, (1,), f"of {batch} class indices (B,)", floating=False)
    if len(y) != batch:
        raise ValueError(f"y has {len(y)} labels for a batch of {batch} samples; expected one per sample")
    if len(y):
        low, high = torch.stack(torch.aminmax(y)).tolist()          # one host sync
        if low < 0 or high >= num_classes:
            raise ValueError(f"y has the label {high if high >= num_classes else low}; expected labels "
                             f"from 0 to num_classes-1 (num_classes={num_classes})")
    return num_classes

"""A sample batch as a user hands it to a model: a tensor (``model(x)``), a tuple or list
(``model(*x)``) or a dict (``model(**x)``)."""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import torch


def tensors_in(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor in ``obj``, through nested tuples, lists and dicts."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from tensors_in(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from tensors_in(o)


def call_with(model: torch.nn.Module, sample: Any) -> Any:
    """``model`` called on ``sample``: a dict as keywords, a tuple or list unpacked."""
    if isinstance(sample, dict):
        return model(**sample)
    if isinstance(sample, (tuple, list)):
        return model(*sample)
    return model(sample)


def cuda_devices(tensors: Iterable[torch.Tensor]) -> list[int]:
    """The CUDA devices ``tensors`` live on (for ``torch.random.fork_rng``)."""
    return sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})

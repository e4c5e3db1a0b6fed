"""Process-wide instrumentation shared by all active monitors: ``Tensor.backward`` (to see the
loss) and ``GradScaler.scale`` (to unscale it). Installed while at least one monitor is active,
restored exactly when the last one closes."""

from __future__ import annotations

import functools

import torch

_active: list = []
_originals: dict[str, object] = {}


def activate(monitor) -> None:
    if monitor in _active:
        return
    _active.append(monitor)
    if len(_active) == 1:
        _install()


def deactivate(monitor) -> None:
    if monitor in _active:
        _active.remove(monitor)
    if not _active:
        _uninstall()


def _install() -> None:
    backward = torch.Tensor.backward
    _originals["backward"] = backward

    @functools.wraps(backward)
    def patched_backward(self, *args, **kwargs):
        for m in list(_active):
            m._on_backward_start(self)
        result = backward(self, *args, **kwargs)
        for m in list(_active):
            m._on_backward_end(self)
        return result

    torch.Tensor.backward = patched_backward

    scaler_cls = getattr(getattr(torch, "amp", None), "GradScaler", None)
    if scaler_cls is not None:
        scale = scaler_cls.scale
        _originals["scale"] = scale

        @functools.wraps(scale)
        def patched_scale(self, outputs):
            result = scale(self, outputs)
            if torch.is_tensor(result):
                for m in list(_active):
                    m._on_scaled_loss(result, self)
            return result

        scaler_cls.scale = patched_scale


def _uninstall() -> None:
    if "backward" in _originals:
        torch.Tensor.backward = _originals.pop("backward")
    if "scale" in _originals:
        torch.amp.GradScaler.scale = _originals.pop("scale")

"""Process-wide instrumentation shared by all active monitors: ``Tensor.backward`` (to see the
loss), ``GradScaler.scale`` (to unscale it) and the loss functions of ``torch.nn.functional``
(to see validation losses; ``nn.CrossEntropyLoss`` and friends call them). Installed while at
least one monitor is active, restored exactly when the last one closes."""

from __future__ import annotations

import contextlib
import contextvars
import functools

import torch
import torch.nn.functional as F

LOSS_FUNCTIONS = ("cross_entropy", "nll_loss", "binary_cross_entropy_with_logits",
                  "binary_cross_entropy", "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss")
_active: list = []
_originals: dict[str, object] = {}
# Remedies that change what a loss function gets (class weights, logits instead of
# probabilities): callables (name, args, kwargs, evaluating) -> (args, kwargs), applied in order.
loss_transforms: list = []
_own = contextvars.ContextVar("trainmedic_own_work", default=False)


@contextlib.contextmanager
def own_work():
    """trainmedic's own work on copies of the user's run (the first-batch probes' optimizers):
    what reshapes the user's run (a tuning trial's routes) leaves it alone."""
    token = _own.set(True)
    try:
        yield
    finally:
        _own.reset(token)


def in_own_work() -> bool:
    return _own.get()


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
            m.hooks.on_backward_start(self)
        result = backward(self, *args, **kwargs)
        for m in list(_active):
            m.hooks.on_backward_end(self)
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
                    m.hooks.on_scaled_loss(result, self)
            return result

        scaler_cls.scale = patched_scale


    for name in LOSS_FUNCTIONS:
        _originals[name] = getattr(F, name)
        setattr(F, name, _wrap_loss(name, _originals[name]))


def _wrap_loss(name: str, fn):
    @functools.wraps(fn)
    def loss_function(*args, **kwargs):
        if not _active:
            return fn(*args, **kwargs)
        evaluating = any(m.validation.is_eval_loss() for m in _active)
        for transform in list(loss_transforms) if loss_transforms else ():    # no copy per call
            try:
                args, kwargs = transform(name, args, kwargs, evaluating)
            except Exception as exc:  # noqa: BLE001 - a remedy's failure never reaches the loss call
                loss_transforms.remove(transform)
                from trainmedic._safety import warn
                warn(f"trainmedic: a loss remedy failed ({type(exc).__name__}: {exc}) and was "
                     f"taken out; the loss is computed as your code asks")
        result = fn(*args, **kwargs)
        output = args[0] if args else kwargs.get("input")
        target = args[1] if len(args) > 1 else kwargs.get("target")
        if evaluating:
            # cross_entropy / nll_loss: targets equal to ignore_index (5th positional) are not judged
            ignore = kwargs.get("ignore_index", args[4] if len(args) > 4 else -100)
            ignore = -100 if isinstance(ignore, bool) else ignore
            for m in list(_active):
                m.hooks.on_eval_loss(name, output, target, result, ignore_index=ignore,
                                     summed=kwargs.get("reduction") == "sum")
        else:
            for m in list(_active):
                m.hooks.on_train_loss_call(name, target, kwargs)
        return result
    return loss_function


def _uninstall() -> None:
    for name in LOSS_FUNCTIONS:
        if name in _originals:
            setattr(F, name, _originals.pop(name))
    if "backward" in _originals:
        torch.Tensor.backward = _originals.pop("backward")
    if "scale" in _originals:
        torch.amp.GradScaler.scale = _originals.pop("scale")

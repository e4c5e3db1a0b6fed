"""Keras 3 on the torch backend: ``model.fit(..., callbacks=[TrainmedicCallback()])`` watches
the fit.

On the torch backend a Keras model is a ``torch.nn.Module`` whose weights are torch Parameters,
and ``train_step`` runs ``forward``, ``loss.backward()``, then ``optimizer.apply(grads,
variables)``: the Keras optimizer is not a torch optimizer. The callback wraps the compiled
optimizer's ``apply`` for the length of the fit (the instance attribute, removed at
``on_train_end``) and shows the monitor a torch optimizer standing for it: its parameters are
the variables ``apply`` was given, its learning rate the Keras optimizer's current one. Each
``apply`` is one step, measured as a torch optimizer's step (the gradients in ``.grad`` before
the update, i.e. before Keras's clipnorm/clipvalue; the update it made). The loss comes from
``loss.backward()`` (with the regularisation terms), activations and the loss inputs from the
torch functions Keras calls (its sparse and binary crossentropies call ``F.cross_entropy``,
``F.nll_loss``, ``F.binary_cross_entropy(_with_logits)``; other Keras losses are not seen).
The compiled loss's ``from_logits`` is compared with the model's output activation at
``on_train_begin``. Validation epochs come from the ``val_*`` logs at ``on_epoch_end``. Under
``jit_compile=True`` or a ``LossScaleOptimizer`` the steps are not measured (a
``monitoring_limited`` note says so).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import torch

from trainmedic.checks.init import frozen_finding, truncated_normal_draw, uniform_draw
from trainmedic.findings import Finding
from trainmedic.integrations import Watcher, require, val_metrics

try:
    keras = require("keras", "keras")
except ImportError as exc:
    if (getattr(exc.__cause__, "name", None) or "keras").split(".")[0] == "keras":
        raise
    raise ImportError(f"trainmedic's keras integration needs Keras on the torch backend: set "
                      f"KERAS_BACKEND=torch before keras is imported ({exc.__cause__})") from exc

TRUNCATED_STD = 0.87962566103423978   # std of N(0, 1) cut at +-2, as Keras's truncated normal is
# Keras class names that differ from the torch names the learning-rate detectors know.
TORCH_NAMES = {"Nadam": "NAdam"}


class KerasOptimizerView(torch.optim.Optimizer):
    """A Keras optimizer as the monitor sees it: one param group holding the torch Parameters
    it updates, with its current ``lr`` and (decoupled, as in Keras) ``weight_decay``. It never
    steps: Keras's ``apply`` does. ``foreign``: advice written for torch optimizers and LR
    schedulers does not apply to it."""

    foreign = True

    def __init__(self, optimizer: Any, params: list[torch.Tensor]) -> None:
        super().__init__(params, {"lr": float("nan"), "weight_decay": float(optimizer.weight_decay or 0.0),
                                  "decoupled_weight_decay": True})


@functools.cache
def _view_class(keras_name: str) -> type:
    """A view class named as the Keras optimizer (Adam, SGD...): the detectors go by the name."""
    return type(TORCH_NAMES.get(keras_name, keras_name), (KerasOptimizerView,), {})


class _Restore:
    """A handle that removes an instance attribute set on a Keras object."""

    def __init__(self, obj: Any, name: str) -> None:
        self.obj, self.name = obj, name

    def remove(self) -> None:
        vars(self.obj).pop(self.name, None)


class TrainmedicCallback(Watcher, keras.callbacks.Callback):
    """Watches ``model.fit`` (Keras 3, torch backend) with a :class:`trainmedic.Monitor`.

    Options as :func:`trainmedic.watch` (``every``, ``run_dir``, ``name``, ``goal``,
    ``on_finding``), plus ``stop_on``: ``"error"`` or ``"warning"`` sets
    ``model.stop_training`` at the end of the batch where a finding that bad appears.
    ``monitor``: report into this monitor instead of a new one (the zero-code runner's).
    ``report``: the Report once ``fit`` ended (with a new monitor)."""

    def __init__(self, *, every: int = 25, run_dir: Any = None, name: str | None = None,
                 goal: str | None = None, on_finding: Callable[[Finding], None] | None = None,
                 stop_on: str | None = None, monitor: Any = None) -> None:
        if keras.config.backend() != "torch":
            raise RuntimeError(f"trainmedic watches Keras on the torch backend only; this Keras "
                               f"runs on {keras.config.backend()!r}: set KERAS_BACKEND=torch "
                               f"before keras is imported")
        Watcher.__init__(self, every=every, run_dir=run_dir, name=name, goal=goal,
                         on_finding=on_finding, stop_on=stop_on, monitor=monitor)
        keras.callbacks.Callback.__init__(self)
        self._view: KerasOptimizerView | None = None
        self._calls = 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.monitor is not None:          # the last fit raised: Keras tells callbacks nothing
            self._finish("crashed")
        model = self.model
        monitor = self._start([], [], name=model.name, main=True, hook=False)
        self._view = None
        monitor.guard.call("layer names", name_layers, monitor, model)
        monitor.add_model(model)
        mismatch = monitor.guard.call("loss-input checks", loss_mismatch, model)
        if mismatch is not None:
            monitor.engine.emit(mismatch)
        monitor.engine.stream.decided.add("frozen_random_layers")       # decided here, by Keras's rules
        for f in monitor.guard.call("frozen-layer check", frozen_random, model) or []:
            monitor.engine.emit(f)
        limit = unmeasurable(model)
        if limit is not None:
            monitor.engine.note("monitoring_limited", limit)
            monitor.active = False
            return
        optimizer = model.optimizer
        self._calls = int(optimizer._iterations)     # apply calls so far; counted here from now on
        vars(optimizer)["apply"] = self._measured_apply(optimizer, optimizer.apply)
        self._handles.append(_Restore(optimizer, "apply"))

    def _measured_apply(self, optimizer: Any, apply: Callable) -> Callable:
        """``optimizer.apply`` between the monitor's pre-step and post-step measurements."""
        @functools.wraps(apply)
        def measured_apply(grads: Any, trainable_variables: Any = None) -> Any:
            monitor = self.monitor
            view = None if monitor is None else monitor.guard.call(
                "optimizer hooks", self._step_view, optimizer, trainable_variables)
            if view is not None:
                monitor.hooks.on_pre_step(view, (), {})
            result = apply(grads, trainable_variables)
            if view is not None:
                monitor.hooks.on_post_step(view, (), {})
            return result
        return measured_apply

    def _step_view(self, optimizer: Any, trainable_variables: Any) -> KerasOptimizerView | None:
        """The view of ``optimizer`` for this call: its parameters are the variables it is given
        (those it was built with when none are), its lr the one this step uses. None for a
        micro-batch of gradient accumulation (Keras updates the weights every
        ``gradient_accumulation_steps`` calls; those calls are the steps)."""
        variables = list(optimizer._trainable_variables if trainable_variables is None
                         else trainable_variables)
        params = [v.value for v in variables]
        view = self._view
        if view is None or [id(p) for p in view.param_groups[0]["params"]] != [id(p) for p in params]:
            view = self._view = _view_class(type(optimizer).__name__)(optimizer, params)
            self.monitor.add_optimizer(view)     # known before its first step: a micro-batch's
                                                 # backward is not a step of its own
        every = optimizer.gradient_accumulation_steps
        self._calls += 1                     # a Python count: reading _iterations would sync
        if every and self._calls % every:
            return None
        lr = getattr(optimizer.learning_rate, "value", optimizer.learning_rate)
        # a copy of this step's value, read on the host at the next tick (no sync per step)
        view.param_groups[0]["lr"] = lr.detach().clone() if isinstance(lr, torch.Tensor) else lr
        return view

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.stop_requested:
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        loss, values = val_metrics(logs or {}, ("val_",))
        if self.monitor is not None and (loss is not None or values):
            self.monitor.end_validation(loss, **values)
        if self.stop_requested:
            self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        self._finish("completed")


def name_layers(monitor: Any, model: Any) -> None:
    """Name ``model``'s parameters and layers for ``monitor`` by their Keras paths (the torch
    names are all ``_torch_params.<path>``), and tell its activation sampler which layers hold
    weights (their Parameters sit in a child ParameterDict, not on the layer)."""
    prefix = f"{model.path}/"
    for v in model.trainable_weights:
        monitor.table.add(v.value, v.path.removeprefix(prefix).replace("/", "."))
    for layer in model._flatten_layers(include_self=False):
        monitor.sampler.name_layer(layer, (layer.path or layer.name).removeprefix(prefix).replace("/", "."),
                                   bool(layer._trainable_variables or layer._non_trainable_variables))


def frozen_random(model: Any) -> list[Finding] | None:
    """``frozen_random_layers`` for the layers set ``trainable=False`` whose kernel still looks
    like a fresh draw of the layer's own initializer (Keras's Glorot-uniform default is not
    torch's, so the generic check would not know it)."""
    frozen = []
    for layer in model._flatten_layers(include_self=False):
        name = "kernel" if hasattr(layer, "kernel_initializer") else "embeddings"
        kernel, init = getattr(layer, name, None), getattr(layer, f"{name}_initializer", None)
        if layer.trainable or kernel is None or not _fresh_draw(kernel.value, init):
            continue
        frozen.append((layer.name, sum(int(math.prod(v.shape)) for v in layer.weights)))
    trainable = sum(int(math.prod(v.shape)) for v in model.trainable_weights)
    return frozen_finding(frozen, trainable, how="trainable=False")


def _fresh_draw(w: torch.Tensor, init: Any) -> bool:
    """Whether ``w`` looks like an unmoved draw of ``init`` (a symmetric uniform, or a variance
    scaling with Keras's fan convention: the last axis is the output, the one before it the
    input, the rest the receptive field)."""
    shape = tuple(w.shape)
    if isinstance(init, keras.initializers.RandomUniform) and init.minval == -init.maxval:
        return uniform_draw(w, init.maxval)
    if not isinstance(init, keras.initializers.VarianceScaling) or len(shape) < 2:
        return False
    receptive = math.prod(shape[:-2])
    fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
    n = {"fan_in": fan_in, "fan_out": fan_out}.get(init.mode, (fan_in + fan_out) / 2)
    std = math.sqrt(init.scale / max(n, 1))
    if init.distribution == "uniform":
        return uniform_draw(w, std * math.sqrt(3))
    if init.distribution == "truncated_normal":         # cut at 2 of the untruncated stds
        return truncated_normal_draw(w, std, std / TRUNCATED_STD * 2)
    return False


def unmeasurable(model: Any) -> str | None:
    """Why the training steps of ``model`` cannot be measured (None: they can)."""
    if model.jit_compile:
        return ("The Keras train step is compiled (jit_compile=True): trainmedic measures nothing "
                "inside it; only the validation epochs and the loss/output check are kept. Compile "
                "without jit_compile to watch the training.")
    if isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer):
        return ("The optimizer is a LossScaleOptimizer (mixed_float16): the loss and the gradients "
                "trainmedic would read are multiplied by the loss scale, so the training steps are "
                "not measured; only the validation epochs and the loss/output check are kept.")
    return None


def loss_mismatch(model: Any) -> Finding | None:
    """``loss_input_mismatch`` when a single-output model's compiled crossentropy loss and its
    output activation disagree: probabilities (softmax/sigmoid) into ``from_logits=True``, or
    logits (no activation) into ``from_logits=False``; None when they agree or are unknown."""
    loss = model.loss
    name = loss if isinstance(loss, str) else getattr(loss, "__name__", type(loss).__name__)
    if "crossentropy" not in name.lower():
        return None
    from_logits = bool(getattr(loss, "from_logits", False))
    outputs = getattr(model, "outputs", None)        # a subclassed model has none
    if not outputs or len(outputs) != 1:
        return None
    layer = outputs[0]._keras_history.operation
    activation = "softmax" if isinstance(layer, keras.layers.Softmax) else {
        keras.activations.softmax: "softmax", keras.activations.sigmoid: "sigmoid",
        keras.activations.linear: None}.get(getattr(layer, "activation", False), "unknown")
    if activation == "unknown" or (activation is not None) != from_logits:
        return None
    if from_logits:
        message = (f"The output layer {layer.name!r} applies {activation} and the loss {name} has "
                   f"from_logits=True: the loss takes these probabilities for logits and squashes "
                   f"them a second time, which flattens the gradient.")
        fixes = [f"Remove the {activation} from the output layer (keep from_logits=True) and apply "
                 f"it at prediction time.", f"Or keep the {activation} and set from_logits=False."]
    else:
        message = (f"The output layer {layer.name!r} has no activation (it outputs logits) and the "
                   f"loss {name} has from_logits=False: the loss treats the logits as "
                   f"probabilities (normalised and clipped).")
        fixes = ["Compile with the loss object and from_logits=True, e.g. "
                 "keras.losses.SparseCategoricalCrossentropy(from_logits=True).",
                 "Or end the model with a softmax (sigmoid for binary crossentropy)."]
    f = Finding.make("loss_input_mismatch", message, where=layer.name, step=0,
                     evidence={"loss": name, "from_logits": from_logits,
                               "output_activation": activation or "linear"})
    f.fixes = fixes
    return f

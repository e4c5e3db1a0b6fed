"""Callbacks for the trainers people use; each module imports its own framework, this package
imports none:

    from trainmedic.integrations.lightning import TrainmedicCallback     # lightning.pytorch.Trainer
    from trainmedic.integrations.huggingface import TrainmedicCallback   # transformers.Trainer
    from trainmedic.integrations.keras import TrainmedicCallback         # keras Model.fit (torch)

They take the options of :func:`trainmedic.watch` plus ``stop_on``. Under ``trainmedic run``
the Keras callback is attached to every ``fit`` by the runner (``attach_keras``), reporting into
the runner's monitor; Lightning and Hugging Face train with torch optimizers, which the runner's
discovery watches without a callback.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any, Callable, Iterable, Mapping

import torch

from trainmedic.findings import Finding, Report, Severity
from trainmedic.monitor import Monitor, _print_finding

NOT_METRICS = {"runtime", "samples_per_second", "steps_per_second", "epoch"}


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``, or raise an ImportError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"trainmedic's {extra} integration needs {module.split('.')[0]}: "
                          f"pip install 'trainmedic[{extra}]'") from exc


def val_metrics(metrics: Mapping[str, Any], prefixes: tuple[str, ...]) -> tuple[float | None, dict[str, float]]:
    """(loss, other metrics) of a framework's validation metrics: the scalar values whose key
    starts with one of ``prefixes``, the prefix stripped, ``accuracy`` renamed ``acc``."""
    loss, out = None, {}
    for key, value in metrics.items():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        name = key[len(prefix):] if prefix is not None else None
        if name is None or name in NOT_METRICS:
            continue
        try:
            value = float(value)
        except (TypeError, ValueError, RuntimeError):     # not a number, or not one number
            continue
        if name == "loss":
            loss = value
        else:
            out["acc" if name == "accuracy" else name] = value
    return loss, out


class Watcher:
    """What the callbacks share: :func:`trainmedic.watch`'s options, the Monitor of the current
    run (``monitor``; ``report`` once it finished), the findings fanned out, ``stop_on``."""

    def __init__(self, *, every: int = 25, run_dir: "str | os.PathLike[str] | None" = None,
                 name: str | None = None, goal: str | None = None,
                 on_finding: Callable[[Finding], None] | None = None, stop_on: str | None = None,
                 repair: bool = False, monitor: Monitor | None = None) -> None:
        if stop_on not in (None, "error", "warning"):
            raise ValueError(f"stop_on={stop_on!r}: expected None, 'error' or 'warning'")
        self.options = {"every": every, "run_dir": run_dir, "name": name, "goal": goal, "repair": repair}
        self.given = monitor          # report into this monitor (the runner's), never close it
        self.on_finding = on_finding
        self.stop_on = None if stop_on is None else Severity(stop_on)
        self.monitor: Monitor | None = None
        self.report: Report | None = None
        self.stop_requested = False
        self._main = True
        self._handles: list[Any] = []

    def _start(self, models: Iterable[torch.nn.Module], optimizers: Iterable[torch.optim.Optimizer], *,
               name: str, main: bool, hook: bool, schedulers: Iterable[Any] = (), scaler: Any = None) -> Monitor:
        """A new Monitor for ``models`` and ``optimizers`` (``hook``: the monitor's own step hooks
        measure them). ``main``: this process prints, logs and writes the report."""
        self._finish("completed")
        self.stop_requested, self._main, self.report = False, main, None
        options = dict(self.options, name=self.options["name"] or name)
        self.monitor = self.given or Monitor((), (), on_finding=self._found, **options)
        for model in models:                   # after self.monitor is set: it may note a finding
            self.monitor.add_model(model)
        for opt in optimizers:
            self.monitor.add_optimizer(opt, hook=hook)
        if self.monitor.controller is not None:
            self.monitor.controller.schedulers += list(schedulers)
            self.monitor.controller.scaler = scaler
        return self.monitor

    def _found(self, f: Finding) -> None:
        if self.stop_on is not None and f.severity.rank >= self.stop_on.rank:
            self.stop_requested = True
        if self._main:
            (self.on_finding or _print_finding)(f)
            self.monitor.guard.call("logging findings", self._publish, f)

    def _publish(self, f: Finding) -> None:
        """Hand ``f`` to the framework's loggers (none by default)."""

    def _finish(self, status: str) -> None:
        """Close the monitor (the main process writes the report) and remove the hooks."""
        for h in self._handles:
            h.remove()
        self._handles = []
        if self.monitor is not None and self.monitor is not self.given:
            self.monitor.close(status)          # its last findings still reach _found
            if self._main:
                self.report = self.monitor.report()
        self.monitor = None


def attach_keras(monitor: Monitor) -> Callable[[], None]:
    """Under the zero-code runner: once the script imports Keras (torch backend), every
    ``Model.fit`` without a trainmedic callback gets one reporting into ``monitor``. Returns
    the function that takes this off again."""
    from trainmedic._import_hooks import after_import
    patched: list[tuple[Any, Any]] = []

    def patch(module: ModuleType) -> None:
        trainer = module.TorchTrainer
        fit = trainer.fit

        def watched_fit(model: Any, *args: Any, callbacks: Any = None, **kwargs: Any) -> Any:
            from trainmedic.integrations.keras import TrainmedicCallback
            callbacks = list(callbacks or [])
            if not any(isinstance(c, TrainmedicCallback) for c in callbacks):
                callbacks.append(TrainmedicCallback(monitor=monitor))
            return fit(model, *args, callbacks=callbacks, **kwargs)
        trainer.fit = watched_fit
        patched.append((trainer, fit))

    remove = after_import("keras.src.backend.torch.trainer", patch)

    def detach() -> None:
        remove()
        for trainer, fit in patched:
            trainer.fit = fit
    return detach
"""Lightning 2.x: ``Trainer(callbacks=[TrainmedicCallback()])`` watches ``trainer.fit``.

The monitor starts at ``on_train_start`` (after the sanity check, whose validation is not an
epoch) and finishes at ``on_train_end`` / ``on_exception``, so ``trainer.validate`` and
``trainer.test`` outside ``fit`` are never counted. Gradients are measured once per optimizer
step at ``on_before_optimizer_step``: after the closure's backward (Lightning runs
``training_step`` inside ``optimizer.step(closure)``, after the optimizer's own step pre-hooks),
after AMP unscaling, before gradient clipping. The models are the modules ``training_step``
calls (found by the monitor's discovery): the LightningModule for ``self(x)``, its submodule
for ``self.net(x)``. Validation epochs come from
``trainer.callback_metrics`` at ``on_validation_end`` (after the LightningModule's own epoch-end
logging); keys ``val_*``, ``val/*``, ``valid_*``, ``validation_*`` are read.
"""

from __future__ import annotations

from typing import Any

import torch

from trainmedic.findings import Finding
from trainmedic.integrations import Watcher, require, val_metrics
from trainmedic.report.terminal import format_finding

pl = require("lightning.pytorch", "lightning")

VAL_PREFIXES = ("val_", "val/", "valid_", "valid/", "validation_", "validation/")


class TrainmedicCallback(Watcher, pl.Callback):
    """Watches ``trainer.fit`` with a :class:`trainmedic.Monitor`.

    Options as :func:`trainmedic.watch` (``every``, ``run_dir``, ``name``, ``goal``,
    ``on_finding``, ``repair``), plus ``stop_on``: ``"error"`` or ``"warning"`` sets
    ``trainer.should_stop`` when a finding that bad appears. Each finding is printed once (global
    rank zero) and logged to ``trainer.loggers`` as the metric ``trainmedic/<id>`` (and as text
    where the logger takes text). ``report``: the Report once ``fit`` ended."""

    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._trainer = trainer
        self._measured: set[int] = set()
        monitor = self._start([], trainer.optimizers, name=type(pl_module).__name__,
                              main=trainer.is_global_zero, hook=False,
                              schedulers=[c.scheduler for c in trainer.lr_scheduler_configs],
                              scaler=getattr(trainer.precision_plugin, "scaler", None))
        monitor.discover_models()          # a hook on the LightningModule misses self.net(x)
        for opt in trainer.optimizers:
            self._handles += [opt.register_step_pre_hook(self._pre_step),
                              opt.register_step_post_hook(self._post_step)]

    def on_train_batch_start(self, *_args: Any) -> None:
        self._measured.clear()             # a step the GradScaler skipped has no post-step hook

    def on_before_optimizer_step(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                                 optimizer: torch.optim.Optimizer) -> None:
        self._measure(optimizer)

    def _measure(self, opt: torch.optim.Optimizer) -> None:
        """The monitor's pre-step measurement, once per step (LBFGS evaluates its closure, and
        Lightning calls on_before_optimizer_step, several times per step)."""
        if self.monitor is not None and id(opt) not in self._measured:
            self._measured.add(id(opt))
            self.monitor.hooks.on_pre_step(opt, (), {})

    def _pre_step(self, opt: torch.optim.Optimizer, args: tuple, kwargs: dict) -> "tuple[tuple, dict] | None":
        """A step without a closure (AMP's ``scaler.step`` after unscaling, a raw optimizer in
        manual optimisation) has its gradients now. A closure's come at on_before_optimizer_step,
        or, for a closure Lightning did not wrap (a raw LBFGS), right after its first call."""
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)
        if closure is None:
            self._measure(opt)
            return None

        def measured_closure():
            result = closure()
            self._measure(opt)
            return result
        if "closure" in kwargs:
            return args, {**kwargs, "closure": measured_closure}
        return (args[0], measured_closure, *args[2:]), kwargs

    def _post_step(self, opt: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        self._measured.discard(id(opt))
        if self.monitor is not None:
            self.monitor.hooks.on_post_step(opt, args, kwargs)

    def on_validation_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.monitor is not None:
            loss, values = val_metrics(trainer.callback_metrics, VAL_PREFIXES)
            self.monitor.end_validation(loss, **values)

    def on_train_batch_end(self, trainer: "pl.Trainer", *_args: Any) -> None:
        if self.stop_requested:
            trainer.should_stop = True

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._finish("completed")

    def on_exception(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                     exception: BaseException) -> None:
        self._finish("interrupted" if isinstance(exception, KeyboardInterrupt) else "crashed")

    def _publish(self, f: Finding) -> None:
        step = self._trainer.global_step
        for logger in self._trainer.loggers:
            logger.log_metrics({f"trainmedic/{f.id}": 1.0}, step=step)
            add_text = getattr(logger.experiment, "add_text", None)      # TensorBoard
            if add_text is not None:
                add_text(f"trainmedic/{f.id}", format_finding(f), step)

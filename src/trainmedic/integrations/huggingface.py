"""Hugging Face Transformers: ``Trainer(..., callbacks=[TrainmedicCallback()])`` watches
``trainer.train()``.

The monitor starts at ``on_train_begin`` with the model and the optimizer (unwrapped from
Accelerate's ``AcceleratedOptimizer``) and finishes at ``on_train_end``. The Trainer calls
``optimizer.step()`` without a closure, after the backward passes of the accumulated
micro-batches and after gradient clipping, so the monitor's own step hooks measure the
gradients the step uses (clipped). The learning rate is read from the optimizer at every step
(``on_log``'s value is the same number, less often). Each evaluation during training is one
validation epoch, closed at ``on_evaluate`` with its metrics (``eval_loss``, ``eval_accuracy``
as ``acc``, other ``eval_*`` keys without the prefix; runtime and throughput are dropped).
"""

from __future__ import annotations

from typing import Any

import torch

from trainmedic.integrations import Watcher, require, val_metrics

transformers = require("transformers", "transformers")


class TrainmedicCallback(Watcher, transformers.TrainerCallback):
    """Watches ``trainer.train()`` with a :class:`trainmedic.Monitor`.

    Options as :func:`trainmedic.watch` (``every``, ``run_dir``, ``name``, ``goal``,
    ``on_finding``, ``repair``), plus ``stop_on``: ``"error"`` or ``"warning"`` sets
    ``control.should_training_stop`` at the end of the step where a finding that bad appears.
    Findings are printed once (world process zero). ``report``: the Report once training ended."""

    def on_train_begin(self, args: Any, state: Any, control: Any, model: "torch.nn.Module | None" = None,
                       optimizer: Any = None, lr_scheduler: Any = None, **kwargs: Any) -> None:
        opt = optimizer
        while isinstance(getattr(opt, "optimizer", None), torch.optim.Optimizer):
            opt = opt.optimizer                    # AcceleratedOptimizer -> the torch optimizer
        self._start([model], [opt] if opt is not None else [], name=type(model).__name__,
                    main=state.is_world_process_zero, hook=True,
                    schedulers=[lr_scheduler] if lr_scheduler is not None else [],
                    scaler=getattr(optimizer, "scaler", None))

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None,
                    **kwargs: Any) -> None:
        if self.monitor is not None:
            loss, values = val_metrics(metrics or {}, ("eval_",))
            self.monitor.end_validation(loss, **values)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.stop_requested:
            control.should_training_stop = True

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._finish("completed")

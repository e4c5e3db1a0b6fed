"""Monitor: owns the hooks, quantities and detectors of one training run.

    monitor = trainmedic.watch(model, optimizer)   # or: with trainmedic.watch(...) as monitor:
    ... the user's loop, unchanged ...
    monitor.report()

Hot path per optimizer step: one foreach norm over the gradients and a few tensor references;
no host sync. Every ``every`` steps (8x ``every`` after the first 10 reads) the host reads the
buffers once (a *tick*), updates the history and runs the detectors. Activation statistics and
update ratios are taken on one sampled step per tick.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
import weakref
from typing import Any, Callable, Iterable

import numpy as np
import torch

from trainmedic import _patches
from trainmedic._safety import Guard
from trainmedic.datastream import DataStream
from trainmedic.detectors import default_detectors
from trainmedic.findings import Finding, Report, Severity, assign_causes
from trainmedic.history import RunState, Tick
from trainmedic.params import ParamTable
from trainmedic.quantities.activations import ActivationSampler
from trainmedic.quantities.gradients import GradNormRecorder, StaleGradCounter
from trainmedic.quantities.loss import LossRecorder
from trainmedic.quantities.parameters import UpdateSampler, symmetric_rows
from trainmedic.goals import Goal, assess
from trainmedic.rundir import RunDirectory, tick_line
from trainmedic.validation import ValidationTracker

MAX_EVERY = 10_000            # the per-step buffers hold one window of this many rows
DENSE_TICKS = 10              # the first reads come every `every` steps, later ones 8x sparser
SPARSE_FACTOR = 8
SYMMETRY_CHECK_AFTER = 10     # steps of training before identical rows count as a fault
SWITCH_AFTER = 10             # steps in a row of another optimizer before it is followed


class StopTraining(BaseException):
    """Raised into the training loop, between two steps, when a finding named in ``stop_on``
    is active (a pruned trial, a ``trainmedic fix`` candidate whose fault came back). A
    BaseException, so a script's own ``except Exception`` does not swallow it."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(f"{finding.id} at step {finding.step}")
        self.finding = finding


class Monitor:
    """Watches one training run. Build it with :func:`watch` (or the zero-code runner)."""

    def __init__(self, models: Iterable[torch.nn.Module] = (),
                 optimizers: Iterable[torch.optim.Optimizer] = (), *, every: int = 25,
                 run_dir: "str | os.PathLike[str] | None" = None, name: str | None = None,
                 on_finding: Callable[[Finding], None] | None = None, discover: bool = False,
                 first_batch_checks: bool = True, goal: "str | None" = None,
                 tensorboard: "str | os.PathLike[str] | None" = None,
                 repair: "bool | dict[str, Any]" = False, stop_on: Iterable[str] = ()) -> None:
        if not isinstance(every, int) or isinstance(every, bool) or not 1 <= every <= MAX_EVERY:
            raise ValueError(f"every={every!r} is not a valid schedule; expected an int from 1 "
                             f"to {MAX_EVERY} (steps between host reads)")
        models, optimizers = list(models), list(optimizers)
        for m in models:
            if not isinstance(m, torch.nn.Module):
                raise TypeError(f"model={m!r} is not a torch.nn.Module")
        for opt in optimizers:
            if not isinstance(opt, torch.optim.Optimizer):
                raise TypeError(f"optimizer={opt!r} is not a torch.optim.Optimizer")
        self.goal = Goal.parse(goal) if goal is not None else None
        self.stop_on = _stop_set(stop_on)
        self.every = every
        self.interval = every
        window = min(every * SPARSE_FACTOR, MAX_EVERY)
        self.name = name or "watch"
        self.run_dir = os.fspath(run_dir) if run_dir is not None else None
        self.on_finding = on_finding if on_finding is not None else _print_finding
        self.discover = discover
        self._first_batch: tuple[torch.nn.Module, Any] | None = None
        self._first_checks_pending = first_batch_checks
        self.guard = Guard()
        self.table = ParamTable()
        self.run = RunState(self.table, goal=self.goal)
        self.detectors = default_detectors()
        self.findings: dict[str, Finding] = {}
        self._detected: set[str] = set()          # ids whose finding a detector raised
        self.models: list[torch.nn.Module] = []
        self.grads = GradNormRecorder(self.table, window)
        self.loss = LossRecorder(window)
        self.stale = StaleGradCounter()
        self.updates = UpdateSampler()
        self.sampler = ActivationSampler(self.guard)
        self.validation = ValidationTracker()
        self.sampler.on_first_loss = self.guard.wrap("first-batch checks", self._first_batch_checks)
        self.stream = DataStream()
        self.sampler.on_loss = self.guard.wrap("data checks", self._on_sampled_loss)
        self._sampled_input: Any = None
        self._train_input: Any = None             # the input of the last training forward
        self._probe_input: tuple[torch.nn.Module, Any] | None = None   # (model, batch) to probe
        self._probe_candidate: torch.nn.Module | None = None
        self.slot = 0
        self.step = 0
        self.primary: int | None = None
        self._last_stepper: int | None = None
        self._run_length = 0                      # consecutive steps of the last optimizer
        self._epoch_start = 0                     # validation epochs of earlier segments
        self._scaler_seen = False
        self._pending_manual_step = False
        self._model_hooks: dict[int, list] = {}
        self._post_hook = None
        self._opt_hooks: list = []
        self._global_hooks: list = []
        self._discovery_hook = None
        self._started = time.time()
        self._status = "running"
        self._closed = False
        self._written: str | None = None
        self._ticks = 0
        self.extra_run_info: dict[str, Any] = {}
        self._files: RunDirectory | None = None
        self.tick_sinks: list[Any] = []          # e.g. a TensorBoard writer, a live terminal view
        if tensorboard is not None:
            from trainmedic.report.tensorboard import TensorBoardWriter
            self.tick_sinks.append(TensorBoardWriter(os.fspath(tensorboard)))
        self._lrs: list[Any] = [float("nan")] * window
        self._empty_steps: dict[int, list[int]] = {}
        self._opt_params: dict[int, tuple[int, list[torch.Tensor], list[int]]] = {}
        self.controller = None
        if repair:
            options = dict(repair) if isinstance(repair, dict) else {}
            if "apply" in options:
                from trainmedic.repair.start import StartWith
                self.controller = StartWith(self, options.pop("apply"))
            else:
                from trainmedic.repair import RepairController
                self.controller = RepairController(self, **options)
        self.active = True
        _patches.activate(self)
        for m in models:
            self.add_model(m)
        for opt in optimizers:
            self.add_optimizer(opt, hook=True)
        if discover:
            from torch.optim.optimizer import (register_optimizer_step_post_hook,
                                               register_optimizer_step_pre_hook)
            self._global_hooks = [register_optimizer_step_pre_hook(self._on_pre_step),
                                  register_optimizer_step_post_hook(self._on_post_step)]
            self._listen_for_models()
        ref = weakref.ref(self)
        self._atexit = lambda: (m := ref()) is not None and m._finish_at_exit()
        atexit.register(self._atexit)

    # -- registration ---------------------------------------------------------------------------
    def add_model(self, model: torch.nn.Module) -> None:
        if any(model is m for m in self.models):
            return
        for m in list(self.models):       # a model seen earlier may be part of this one
            if any(model_part is m for model_part in model.modules()):
                self._drop_model(m)
        self.models.append(model)
        prefix = f"{type(model).__name__}." if len(self.models) > 1 else ""
        self.table.add_model(model, prefix)
        self.sampler.name_modules(model, prefix)
        if hasattr(model, "_orig_mod") or hasattr(model, "_torchdynamo_orig_callable"):
            self._note("monitoring_limited",
                       f"{type(model).__name__} is compiled with torch.compile: activation "
                       f"statistics are not collected for it yet (gradients, updates and the "
                       f"loss are).")
            self._model_hooks[id(model)] = []
            return
        self._model_hooks[id(model)] = [
            model.register_forward_pre_hook(self.guard.wrap("activation sampling", self._on_root_pre))]

    def _drop_model(self, model: torch.nn.Module) -> None:
        self.models = [m for m in self.models if m is not model]
        for h in self._model_hooks.pop(id(model), []):
            h.remove()

    def add_optimizer(self, opt: torch.optim.Optimizer, hook: bool = False) -> int:
        known = len(self.table.optimizers)
        k = self.table.add_optimizer(opt)
        if k == known:
            self.stale.attach(k, [p for grp in opt.param_groups for p in grp["params"]], self.guard)
            self.updates.due.add(k)
            if self.primary is None:
                self.primary = k
            if hook:
                self._opt_hooks += [opt.register_step_pre_hook(self._on_pre_step),
                                    opt.register_step_post_hook(self._on_post_step)]
        return k

    # -- discovery (zero-code runs) --------------------------------------------------------------
    def discover_models(self) -> None:
        """Find the models being trained from now on (the modules whose parameters the
        optimizers hold, as they are called), as ``trainmedic run`` does: for a framework that
        calls submodules of the object it was given (a LightningModule's ``self.net(x)``)."""
        self.discover = True
        self._listen_for_models()

    def _listen_for_models(self) -> None:
        """A forward hook on every module call, to find the models being trained. It costs on
        every call of every submodule, so it is only in place until each optimizer's
        parameters belong to a known model (and again when an optimizer with unknown
        parameters steps: the next trial's model)."""
        if self._discovery_hook is None:
            from torch.nn.modules.module import register_module_forward_pre_hook
            self._discovery_hook = register_module_forward_pre_hook(self._on_any_forward)

    def _stop_listening_when_settled(self) -> None:
        """Settled: every optimizer steps parameters of a known model (a bare parameter such as
        a temperature may live outside any module)."""
        if self._discovery_hook is None or not self.models:
            return
        names = self.table.infos
        if all(any(not names[i].name.startswith("optimizer") for i in self.table.optimizer_indices(k))
               for k in range(len(self.table.optimizers))):
            self._discovery_hook.remove()
            self._discovery_hook = None

    # -- events (all guarded: nothing raised here may reach the user's code) ---------------------
    def _on_any_forward(self, module: torch.nn.Module, args: Any) -> None:
        if self.active:
            self.guard.call("model discovery", self._discover, module, args)

    def _discover(self, module: torch.nn.Module, args: Any) -> None:
        if id(module) in self.sampler.names:
            return
        if any(p.requires_grad for p in module.parameters()):
            self.add_model(module)
            # This call's own hooks were collected before the model was known: treat it as
            # the model's first forward here, so the first step is sampled too.
            self.guard.call("activation sampling", self._on_root_pre, module, args)

    def _on_root_pre(self, module: torch.nn.Module, _args: Any) -> None:
        if self.sampler.recording:
            self.sampler.end()
        self.validation.on_root_forward(module, _args)
        training = module.training and torch.is_grad_enabled() and not torch.compiler.is_compiling()
        if self.active and training and _args:
            self._train_input = _args[0]
            self.guard.call("data checks", self.stream.on_train_forward, _args[0])
        if self.active and self.sampler.due and training:
            if self._first_checks_pending and self._first_batch is None and _args:
                self._first_batch = (module, _args[0])
            if "batch_mixing" not in self.stream.decided and self._probe_input is None and _args:
                self._probe_candidate = module
            self._sampled_input = _args[0] if _args else None
            self.sampler.begin(module)
            # Only sampled forwards need a post-forward hook; it removes itself (and runs even
            # when the forward raises, so the sampling mode never outlives it).
            self._post_hook = module.register_forward_hook(
                self.guard.wrap("activation sampling", self._on_root_post), always_call=True)

    def _on_root_post(self, module: torch.nn.Module, _args: Any, output: Any) -> None:
        if self._post_hook is not None:
            self._post_hook.remove()
            self._post_hook = None
        if self.sampler.in_forward:
            self.sampler.forward_done(output)

    def _on_eval_loss(self, name: str, output: Any, target: Any, loss: Any, ignore_index: Any = -100,
                      summed: bool = False) -> None:
        if self.active:
            if torch.is_tensor(loss) and loss.requires_grad and self.validation.open \
                    and not self.validation.phase_has_graph:
                # a loss with a graph after a no-grad evaluation: that evaluation is over (this
                # one is dropped at its backward if it was training in eval mode)
                self.guard.call("validation tracking", self._close_validation_phase)
            self.guard.call("validation tracking", self.validation.on_loss_call, name, output, target, loss,
                            ignore_index if isinstance(ignore_index, int) else None, summed)
            self.guard.call("data checks", self.stream.on_eval_batch, self.validation.eval_input)

    def _on_train_loss_call(self, name: str, target: Any, kwargs: dict) -> None:
        """Any training loss call: (input, label) pairs for the label-signal probe, until the
        stream has enough."""
        if self.active and self.stream.wants_pairs:
            self.guard.call("data checks", self.stream.keep_pair, name, target, kwargs, self._train_input)

    def _on_sampled_loss(self, name: str, out: Any, target: Any, kwargs: dict) -> None:
        x = self._sampled_input
        self.stream.on_train_loss(name, out, target, kwargs, x)
        self._sampled_input = None
        # The batch-mixing probe needs dim 0 to be the batch: the target has one row per input
        # sample (a sequence-first (T, B) language model's flattened target does not).
        model, self._probe_candidate = self._probe_candidate, None
        if model is not None and torch.is_tensor(x) and torch.is_tensor(target) and x.dim() \
                and target.dim() and len(target) == len(x):
            self._probe_input = (model, x)

    def _close_validation_phase(self) -> None:
        acc = self.sampler.train_acc
        self.sampler.train_acc = []
        train_acc = float(torch.stack(acc).mean()) if acc else None
        self.validation.close_phase(self.step, self.loss.take_epoch(self.slot), train_acc)
        self.guard.call("data checks", self.stream.close_eval_phase)

    def _on_scaled_loss(self, scaled: torch.Tensor, scaler: Any) -> None:
        if self.active:
            self._scaler_seen = True
            self.guard.call("loss", self.loss.note_scaled, scaled, scaler)

    def _on_backward_start(self, loss: torch.Tensor) -> None:
        if not self.active:
            return
        if self.sampler.recording:
            self.guard.call("activation sampling", self.sampler.end)
        if self._pending_manual_step and not self.table.optimizers:
            self.guard.call("step clock", self._advance)
        self.guard.call("loss", self.loss.on_backward, loss)
        self.guard.call("validation tracking", self._backward_mode, loss)

    def _backward_mode(self, loss: torch.Tensor) -> None:
        """Count backward passes of losses from eval-mode forwards (dropout off, BatchNorm
        frozen), and drop the evaluation phase such a loss opened."""
        self.validation.discard_if_training()
        if self.validation.eval_forward is not None:
            self.run.eval_mode_backwards[0] += self.validation.eval_mode_with_grad
            self.run.eval_mode_backwards[1] += 1

    def _on_backward_end(self, loss: torch.Tensor) -> None:
        if self.active and self._first_checks_pending:   # no known loss function was called
            self.guard.call("first-batch checks", self._first_batch_checks)
        if self.active and not self.table.optimizers and not self._scaler_seen:
            # No optimizer (manual updates): a step is one backward; measure grads right away.
            # (A GradScaler means an optimizer steps later; its first steps may be skipped.)
            self.guard.call("gradients", self.grads.record, self.table.params,
                            range(len(self.table)), self.slot)
            self._pending_manual_step = True

    def _on_pre_step(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> Any:
        """Before a step: measure its gradients. A step given a closure (LBFGS, any
        ``step(closure)``) computes them inside the closure: the measurement then runs right
        after the closure's first call (the returned arguments carry the wrapped closure)."""
        if not self.active:
            return None
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)
        if not callable(closure):
            self.guard.call("optimizer hooks", self._pre_step, opt)
            return None
        measured = [False]

        def closure_then_measure(*a: Any, **k: Any) -> Any:
            out = closure(*a, **k)
            if not measured[0]:
                measured[0] = True
                if self.active:
                    self.guard.call("optimizer hooks", self._pre_step, opt)
            return out
        if "closure" in kwargs:
            return args, {**kwargs, "closure": closure_then_measure}
        return (args[0], closure_then_measure, *args[2:]), kwargs

    def _pre_step(self, opt: torch.optim.Optimizer) -> None:
        known = len(self.table.optimizers)
        k = self.add_optimizer(opt)
        if self.discover and k == known:              # a new optimizer: its model may be new too
            self._listen_for_models()
        if self.validation.open:
            self.guard.call("validation tracking", self._close_validation_phase)
        self.validation.eval_forward = None
        self._train_input = None                  # the step's batch is not kept past the step
        if self._first_checks_pending:                   # no known loss function was called
            self.guard.call("first-batch checks", self._first_batch_checks)
        self._pending_manual_step = False
        if self.sampler.recording:
            self.sampler.end()
        if k != self.primary:
            self.loss.claim()
            self._follow_new_primary(k)
        self._last_stepper = k
        params, indices = self._params_of(k, opt)
        self.guard.call("stale-gradient probe", self.stale.before_step, k)
        had = self.guard.call("gradients", self.grads.record, params, indices, self.slot)
        counts = self._empty_steps.setdefault(k, [0, 0])
        counts[0] += had is False
        counts[1] += 1
        self.guard.call("update ratios", self.updates.before_step, k, indices, params)

    def _follow_new_primary(self, k: int) -> None:
        """Optimizer ``k`` steps SWITCH_AFTER times in a row while the primary does not: the
        primary was set aside (the next trial, the fine-tuning stage, a resumed copy) and ``k``
        is followed from now on (a head stepping every step beside a backbone stepping every
        few steps never gets there). The data stream starts afresh (a k-fold trial validates on
        the previous trial's training data); a new model (no parameter in common) also starts a
        new segment of the history, so curves of different models are never judged as one."""
        self._run_length = self._run_length + 1 if self._last_stepper == k else 1
        if self._run_length < SWITCH_AFTER:
            return
        old = self.primary
        self.primary = k
        self.step += self._run_length - 1          # its earlier steps count (their losses are lost)
        self.stream = DataStream()    # a new trial's data: k-fold validates on earlier training data
        if old is None or set(self.table.optimizer_indices(old)) & set(self.table.optimizer_indices(k)):
            return
        self.run.new_segment(self.step)
        self.loss.separate = 0
        self._epoch_start = len(self.validation.epochs)

    def _params_of(self, k: int, opt: torch.optim.Optimizer) -> tuple[list[torch.Tensor], list[int]]:
        """Optimizer ``k``'s parameters and table indices, cached until its groups change."""
        cached = self._opt_params.get(k)
        if cached is None or cached[0] != len(opt.param_groups):
            self.table.sync_optimizer(k)
            params = [p for grp in opt.param_groups for p in grp["params"]]
            cached = self._opt_params[k] = (len(opt.param_groups), params,
                                            [self.table.index_of(p) for p in params])
        return cached[1], cached[2]

    def _on_post_step(self, opt: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        if self.active:
            self.guard.call("optimizer hooks", self._post_step, opt)

    def _post_step(self, opt: torch.optim.Optimizer) -> None:
        k = self.add_optimizer(opt)
        self.guard.call("update ratios", self.updates.after_step, k)
        self.stale.after_step(k)
        if k == self.primary:
            self._lrs[self.slot] = opt.param_groups[0]["lr"]
            self._advance()
        if self.discover:
            self._stop_listening_when_settled()

    def _advance(self) -> None:
        """Close the current step: commit its loss, move to the next slot, tick when full."""
        self._pending_manual_step = False
        self.loss.commit(self.slot)
        self.slot += 1
        self.step += 1
        if self.slot == self.interval:
            self._tick()

    # -- the schedule ---------------------------------------------------------------------------
    def _tick(self, final: bool = False) -> None:
        rows, first = self.slot, self.step - self.slot
        self.slot = 0
        self.guard.call("statistics", self._collect, rows, first)
        self._ticks += 1
        if self._ticks == DENSE_TICKS:
            self.interval = min(self.every * SPARSE_FACTOR, MAX_EVERY)
        self.sampler.due = True
        self.updates.due |= set(range(len(self.table.optimizers)))
        self._run_detectors(final)
        self.guard.call("data checks", self._data_checks, final)
        if not final:
            self._control()

    def _control(self) -> None:
        """The control channel: the repair loop acts here, between two optimizer steps, and a
        finding named in ``stop_on`` stops the run (StopTraining). It is not under the fail-safe
        guard (which would swallow its decisions); a failure of the repair loop undoes what it
        did and switches repair off with one warning."""
        if self.controller is not None:
            try:
                self.controller.after_tick()
            except Exception as exc:  # noqa: BLE001 - never reaches the user's loop
                controller, self.controller = self.controller, None
                controller.abandon(exc)
        if self.stop_on:
            worst = [Severity(x).rank for x in self.stop_on if x in ("error", "warning")]
            for f in self.findings.values():
                if f.active and (f.id in self.stop_on or (worst and f.severity.rank >= min(worst))):
                    raise StopTraining(f)
    def _collect(self, rows: int, first: int) -> None:
        losses, seen = self.loss.take(rows)
        grads = self.grads.take(rows)
        lrs, self._lrs = self._lrs[:rows], [float("nan")] * len(self._lrs)
        ratio, norm, gnorm = self.updates.take(len(self.table)) or (None, None, None)
        acts, preds, issues = self.sampler.take()
        tick = Tick(step=self.step, first_step=first, losses=losses, loss_seen=seen,
                    grad_norms=grads, lrs=_floats(lrs), update_ratio=ratio, weight_norm=norm,
                    sample_grad=gnorm,
                    activations=acts, predictions=preds, stale=self.stale.take(),
                    loss_inputs=issues, empty_steps={k: tuple(v) for k, v in self._empty_steps.items()})
        self._empty_steps = {}
        if self.step >= SYMMETRY_CHECK_AFTER and not self.run.symmetric:
            mats = [i for i in self.table.infos if i.is_matrix and i.shape[0] > 1]
            flags = symmetric_rows([self.table.params[i.index] for i in mats])
            tick.symmetric = {i.index: f for i, f in zip(mats, flags)}
        owned = self.table.owned()
        if self.table.optimizers:
            self.run.unowned_with_grad |= {
                i for i, p in enumerate(self.table.params) if i not in owned and p.grad is not None}
        self.run.layer_order = list(self.sampler.layer_order)
        self.run.epochs = self.validation.epochs[self._epoch_start:]
        self.run.separate_losses = self.loss.separate
        self.run.ingest(tick)
        self.guard.call("run directory", self._write_tick, tick)

    def _write_tick(self, tick: Tick) -> None:
        line = tick_line(self.run, tick)
        if self._files is None:
            self._files = RunDirectory(self._run_dir())
        self._files.append(line)
        for sink in self.tick_sinks:
            self.guard.call(f"{type(sink).__name__}", sink.on_tick, line, self.validation.epochs)

    def _run_detectors(self, final: bool) -> None:
        """Evaluate every detector: a new verdict becomes a finding, a known one is refreshed
        (and re-activated), a detector's finding whose condition cleared is marked resolved."""
        active = {i for i, f in self.findings.items() if f.active}
        for det in self.detectors:
            verdict = self.guard.call(f"detector {det.id}", det.evaluate, self.run, active, final)
            known = self.findings.get(det.id)
            if verdict is None:
                if (known is not None and known.active and det.id in self._detected
                        and f"detector {det.id}" not in self.guard.disabled):
                    known.status, known.resolved_step = "resolved", self.step
                    active.discard(det.id)
                continue
            if known is None:
                self._detected.add(det.id)
                self._emit(Finding.make(det.id, verdict.message, where=verdict.where,
                                        step=verdict.step if verdict.step is not None else self.step,
                                        evidence=verdict.evidence, severity=verdict.severity))
            else:
                known.message, known.evidence = verdict.message, dict(verdict.evidence)
                known.status, known.resolved_step = "active", None
                if verdict.where is not None:
                    known.where = verdict.where
            active.add(det.id)
        assign_causes(list(self.findings.values()))

    def _data_checks(self, final: bool = False) -> None:
        """The stream's data decisions and the one-off structural probes (batch mixing on a
        copy of the model, layers frozen at their random initialisation)."""
        self.stream.take()
        self.stream.val_predictions = self.validation.last_predictions
        found = self.stream.findings(self.run, self.run.loss_curve()[1], final)
        if self._probe_input is not None and "batch_mixing" not in self.stream.decided:
            self.stream.decided.add("batch_mixing")
            found += self.guard.call("batch-mixing probe", self._batch_mixing_probe) or []
        if "frozen_random_layers" not in self.stream.decided and self.models:
            self.stream.decided.add("frozen_random_layers")
            from trainmedic.checks.init import frozen_random_finding
            found += self.guard.call("frozen-layer check", frozen_random_finding, self.models) or []
        for f in found:
            f.step = self.step
            self._emit(f)
        if found:
            assign_causes(list(self.findings.values()))

    def _batch_mixing_probe(self) -> "list[Finding]":
        """The checkup's batch-mixing probe on a copy of the model and the first sampled
        training input."""
        from trainmedic.checks.base import Skip
        from trainmedic.checks.wiring import batch_mixing_finding
        self.active = False                # the probe's forwards are not the user's
        try:
            return batch_mixing_finding(*self._probe_input) or []
        except Skip:
            return []
        finally:
            self.active = True
            self._probe_input = None

    def _first_batch_checks(self) -> None:
        """The checkup's cheap checks on the first training batch, from what the first sampled
        step already captured (the model's input, the loss call's input and target): no model
        copy, no extra forward."""
        self._first_checks_pending = False
        if self._first_batch is None:
            return
        from trainmedic.checks import REGISTRY
        from trainmedic.checks.base import CheckContext
        from trainmedic.checkup import run_check
        from trainmedic.quantities.activations import LOSSES
        model, x = self._first_batch
        self._first_batch = None
        name, out, y, kwargs = self.sampler.first_loss or ("", None, None, {})
        self.sampler.first_loss = None
        loss_fn = next((f for f, n in LOSSES.items() if n == name), None)
        ctx = CheckContext(model=model, loss_fn=loss_fn or _no_loss,
                           optimizer=self.table.optimizers[self.primary] if self.primary is not None else None,
                           loss_kwargs=kwargs)
        ctx._train = [(x, y)]
        ctx._out = out
        checks = [name for name, spec in REGISTRY.items() if spec.cheap]
        if loss_fn is not None and out is not None and y is not None:
            ctx.loss_inputs = (out, y)
        else:
            checks.remove("loss_at_init_unexpected")
            checks.remove("target_not_normalized")
        results = []
        for check in checks:
            r = run_check(check, ctx)
            results.append(r.to_dict())
            for f in r.findings:
                f.step = 0
                self._emit(f)
        self.extra_run_info["first_batch_checks"] = results

    def _note(self, finding_id: str, message: str) -> None:
        self._emit(Finding.make(finding_id, message, step=self.step))

    def _emit(self, f: Finding) -> None:
        """Report ``f`` once: keep it and print it, unless its id is already reported."""
        if f.id not in self.findings:
            self.findings[f.id] = f
            self.guard.call("printing findings", self.on_finding, f)

    # -- results ----------------------------------------------------------------------------------
    def close(self, status: str = "completed") -> None:
        """Flush the last partial window, run the detectors a final time, remove every hook."""
        if self._closed:
            return
        self._closed = True
        self._status = status
        if self.sampler.recording:
            self.guard.call("activation sampling", self.sampler.end)
        if self._pending_manual_step:
            self.guard.call("step clock", self._advance)
        if self.validation.open:
            self.guard.call("validation tracking", self._close_validation_phase)
        if self.slot or self._ticks == 0:
            self._tick(final=True)
        else:
            self._run_detectors(final=True)
        if self.controller is not None:
            self.guard.call("repair", self.controller.finish)
        self.active = False
        if self._post_hook is not None:
            self._post_hook.remove()
        if self._discovery_hook is not None:
            self._discovery_hook.remove()
            self._discovery_hook = None
        for h in self._opt_hooks + self._global_hooks + [h for hs in self._model_hooks.values() for h in hs]:
            h.remove()
        self._opt_hooks, self._global_hooks, self._model_hooks = [], [], {}
        self.stale.remove()
        if self._files is not None:
            self._files.close()
        for sink in self.tick_sinks:
            self.guard.call(f"{type(sink).__name__}", sink.close)
        _patches.deactivate(self)
        atexit.unregister(self._atexit)

    def end_validation(self, loss: float | None = None, **metrics: float) -> None:
        """A framework's evaluation ended with these metrics: when the monitor saw its loss calls,
        its own record (with per-class counts and predictions) closes now and gets the metrics it
        lacks; otherwise it is :meth:`log_val`."""
        if not self.validation.open:
            if loss is not None or metrics:
                self.log_val(loss=loss, **metrics)
            return
        known = len(self.validation.epochs)
        self.guard.call("validation tracking", self._close_validation_phase)
        if len(self.validation.epochs) > known:
            for k, v in metrics.items():
                self.validation.epochs[-1].setdefault(f"val_{k}", float(v))

    def log_val(self, loss: float | None = None, **metrics: float) -> None:
        """Record a validation result computed by your own code (closes an epoch), e.g.
        ``monitor.log_val(loss=0.31, acc=0.92)``; keys become ``val_<name>``."""
        record = {"epoch": len(self.validation.epochs) + 1, "step": self.step,
                  "val_loss": None if loss is None else float(loss),
                  "train_loss": self.loss.take_epoch(self.slot), "train_acc": None}
        record.update({f"val_{k}": float(v) for k, v in metrics.items()})
        self.validation.epochs.append(record)

    def report(self, path: "str | os.PathLike[str] | None" = None, *, html: "str | os.PathLike[str] | None" = None,
               close: bool = True) -> Report:
        """The findings so far as a Report, written as JSON to ``<run_dir>/report.json`` (so the
        run directory is always complete), plus a copy at ``path`` when given, and, with ``html``,
        as a self-contained HTML page. Closes the monitor unless ``close=False``."""
        if close:
            self.close(self._status if self._status != "running" else "completed")
        rep = Report(findings=list(self.findings.values()), run=self._run_info())
        own = os.path.join(self._run_dir(), "report.json")
        if path is not None and os.path.realpath(os.fspath(path)) != os.path.realpath(own):
            self._written = rep.write_json(path)          # the explicit path first: it matters most
            rep.write_json(own)
        else:
            self._written = rep.write_json(own)
        if html is not None:
            from trainmedic.report.html import write_html
            from trainmedic.rundir import read_ticks
            write_html(rep, read_ticks(self._run_dir()) if self._files is not None else [], html)
        return rep

    @property
    def report_path(self) -> str | None:
        return self._written

    def _run_dir(self) -> str:
        if self.run_dir is None:
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(self._started))
            self.run_dir = os.path.join("trainmedic-runs", f"{stamp}-{self.name}")
        return self.run_dir

    def _run_info(self) -> dict[str, Any]:
        return {"name": self.name, "status": self._status,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self._started)),
                "duration_s": round(time.time() - self._started, 3), "steps": self.step,
                "every": self.every, "torch": torch.__version__,
                "models": [type(m).__name__ for m in self.models],
                "optimizers": [type(o).__name__ for o in self.table.optimizers],
                "parameters": int(sum(p.numel() for p in self.table.params)),
                "disabled": dict(self.guard.disabled), "argv": list(sys.argv),
                **self._generalisation_info(), **self.extra_run_info}

    def _generalisation_info(self) -> dict[str, Any]:
        """Per-epoch curves, best epoch, goal and diagnosis, metrics, worst mistakes."""
        epochs = self.validation.epochs
        out: dict[str, Any] = {"epochs": epochs}
        scored = [e for e in epochs if e.get("val_loss") is not None]
        if scored:
            out["best_epoch"] = min(scored, key=lambda e: e["val_loss"])["epoch"]
        if self.goal is not None:
            out["goal"] = assess(self.goal, epochs)
        preds = self.validation.last_predictions
        if preds is not None:
            from trainmedic.metrics import classification
            # exact per-class counts of the whole last phase; pairs and coverage from its first samples
            out["metrics"] = classification(preds["target"], preds["pred"], confidence=preds["confidence"],
                                            counts=self.validation.last_counts)
            wrong = np.nonzero(preds["pred"] != preds["target"])[0]
            confident = wrong[np.argsort(-preds["confidence"][wrong])][:8]
            out["worst_mistakes"] = {
                "lowest_true_class_probability": self.validation.worst,
                "most_confident_wrong": [{"index": int(i), "predicted": int(preds["pred"][i]),
                                          "target": int(preds["target"][i]),
                                          "confidence": float(preds["confidence"][i])} for i in confident]}
        return out

    def _finish_at_exit(self) -> None:
        """Interpreter exit without report(): an exception or Ctrl-C ended the script."""
        try:
            if self._written is None:
                crashed = getattr(sys, "last_type", None)
                self.close("completed" if crashed is None else "interrupted"
                           if issubclass(crashed, KeyboardInterrupt) else "crashed")
                self.report()
        except Exception as exc:  # noqa: BLE001
            print(f"trainmedic: could not write the report at exit: {exc}", file=sys.stderr)

    def __enter__(self) -> "Monitor":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        status = "completed" if exc_type is None else (
            "interrupted" if issubclass(exc_type, KeyboardInterrupt) else "crashed")
        self.close(status)
        self.report()


def watch(model: "torch.nn.Module | Iterable[torch.nn.Module] | None" = None,
          optimizer: "torch.optim.Optimizer | Iterable[torch.optim.Optimizer] | None" = None, *,
          every: int = 25, run_dir: "str | os.PathLike[str] | None" = None,
          name: str | None = None, on_finding: Callable[[Finding], None] | None = None,
          goal: str | None = None, tensorboard: "str | os.PathLike[str] | None" = None,
          repair: "bool | dict[str, Any]" = False, stop_on: "str | Iterable[str]" = ()) -> Monitor:
    """Start watching ``model`` trained by ``optimizer`` (each may be one object or a list).

    ``every``: steps between host reads, the detectors' schedule (after the first 10 reads,
    8x sparser so long runs pay less). ``run_dir``: where the report
    is written (default ``./trainmedic-runs/<timestamp>-<name>``). ``on_finding``: called once
    per new finding (default: print it to stderr). ``goal``: e.g. ``"val_acc>=0.95"``; the report
    then shows the gap and where it comes from. ``tensorboard``: a log folder for TensorBoard
    event files (scalars and activation histograms). ``repair``: on a repairable finding, roll
    the run back to its last healthy snapshot, apply the finding's next remedy and verify it
    (``trainmedic.repair``); True, or a dict of options: ``capacity`` (snapshots held in host
    memory, default 1), ``max_attempts`` per finding (3), ``window_ticks``/``window_steps``
    (verification window, 4/100), ``order`` ({finding id: [remedy ids]}, overriding
    ``trainmedic.repair.ORDER`` for those findings). ``stop_on``: finding ids, or "error" /
    "warning" (that severity or worse): when one is active at a tick, :class:`StopTraining` (a
    BaseException) is raised into the loop between two steps."""
    models = [] if model is None else [model] if isinstance(model, torch.nn.Module) else list(model)
    opts = [] if optimizer is None else (
        [optimizer] if isinstance(optimizer, torch.optim.Optimizer) else list(optimizer))
    return Monitor(models, opts, every=every, run_dir=run_dir, name=name, on_finding=on_finding, goal=goal,
                   tensorboard=tensorboard, repair=repair, stop_on=stop_on)


def _stop_set(stop_on: Iterable[str]) -> set[str]:
    """Finding ids and severities ("error", "warning") that stop a run; checked here."""
    from trainmedic.catalog import CATALOG
    out = {stop_on} if isinstance(stop_on, str) else set(stop_on)
    for item in out:
        if item not in CATALOG and item not in ("error", "warning"):
            raise ValueError(f"stop_on={item!r} is neither a finding id nor a severity; expected "
                             f"'error', 'warning' or an id of `trainmedic ids`")
    return out


def _no_loss(_output: Any, _target: Any) -> None:
    return None


def _floats(values: list[Any]):
    import numpy as np
    return np.array([float(v) for v in values], dtype=float)


def _print_finding(f: Finding) -> None:
    from trainmedic.report.terminal import format_finding
    print(format_finding(f), file=sys.stderr, flush=True)

"""The PyTorch front end of a Monitor: its hooks, and the discovery of models and optimizers.

Forward pre-hooks on the watched models (activation sampling, validation awareness, data
checks), step pre/post hooks on the optimizers (their own, or the global ones when discovering),
the loss and backward events that ``_patches`` relays, and in a zero-code run a global forward
hook that finds the models being trained. The hooks feed the monitor's recorders, advance its
step clock, and hand the engine its findings, epoch records and, once per tick, a ``Tick``.
Every event is guarded: nothing raised here reaches the user's code, except what a control
raises on purpose (StopTraining).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from trainmedic.findings import Finding
from trainmedic.history import Tick
from trainmedic.quantities.parameters import symmetric_rows

if TYPE_CHECKING:
    from trainmedic.monitor import Monitor

SYMMETRY_CHECK_AFTER = 10     # steps of training before identical rows count as a fault


COMPILED = ("The model runs under torch.compile: trainmedic does not see inside compiled code, so "
            "activation statistics (dead ReLUs, saturation), the first-batch checks and the data "
            "stream's input checks are off; gradients, losses, learning rates, weights and updates "
            "are measured as usual.")

class Hooks:
    def __init__(self, monitor: "Monitor", *, discover: bool, first_batch_checks: bool) -> None:
        self.clock, self.engine, self.guard = monitor.clock, monitor.engine, monitor.guard
        self.table, self.validation = monitor.table, monitor.engine.validation
        self.grads, self.loss, self.stale = monitor.grads, monitor.loss, monitor.stale
        self.updates, self.sampler = monitor.updates, monitor.sampler
        self.extra_run_info = monitor.extra_run_info
        self.tick = monitor._tick                 # called when the clock's window is full
        self.active = True
        self.discover = discover
        self.models: list[torch.nn.Module] = []
        self._first_batch: tuple[torch.nn.Module, Any] | None = None
        self._first_checks_pending = first_batch_checks
        self.sampler.on_first_loss = self.guard.wrap("first-batch checks", self._first_batch_checks)
        self.sampler.on_loss = self.guard.wrap("data checks", self._on_sampled_loss)
        self._sampled_input: Any = None
        self._train_input: Any = None             # the input of the last training forward
        self.train_input_kind: tuple[torch.Size, torch.dtype] | None = None   # ... its shape and dtype
        self._probe_input: tuple[torch.nn.Module, Any] | None = None   # (model, batch) to probe
        self._probe_candidate: torch.nn.Module | None = None
        self._scaler_seen = False
        self.pending_manual_step = False          # a backward without optimizer, not yet counted
        self._model_hooks: dict[int, list] = {}
        self._post_hook = None
        self._compiled_noted = False
        self._opt_hooks: list = []
        self._global_hooks: list = []
        self._discovery_hook = None
        self._lrs: list[Any] = [float("nan")] * self.clock.window
        self._empty_steps: dict[int, list[int]] = {}
        self._opt_params: dict[int, tuple[int, list[torch.Tensor], list[int]]] = {}

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
            self.engine.note("monitoring_limited",
                             f"{type(model).__name__} is compiled with torch.compile: activation "
                             f"statistics are not collected for it yet (gradients, updates and the "
                             f"loss are).")
            self._model_hooks[id(model)] = []
            return
        self._model_hooks[id(model)] = [
            model.register_forward_pre_hook(self.guard.wrap("activation sampling", self._on_root_call),
                                            with_kwargs=True)]

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
            if self.clock.primary is None:
                self.clock.primary = k
            if hook:
                self._opt_hooks += [opt.register_step_pre_hook(self.on_pre_step),
                                    opt.register_step_post_hook(self.on_post_step)]
        return k

    def remove(self) -> None:
        """Stop watching: every hook is removed."""
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

    # -- discovery (zero-code runs) --------------------------------------------------------------
    def discover_all(self) -> None:
        """Watch every optimizer's steps (global hooks) and find the models they train."""
        from torch.optim.optimizer import (register_optimizer_step_post_hook,
                                           register_optimizer_step_pre_hook)
        self._global_hooks = [register_optimizer_step_pre_hook(self.on_pre_step),
                              register_optimizer_step_post_hook(self.on_post_step)]
        self._listen_for_models()

    def discover_models(self) -> None:
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
            self.guard.call("activation sampling", self.on_root_pre, module, args)

    def _on_root_call(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        """A watched model's forward: its input is the first positional argument, else the
        first of INPUT_KEYWORDS it was given (``model(**batch)`` in Hugging Face code)."""
        key = None if args or not kwargs else input_keyword(kwargs)
        self.on_root_pre(module, args if key is None else (kwargs[key],))

    def on_root_pre(self, module: torch.nn.Module, _args: Any) -> None:
        if self.sampler.recording:
            self.sampler.end()
        self.validation.on_root_forward(module, _args)
        compiling = torch.compiler.is_compiling()
        if compiling and not self._compiled_noted:
            self._compiled_noted = True
            self.engine.note("monitoring_limited", COMPILED)
        training = module.training and torch.is_grad_enabled() and not compiling
        if self.active and training and _args:
            x = self._train_input = _args[0]
            # a plain tensor's kind (a nested tensor's .shape raises)
            self.train_input_kind = (x.shape, x.dtype) if type(x) is torch.Tensor else None
            self.guard.call("data checks", self.engine.stream.on_train_forward, x)
        if self.active and self.sampler.due and training:
            if self._first_checks_pending and self._first_batch is None and _args:
                self._first_batch = (module, _args[0])
            if "batch_mixing" not in self.engine.stream.decided and self._probe_input is None and _args:
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

    def on_eval_loss(self, name: str, output: Any, target: Any, loss: Any, ignore_index: Any = -100,
                     summed: bool = False) -> None:
        if self.active:
            if torch.is_tensor(loss) and loss.requires_grad and self.validation.open \
                    and not self.validation.phase_has_graph:
                # a loss with a graph after a no-grad evaluation: that evaluation is over (this
                # one is dropped at its backward if it was training in eval mode)
                self.guard.call("validation tracking", self.close_validation_phase)
            self.guard.call("validation tracking", self.validation.on_loss_call, name, output, target, loss,
                            ignore_index if isinstance(ignore_index, int) else None, summed)
            self.guard.call("data checks", self.engine.stream.on_eval_batch, self.validation.eval_input)
            self.engine.after_epochs()

    def on_train_loss_call(self, name: str, target: Any, kwargs: dict) -> None:
        """Any training loss call: (input, label) pairs for the label-signal probe, until the
        stream has enough."""
        if self.active and self.engine.stream.wants_pairs:
            self.guard.call("data checks", self.engine.stream.keep_pair, name, target, kwargs, self._train_input)

    def _on_sampled_loss(self, name: str, out: Any, target: Any, kwargs: dict) -> None:
        x = self._sampled_input
        self.engine.stream.on_train_loss(name, out, target, kwargs, x)
        self._sampled_input = None
        # The batch-mixing probe needs dim 0 to be the batch: the target has one row per input
        # sample (a sequence-first (T, B) language model's flattened target does not).
        model, self._probe_candidate = self._probe_candidate, None
        if model is not None and torch.is_tensor(x) and torch.is_tensor(target) and x.dim() \
                and target.dim() and len(target) == len(x):
            self._probe_input = (model, x)

    def close_validation_phase(self) -> None:
        """The open validation phase becomes an epoch record (the engine's controls see it)."""
        acc = self.sampler.train_acc
        self.sampler.train_acc = []
        train_acc = float(torch.stack(acc).mean()) if acc else None
        record = self.validation.close_phase(self.clock.step, self.loss.take_epoch(self.clock.slot), train_acc)
        if record is not None:
            self.engine.epoch_closed(record)
        self.guard.call("data checks", self.engine.stream.close_eval_phase)

    def on_scaled_loss(self, scaled: torch.Tensor, scaler: Any) -> None:
        if self.active:
            self._scaler_seen = True
            self.guard.call("loss", self.loss.note_scaled, scaled, scaler)

    def on_backward_start(self, loss: torch.Tensor) -> None:
        if not self.active:
            return
        if self.sampler.recording:
            self.guard.call("activation sampling", self.sampler.end)
        if self.pending_manual_step and not self.table.optimizers:
            self.guard.call("step clock", self.advance)
        self.guard.call("loss", self.loss.on_backward, loss)
        self.guard.call("validation tracking", self._backward_mode, loss)

    def _backward_mode(self, loss: torch.Tensor) -> None:
        """Count backward passes of losses from eval-mode forwards (dropout off, BatchNorm
        frozen), and drop the evaluation phase such a loss opened."""
        self.validation.discard_if_training()
        if self.validation.eval_forward is not None:
            self.engine.run.eval_mode_backwards[0] += self.validation.eval_mode_with_grad
            self.engine.run.eval_mode_backwards[1] += 1

    def on_backward_end(self, loss: torch.Tensor) -> None:
        if self.active and self._first_checks_pending:   # no known loss function was called
            self.guard.call("first-batch checks", self._first_batch_checks)
        if self.active and not self.table.optimizers and not self._scaler_seen:
            # No optimizer (manual updates): a step is one backward; measure grads right away.
            # (A GradScaler means an optimizer steps later; its first steps may be skipped.)
            self.guard.call("gradients", self.grads.record, self.table.params,
                            range(len(self.table)), self.clock.slot)
            self.pending_manual_step = True

    def on_pre_step(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> Any:
        """Before a step: measure its gradients. A step given a closure (LBFGS, any
        ``step(closure)``) computes them inside the closure: the measurement then runs right
        after the closure's first call (the returned arguments carry the wrapped closure)."""
        if not self.active:
            return None
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)
        if not callable(closure):
            self.guard.call("optimizer hooks", self._pre_step, opt)
            self.engine.after_epochs()
            return None
        measured = [False]

        def closure_then_measure(*a: Any, **k: Any) -> Any:
            out = closure(*a, **k)
            if not measured[0]:
                measured[0] = True
                if self.active:
                    self.guard.call("optimizer hooks", self._pre_step, opt)
                    self.engine.after_epochs()
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
            self.guard.call("validation tracking", self.close_validation_phase)
        self.validation.eval_forward = None
        self._train_input = None                  # the step's batch is not kept past the step
        if self._first_checks_pending:                   # no known loss function was called
            self.guard.call("first-batch checks", self._first_batch_checks)
        self.pending_manual_step = False
        if self.sampler.recording:
            self.sampler.end()
        if k != self.clock.primary:
            self.loss.claim()
        old = self.clock.primary
        if self.clock.stepping(k):
            self._follow_new_primary(old, k)
        params, indices = self._params_of(k, opt)
        self.guard.call("stale-gradient probe", self.stale.before_step, k)
        had = self.guard.call("gradients", self.grads.record, params, indices, self.clock.slot)
        counts = self._empty_steps.setdefault(k, [0, 0])
        counts[0] += had is False
        counts[1] += 1
        self.guard.call("update ratios", self.updates.before_step, k, indices, params)

    def _follow_new_primary(self, old: int | None, k: int) -> None:
        """Optimizer ``k`` is followed from now on, instead of ``old`` (see StepClock.stepping):
        a new trial for the engine, of a new model when they have no parameter in common."""
        new_model = old is not None and not (
            set(self.table.optimizer_indices(old)) & set(self.table.optimizer_indices(k)))
        self.engine.new_trial(new_model)
        if new_model:
            self.loss.separate = 0

    def _params_of(self, k: int, opt: torch.optim.Optimizer) -> tuple[list[torch.Tensor], list[int]]:
        """Optimizer ``k``'s parameters and table indices, cached until its groups change."""
        cached = self._opt_params.get(k)
        if cached is None or cached[0] != len(opt.param_groups):
            self.table.sync_optimizer(k)
            params = [p for grp in opt.param_groups for p in grp["params"]]
            cached = self._opt_params[k] = (len(opt.param_groups), params,
                                            [self.table.index_of(p) for p in params])
        return cached[1], cached[2]

    def on_post_step(self, opt: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        if self.active:
            self.guard.call("optimizer hooks", self._post_step, opt)

    def _post_step(self, opt: torch.optim.Optimizer) -> None:
        k = self.add_optimizer(opt)
        self.guard.call("update ratios", self.updates.after_step, k)
        self.stale.after_step(k)
        if k == self.clock.primary:
            self._lrs[self.clock.slot] = opt.param_groups[0]["lr"]
            self.advance()
        if self.discover:
            self._stop_listening_when_settled()

    def advance(self) -> None:
        """Close the current step: commit its loss, move to the next slot, tick when full."""
        self.pending_manual_step = False
        self.loss.commit(self.clock.slot)
        if self.clock.advance():
            self.tick()

    # -- what a tick reads -----------------------------------------------------------------------
    def take_tick(self, rows: int, first: int) -> Tick:
        """The window's ``rows`` steps (from step ``first``), read from the device buffers once;
        the recorders start a new window."""
        run, step = self.engine.run, self.clock.step
        losses, seen = self.loss.take(rows)
        grads = self.grads.take(rows)
        lrs, self._lrs = self._lrs[:rows], [float("nan")] * len(self._lrs)
        ratio, norm, gnorm = self.updates.take(len(self.table)) or (None, None, None)
        acts, preds, issues = self.sampler.take()
        tick = Tick(step=step, first_step=first, losses=losses, loss_seen=seen,
                    grad_norms=grads, lrs=np.array([float(v) for v in lrs], dtype=float),
                    update_ratio=ratio, weight_norm=norm, sample_grad=gnorm,
                    activations=acts, predictions=preds, stale=self.stale.take(),
                    loss_inputs=issues, empty_steps={k: tuple(v) for k, v in self._empty_steps.items()})
        self._empty_steps = {}
        if step >= SYMMETRY_CHECK_AFTER and not run.symmetric:
            mats = [i for i in self.table.infos if i.is_matrix and i.shape[0] > 1]
            flags = symmetric_rows([self.table.params[i.index] for i in mats])
            tick.symmetric = {i.index: f for i, f in zip(mats, flags)}
        owned = self.table.owned()
        if self.table.optimizers:
            run.unowned_with_grad |= {
                i for i, p in enumerate(self.table.params) if i not in owned and p.grad is not None}
        return tick

    def probes(self) -> list[Finding]:
        """The one-off structural probes of the data checks: batch mixing on a copy of the
        model, layers frozen at their random initialisation."""
        stream, found = self.engine.stream, []
        if self._probe_input is not None and "batch_mixing" not in stream.decided:
            stream.decided.add("batch_mixing")
            found += self.guard.call("batch-mixing probe", self._batch_mixing_probe) or []
        if "frozen_random_layers" not in stream.decided and self.models:
            stream.decided.add("frozen_random_layers")
            from trainmedic.checks.init import frozen_random_finding
            found += self.guard.call("frozen-layer check", frozen_random_finding, self.models) or []
        return found

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
        primary = self.clock.primary
        ctx = CheckContext(model=model, loss_fn=loss_fn or _no_loss,
                           optimizer=self.table.optimizers[primary] if primary is not None else None,
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
                self.engine.emit(f)
        self.extra_run_info["first_batch_checks"] = results


# The model input among keyword arguments, by the names Hugging Face models use (text, images,
# audio, precomputed embeddings), then the usual plain names.
INPUT_KEYWORDS = ("input_ids", "pixel_values", "input_values", "input_features", "inputs_embeds",
                  "x", "input", "inputs")


def input_keyword(kwargs: dict) -> str | None:
    """The first of INPUT_KEYWORDS given as a tensor (the model's input); None for none."""
    return next((k for k in INPUT_KEYWORDS if torch.is_tensor(kwargs.get(k))), None)


def _no_loss(_output: Any, _target: Any) -> None:
    return None

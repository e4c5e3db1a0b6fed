"""Monitor: watches one training run; :func:`watch` builds it.

    monitor = trainmedic.watch(model, optimizer)   # or: with trainmedic.watch(...) as monitor:
    ... the user's loop, unchanged ...
    monitor.report()

Hot path per optimizer step: one foreach norm over the gradients and a few tensor references;
no host sync. Every ``every`` steps (8x ``every`` after the first 10 reads) the host reads the
buffers once (a *tick*), updates the history and runs the detectors. Activation statistics and
update ratios are taken on one sampled step per tick.

The Monitor composes its parts: the hooks (``_hooks``) feed the recorders (``quantities``) and
advance the step clock (``step_clock``); at each tick the engine (``engine``) ingests what the
recorders read, runs the detectors and the data checks, and lets its controls act (the repair
loop, ``stop_on``, those added with :meth:`Monitor.add_control`); the report is assembled by
``report.assemble``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import weakref
from typing import Any, Callable, Iterable, Iterator

import torch

from trainmedic import _patches
from trainmedic._hooks import Hooks
from trainmedic._safety import Guard
from trainmedic.detectors import default_detectors
from trainmedic.distributed import RankWatch
from trainmedic.engine import Engine, StopOn, StopTraining, stop_set
from trainmedic.findings import Finding, Report
from trainmedic.goals import Goal
from trainmedic.history import Tick
from trainmedic.params import ParamTable
from trainmedic.ranks import group_exists, process_rank
from trainmedic.quantities.activations import ActivationSampler
from trainmedic.quantities.gradients import GradNormRecorder, StaleGradCounter
from trainmedic.quantities.loss import LossRecorder
from trainmedic.quantities.parameters import UpdateSampler
from trainmedic.report.assemble import RunOutput, run_info
from trainmedic.step_clock import MAX_EVERY, StepClock


def _part(component: str, name: str) -> property:
    """An attribute of one of the monitor's parts, read and set as the monitor's own."""
    return property(lambda self: getattr(getattr(self, component), name),
                    lambda self, value: setattr(getattr(self, component), name, value))


class Monitor:
    """Watches one training run. Build it with :func:`watch` (or the zero-code runner)."""

    def __init__(self, models: Iterable[torch.nn.Module] = (),
                 optimizers: Iterable[torch.optim.Optimizer] = (), *, every: int = 25,
                 run_dir: "str | os.PathLike[str] | None" = None, name: str | None = None,
                 on_finding: Callable[[Finding], None] | None = None, discover: bool = False,
                 first_batch_checks: bool = True, goal: "str | None" = None,
                 tensorboard: "str | os.PathLike[str] | None" = None,
                 repair: "bool | dict[str, Any]" = False, stop_on: Iterable[str] = (),
                 pretrained: bool = False) -> None:
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
        stop_on = stop_set(stop_on)      # checked before anything is built
        if pretrained:
            from trainmedic.finetune import mark_pretrained
            for m in models:
                mark_pretrained(m, except_head=True)
        self.clock = StepClock(every)
        self.guard = Guard()
        self.table = ParamTable()
        self.rank = process_rank()           # rank 0 prints and writes; the others only measure
        self._rank_settled = group_exists()  # else the first tick after init_process_group decides
        self.engine = Engine(self.table, self.clock, self.guard, goal=self.goal,
                             detectors=default_detectors(),
                             on_finding=on_finding if on_finding is not None else _print_finding)
        self.output = RunOutput(name or "watch", run_dir, self.guard)
        self.extra_run_info: dict[str, Any] = {}
        self.grads = GradNormRecorder(self.table, self.clock.window)
        self.loss = LossRecorder(self.clock.window)
        self.stale = StaleGradCounter()
        self.updates = UpdateSampler(self.table)
        self.sampler = ActivationSampler(self.guard)
        self.hooks = Hooks(self, discover=discover, first_batch_checks=first_batch_checks)
        self.ranks = RankWatch(self)         # a distributed job: the ranks' summaries compared
        self._closed = False
        if tensorboard is not None:
            from trainmedic.report.tensorboard import TensorBoardWriter
            self.tick_sinks.append(TensorBoardWriter(os.fspath(tensorboard)))
        if self.rank != 0:
            self._go_quiet()
        self._controller: Any = None
        if repair:
            options = dict(repair) if isinstance(repair, dict) else {}
            if "apply" in options:
                from trainmedic.repair.start import StartWith
                self.controller = StartWith(self, options.pop("apply"))
            else:
                from trainmedic.repair import RepairController
                self.controller = RepairController(self, **options)
        self._stop_rule = self.add_control(StopOn(self.findings, stop_on))
        _patches.activate(self)
        for m in models:
            self.add_model(m)
        for opt in optimizers:
            self.add_optimizer(opt, hook=True)
        if discover:
            self.hooks.discover_all()
        ref = weakref.ref(self)
        self._atexit = lambda: (m := ref()) is not None and m._finish_at_exit()
        atexit.register(self._atexit)
        for join in list(_JOINERS):
            join(self)

    # -- the parts' state, as the monitor's own --------------------------------------------------
    findings = _part("engine", "findings")
    run = _part("engine", "run")
    detectors = _part("engine", "detectors")
    validation = _part("engine", "validation")
    stream = _part("engine", "stream")
    on_finding = _part("engine", "on_finding")
    _epoch_start = _part("engine", "epoch_start")
    stop_on = _part("_stop_rule", "stop_on")
    step = _part("clock", "step")
    primary = _part("clock", "primary")
    models = _part("hooks", "models")
    active = _part("hooks", "active")
    discover = _part("hooks", "discover")
    run_dir = _part("output", "run_dir")
    tick_sinks = _part("output", "sinks")

    @property
    def report_path(self) -> str | None:
        return self.output.written

    @property
    def controller(self) -> Any:
        """The control built from ``repair=`` (the repair loop, or remedies applied from the
        start); None when there is none or it was switched off."""
        c = self._controller
        return c if c is not None and self.engine.has_control(c) else None

    @controller.setter
    def controller(self, control: Any) -> None:
        self.engine.replace_control(self.controller, control)
        self._controller = control

    # -- registration ---------------------------------------------------------------------------
    def add_model(self, model: torch.nn.Module) -> None:
        self.hooks.add_model(model)

    def add_optimizer(self, opt: torch.optim.Optimizer, hook: bool = False) -> int:
        return self.hooks.add_optimizer(opt, hook)

    def discover_models(self) -> None:
        """Find the models being trained from now on (the modules whose parameters the
        optimizers hold, as they are called), as ``trainmedic run`` does: for a framework that
        calls submodules of the object it was given (a LightningModule's ``self.net(x)``)."""
        self.hooks.discover_models()

    def add_control(self, control: Any) -> Any:
        """Let ``control`` act on the run between two steps: its ``after_tick()`` is called after
        each tick, its ``after_epoch(record)`` (optional) once for each validation epoch closed,
        with that epoch's record (``epoch``, ``val_loss``, ``val_acc``, ...). It may raise
        :class:`StopTraining`; any other exception removes it (its ``abandon(exc)``, when it has
        one, undoes what it did and warns; otherwise the monitor warns once) and training goes
        on. Controls act in the order they were added (after the repair loop and the ``stop_on``
        rule); returns ``control``."""
        return self.engine.add_control(control)

    # -- the schedule ---------------------------------------------------------------------------
    def _tick(self, final: bool = False) -> None:
        if not self._rank_settled:
            self.guard.call("distributed statistics", self._settle_rank)
        rows, first = self.clock.take_window()
        self.guard.call("statistics", self._collect, rows, first)
        self.clock.ticked()
        self.sampler.due = True
        self.updates.due |= set(range(len(self.table.optimizers)))
        self.engine.run_detectors(final)
        self.guard.call("data checks", self.engine.data_checks, final, self.hooks.probes)
        if not final:
            self.guard.call("distributed statistics", self.ranks.exchange)
            self.engine.after_tick()

    def _settle_rank(self) -> None:
        """A process group made after watch() (a worker of ``mp.spawn``, which sets no ``RANK``,
        watched before its ``init_process_group``) gives the rank at the first tick after it: a
        rank other than 0 goes quiet then, before it printed or wrote anything."""
        if not group_exists():
            return
        self._rank_settled = True
        self.rank = process_rank()
        if self.rank != 0:
            self._go_quiet()

    def _go_quiet(self) -> None:
        """A rank other than 0 measures only: no printed findings, no files, no sinks (a
        TensorBoard writer writes nothing before its first tick)."""
        if self.engine.on_finding is _print_finding:
            self.engine.on_finding = _silent
        self.output.files = False
        for sink in self.output.sinks:
            getattr(sink, "close", lambda: None)()
        self.output.sinks.clear()

    def _collect(self, rows: int, first: int) -> None:
        tick = self.hooks.take_tick(rows, first)
        self.engine.ingest(tick, self.sampler.layer_order, self.loss.separate)
        self.guard.call("run directory", self._write_tick, tick)

    def _write_tick(self, tick: Tick) -> None:
        self.output.on_tick(self.run, tick, self.validation.epochs)

    # -- results ----------------------------------------------------------------------------------
    def close(self, status: str = "completed") -> None:
        """Flush the last partial window, run the detectors a final time, remove every hook."""
        if self._closed:
            return
        self._closed = True
        self.output.status = status
        if self.sampler.recording:
            self.guard.call("activation sampling", self.sampler.end)
        if self.hooks.pending_manual_step:
            self.guard.call("step clock", self.hooks.advance)
        if self.validation.open:
            self.guard.call("validation tracking", self.hooks.close_validation_phase)
        try:
            self.engine.after_epochs()
        except StopTraining:
            pass                               # the run is over already
        if self.clock.slot or self.clock.ticks == 0:
            self._tick(final=True)
        else:
            self.engine.run_detectors(final=True)
        self.guard.call("distributed statistics", self.ranks.exchange, True)
        if self.controller is not None:
            self.guard.call("repair", self.controller.finish)
        self.hooks.remove()
        self.output.close()
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
        self.guard.call("validation tracking", self.hooks.close_validation_phase)
        if len(self.validation.epochs) > known:
            for k, v in metrics.items():
                self.validation.epochs[-1].setdefault(f"val_{k}", float(v))
        self.engine.after_epochs()

    def log_val(self, loss: float | None = None, **metrics: float) -> None:
        """Record a validation result computed by your own code (closes an epoch), e.g.
        ``monitor.log_val(loss=0.31, acc=0.92)``; keys become ``val_<name>``."""
        record = {"epoch": len(self.validation.epochs) + 1, "step": self.step,
                  "val_loss": None if loss is None else float(loss),
                  "train_loss": self.loss.take_epoch(self.clock.slot), "train_acc": None}
        record.update({f"val_{k}": float(v) for k, v in metrics.items()})
        self.validation.epochs.append(record)
        self.engine.epoch_closed(record)
        self.engine.after_epochs()

    def preview_augmentation(self, augment: Callable[..., Any], x: torch.Tensor, y: torch.Tensor | None = None,
                             n: int = 16) -> None:
        """Show what ``augment`` makes of ``x`` in the run's HTML report (the originals above the
        augmented samples): :func:`trainmedic.augment.preview`."""
        from trainmedic.augment.preview import report_section
        self.extra_run_info["augmentation"] = report_section(augment, x, y, n)

    def report(self, path: "str | os.PathLike[str] | None" = None, *, html: "str | os.PathLike[str] | None" = None,
               close: bool = True) -> Report:
        """The findings so far as a Report, written as JSON to ``<run_dir>/report.json`` (so the
        run directory is always complete), plus a copy at ``path`` when given, and, with ``html``,
        as a self-contained HTML page. Closes the monitor unless ``close=False``."""
        if close:
            self.close(self.output.status if self.output.status != "running" else "completed")
        rep = Report(findings=list(self.findings.values()), run=run_info(self))
        self.output.write(rep, path, html)
        return rep

    def _finish_at_exit(self) -> None:
        """Interpreter exit without report(): an exception or Ctrl-C ended the script."""
        try:
            if self.output.written is None:
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
          repair: "bool | dict[str, Any]" = False, stop_on: "str | Iterable[str]" = (),
          pretrained: bool = False) -> Monitor:
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
    BaseException) is raised into the loop between two steps. ``pretrained``: the model's weights
    as given are pretrained, except its head (the last ``nn.Linear``): fine-tuning is then
    watched for ``pretrained_features_destroyed`` (``trainmedic.finetune`` marks them itself)."""
    models = [] if model is None else [model] if isinstance(model, torch.nn.Module) else list(model)
    opts = [] if optimizer is None else (
        [optimizer] if isinstance(optimizer, torch.optim.Optimizer) else list(optimizer))
    return Monitor(models, opts, every=every, run_dir=run_dir, name=name, on_finding=on_finding, goal=goal,
                   tensorboard=tensorboard, repair=repair, stop_on=stop_on, pretrained=pretrained)


_JOINERS: list[Callable[[Monitor], None]] = []


@contextlib.contextmanager
def attached(join: Callable[[Monitor], None]) -> Iterator[None]:
    """While active, ``join(monitor)`` is called for every Monitor built (at the end of its
    construction): how a tuning trial adds its control to the monitors of the code it runs."""
    _JOINERS.append(join)
    try:
        yield
    finally:
        _JOINERS.remove(join)


def _silent(_f: Finding) -> None:
    """Findings on ranks other than 0: kept in the monitor, printed by rank 0 only."""


def _print_finding(f: Finding) -> None:
    from trainmedic.report.terminal import format_finding
    print(format_finding(f), file=sys.stderr, flush=True)

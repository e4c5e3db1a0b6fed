"""The engine: what a run's numbers mean, whichever front end measured them.

It is fed ticks (numbers already on the host) and validation epochs, keeps the history the
detectors read (RunState), runs the detectors and the data checks, keeps the findings (each
reported once) and drives the controls: the one way the engine acts on a run.

A *control* is any object with ``after_tick()`` (called after each tick, between two steps)
and optionally ``after_epoch(record)`` (called once for each validation epoch record closed,
with that record). Controls are not hooks: the fail-safe guard does not swallow what they raise.
:class:`StopTraining` goes on to the training loop; a control raising any other exception is
removed, and its ``abandon(exc)`` is called (it undoes what the control did and warns once) or,
without one, the engine warns once; training goes on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from trainmedic._safety import Guard, warn
from trainmedic.datastream import DataStream
from trainmedic.distributed import measured_here
from trainmedic.findings import Finding, Severity, assign_causes
from trainmedic.history import RunState, Tick
from trainmedic.params import ParamTable
from trainmedic.step_clock import StepClock
from trainmedic.validation import ValidationTracker

if TYPE_CHECKING:
    from trainmedic.detectors.base import Verdict


class StopTraining(BaseException):
    """Raised into the training loop, between two steps, by a control: a finding named in
    ``stop_on`` is active (a ``trainmedic fix`` candidate whose fault came back), a pruned
    trial. ``reason``: a Finding or a plain string (e.g. "pruned: median pruner at epoch 3");
    ``.finding`` is the Finding (None for a string), ``.reason`` its id or the string. A
    BaseException, so a script's own ``except Exception`` does not swallow it."""

    def __init__(self, reason: "Finding | str") -> None:
        if isinstance(reason, Finding):
            super().__init__(f"{reason.id} at step {reason.step}")
            self.finding: Finding | None = reason
            self.reason = reason.id
        else:
            super().__init__(str(reason))
            self.finding = None
            self.reason = str(reason)


def stop_set(stop_on: "str | Iterable[str]") -> set[str]:
    """Finding ids and severities ("error", "warning") that stop a run; checked here."""
    from trainmedic.catalog import CATALOG
    out = {stop_on} if isinstance(stop_on, str) else set(stop_on)
    for item in out:
        if item not in CATALOG and item not in ("error", "warning"):
            raise ValueError(f"stop_on={item!r} is neither a finding id nor a severity; expected "
                             f"'error', 'warning' or an id of `trainmedic ids`")
    return out


class StopOn:
    """The ``stop_on`` rule as a control: after a tick, an active finding named in ``stop_on``
    (a set that may change during the run), or of a severity it names or worse, stops the run."""

    def __init__(self, findings: dict[str, Finding], stop_on: set[str]) -> None:
        self.findings = findings
        self.stop_on = stop_on

    def after_tick(self) -> None:
        if not self.stop_on:
            return
        worst = [Severity(x).rank for x in self.stop_on if x in ("error", "warning")]
        for f in self.findings.values():
            if f.active and measured_here(f) and (f.id in self.stop_on or (worst and f.severity.rank >= min(worst))):
                raise StopTraining(f)


class Engine:
    def __init__(self, table: ParamTable, clock: StepClock, guard: Guard, *, goal: Any,
                 detectors: list[Any], on_finding: Callable[[Finding], None]) -> None:
        self.clock = clock
        self.guard = guard
        self.run = RunState(table, goal=goal)
        self.detectors = detectors
        self.findings: dict[str, Finding] = {}
        self._detected: set[str] = set()          # ids whose finding a detector raised
        self.on_finding = on_finding
        self.validation = ValidationTracker()
        self.stream = DataStream()
        self.epoch_start = 0                      # validation epochs of earlier segments
        self.controls: list[Any] = []
        self._closed_epochs: list[dict[str, Any]] = []   # not yet seen by the controls
        self._schedulers: dict[int, list[Any]] = {}       # each optimizer's, once looked up

    # -- findings -------------------------------------------------------------------------------
    def emit(self, f: Finding) -> None:
        """Report ``f`` once: keep it and print it, unless its id is already reported."""
        if f.id not in self.findings:
            self.findings[f.id] = f
            self.guard.call("optimizer advice", self._advise, f)
            self.guard.call("printing findings", self.on_finding, f)

    def _advise(self, f: Finding) -> None:
        """Put advice for the run's own optimizer and LR schedulers before the finding's generic
        fixes (:mod:`trainmedic.optim_advice`); none for an optimizer that only stands for a
        foreign one (Keras's). Its schedulers are looked up once per optimizer, at the first
        finding that has such advice (a scan of the optimizer's referrers)."""
        from trainmedic.optim_advice import ADVISED, advice_text, advise, describe
        primary = self.clock.primary
        if f.id not in ADVISED or primary is None:
            return
        opt = self.run.params.optimizers[primary]
        if getattr(opt, "foreign", False):
            return
        if id(opt) not in self._schedulers:
            from trainmedic.repair.snapshots import find_schedulers
            self._schedulers[id(opt)] = find_schedulers([opt])
        sizes = self.stream.batch_sizes
        lines = advice_text(advise(f.id, describe(opt, self._schedulers[id(opt)]), f.evidence, step=f.step,
                                   batch_size=int(np.median(sizes)) if sizes else None))
        f.fixes = lines + [x for x in f.fixes if x not in lines]

    def note(self, finding_id: str, message: str) -> None:
        self.emit(Finding.make(finding_id, message, step=self.clock.step))

    # -- ticks ----------------------------------------------------------------------------------
    def ingest(self, tick: Tick, layer_order: Iterable[str], separate_losses: int) -> None:
        """Add a tick to the history, with the run's validation epochs of the current segment."""
        self.run.layer_order = list(layer_order)
        self.run.epochs = self.validation.epochs[self.epoch_start:]
        self.run.separate_losses = separate_losses
        self.run.ingest(tick)

    def new_trial(self, new_model: bool) -> None:
        """Another optimizer is followed from now on: the data stream starts afresh (a k-fold
        trial validates on the previous trial's training data); a new model (no parameter in
        common) also starts a new segment of the history and of the epochs, so curves of
        different models are never judged as one."""
        self.stream = DataStream()
        if new_model:
            self.run.new_segment(self.clock.step)
            self.epoch_start = len(self.validation.epochs)

    def run_detectors(self, final: bool) -> None:
        """Evaluate every detector and :meth:`judge` its verdict."""
        step = self.clock.step
        active = {i for i, f in self.findings.items() if f.active}
        for det in self.detectors:
            verdict = self.guard.call(f"detector {det.id}", det.evaluate, self.run, active, final)
            if verdict is None and (det.id not in self._detected
                                    or f"detector {det.id}" in self.guard.disabled):
                continue
            self._detected.add(det.id)
            if self.judge(det.id, verdict, step):
                active.add(det.id)
            else:
                active.discard(det.id)
        assign_causes(list(self.findings.values()))

    def judge(self, finding_id: str, verdict: Verdict | None, step: int) -> bool:
        """A rule's verdict as its finding: a new verdict becomes a finding, a known one is
        refreshed (and re-activated), a finding whose condition cleared (None) is marked resolved
        at ``step``. Whether the finding is active now."""
        known = self.findings.get(finding_id)
        if verdict is None:
            if known is not None and known.active:
                known.status, known.resolved_step = "resolved", step
            return False
        if known is None:
            self.emit(Finding.make(finding_id, verdict.message, where=verdict.where,
                                   step=verdict.step if verdict.step is not None else step,
                                   evidence=verdict.evidence, severity=verdict.severity))
        else:
            known.message, known.evidence = verdict.message, dict(verdict.evidence)
            known.status, known.resolved_step = "active", None
            if verdict.where is not None:
                known.where = verdict.where
        return True

    def data_checks(self, final: bool = False,
                    probes: "Callable[[], list[Finding]] | None" = None) -> None:
        """The stream's data decisions, then ``probes``: the front end's one-off structural
        probes (they record what they decided in ``stream.decided``)."""
        self.stream.take()
        self.stream.val_predictions = self.validation.last_predictions
        found = self.stream.findings(self.run, self.run.loss_curve()[1], final,
                                     active={i for i, f in self.findings.items() if f.active})
        if probes is not None:
            found += probes()
        for f in found:
            f.step = self.clock.step
            self.emit(f)
        if found:
            assign_causes(list(self.findings.values()))

    # -- the control channel --------------------------------------------------------------------
    def add_control(self, control: Any) -> Any:
        """Add ``control`` after the others; returns it."""
        self.controls.append(control)
        return control

    def replace_control(self, old: Any, new: Any) -> None:
        """``new`` takes ``old``'s place (the first place when ``old`` is not a control);
        ``new=None`` removes ``old``."""
        i = next((i for i, c in enumerate(self.controls) if c is old), None)
        if i is None:
            if new is not None:
                self.controls.insert(0, new)
        elif new is None:
            del self.controls[i]
        else:
            self.controls[i] = new

    def has_control(self, control: Any) -> bool:
        return any(c is control for c in self.controls)

    def after_tick(self) -> None:
        self._each("after_tick")

    def epoch_closed(self, record: dict[str, Any]) -> None:
        """A validation epoch record was closed; the controls see it at :meth:`after_epochs`."""
        self._closed_epochs.append(record)

    def after_epochs(self) -> None:
        """Every control's ``after_epoch``, once for each epoch record closed since the last
        call, in order; first each detector's ``after_epoch(run, record)`` where it has one (it
        measures the weights as they were validated, before any control acts)."""
        while self._closed_epochs:
            record = self._closed_epochs.pop(0)
            for det in self.detectors:
                if hasattr(det, "after_epoch"):
                    self.guard.call(f"detector {det.id}", det.after_epoch, self.run, record)
            self._each("after_epoch", record)

    def _each(self, method: str, *args: Any) -> None:
        for control in list(self.controls):
            fn = getattr(control, method, None)
            if fn is None or not self.has_control(control):     # removed by an earlier one
                continue
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001 - never reaches the user's loop
                self._abandon(control, exc)

    def _abandon(self, control: Any, exc: Exception) -> None:
        self.replace_control(control, None)
        abandon = getattr(control, "abandon", None)
        if abandon is not None:
            try:
                abandon(exc)
                return
            except Exception:  # noqa: BLE001
                pass
        warn(f"trainmedic: control {type(control).__name__} switched off after an error "
             f"({type(exc).__name__}: {exc}); training goes on without it")

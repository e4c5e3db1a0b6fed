"""RepairController: the repair loop, driven by the monitor's control channel.

After every tick (between two optimizer steps) the monitor calls :meth:`after_tick`:

- no active repairable error finding (and no attempt being verified): a healthy point; a
  snapshot goes into the ring (skipped when a parameter is NaN/Inf);
- a repairable finding (one with an entry in ``order.ORDER``) is active: roll the run back in
  place to a snapshot (unless the remedy needs none), apply the next remedy of the finding's
  list (``order.arranged``: a warmup first for a fault answered in the first steps under an
  adaptive optimizer) and verify it (see ``Remedy.verify``): over a window of ``window_ticks``
  ticks or ``window_steps`` steps, whichever comes first (for a remedy with a ramp, a warmup,
  counted from the end of its ``ramp_steps``), the finding must not come back and, for most
  remedies, the loss must end below the loss at the snapshot *and* below the unrepaired run's
  loss the same number of steps after the snapshot; overfitting remedies are judged on new
  validation epochs against the unrepaired run's epochs after the same snapshot (see
  ``_verify_val``: the train/validation gap must close, the validation loss must not get worse),
  with ticks every ``every`` steps while they wait, so the verdict comes at the epoch that
  decides it. A remedy
  that fails is undone and the next one is tried (at most ``max_attempts`` per finding, not
  counting those that do not apply). When
  every attempt failed, the user's settings are restored, the run goes back to the snapshot and
  goes on as the user wrote it.

Snapshots are taken at healthy ticks; once the run has validation epochs, only at the first
tick after an epoch with the best validation loss so far, so the newest snapshot is also the
point an early stop goes back to.

Attempt ``n`` (0-based) of a finding rolls back to the ``n``-th newest snapshot of the ring
(the oldest when it holds fewer), so a ring of more than one snapshot lets later attempts go
further back. A rollback makes the detectors forget the rolled-back part: the run's loss and
tick history start a new segment, the validation epochs after the snapshot are dropped, the
first non-finite loss/gradient and the stale-gradient counts are cleared, and the gradients are
cleared (set to None). Steps after a rollback are
counted again: the monitor's step keeps increasing, the report's ``run.repairs`` says where
each rollback went.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import torch

from trainmedic._safety import warn
from trainmedic.distributed import measured_here
from trainmedic.findings import Severity
from trainmedic.repair import order as _order
from trainmedic.repair.remedies import NotApplicable, RepairContext, Remedy
from trainmedic.repair.snapshots import Snapshot, SnapshotRing, find_schedulers

VAL_EPOCHS = 2         # new validation epochs, at least, that judge an overfitting remedy
VAL_WINDOW = 20        # ... and at most this many, compared with the unrepaired run's
GAP_KEPT = 2 / 3       # a kept overfitting remedy closes a third of the train/validation gap
VAL_TOLERANCE = 0.02   # ... with a mean validation loss at most this much above the unrepaired run's


class RepairController:
    def __init__(self, monitor: Any, *, capacity: int = 1, schedulers: Any = (), scaler: Any = None,
                 max_attempts: int = 3, window_ticks: int = 4, window_steps: int = 100,
                 order: dict[str, list[str]] | None = None) -> None:
        self.monitor = monitor
        self.ring = SnapshotRing(capacity)
        self.schedulers = list(schedulers)
        self.scaler = scaler
        self.max_attempts = max_attempts
        self.window_ticks = window_ticks
        self.window_steps = window_steps
        for name, v in (("capacity", capacity), ("max_attempts", max_attempts),
                        ("window_ticks", window_ticks), ("window_steps", window_steps)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}={v!r}: expected an int >= 1")
        self.order = {**_order.ORDER, **(order or {})}
        for fid, ids in self.order.items():
            for rid in ids:
                try:
                    _order.make(rid)
                except ValueError as exc:
                    raise ValueError(f"order[{fid!r}]: {exc}") from None
        self.attempts: list[dict[str, Any]] = monitor.extra_run_info.setdefault("repairs", [])
        self.kept: list[Remedy] = []
        self._orders: dict[str, list[str]] = {}   # each finding's list, arranged at its first attempt
        # each finding's run before its first rollback: (step, loss) rows and its validation
        # epochs as (step, val_loss, train_loss, val_acc)
        self._unrepaired: dict[str, tuple[np.ndarray, list]] = {}
        self._given_up: set[str] = set()
        self._current: dict[str, Any] | None = None
        self._ticks = 0
        self._snapped_epochs = -1            # validation epochs when the last snapshot was taken
        self._warned = False
        # The first snapshot is taken just before the first optimizer step (a global pre-hook
        # that removes itself), so a fault in the first tick has a healthy point to go back to.
        # It is removed later, from after_tick: a hook must not remove itself from the dict
        # torch is iterating.
        from torch.optim.optimizer import register_optimizer_step_pre_hook
        self._first_done = False
        self._first_hook = register_optimizer_step_pre_hook(self._before_first_step)

    # -- what the run is made of ----------------------------------------------------------------
    def _objects(self, extra_opt: Any = None) -> tuple[list, list, list]:
        m = self.monitor
        opts = list(m.table.optimizers)
        if extra_opt is not None and not any(extra_opt is o for o in opts):
            opts.append(extra_opt)
        scheds = list(self.schedulers)
        for s in find_schedulers(opts):
            if not any(s is t for t in scheds):
                scheds.append(s)
        return list(m.models), opts, scheds

    def _context(self, finding: Any = None) -> RepairContext:
        m = self.monitor
        _, _, scheds = self._objects()
        opt = m.table.optimizers[m.primary]
        return RepairContext(monitor=m, optimizer=opt, finding=finding,
                             schedulers=[s for s in scheds if getattr(s, "optimizer", None) is opt])

    def _take(self, extra_opt: Any = None) -> Snapshot | None:
        models, opts, scheds = self._objects(extra_opt)
        if not models or not opts:
            return None
        params = [p for mod in models for p in mod.parameters() if p.is_floating_point()]
        if params and not bool(torch.isfinite(torch.stack(torch._foreach_norm(params))).all()):
            return None                              # not a healthy point (one host read)
        snap = self.ring.take(self.monitor.step, self._loss(), models, opts, scheds, self.scaler)
        snap.objects = (models, opts, scheds)
        return snap

    def _healthy_point(self) -> None:
        """A snapshot at this healthy tick, unless the last validation epoch was not the best
        so far (or was snapshotted already)."""
        epochs = [e.get("val_loss") for e in self.monitor.validation.epochs]
        scored = [v for v in epochs if v is not None and math.isfinite(v)]
        if scored:
            if self._snapped_epochs == len(epochs) or epochs[-1] is None or epochs[-1] > min(scored):
                return
        if self._take() is not None:
            self._snapped_epochs = len(epochs)

    def _restore(self, snap: Snapshot) -> None:
        models, opts, scheds = snap.objects
        self.ring.restore(snap, models, opts, scheds, self.scaler)
        for o in opts:
            o.zero_grad(set_to_none=True)
        self._forget(snap)

    def _forget(self, snap: Snapshot) -> None:
        """The detectors forget the rolled-back part of the run."""
        m = self.monitor
        run = m.run
        epochs = m.validation.epochs
        epochs[:] = [e for e in epochs if e.get("step", 0) <= snap.step]
        self._snapped_epochs = min(self._snapped_epochs, len(epochs))
        m._epoch_start = min(m._epoch_start, len(epochs))
        run.epochs = epochs[m._epoch_start:]
        run.new_segment(m.step)
        run.initial_hint = snap.loss
        run.symmetric, run.loss_inputs = {}, {}
        m.sampler.discard()
        run.first_nonfinite_loss = None
        run.first_nonfinite_grad = None
        run.stale = {}
        run.empty_steps = {}

    def _loss(self) -> float | None:
        _, v = self.monitor.run.smoothed_loss()
        v = [float(x) for x in v if math.isfinite(float(x))]
        return v[-1] if v else None

    def _recent_loss(self, since: int) -> tuple[float | None, int]:
        """Median of the last (up to 25) per-step losses after monitor step ``since`` (NaN/Inf
        count as +inf), and how many steps after ``since`` the last one is."""
        s, v = self.monitor.run.loss_steps[:, 0], self.monitor.run.loss_steps[:, 1]
        keep = s > since
        s, v = s[keep], v[keep]
        if not len(v):
            return None, 0
        v = np.where(np.isfinite(v), v, np.inf)[-25:]
        return float(np.median(v)), int(s[-1] - since)

    # -- the control channel --------------------------------------------------------------------
    def _before_first_step(self, opt: Any, _args: Any, _kwargs: Any) -> None:
        m = self.monitor
        if self._first_done:
            return
        try:
            if m.controller is not self or not m.active:
                self._first_done = True
                return
            known = any(opt is o for o in m.table.optimizers)
            if not known and not m.discover:
                return                                # not an optimizer of this run
            if self._take(opt) is not None:
                self._first_done = True
        except Exception as exc:  # noqa: BLE001 - never reaches the user's loop
            self._first_done = True
            if m.controller is self:
                m.controller = None
            self.abandon(exc, inside_hook=True)

    def _remove_first_hook(self) -> None:
        self._first_done = True
        if self._first_hook is not None:
            self._first_hook.remove()
            self._first_hook = None

    def after_tick(self) -> None:
        m = self.monitor
        self._ticks += 1
        if self._first_done:
            self._remove_first_hook()
        if m.primary is None:
            return
        if self._current is not None:
            self._verify()
            self._pace()
            return
        repairable = [f for f in m.findings.values() if f.active and f.id in self.order
                      and self._root(f) in self.order and measured_here(f)]
        todo = [f for f in repairable if f.id not in self._given_up]
        if todo:
            rank = {k: i for i, k in enumerate(_order.PRIORITY)}
            finding = min(todo, key=lambda f: rank.get(f.id, len(rank)))
            self._attempt(finding, [f.id for f in repairable if self._follows(f, finding.id)])
            self._pace()
        elif not repairable:
            self._remove_first_hook()
            self._healthy_point()

    def _pace(self) -> None:
        """Dense ticks while an overfitting remedy waits for its epochs, so it is judged at the
        first epoch that can decide it (sparse ticks come up to 8x later). Called right after a
        tick."""
        cur = self._current
        self.monitor.clock.dense(cur is not None and cur["remedy"].verify == "val")

    def _root(self, finding: Any) -> str:
        """The root cause of ``finding`` (its ``caused_by`` chain): the symptoms of a cause that
        is not repaired in place (unshuffled data, leakage, label noise...) are not touched. The
        chain stops before a cause this rank did not measure (``rank_divergence``, another
        rank's finding): every rank of a job decides on what it saw, so they act alike."""
        seen, f = set(), finding
        while f.caused_by is not None and f.caused_by not in seen and f.caused_by in self.monitor.findings:
            cause = self.monitor.findings[f.caused_by]
            if not measured_here(cause):
                break
            seen.add(f.id)
            f = cause
        return f.id

    def _follows(self, f: Any, cause: str) -> bool:
        """Whether ``f`` is the finding ``cause`` or follows from it (its ``caused_by`` chain)."""
        seen = set()
        while f is not None and f.id not in seen:
            if f.id == cause:
                return True
            seen.add(f.id)
            f = self.monitor.findings.get(f.caused_by) if f.caused_by else None
        return False

    def _records(self, finding_id: str) -> list[dict[str, Any]]:
        return [r for r in self.attempts if r["finding"] == finding_id]

    def _record(self, finding: Any, remedy: Remedy, outcome: str, rolled_back_to: int | None = None,
                loss_before: float | None = None, reason: str | None = None) -> dict[str, Any]:
        """A new entry of the report's ``run.repairs`` for this attempt."""
        record = {"finding": finding.id, "remedy": remedy.id, "description": remedy.description,
                  "cost": remedy.cost, "step": self.monitor.step, "rolled_back_to_step": rolled_back_to,
                  "outcome": outcome, "loss_before": loss_before, "loss_after": None}
        if reason is not None:
            record["reason"] = reason
        self.attempts.append(record)
        return record

    def _attempt(self, finding: Any, targets: list[str]) -> None:
        m = self.monitor
        records = self._records(finding.id)
        n = len(records)                                            # remedies tried or skipped
        rolled_back = any(r["rolled_back_to_step"] is not None for r in records)
        # each remedy that applied and failed sends the next one a snapshot further back (the
        # newest may already hold the fault); one that did not apply says nothing of it
        applied = sum(r["outcome"] not in ("skipped", "not applicable") for r in records)
        if finding.id not in self._orders:
            from trainmedic.detectors.learning_rate import adaptive
            self._orders[finding.id] = _order.arranged(self.order[finding.id], step=m.step,
                                                       adaptive=adaptive(m.run))
        order = self._orders[finding.id]
        snap = self.ring.back(applied)
        if n >= len(order) or applied >= self.max_attempts or snap is None:
            why = ("no healthy snapshot to roll back to" if snap is None else
                   f"{applied} remedies tried, none verified" if applied else
                   "each of its remedies would undo a kept one" if all(r["outcome"] == "skipped" for r in records)
                   else "none of its remedies applies to this run")
            self._give_up(finding, targets, why, rolled_back=rolled_back)
            return
        remedy = _order.make(order[n])
        undone = self._undoes(remedy)
        if undone is not None:
            self._record(finding, remedy, "skipped", reason=f"it would undo {undone}")
            self._attempt(finding, targets)
            return
        try:
            remedy.check(self._context(finding))
        except NotApplicable as exc:          # known before any rollback: none is made
            self._record(finding, remedy, "not applicable", reason=str(exc))
            self._attempt(finding, targets)
            return
        back = remedy.rollback
        record = self._record(finding, remedy, "unverified", snap.step if back else None, snap.loss)
        # the unrepaired run after the snapshot: its loss (and validation loss) at the same
        # distance is the bar (the run as it was before this finding's first rollback, not a
        # failed attempt's)
        if finding.id not in self._unrepaired:
            self._unrepaired[finding.id] = (m.run.loss_steps.copy(), [
                (e.get("step", 0), e.get("val_loss"), e.get("train_loss"), e.get("val_acc"))
                for e in m.validation.epochs])
        steps, vals = self._unrepaired[finding.id]
        unrepaired = steps[steps[:, 0] > snap.step].copy() if back else None
        if unrepaired is not None:
            unrepaired[:, 0] -= snap.step
        self._current = {"finding": finding.id, "remedy": remedy, "record": record, "snap": snap,
                         "start_step": m.step, "start_tick": self._ticks, "targets": list(targets),
                         "unrepaired": unrepaired, "ramp_tick": None,
                         "unrepaired_epochs": [(v, t, a) for s, v, t, a in vals if s > snap.step and v is not None] if back else []}
        if back:
            self._restore(snap)
        else:                  # the detectors judge what happens from now on
            m._epoch_start = len(m.validation.epochs)
            m.run.epochs, m.run.eval_mode_backwards = [], [0, 0]
        scored = [e.get("val_loss") for e in m.validation.epochs if e.get("val_loss") is not None]
        self._current["epochs"] = len(m.validation.epochs)
        self._current["best_val"] = min(scored) if scored else None      # at the snapshot
        for fid in targets:                # pending: a detector that fires again re-activates it
            f = m.findings[fid]
            f.status, f.resolved_step = "resolved", m.step
        where = f"rolled back to step {snap.step}" if back else "no rollback"
        try:
            remedy.apply(self._context(finding))
        except NotApplicable as exc:
            self._current = None
            record["outcome"], record["reason"] = "not applicable", str(exc)
            self._attempt(finding, targets)
            return
        if remedy.new_objective:           # the snapshot's loss is no start for the new loss
            m.run.initial_hint = None
        record["description"] = remedy.description
        _say(f"{finding.id} at step {m.step}: {where}, trying {remedy.id} ({remedy.description}), "
             f"attempt {applied + 1} of at most {min(self.max_attempts, len(order) - n + applied)}")

    def _verify(self) -> None:
        m = self.monitor
        cur = self._current
        snap, record, remedy = cur["snap"], cur["record"], cur["remedy"]
        back = [f.id for f in m.findings.values() if f.active and f.id not in self._given_up and (
            f.id in cur["targets"] or (f.id in self.order and f.severity == Severity.ERROR))]
        if remedy.verify == "val":
            back = [fid for fid in back if fid != cur["finding"]]   # judged on new epochs below
        if back:
            self._fail(f"{', '.join(back)} came back")
            return
        if remedy.verify == "val":
            self._verify_val(cur)
            return
        ramp = remedy.ramp_steps                         # the window starts after the ramp
        if m.step - cur["start_step"] < ramp:
            return
        if cur["ramp_tick"] is None:
            cur["ramp_tick"] = self._ticks
        start_tick = cur["ramp_tick"] if ramp else cur["start_tick"]
        if (self._ticks - start_tick < self.window_ticks
                and m.step - cur["start_step"] - ramp < self.window_steps):
            return
        loss, reached = self._recent_loss(cur["start_step"])
        record["loss_after"] = loss
        if remedy.verify == "loss":
            bar = snap.loss if snap.loss is not None else _finite(m.run.initial_loss())
            record["loss_before"] = bar   # a snapshot before any loss: the rolled-back run's first
            ref = self._unrepaired_loss(cur["unrepaired"], reached)
            record["loss_unrepaired"] = ref
            if loss is None or not math.isfinite(loss) or (bar is not None and not loss < bar):
                self._fail(f"the loss {_g(loss)} did not get below {_g(bar)} (at the snapshot)")
                return
            if ref is not None and not loss < ref:
                self._fail(f"the loss {_g(loss)} is not below the unrepaired run's {_g(ref)} "
                           f"{reached} steps after the snapshot")
                return
        self._keep(cur, "the finding did not come back" + (
            f" and the loss went from {_g(record['loss_before'])} to {_g(loss)}"
            if remedy.verify == "loss" else ""))

    def _verify_val(self, cur: dict[str, Any]) -> None:
        """Overfitting remedies, judged against the unrepaired run's validation epochs after the
        same snapshot, epoch for epoch, once the attempt has as many new epochs as that run had
        (at least VAL_EPOCHS, at most VAL_WINDOW; checked at ticks, so possibly more): the
        train/validation gap of its last epochs must have closed to at most GAP_KEPT of the
        unrepaired run's, without a validation loss worse than the unrepaired run's (mean over
        the window, VAL_TOLERANCE for noise; for a remedy with a ``new_objective``, the second
        half of the window, strictly below). A regulariser slows the rise of the validation loss
        rather than undoing it, and a rerun differs from the unrepaired run by noise (the batch
        order changes after a rollback), so the validation loss alone keeps no-ops or rejects
        good remedies; the gap is what a regulariser acts on and what a no-op leaves as it was.
        With no unrepaired epochs to compare, the best new epoch must reach the best validation
        loss at the snapshot."""
        epochs = self.monitor.validation.epochs[cur["epochs"]:]
        new = [(e.get("val_loss"), e.get("train_loss"), e.get("val_acc")) for e in epochs
               if e.get("val_loss") is not None]
        ref = cur["unrepaired_epochs"][:VAL_WINDOW]
        if len(new) < max(VAL_EPOCHS, len(ref)):
            return
        record, bar = cur["record"], cur["best_val"]
        record["val_loss_before"] = bar
        record["val_loss_after"] = min(e[0] for e in new)
        k = len(ref)
        gap, gap_ref = _gap(new[:k]), _gap(ref)
        if gap is not None and gap_ref is not None and gap_ref > 0:
            # a remedy that changes what the model is trained on (augmentation) first costs
            # validation loss while the model adapts: its mean is taken over the window's second
            # half, and must be below the unrepaired run's (its gap, on training loss of the new
            # inputs, closes whether or not the model generalises better)
            strict = cur["remedy"].new_objective
            settled = k // 2 if strict else 0
            val = float(np.mean([e[0] for e in new[settled:k]]))
            val_ref = float(np.mean([e[0] for e in ref[settled:]]))
            record.update(val_gap=gap, val_gap_unrepaired=gap_ref, val_mean=val, val_mean_unrepaired=val_ref,
                          val_epochs=[settled + 1, k])
            accs, accs_ref = [e[2] for e in new[settled:k]], [e[2] for e in ref[settled:]]
            if all(isinstance(a, (int, float)) for a in accs + accs_ref):
                record.update(val_acc_mean=float(np.mean(accs)), val_acc_mean_unrepaired=float(np.mean(accs_ref)))
            seen = (f"after {k} epochs the train/validation gap is {_g(gap)} (unrepaired run: "
                    f"{_g(gap_ref)}), the mean validation loss {_g(val)} (unrepaired: {_g(val_ref)})"
                    + (f" over epochs {settled + 1}-{k}" if settled else ""))
            if gap > GAP_KEPT * gap_ref:
                self._fail(seen + f": the gap did not close to {GAP_KEPT:.0%} of the unrepaired run's")
            elif not math.isfinite(val) or val > (1 + (0 if strict else VAL_TOLERANCE)) * val_ref:
                self._fail(seen + ": the validation loss got worse")
            else:
                self._keep(cur, seen)
            return
        if bar is not None and not record["val_loss_after"] <= bar:
            self._fail(f"the validation loss {_g(record['val_loss_after'])} did not get back to its best {_g(bar)}")
            return
        self._keep(cur, f"the validation loss reached {_g(record['val_loss_after'])} (best before: {_g(bar)})")

    @staticmethod
    def _unrepaired_loss(curve: np.ndarray | None, reached: int) -> float | None:
        """The unrepaired run's loss ``reached`` steps after the snapshot (median of up to 25
        steps up to there; its last ones when it did not get that far; NaN/Inf as +inf)."""
        if curve is None or not len(curve):
            return None
        upto = curve[curve[:, 0] <= reached]
        v = (upto if len(upto) else curve)[-25:, 1]
        return float(np.median(np.where(np.isfinite(v), v, np.inf)))

    def _undoes(self, remedy: Remedy) -> str | None:
        """The kept remedy whose setting ``remedy`` would turn back (weight decay lowered for
        a regulariser that dominates after it was raised against overfitting), or None."""
        if remedy.moves is None:
            return None
        setting, way = remedy.moves
        return next((f"{k.id} (kept: {setting} {'up' if way < 0 else 'down'})" for k in self.kept
                     if k.moves is not None and k.moves == (setting, -way)), None)

    def _keep(self, cur: dict[str, Any], evidence: str) -> None:
        m = self.monitor
        record = cur["record"]
        record["outcome"] = "kept"
        self.kept.append(cur["remedy"])
        for fid in cur["targets"]:
            f = m.findings[fid]
            f.status, f.resolved_step = "resolved", m.step
        self._current = None
        _say(f"{cur['finding']}: {record['remedy']} kept (verified at step {m.step}: {evidence})")
        # Older snapshots hold the settings before the remedy: start the ring afresh here, with
        # the verified point (healthy whatever its validation loss).
        self.ring = SnapshotRing(self.ring.capacity)
        if self._take() is not None:
            self._snapped_epochs = len(m.validation.epochs)

    def finish(self) -> None:
        """The run ended: an attempt still being verified stays applied, marked as such; loss
        transforms are taken out (they belong to this run's loss calls)."""
        from trainmedic.repair.loss_remedies import release
        cur, self._current = self._current, None
        if cur is not None:
            cur["record"]["outcome"] = "unverified"
            cur["record"]["reason"] = "the run ended before the verification window did"
            self.kept.append(cur["remedy"])
        self._remove_first_hook()
        release(self.kept)

    def _fail(self, why: str) -> None:
        m = self.monitor
        cur, self._current = self._current, None
        cur["record"]["outcome"] = "failed"
        cur["record"]["reason"] = why
        cur["remedy"].undo(self._context())
        _say(f"{cur['finding']}: {cur['record']['remedy']} failed at step {m.step} ({why}); undone")
        finding = m.findings[cur["finding"]]
        self._attempt(finding, cur["targets"])

    def _give_up(self, finding: Any, targets: list[str], why: str, rolled_back: bool) -> None:
        m = self.monitor
        self._given_up |= {finding.id, *targets}     # its symptoms are not tried on their own
        snap = self.ring.newest
        if snap is not None and rolled_back:
            self._restore(snap)           # back to the healthy point, with the user's settings
        for fid in {finding.id, *targets}:
            f = m.findings.get(fid)
            if f is not None:
                f.status, f.resolved_step = "active", None
        m.extra_run_info.setdefault("repairs_given_up", []).append(
            {"finding": finding.id, "step": m.step, "reason": why})
        _say(f"{finding.id}: not repaired ({why}); the run goes on" +
             (" with your own settings" if not self.kept else ""))

    def abandon(self, exc: BaseException, inside_hook: bool = False) -> None:
        """An internal error: undo the remedy being tried, switch repair off, warn once."""
        try:
            if inside_hook:
                self._first_done = True
            else:
                self._remove_first_hook()
            cur, self._current = self._current, None
            if cur is not None:
                cur["record"]["outcome"] = "abandoned"
                cur["record"]["reason"] = f"{type(exc).__name__}: {exc}"
                try:
                    cur["remedy"].undo(self._context())
                except Exception:  # noqa: BLE001
                    pass
                for fid in cur["targets"]:
                    f = self.monitor.findings.get(fid)
                    if f is not None:
                        f.status, f.resolved_step = "active", None
            self.monitor.extra_run_info["repair_disabled"] = f"{type(exc).__name__}: {exc}"
        except Exception:  # noqa: BLE001
            pass
        if self._warned:
            return
        self._warned = True
        warn(f"trainmedic: repair switched off after an internal error ({type(exc).__name__}: "
             f"{exc}); the remedy being tried was undone, training goes on unrepaired")


def _gap(epochs: list[tuple[float, float | None, Any]]) -> float | None:
    """Mean validation-minus-training loss of the last (up to) three epochs with both
    (epochs: (validation loss, training loss, validation accuracy))."""
    gaps = [v - t for v, t, _ in epochs if t is not None and math.isfinite(v) and math.isfinite(t)][-3:]
    return float(np.mean(gaps)) if gaps else None


def _say(text: str) -> None:
    print(f"trainmedic REPAIR {text}", file=sys.stderr, flush=True)


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _g(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"

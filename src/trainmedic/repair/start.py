"""Remedies applied from the first optimizer step on, without rollback or verification: how
``trainmedic fix`` runs a candidate whose remedy is not a literal in the script. The first
step's gradients, computed before the remedies, are dropped (that step changes nothing). Plays
the controller's part on the monitor's control channel (``after_tick``, ``finish``,
``abandon``)."""

from __future__ import annotations

from typing import Any

from trainmedic._safety import warn
from trainmedic.repair import order as _order
from trainmedic.repair.remedies import NotApplicable, RepairContext
from trainmedic.repair.snapshots import find_schedulers


class StartWith:
    def __init__(self, monitor: Any, remedies: list[str]) -> None:
        from torch.optim.optimizer import register_optimizer_step_pre_hook
        self.monitor = monitor
        self.remedies = [_order.make(r) for r in remedies]
        self.applied: list[dict[str, str]] = monitor.extra_run_info.setdefault("applied_from_start", [])
        self._ctx: RepairContext | None = None
        self._hook = register_optimizer_step_pre_hook(self._first_step)

    def _first_step(self, opt: Any, _args: Any, _kwargs: Any) -> None:
        if self._ctx is not None or not self.monitor.active:
            return
        self._ctx = RepairContext(monitor=self.monitor, optimizer=opt,
                                  schedulers=find_schedulers([opt]))
        try:
            for r in self.remedies:
                r.apply(self._ctx)
                self.applied.append({"remedy": r.id, "description": r.description})
            # the first forward and backward ran without the remedies: their gradients (from a
            # constant init, raw inputs, probabilities fed to the loss) are dropped, not applied
            opt.zero_grad(set_to_none=True)
            self.monitor.sampler.discard()
        except NotApplicable as exc:
            self.monitor.extra_run_info["not_applicable"] = str(exc)
            self.abandon(exc, quiet=True)
        except Exception as exc:  # noqa: BLE001 - never reaches the user's loop
            self.abandon(exc)

    def after_tick(self) -> None:
        if self._ctx is not None and self._hook is not None:
            self._hook.remove()
            self._hook = None

    def finish(self) -> None:
        from trainmedic.repair.loss_remedies import release
        self.after_tick()
        release(self.remedies)

    def abandon(self, exc: BaseException, quiet: bool = False) -> None:
        """A remedy failed to apply: undo them all, say so once (unless it simply does not
        apply to this run), train on unchanged."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        for r in self.remedies:
            try:
                r.undo(self._ctx)
            except Exception:  # noqa: BLE001
                pass
        if quiet:
            return
        self.monitor.extra_run_info["repair_disabled"] = f"{type(exc).__name__}: {exc}"
        warn(f"trainmedic: could not apply the remedies ({type(exc).__name__}: {exc}); "
             f"training goes on unchanged")

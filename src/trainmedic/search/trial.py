"""One tuning trial: a script run in this process, watched, with the trial's values routed in.

The trial is stopped early, between two steps, in two ways:

- **by diagnosis**: an error finding of the training dynamics (``PRUNE_ON``: divergence, a
  non-finite loss or gradient, a learning rate too high, exploding gradients, constant
  predictions) ends it at once; the finding is the reason recorded on the trial;
- **by Optuna's pruner**: the metric of each validation epoch is reported to the trial
  (``trial.report``), and ``trial.should_prune()`` ends it.

Faults of the script itself (wiring, data) are the same in every trial: they are recorded on
the trial (``findings``), never a reason to prune.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
from typing import Any, Mapping

import optuna

from trainmedic import run_metric
from trainmedic.catalog import CATALOG
from trainmedic.monitor import StopTraining, attached
from trainmedic.search.routes import Routes
from trainmedic.search.space import suggest

PRUNE_ON = tuple(sorted(k for k, t in CATALOG.items()
                        if t.category == "dynamics" and t.severity == "error"))


class TrialFailed(Exception):
    """The script crashed or exited with an error in this trial (the trial ends FAIL)."""


NONFINITE = "non-finite metric"     # why a trial whose metric became NaN/Inf was stopped
PRUNER = "pruner"                    # why a trial Optuna's pruner stopped was stopped


class TrialControl:
    """A monitor control: reports each validation epoch's ``metric`` (``acc`` finds
    ``val_acc``) to the Optuna trial and stops the run (StopTraining) when the pruner says so,
    or, with ``diagnosis``, when the metric is NaN/Inf. The reason goes to the trial's
    ``pruned_by`` (PRUNER, NONFINITE or the finding id), its wording to ``pruned_reason``."""

    def __init__(self, trial: optuna.Trial, metric: str, diagnosis: bool = True) -> None:
        self.trial = trial
        self.metric = metric
        self.diagnosis = diagnosis
        self.epoch = 0

    def after_epoch(self, record: Mapping[str, Any]) -> None:
        self.epoch += 1
        key = self.metric if self.metric in record else f"val_{self.metric}"
        value = record.get(key)
        if value is None or not isinstance(value, (int, float)):
            return
        if not math.isfinite(value):                 # the run blew up before a tick said so
            if self.diagnosis:
                self._stop(NONFINITE, f"{key} is {value} at epoch {self.epoch}")
            return
        self.trial.report(float(value), self.epoch - 1)      # Optuna's steps count from 0
        if self.trial.should_prune():
            self._stop(PRUNER, f"{type(self.trial.study.pruner).__name__} at epoch {self.epoch} "
                               f"({key} {value:.4g})")

    def _stop(self, why: str, wording: str) -> None:
        self.trial.set_user_attr("pruned_reason", wording)
        raise StopTraining(why)


def run_trial(trial: optuna.Trial, script: str, args: list[str], space: Mapping[str, Any],
              routes: Mapping[str, str], *, metric: str, out_dir: str, every: int = 25,
              diagnosis: bool = True) -> float:
    """Run ``script`` once with the trial's values; its final ``metric``. Raises
    ``optuna.TrialPruned`` when the run was stopped early, ``TrialFailed`` when the script
    failed, KeyboardInterrupt when it was interrupted (Ctrl-C ends the search), ValueError when
    the run never produced ``metric`` or a value reached no route."""
    from trainmedic.runner import run_script_outcome
    values = suggest(trial, space)
    run_dir = os.path.join(out_dir, f"trial-{trial.number:04d}")
    os.makedirs(run_dir, exist_ok=True)

    def join(monitor: Any) -> None:
        monitor.add_control(TrialControl(trial, metric, diagnosis))
        if diagnosis:
            monitor.stop_on |= set(PRUNE_ON)

    with Routes(values, routes) as routed, attached(join), \
            open(os.path.join(run_dir, "output.txt"), "w", encoding="utf-8") as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        outcome = run_script_outcome(script, args, run_dir=run_dir, every=every, live=False)
    with open(os.path.join(run_dir, "report.json"), encoding="utf-8") as fh:
        report = json.load(fh)
    info = report["run"]
    trial.set_user_attr("routes", routed.taken)
    trial.set_user_attr("steps", int(info.get("steps") or 0))
    trial.set_user_attr("run_dir", run_dir)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    trial.set_user_attr("findings", sorted({f["id"] for f in report["findings"]}))
    if outcome.status == "interrupted":
        raise KeyboardInterrupt
    if outcome.status == "stopped":                 # before a later route could be reached
        reason = info.get("stopped_by") or "stopped"
        trial.set_user_attr("pruned_by", reason)
        raise optuna.TrialPruned(trial.user_attrs.get("pruned_reason", reason))
    if outcome.code != 0:                           # a crash may come before a route is reached
        raise TrialFailed(f"the script ended with exit code {outcome.code} ({outcome.status}); "
                          f"see {run_dir}/output.txt")
    if routed.missing():
        raise ValueError(f"--param {', '.join(routed.missing())}: the script never used it (no "
                         f"argparse flag parsed, no optimizer or DataLoader built with it)")
    value = run_metric.value(report, run_metric.resolve(report, metric, "--metric"))
    if value is None:
        raise ValueError(f"--metric {metric!r}: the run's value is not a number")
    return value

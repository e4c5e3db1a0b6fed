"""Report assembly: where one run's results go, and the run metadata of its Report.

:class:`RunOutput` owns the run directory (named on first use:
``./trainmedic-runs/<timestamp>-<name>``), its metrics.jsonl (one line per tick), the tick sinks
(TensorBoard, the live terminal view), report.json and the HTML page. :func:`run_info` is the
report's ``run`` section, :func:`generalisation_info` its part on validation epochs.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from trainmedic._safety import Guard
from trainmedic.findings import Report
from trainmedic.goals import Goal, assess
from trainmedic.history import RunState, Tick
from trainmedic.params import SHARDED_NOTE
from trainmedic.rundir import RunDirectory, tick_line
from trainmedic.validation import ValidationTracker

if TYPE_CHECKING:
    from trainmedic.monitor import Monitor


class RunOutput:
    """What a run writes: metrics.jsonl, report.json, the sinks; nothing once ``files`` is off
(ranks other than 0 of a distributed job)."""

    def __init__(self, name: str, run_dir: "str | os.PathLike[str] | None", guard: Guard) -> None:
        self.name = name
        self.files = True
        self.run_dir = os.fspath(run_dir) if run_dir is not None else None
        self.guard = guard
        self.started = time.time()
        self.status = "running"
        self.sinks: list[Any] = []          # e.g. a TensorBoard writer, a live terminal view
        self.written: str | None = None     # where the report was written last
        self._files: RunDirectory | None = None

    def directory(self) -> str:
        if self.run_dir is None:
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(self.started))
            self.run_dir = os.path.join("trainmedic-runs", f"{stamp}-{self.name}")
        return self.run_dir

    def on_tick(self, run: RunState, tick: Tick, epochs: list[dict[str, Any]]) -> None:
        """The tick just ingested into ``run``: a metrics.jsonl line, and to every sink."""
        if not self.files:
            return
        line = tick_line(run, tick)
        if self._files is None:
            self._files = RunDirectory(self.directory())
        self._files.append(line)
        for sink in self.sinks:
            self.guard.call(f"{type(sink).__name__}", sink.on_tick, line, epochs)

    def write(self, rep: Report, path: "str | os.PathLike[str] | None" = None,
              html: "str | os.PathLike[str] | None" = None) -> None:
        """``rep`` as JSON to ``<run_dir>/report.json`` (so the run directory is always
        complete), plus a copy at ``path`` when given, and, with ``html``, as a self-contained
        HTML page."""
        if not self.files:
            return
        own = os.path.join(self.directory(), "report.json")
        if path is not None and os.path.realpath(os.fspath(path)) != os.path.realpath(own):
            self.written = rep.write_json(path)          # the explicit path first: it matters most
            rep.write_json(own)
        else:
            self.written = rep.write_json(own)
        if html is not None:
            from trainmedic.report.html import write_html
            from trainmedic.rundir import read_ticks
            write_html(rep, read_ticks(self.directory()) if self._files is not None else [], html)

    def close(self) -> None:
        if self._files is not None:
            self._files.close()
        for sink in self.sinks:
            self.guard.call(f"{type(sink).__name__}", sink.close)


def run_info(monitor: "Monitor") -> dict[str, Any]:
    """The report's ``run`` section."""
    out = monitor.output
    return {"name": out.name, "status": out.status,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(out.started)),
            "duration_s": round(time.time() - out.started, 3), "steps": monitor.step,
            "every": monitor.clock.every, "torch": torch.__version__,
            "models": [type(m).__name__ for m in monitor.models],
            "optimizers": [type(o).__name__ for o in monitor.table.optimizers],
            "parameters": int(sum(i.numel if i.sharded else p.numel()
                                  for i, p in zip(monitor.table.infos, monitor.table.params))),
            "disabled": dict(monitor.guard.disabled), "argv": list(sys.argv), "rank": monitor.rank,
            **generalisation_info(monitor.validation, monitor.goal),
            **(monitor.guard.call("distributed statistics", monitor.ranks.run_info) or {}),
            **({"sharded_statistics": SHARDED_NOTE} if monitor.table.sharded else {}),
            **monitor.extra_run_info}


def generalisation_info(validation: ValidationTracker, goal: Goal | None) -> dict[str, Any]:
    """Per-epoch curves, best epoch, goal and diagnosis, metrics, worst mistakes."""
    epochs = validation.epochs
    out: dict[str, Any] = {"epochs": epochs}
    scored = [e for e in epochs if e.get("val_loss") is not None]
    if scored:
        out["best_epoch"] = min(scored, key=lambda e: e["val_loss"])["epoch"]
    if goal is not None:
        out["goal"] = assess(goal, epochs)
    preds = validation.last_predictions
    if preds is not None:
        from trainmedic.metrics import classification
        # exact per-class counts of the whole last phase; pairs and coverage from its first samples
        out["metrics"] = classification(preds["target"], preds["pred"], confidence=preds["confidence"],
                                        counts=validation.last_counts)
        wrong = np.nonzero(preds["pred"] != preds["target"])[0]
        confident = wrong[np.argsort(-preds["confidence"][wrong])][:8]
        out["worst_mistakes"] = {
            "lowest_true_class_probability": validation.worst,
            "most_confident_wrong": [{"index": int(i), "predicted": int(preds["pred"][i]),
                                      "target": int(preds["target"][i]),
                                      "confidence": float(preds["confidence"][i])} for i in confident]}
    return out

"""The run directory: what a run leaves on disk for every renderer to read.

    <run_dir>/metrics.jsonl   one JSON object per tick (appended as the run goes)
    <run_dir>/report.json     findings + run metadata (written atomically at the end, also
                              when the report is asked for at another path: that is a copy)

A tick line: {"step", "first_step", "losses": [per-step losses of the window], "lr",
"layers": {layer: {"grad": |g|, "update": |dw|/|w|}}, "activations": {site: {"kind",
"dead_fraction" | "saturated_fraction", "hist", "hist_range"}}}. A line cut short by a crash is
skipped by the reader.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

from trainmedic.findings import Report, _jsonable
from trainmedic.history import RunState, Tick


def tick_line(run: RunState, tick: Tick) -> dict[str, Any]:
    """The metrics.jsonl object of the tick just ingested into ``run``."""
    row = run.ticks.rows[-1]
    layers: dict[str, dict[str, float]] = {}
    gm, ur = row.get("grad_median"), row.get("update_ratio")
    for info in run.params.infos:
        if info.index >= len(gm) or not np.isfinite(gm[info.index]):
            continue
        entry = layers.setdefault(info.layer, {"grad": 0.0})
        entry["grad"] += float(gm[info.index]) ** 2
        if info.is_matrix and ur is not None and info.index < len(ur) and np.isfinite(ur[info.index]):
            entry["update"] = float(ur[info.index])
    for entry in layers.values():
        entry["grad"] = math.sqrt(entry["grad"])
    losses = [None if not s else float(v) for v, s in zip(tick.losses, tick.loss_seen)]
    return _jsonable({"step": tick.step, "first_step": tick.first_step, "losses": losses,
                      "lr": row.get("lr"), "layers": layers, "activations": tick.activations})


class RunDirectory:
    def __init__(self, path: str) -> None:
        self.path = path
        self._file = None

    def append(self, line: dict[str, Any]) -> None:
        if self._file is None:
            os.makedirs(self.path, exist_ok=True)
            self._file = open(os.path.join(self.path, "metrics.jsonl"), "w", encoding="utf-8")
        self._file.write(json.dumps(line, allow_nan=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_ticks(path: str) -> list[dict[str, Any]]:
    """The tick lines of a run directory's metrics.jsonl ([] when it has none yet); a line cut
    short by a crash is skipped."""
    ticks: list[dict[str, Any]] = []
    metrics = os.path.join(path, "metrics.jsonl")
    if os.path.isfile(metrics):
        with open(metrics, encoding="utf-8") as fh:
            for line in fh:
                try:
                    ticks.append(json.loads(line))
                except json.JSONDecodeError:
                    continue             # a line cut short by a crash
    return ticks


def read_run(path: str) -> tuple[Report, list[dict[str, Any]]]:
    """(report, tick lines) of a run directory (or of a report.json path)."""
    report_path = path if path.endswith(".json") else os.path.join(path, "report.json")
    if not os.path.isfile(report_path):
        raise FileNotFoundError(f"run_dir={path!r} holds no report.json")
    return Report.read_json(report_path), read_ticks(os.path.dirname(report_path))

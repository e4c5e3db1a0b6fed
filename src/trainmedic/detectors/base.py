"""Detector contract: read the run's host-side history, return a Verdict while the problem holds.

The monitor turns the first Verdict of a detector into a Finding (reported once, with the step)
and refreshes its evidence from later Verdicts. Detectors never touch the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainmedic.history import RunState


@dataclass
class Verdict:
    message: str
    where: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    severity: str | None = None
    step: int | None = None


class Detector:
    id: str = ""

    def evaluate(self, run: RunState, reported: set[str], final: bool) -> Verdict | None:
        raise NotImplementedError


def names(run: RunState, indices) -> list[str]:
    return [run.params.infos[i].name for i in indices]


def short_list(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def g(x: float) -> str:
    """A number for a message: 4 significant digits."""
    return f"{x:.4g}"


def matrix_update_medians(run: RunState, rows: list[dict] | None = None) -> np.ndarray:
    """Per tick (of ``rows``, default the scanned ones) with an update sample: the median
    update/weight ratio over weight matrices (non-finite ratios left out)."""
    return np.array([r["update_median"] for r in (run.ticks.scan() if rows is None else rows)
                     if "update_median" in r], dtype=float)

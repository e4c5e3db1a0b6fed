"""The metric a finished run is judged by, read from its JSON report: the last validation
epoch's value (``run.epochs``), else the run's final metrics (``run.metrics``). Shared by
``trainmedic fix`` (is a candidate better than the baseline?) and ``trainmedic tune`` (a
trial's objective value)."""

from __future__ import annotations

import math
from typing import Any

MINIMIZE_WORDS = ("loss", "error", "mse", "mae", "rmse", "perplexity")


def maximized(key: str) -> bool:
    """Whether higher is better for ``key`` (losses and errors are minimised)."""
    return not any(w in key for w in MINIMIZE_WORDS)


def available(report: dict[str, Any]) -> list[str]:
    """The metric names the run produced: its last epoch's val_* keys and its final metrics."""
    epochs = report["run"].get("epochs") or []
    last = epochs[-1] if epochs else {}
    return sorted(k for k in last if k.startswith("val_")) + sorted(
        k for k, v in (report["run"].get("metrics") or {}).items() if isinstance(v, (int, float)))


def resolve(report: dict[str, Any], name: str, argument: str = "metric") -> str:
    """The report key for ``name`` (``acc`` finds ``val_acc``); ValueError naming ``argument``
    when the run never produced it."""
    known = available(report)
    for key in (name, f"val_{name}"):
        if key in known:
            return key
    raise ValueError(f"{argument}={name!r} was not produced by the run; expected one of {known}")


def default(report: dict[str, Any], preferred: str | None = None) -> str | None:
    """``preferred`` when the run has it; else ``val_acc``, the final validation ``accuracy``
    (binary classifiers), ``val_loss``; None when it has none of them."""
    known = available(report)
    for key in (preferred, "val_acc", "accuracy", "val_loss"):
        if key is not None and key in known and value(report, key) is not None:
            return key
    return None


def value(report: dict[str, Any], key: str | None) -> float | None:
    """``key``'s value at the end of the run (None when absent or not a number; NaN and Inf
    as floats)."""
    if key is None:
        return None
    epochs = report["run"].get("epochs") or []
    v = epochs[-1].get(key) if epochs else None
    if v is None:
        v = (report["run"].get("metrics") or {}).get(key)
    if v in ("nan", "inf", "-inf"):                  # how the report writes non-finite numbers
        return float(v)
    return float(v) if isinstance(v, (int, float)) else None


def better(a: float, b: float, maximize: bool) -> bool:
    """Whether ``a`` beats ``b`` (a non-finite value never does, and loses to any finite one)."""
    if not math.isfinite(a):
        return False
    if not math.isfinite(b):
        return True
    return a > b if maximize else a < b

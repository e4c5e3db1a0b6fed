"""Goals: "val_acc>=0.95" and the methodology chapter's decision table for where the gap to it
comes from (train error high: capacity, optimisation or data quality; train good but validation
not: regularise, get more data, or look for a test-preprocessing bug)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_GOAL = re.compile(r"^\s*(train|val)_(acc|loss)\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Goal:
    split: str        # train | val
    metric: str       # acc | loss
    op: str
    target: float

    @classmethod
    def parse(cls, text: "str | Goal") -> "Goal":
        if isinstance(text, Goal):
            return text
        m = _GOAL.match(text or "")
        if not m:
            raise ValueError(f"goal={text!r} is not a goal; expected '<train|val>_<acc|loss> <op> "
                             f"<number>' with op one of >=, <=, >, <, e.g. 'val_acc>=0.95'")
        return cls(m[1], m[2], m[3], float(m[4]))

    @property
    def name(self) -> str:
        return f"{self.split}_{self.metric}"

    def met(self, value: float | None) -> bool:
        if value is None:
            return False
        return {">=": value >= self.target, "<=": value <= self.target,
                ">": value > self.target, "<": value < self.target}[self.op]

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.target:g}"


def assess(goal: Goal, epochs: list[dict[str, Any]]) -> dict[str, Any]:
    """Where the run stands against ``goal``, judged on its best epoch, with the diagnosis."""
    out: dict[str, Any] = {"goal": str(goal), "metric": goal.name, "target": goal.target}
    rows = [e for e in epochs if e.get(goal.name) is not None]
    if not rows:
        out.update(met=False, diagnosis=f"no {goal.name} was measured: evaluate on a validation "
                                         "set (model.eval() + torch.no_grad()) or call monitor.log_val()")
        return out
    higher = goal.op in (">=", ">")
    best = max(rows, key=lambda e: e[goal.name]) if higher else min(rows, key=lambda e: e[goal.name])
    value = best[goal.name]
    out.update(value=value, best_epoch=best["epoch"], last=rows[-1][goal.name],
               gap=goal.target - value, met=goal.met(value))
    # training metrics come from sampled steps: take the epoch nearest the best that has one
    with_train = [e for e in epochs if e.get(f"train_{goal.metric}") is not None]
    nearest = min(with_train, key=lambda e: abs(e["epoch"] - best["epoch"]), default=None)
    train_value = nearest[f"train_{goal.metric}"] if nearest else None
    train_ok = Goal("train", goal.metric, goal.op, goal.target).met(train_value)
    out["train_value"] = train_value
    if out["met"]:
        out["diagnosis"] = "goal met"
        out["next"] = ["Confirm on the held-out test set once, then stop tuning."]
    elif goal.split == "val" and train_ok:
        out["diagnosis"] = "overfitting: training meets the goal, validation does not"
        out["next"] = ["Regularise: data augmentation, dropout, weight decay; stop early at the best epoch.",
                       "Get more training data (see trainmedic.learning_curve).",
                       "Check that validation inputs are preprocessed exactly like training inputs."]
    else:
        out["diagnosis"] = "underfitting: training itself does not reach the goal"
        out["next"] = ["Tune the optimiser first (learning rate: trainmedic.checkup).",
                       "Increase capacity: more units or layers; reduce regularisation.",
                       "If a bigger, well-tuned model still fails, improve data quality or features."]
    return out

"""Generalisation, judged on the epoch records of the validation passes the monitor saw."""

from __future__ import annotations

import numpy as np

from trainmedic.detectors.base import Detector, Verdict, g
from trainmedic.goals import Goal


def _epochs(run, key):
    return [e for e in run.epochs if e.get(key) is not None and np.isfinite(e[key])]


class Overfitting(Detector):
    """Validation loss rising since its minimum (>= 2 epochs ago): >= 5% above it now, >= 2%
    above it in most epochs since, with an upward slope; while the training loss kept falling
    to less than half of the best validation loss and of the current one (a large gap)."""

    id = "overfitting"

    def evaluate(self, run, reported, final):
        ep = _epochs(run, "val_loss")
        if len(ep) < 4:
            return None
        v = np.array([e["val_loss"] for e in ep])
        b = int(np.argmin(v))
        after = v[b + 1:]
        if len(after) < 2 or v[-1] < 1.05 * v[b] or (after > 1.02 * v[b]).mean() < 0.8 \
                or np.polyfit(np.arange(len(after)), after, 1)[0] <= 0:
            return None
        tb, tl = ep[b].get("train_loss"), ep[-1].get("train_loss")
        if tb is None or tl is None or tl >= tb:
            return None
        if v[-1] < 2 * tl or tl > 0.5 * v[b]:
            return None          # no large train/validation gap: a noisy validation curve
        gap_best = None if tb is None else ep[b]["val_loss"] - tb
        gap_now = None if tl is None else ep[-1]["val_loss"] - tl
        return Verdict(
            f"Validation loss was lowest at epoch {ep[b]['epoch']} ({g(v[b])}) and is {g(v[-1])} at "
            f"epoch {ep[-1]['epoch']}, while the training loss kept falling"
            + (f" ({g(tb)} -> {g(tl)})" if tb is not None and tl is not None else "") + ".",
            where="validation", step=ep[-1]["step"],
            evidence={"best_epoch": ep[b]["epoch"], "best_val_loss": float(v[b]), "val_loss_now": float(v[-1]),
                      "gap_at_best": gap_best, "gap_now": gap_now})


class LabelNoise(Detector):
    """Validation accuracy never above 1.5x chance over >= 3 epochs while the training batches
    are fitted well above chance: the training set is being memorised, not learned."""

    id = "label_noise"

    def evaluate(self, run, reported, final):
        ep = _epochs(run, "val_acc")
        if len(ep) < 3:
            return None
        classes = max(e.get("classes") or 0 for e in ep)
        if classes < 2:
            return None
        chance = 1.0 / classes
        best_val = max(e["val_acc"] for e in ep)
        train = [e["train_acc"] for e in ep if e.get("train_acc") is not None]
        if best_val <= 1.5 * chance and train and train[-1] >= 2 * chance:
            return Verdict(
                f"Validation accuracy stays at chance (best {best_val:.1%}, chance {chance:.1%}) while "
                f"training batches reach {train[-1]:.1%}: the model memorises training labels that do "
                f"not follow from the inputs.", where="labels", step=ep[-1]["step"],
                evidence={"best_val_acc": best_val, "chance": chance, "train_acc": train[-1]})
        return None


class EvalInTrainMode(Detector):
    """Validation passes (no-grad loss calls) ran with a model that has dropout/BatchNorm in
    training mode: in two phases, or in the only one at the end of the run."""

    id = "eval_in_train_mode"

    def evaluate(self, run, reported, final):
        bad = [e for e in run.epochs if e.get("model_in_train_mode")]
        if len(bad) >= 2 or (final and bad and len(run.epochs) == len(bad)):
            return Verdict(
                f"{len(bad)} of {len(run.epochs)} evaluation passes ran with the model in training "
                f"mode while it has dropout/BatchNorm layers: evaluation numbers are noisy and "
                f"BatchNorm statistics are updated by validation data.", where="evaluation",
                step=bad[0]["step"], evidence={"epochs": [e["epoch"] for e in bad]})
        return None


class TrainInEvalMode(Detector):
    """>= half of >= 20 backward passes come from forwards of a model with dropout/BatchNorm
    in eval mode: ``model.eval()`` for validation was never undone with ``model.train()``."""

    id = "train_in_eval_mode"

    def evaluate(self, run, reported, final):
        hits, total = run.eval_mode_backwards
        if total >= 20 and hits >= 0.5 * total:
            return Verdict(
                f"{hits} of {total} backward passes trained a model whose dropout/BatchNorm layers "
                f"were in eval mode: dropout is off and BatchNorm uses frozen running statistics "
                f"while training.", where="training", evidence={"eval_mode_backwards": hits, "backwards": total})
        return None


class Underfitting(Detector):
    """With a goal: the training counterpart of the goal's metric misses it in the last two
    epochs (>= 3 epochs)."""

    id = "underfitting"

    def evaluate(self, run, reported, final):
        if run.goal is None:
            return None
        goal = Goal("train", run.goal.metric, run.goal.op, run.goal.target)
        ep = _epochs(run, goal.name)
        if len(ep) < 3 or any(goal.met(e[goal.name]) for e in ep[-2:]):
            return None
        return Verdict(f"The goal is {run.goal}; training itself only reaches {goal.name} = "
                       f"{g(ep[-1][goal.name])} after {ep[-1]['epoch']} epochs.", where="training",
                       step=ep[-1]["step"], evidence={"goal": str(run.goal), goal.name: ep[-1][goal.name]})

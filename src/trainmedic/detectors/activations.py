"""Activation and output pathologies from the sampled forward passes."""

from __future__ import annotations

import numpy as np

from trainmedic.detectors.base import Detector, Verdict, g, short_list
from trainmedic.history import RunState

DEAD_FRACTION = 0.5
SATURATED_FRACTION = 0.5


def _recent(run: RunState, key: str, reports: int = 2) -> dict[str, list[float]]:
    """Per hidden activation site: its last ``reports`` values of ``key``."""
    seen: dict[str, list[float]] = {}
    for row in run.ticks.rows[-64:]:
        for site, stats in (row.get("activations") or {}).items():
            if key in stats and not run.activation_sites.get(site, {}).get("output"):
                seen.setdefault(site, []).append(stats[key])
    return {s: v[-reports:] for s, v in seen.items() if len(v) >= reports}


class DeadRelu(Detector):
    """A hidden ReLU site where >= 50% of units output zero for every input of two consecutive
    samples (each sample >= 64 inputs per unit)."""

    id = "dead_relu"

    def evaluate(self, run, reported, final):
        hits = {s: v for s, v in _recent(run, "dead_fraction").items()
                if min(v) >= DEAD_FRACTION}
        if not hits:
            return None
        worst = max(hits, key=lambda s: hits[s][-1])
        return Verdict(
            f"{hits[worst][-1]:.0%} of the units after {worst} output zero for every input"
            + (f"; also {short_list(sorted(set(hits) - {worst}))}" if len(hits) > 1 else "") + ".",
            where=worst, evidence={"dead_fraction": {s: v[-1] for s, v in hits.items()}})


class SaturatedActivation(Detector):
    """A hidden sigmoid/tanh site with >= 50% of values in the flat ends (derivative < 2.7% of
    its peak: |pre-activation| >= 5 for sigmoid, >= 2.5 for tanh) in two consecutive samples."""

    id = "saturated_activation"

    def evaluate(self, run, reported, final):
        hits = {s: v for s, v in _recent(run, "saturated_fraction").items()
                if min(v) >= SATURATED_FRACTION}
        if not hits:
            return None
        worst = max(hits, key=lambda s: hits[s][-1])
        return Verdict(
            f"{hits[worst][-1]:.0%} of the values of {worst} sit in its flat ends"
            + (f"; also {short_list(sorted(set(hits) - {worst}))}" if len(hits) > 1 else "") + ".",
            where=worst, evidence={"saturated_fraction": {s: v[-1] for s, v in hits.items()}})


class ConstantPredictions(Detector):
    """Over the last three sampled batches (>= 8 samples, after step 20): outputs identical for
    every sample, or one class predicted for every sample while the loss is not improving; or
    one class for every validation sample in three evaluations in a row without the validation
    loss improving."""

    id = "constant_predictions"

    def evaluate(self, run, reported, final):
        val = [e for e in run.epochs if e.get("val_top_class_share") is not None][-3:]
        if len(val) == 3 and all(e["val_top_class_share"] >= 1.0 and e["val_samples"] >= 16 for e in val) \
                and val[-1]["val_loss"] >= 0.98 * val[0]["val_loss"]:
            return Verdict(f"On validation the model predicts one class for all {val[-1]['val_samples']} "
                           f"samples in the last three evaluations, and the validation loss is not "
                           f"improving.", where="validation",
                           evidence={"val_top_class_share": 1.0, "epochs": [e["epoch"] for e in val]})
        preds = [p for row in run.ticks.rows[-16:] if row["step"] >= 20
                 for p in (row.get("predictions") or [])]
        if len(preds) < 3:
            return None
        last = preds[-3:]
        identical = all(p["spread"] <= 1e-6 * max(p["scale"], 1e-12) for p in last)
        s, m = run.smoothed_loss()
        start = run.initial_loss()
        stuck = len(m) >= 3 and abs(start) > 0 and (start - np.min(m)) < 0.1 * abs(start)
        one_class = all(p.get("top_share", 0) >= 1.0 and p["batch"] >= 16 for p in last)
        if identical:
            return Verdict(f"The model's output is identical for all {int(last[-1]['batch'])} "
                           f"samples of a batch (max difference {g(last[-1]['spread'])}).",
                           evidence={"spread": last[-1]["spread"], "scale": last[-1]["scale"]})
        if one_class and stuck:
            return Verdict(f"The model predicts the same class for every sample of the last "
                           f"{len(last)} sampled batches, and the loss is stuck near {g(m[-1])}.",
                           evidence={"top_class_share": 1.0, "loss": float(m[-1])})
        return None


class LossInputMismatch(Detector):
    """What reached a loss function is not what it expects (seen in most sampled calls)."""

    id = "loss_input_mismatch"

    def evaluate(self, run, reported, final):
        for name, entry in run.loss_inputs.items():
            # Small logits can sit in [0, 1] early on; sigmoid outputs stay there for good.
            calls = 4 if name == "binary_cross_entropy_with_logits" else 2
            if entry["calls"] >= calls and entry["hits"] >= 0.9 * entry["calls"]:
                return Verdict(f"{entry['message'][0].upper()}{entry['message'][1:]} "
                               f"(in {entry['hits']} of {entry['calls']} sampled calls).",
                               where=name, evidence={"loss": name, "input_shape": entry["shape"],
                                                     "hits": entry["hits"],
                                                     "calls": entry["calls"]})
        return None

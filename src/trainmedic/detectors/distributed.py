"""``rank_divergence``: rank 0 compares the summaries the ranks of a distributed job publish
(see ``trainmedic.distributed``) and names the ranks that differ from the others.

A rank differs when its loss (else its gradient) turned NaN/Inf before any other rank's; when
its parameters are not those of the others (data parallelism keeps them identical: another
seed, a checkpoint loaded on one rank after wrapping, another learning rate); when its recent
loss is far from the others' while they learn (its data or labels are broken); or when its
gradient norm is off by GRAD_FACTOR (gradients changed after DDP's all-reduce, or no DDP).
Ranks that see different shards of the same data differ by noise only: silent. Parameters and
gradients are compared only between replicas of one model: not between shards of it (FSDP,
tensor parallelism) nor between models of other shapes (pipeline stages), which differ by design.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from trainmedic.detectors.base import Verdict, g

WEIGHT_RTOL = 1e-4     # data-parallel ranks hold bit-identical parameters; float noise aside
LOSS_FACTOR = 1.5      # a rank's recent loss this many times the others' (or a fraction of it),
LOSS_MARGIN = 0.25     # apart by this much of their starting loss,
LOSS_SIGMAS = 4.0      # and by this many standard errors of the two medians
GRAD_FACTOR = 10.0     # a rank's recent gradient norm this many times off the others'
MIN_TICKS = 3          # ticks behind a loss or gradient comparison


class RankDivergence:
    """Rank 0's rule. Its verdict on a rank stands while that rank cannot be compared (it ran
    ahead, fell behind or stopped), so a divergence seen once is not "resolved" by silence."""

    id = "rank_divergence"

    def __init__(self) -> None:
        self.judged: dict[int, list[dict[str, Any]]] = {}   # rank -> its reasons, when last compared

    def evaluate(self, own: dict[int, dict[str, Any]], peers: dict[int, dict[str, Any]],
                 names: list[str]) -> Verdict | None:
        """``own``: rank 0's summaries by step (its recent ticks); ``peers``: every other
        rank's latest summary; ``names``: rank 0's parameter names (the weights' order)."""
        if not own or not peers:
            return None
        for step in {p["step"] for p in peers.values()} & own.keys():
            group = [own[step]] + [p for p in peers.values() if p["step"] == step]
            found = compare(group, names)
            for s in group:
                self.judged[s["rank"]] = found.get(s["rank"], [])
        named = {r: list(reasons) for r, reasons in self.judged.items() if reasons}
        latest = {**peers, 0: own[max(own)]}
        for r, reason in nonfinite_origin(latest).items():
            named.setdefault(r, []).insert(0, reason)
        if not named:
            return None
        ranks = sorted(named)
        sentences = [f"Rank {r}: " + "; ".join(_sentence(x) for x in named[r]) + "." for r in ranks]
        return Verdict(" ".join(sentences), where=_ranks(ranks),
                       step=min(x["step"] for r in ranks for x in named[r]),
                       evidence={"ranks": ranks, "by_rank": {str(r): named[r] for r in ranks}})


def nonfinite_origin(latest: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The ranks whose loss (else gradient) became NaN/Inf first, strictly before another
    rank's, once every rank still running has gone past that step (DDP spreads a NaN gradient
    to every rank in the same step, and a NaN loss on the next one); none when every other
    rank's own loss was diverging already (``loss_diverging`` before that step: the whole job
    was, and that rank merely got there first). Findings on gradients and updates do not tell:
    under DDP every rank sees the same all-reduced ones."""
    for key in ("nonfinite_loss", "nonfinite_grad"):
        first = {r: s[key] for r, s in latest.items() if s.get(key) is not None}
        if not first:
            continue
        at = min(first.values())
        origins = [r for r, f in first.items() if f == at]
        later = {r: first.get(r) for r, s in latest.items() if r not in origins
                 and (r in first or s["step"] > at)}
        undecided = [r for r, s in latest.items()
                     if r not in first and s["step"] <= at and not s["final"]]
        if later and all(_diverging_before(latest[r], at) for r in later):
            return {}
        if later and not undecided:
            return {r: {"reason": key, "step": at, "others": {str(o): f for o, f in later.items()}}
                    for r in origins}
    return {}


def _diverging_before(summary: dict[str, Any], step: int) -> bool:
    return summary.get("diverged") is not None and summary["diverged"] < step


def compare(group: list[dict[str, Any]], names: list[str]) -> dict[int, list[dict[str, Any]]]:
    """Reasons per rank, for the summaries of ``group`` (rank 0's first), all at one step."""
    found: dict[int, list[dict[str, Any]]] = {}
    for r, reason in [*_parameters(group, names), *_losses(group), *_gradients(group)]:
        found.setdefault(r, []).append(reason)
    return found


def _parameters(group: list[dict[str, Any]], names: list[str]) -> list[tuple[int, dict[str, Any]]]:
    """Ranks whose weight norms (at the same sampled step) are not those of the largest set of
    ranks that agree (rank 0's on a tie), sampled at the same step."""
    if (not _replicas(group) or any(s["weights"] is None for s in group)
            or len({s["sample_step"] for s in group}) != 1):
        return []
    weights = [s["weights"] for s in group]
    same = [[_differs(a, b) is None for b in weights] for a in weights]
    ref = max(range(len(group)), key=lambda i: (sum(same[i]), -i))
    out = []
    for i, s in enumerate(group):
        d = _differs(weights[i], weights[ref])
        if d is not None:
            out.append((s["rank"], {
                "reason": "parameters", "step": s["sample_step"], "reference_rank": group[ref]["rank"],
                "parameter": names[d] if d < len(names) else f"param{d}",
                "norm": float(weights[i][d]), "reference_norm": float(weights[ref][d]),
                "ddp": s["ddp"]}))
    return out


def _differs(a: np.ndarray, b: np.ndarray) -> int | None:
    """The parameter (index) whose norms differ most, relatively, beyond float noise."""
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    ok = np.isfinite(a) & np.isfinite(b)
    with np.errstate(all="ignore"):
        rel = np.where(ok, np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-12), 0.0)
    i = int(np.argmax(rel)) if n else 0
    return i if n and rel[i] > WEIGHT_RTOL else None


def _losses(group: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """Ranks whose recent loss is LOSS_FACTOR away from the (lower) median rank's, by
    LOSS_MARGIN of its starting loss and LOSS_SIGMAS standard errors, while that rank's
    loss fell from its start."""
    known = [s for s in group if s["ticks"] >= MIN_TICKS and not s["adversarial"]
             and _positive(s["loss"]) and _positive(s["loss_start"])]
    if len(known) < 2:
        return []
    ref = sorted(known, key=lambda s: s["loss"])[(len(known) - 1) // 2]
    lr, start = ref["loss"], ref["loss_start"]
    if lr >= start:
        return []
    out = []
    for s in known:
        lk = s["loss"]
        gap = abs(lk - lr)
        if (max(lk / lr, lr / lk) >= LOSS_FACTOR and gap >= LOSS_MARGIN * start
                and gap >= LOSS_SIGMAS * math.hypot(s["loss_se"], ref["loss_se"])):
            out.append((s["rank"], {"reason": "loss", "step": s["step"], "loss": lk,
                                    "reference_loss": lr, "reference_rank": ref["rank"],
                                    "start": s["loss_start"], "reference_start": start}))
    return out


def _gradients(group: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """Ranks whose recent gradient norm is GRAD_FACTOR away from the median rank's: DDP's
    all-reduce leaves every replica the same gradient; without it, shards differ by noise."""
    known = [s for s in group if s["ticks"] >= MIN_TICKS and _positive(s["grad"])]
    if len(known) < 2 or not _replicas(group):
        return []
    ref = sorted(known, key=lambda s: s["grad"])[(len(known) - 1) // 2]
    return [(s["rank"], {"reason": "gradient", "step": s["step"], "grad_norm": s["grad"],
                         "reference_grad_norm": ref["grad"], "reference_rank": ref["rank"]})
            for s in known if max(s["grad"] / ref["grad"], ref["grad"] / s["grad"]) >= GRAD_FACTOR]


def _replicas(group: list[dict[str, Any]]) -> bool:
    """Whether the ranks of ``group`` train whole copies of one model (no shard, same shapes)."""
    return not any(s["sharded"] for s in group) and len({s["shapes"] for s in group}) == 1


def _positive(x: float | None) -> bool:
    return x is not None and math.isfinite(x) and x > 0


def _ranks(ranks: list[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


def _sentence(x: dict[str, Any]) -> str:
    reason = x["reason"]
    if reason in ("nonfinite_loss", "nonfinite_grad"):
        what = "loss" if reason == "nonfinite_loss" else "gradient"
        others = ", ".join(f"rank {o}: {'step ' + str(f) if f is not None else 'finite'}"
                           for o, f in x["others"].items())
        return f"its {what} became NaN/Inf at step {x['step']}, before any other rank's ({others})"
    if reason == "parameters":
        hint = "" if x["ddp"] else "; the model is not wrapped in DistributedDataParallel"
        return (f"its parameters differ from rank {x['reference_rank']}'s (at step {x['step']} "
                f"{x['parameter']} has norm {g(x['norm'])} against {g(x['reference_norm'])}){hint}")
    if reason == "loss":
        return (f"its loss is {g(x['loss'])} against {g(x['reference_loss'])} on rank "
                f"{x['reference_rank']} at step {x['step']} (they started at {g(x['start'])} and "
                f"{g(x['reference_start'])})")
    return (f"its gradient norm is {g(x['grad_norm'])} against {g(x['reference_grad_norm'])} on "
            f"rank {x['reference_rank']} at step {x['step']}")

"""Parameter-level wiring and initialisation faults seen during training."""

from __future__ import annotations

import numpy as np

from trainmedic.detectors.base import Detector, Verdict, g, names, short_list
from trainmedic.detectors.loss import relative_decrease

MIN_GRAD_STEPS = 20


class ParamsNotInOptimizer(Detector):
    """Parameters that received a gradient but belong to no optimizer (unused or deliberately
    frozen parameters get no gradient and are not reported)."""

    id = "params_not_in_optimizer"

    def evaluate(self, run, reported, final):
        if not run.params.optimizers or not run.unowned_with_grad:
            return None
        idx = sorted(run.unowned_with_grad)
        nm = names(run, idx)
        count = sum(int(np.prod(run.params.infos[i].shape)) for i in idx)
        return Verdict(f"{len(idx)} parameter tensors ({count} values) receive gradients but are "
                       f"in no optimizer: {short_list(nm)}.", where=short_list(nm, 3),
                       evidence={"parameters": nm, "values": count})


class ParamsNotUpdating(Detector):
    """An optimizer whose parameters never hold a gradient when it steps (>= 20 steps), or
    weight matrices in an optimizer that got gradients but never changed over >= 2 sampled
    steps, or whose gradient was exactly zero at every step (>= 20 steps)."""

    id = "params_not_updating"

    def evaluate(self, run, reported, final):
        for k, (empty, steps) in sorted(run.empty_steps.items()):
            if steps >= MIN_GRAD_STEPS and empty == steps:
                opt = run.params.optimizers[k]
                nm = [run.params.infos[i].name for i in run.params.optimizer_indices(k)]
                return Verdict(
                    f"Optimizer {k} ({type(opt).__name__}) stepped {steps} times but none of its "
                    f"parameters had a gradient at step time, so nothing was updated "
                    f"(zero_grad() between backward() and step()?).",
                    where=f"optimizer {k} ({type(opt).__name__})",
                    evidence={"steps_without_gradients": empty, "steps": steps,
                              "parameters": nm[:20]})
        p = len(run.grad_seen)
        cand = [i for i in run.params.infos if i.is_matrix and i.optimizer is not None
                and i.index < p and run.grad_seen[i.index]]
        if not cand or run.step < MIN_GRAD_STEPS:
            return None
        frozen = [i.index for i in cand
                  if run.update_samples[i.index] >= 2 and not run.update_ever_nonzero[i.index]]
        zero_grad = [i.index for i in cand if not run.grad_ever_nonzero[i.index]]
        stuck = sorted(set(frozen) | set(zero_grad))
        if not stuck:
            return None
        nm = names(run, stuck)
        share = sum(np.prod(run.params.infos[i].shape) for i in stuck) / \
            sum(np.prod(i.shape) for i in cand)
        lrs = sorted({run.params.optimizers[run.params.infos[i].optimizer]
                      .param_groups[run.params.infos[i].group]["lr"] for i in stuck}, key=float)
        detail = []
        if zero_grad:
            detail.append(f"{len(zero_grad)} only ever had all-zero gradients")
        if frozen:
            detail.append(f"{len(frozen)} kept exactly the same values across sampled steps")
        return Verdict(
            f"{len(stuck)} of {len(cand)} weight matrices are not changing "
            f"({'; '.join(detail)}): {short_list(nm)}; their learning rate: "
            f"{', '.join(str(x) for x in lrs)}.",
            where=short_list(nm, 3), severity="error" if share >= 0.5 else "warning",
            evidence={"parameters": nm, "share_of_weights": float(share),
                      "zero_gradient": names(run, zero_grad), "unchanged": names(run, frozen),
                      "learning_rates": [float(x) for x in lrs]})


class SymmetricWeights(Detector):
    """Weight matrices whose rows (output units) are all identical after training started."""

    id = "symmetric_weights"

    def evaluate(self, run, reported, final):
        idx = sorted(i for i, same in run.symmetric.items() if same)
        if not idx:
            return None
        nm = names(run, idx)
        return Verdict(f"All output units of {short_list(nm)} have identical weights (constant or "
                       f"zero initialisation) and stay identical while training.",
                       where=short_list(nm, 3), evidence={"parameters": nm})


class RegularizationDominates(Detector):
    """Coupled weight decay (SGD/Adam-style L2): 0.5*wd*|w|^2 exceeds the data loss while the
    loss barely fell, or the weights shrank by half while the loss stayed high."""

    id = "regularization_dominates"

    def evaluate(self, run, reported, final):
        if run.frozen:                 # early-stopped: the loss stops falling by design
            return None
        rows = [r for r in run.ticks.scan() if r.get("weight_norm") is not None
                and np.isfinite(r.get("loss_median", np.nan))]
        if len(rows) < 2:
            return None
        groups = []
        for k, opt in enumerate(run.params.optimizers):
            if "AdamW" in type(opt).__name__:
                continue
            for gi, group in enumerate(opt.param_groups):
                wd = float(group.get("weight_decay", 0) or 0)
                if wd > 0 and not group.get("decoupled_weight_decay", False):
                    idx = [i.index for i in run.params.infos if i.optimizer == k and i.group == gi]
                    groups.append((wd, idx))
        if not groups:
            return None

        def reg(row):
            wn = np.asarray(row["weight_norm"])
            return sum(0.5 * wd * float(np.nansum(wn[[i for i in idx if i < len(wn)]] ** 2))
                       for wd, idx in groups)

        ratios = [reg(r) / max(abs(r["loss_median"]), 1e-12) for r in rows]
        decrease = relative_decrease(run)
        if decrease is None:
            return None
        wn0 = float(np.sqrt(np.nansum(np.asarray(rows[0]["weight_norm"]) ** 2)))
        wn1 = float(np.sqrt(np.nansum(np.asarray(rows[-1]["weight_norm"]) ** 2)))
        shrank = wn1 <= 0.5 * wn0
        if (max(ratios) >= 1 and decrease < 0.3) or (shrank and decrease < 0.5):
            wd = sorted({wd for wd, _ in groups})
            return Verdict(
                f"The weight-decay term 0.5*wd*|w|^2 reached {g(max(ratios))}x the data loss "
                f"(weight_decay={', '.join(map(str, wd))}); weights went from norm {g(wn0)} to "
                f"{g(wn1)} while the loss fell only {decrease:.1%}.",
                evidence={"max_reg_to_loss": float(max(ratios)), "weight_decay": wd,
                          "weight_norm_start": wn0, "weight_norm_end": wn1,
                          "relative_decrease": decrease})
        return None

"""Data and label sanity: what the model is fed, before anything is trained."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from trainmedic.checks.base import CheckContext, Skip, check
from trainmedic.findings import Finding


def _float_inputs(batches) -> list[torch.Tensor]:
    xs = [x for x, _ in batches if torch.is_tensor(x)]
    if not xs or not xs[0].is_floating_point():
        raise Skip("inputs are not floating-point tensors (token ids or structured inputs)")
    return xs


def _channel_stats(xs: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std per channel (dim 1 of N,C,... inputs) or per feature (last dim)."""
    x = torch.cat([t.detach().float().cpu() for t in xs])
    x = x[torch.isfinite(x).all(dim=tuple(range(1, x.dim())))] if x.dim() > 1 else x
    if x.dim() <= 1:
        flat = x.reshape(-1, 1)
    elif x.dim() == 2:
        flat = x
    elif x.dim() == 3:          # (N, L, F) sequences: features are last
        flat = x.reshape(-1, x.shape[-1])
    else:                       # (N, C, H, W): channels
        flat = x.transpose(0, 1).reshape(x.shape[1], -1).t()
    return flat.mean(0).numpy(), flat.std(0).numpy()


@check("nonfinite_input", ["nonfinite_input"], cheap=True)
def check_nonfinite_input(ctx: CheckContext):
    found = []
    for b, (x, y) in enumerate(ctx.train_batches()):
        for what, t in (("inputs", x), ("targets", y)):
            if torch.is_tensor(t) and t.is_floating_point():
                bad = ~torch.isfinite(t)
                if bad.any():
                    found.append((what, b, int(bad.sum()), int(bad.flatten().nonzero()[0])))
    if found:
        what, b, n, first = found[0]
        return [Finding.make("nonfinite_input",
                             f"{n} NaN/Inf values in the {what} of training batch {b} (first at flat "
                             f"index {first}); {len(found)} batch/field pairs affected.",
                             where=what, evidence={"batch": b, "count": n, "first_index": first,
                                                   "affected": len(found)})]
    return None


@check("input_not_normalized", ["input_not_normalized"], cheap=True)
def check_input_not_normalized(ctx: CheckContext):
    mean, std = _channel_stats(_float_inputs(ctx.train_batches()))
    worst_mean = float(np.abs(mean).max())
    big_std, small_std = float(std.max()), float(std[std > 0].min()) if (std > 0).any() else 0.0
    problems = []
    if worst_mean > 5 or big_std > 10:
        problems.append(f"values reach mean {worst_mean:.3g} and std {big_std:.3g}")
    if small_std > 0 and big_std / small_std > 100:
        problems.append(f"feature scales differ by {big_std / small_std:.3g}x "
                        f"(std {small_std:.3g} to {big_std:.3g})")
    if problems:
        return [Finding.make("input_not_normalized",
                             "Inputs are far from unit scale: " + "; ".join(problems) + ".",
                             where="inputs",
                             evidence={"mean": mean.round(4).tolist()[:64], "std": std.round(4).tolist()[:64]})]
    return None


@check("target_not_normalized", ["target_not_normalized"])
def check_target_not_normalized(ctx: CheckContext):
    if ctx.task() != "regression":
        raise Skip("only for regression losses")
    y = torch.cat([t.float().reshape(len(t), -1) for _, t in ctx.train_batches() if torch.is_tensor(t)])
    out = ctx.output_at_init()
    t_rms = float(y.pow(2).mean().sqrt())
    o_rms = float(out.pow(2).mean().sqrt())
    if t_rms > 5 and t_rms > 20 * max(o_rms, 1e-8):
        return [Finding.make("target_not_normalized",
                             f"Targets have mean {float(y.mean()):.4g} and std {float(y.std()):.4g}; "
                             f"the model's outputs start at about {o_rms:.3g} (rms), {t_rms / max(o_rms, 1e-8):.3g}x "
                             f"smaller.", where="targets",
                             evidence={"target_mean": float(y.mean()), "target_std": float(y.std()),
                                       "output_rms_at_init": o_rms})]
    return None


@check("label_out_of_range", ["label_out_of_range"], cheap=True)
def check_label_out_of_range(ctx: CheckContext):
    task = ctx.task()
    ys = [y for _, y in ctx.train_batches() if torch.is_tensor(y)]
    if not ys:
        raise Skip("batches carry no targets")
    if task == "classification":
        c = ctx.num_classes()
        ignore = getattr(ctx.loss_fn, "ignore_index", -100)
        y = torch.cat([t.reshape(-1) for t in ys])
        if y.is_floating_point():
            return None                  # class probabilities (soft labels) are allowed
        y = y[y != ignore]
        bad = (y < 0) | (y >= c)
        if bad.any():
            return [Finding.make("label_out_of_range",
                                 f"{int(bad.sum())} labels fall outside [0, {c - 1}] for a model with "
                                 f"{c} outputs: min {int(y.min())}, max {int(y.max())}.", where="targets",
                                 evidence={"classes": c, "min": int(y.min()), "max": int(y.max()),
                                           "offending": sorted(set(y[bad].tolist()))[:20]})]
        return None
    if task == "binary":
        y = torch.cat([t.float().reshape(-1) for t in ys])
        if (y < 0).any() or (y > 1).any():
            return [Finding.make("label_out_of_range",
                                 f"Binary targets must lie in [0, 1]; found min {float(y.min()):.4g} and "
                                 f"max {float(y.max()):.4g}.", where="targets",
                                 evidence={"min": float(y.min()), "max": float(y.max())})]
        return None
    raise Skip("only for classification losses")


def _label_counts(ctx: CheckContext) -> tuple[np.ndarray, int]:
    if ctx.task() not in ("classification", "binary"):
        raise Skip("only for classification losses")
    ys = [y for _, y in ctx.train_batches() if torch.is_tensor(y)]
    if not ys or ys[0].is_floating_point() and ctx.task() == "classification":
        raise Skip("no integer class labels")
    c = ctx.num_classes() if ctx.task() == "classification" else 2
    y = torch.cat([t.reshape(-1).long() for t in ys])
    y = y[(y >= 0) & (y < c)]
    return np.bincount(y.cpu().numpy(), minlength=c), c


@check("class_imbalance", ["class_imbalance"])
def check_class_imbalance(ctx: CheckContext):
    counts, c = _label_counts(ctx)
    share = counts / max(counts.sum(), 1)
    if counts.sum() < 10 * c:
        raise Skip(f"only {int(counts.sum())} labels sampled for {c} classes")
    top, low = int(share.argmax()), int(share.argmin())
    if share[top] >= 10 * max(share[low], 1e-12) or share[top] >= 0.9:
        unit = "pixels" if any(torch.is_tensor(y) and y.dim() > 1 for _, y in ctx.train_batches()) else "samples"
        return [Finding.make("class_imbalance",
                             f"Class {top} has {share[top]:.1%} of the sampled {unit}, class {low} "
                             f"{share[low]:.2%}: a model predicting class {top} everywhere scores "
                             f"{share[top]:.1%} accuracy.", where="targets",
                             evidence={"class_share": share.round(4).tolist(), "unit": unit})]
    return None


@check("unshuffled_data", ["unshuffled_data"])
def check_unshuffled_data(ctx: CheckContext):
    counts, c = _label_counts(ctx)
    batches = ctx.train_batches()
    if len(batches) < 3:
        raise Skip("fewer than 3 training batches")

    def entropy(y):
        p = np.bincount(y.reshape(-1).long().cpu().numpy(), minlength=c) / max(y.numel(), 1)
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())
    p = counts / counts.sum()
    overall = float(-(p[p > 0] * np.log(p[p > 0])).sum())
    per_batch = float(np.mean([entropy(y) for _, y in batches]))
    if overall > 0 and per_batch < 0.5 * overall:
        return [Finding.make("unshuffled_data",
                             f"Each batch holds few classes: label entropy {per_batch:.3f} per batch vs "
                             f"{overall:.3f} over the sampled data, as when data is sorted by label.",
                             where="train_loader", evidence={"batch_entropy": per_batch,
                                                             "data_entropy": overall})]
    return None


def _row_hashes(batches, rounding: int | None) -> dict[str, int]:
    """Hash of each sample's input (exact bytes, or rounded after per-sample standardising)."""
    out: dict[str, int] = {}
    for x, _ in batches:
        if not torch.is_tensor(x):
            raise Skip("inputs are not tensors")
        flat = x.detach().reshape(len(x), -1).float().cpu()
        if rounding is not None:
            flat = (flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True) + 1e-8)
            flat = (flat * 10 ** rounding).round()
        for row in flat.numpy():
            h = hashlib.blake2b(row.tobytes(), digest_size=12).hexdigest()
            out[h] = out.get(h, 0) + 1
    return out


@check("train_val_leakage", ["train_val_leakage"])
def check_train_val_leakage(ctx: CheckContext):
    val = ctx.val_batches()
    train = ctx.train_batches()
    exact_tr, exact_va = _row_hashes(train, None), _row_hashes(val, None)
    near_tr, near_va = _row_hashes(train, 1), _row_hashes(val, 1)
    exact = sum(n for h, n in exact_va.items() if h in exact_tr)
    near = sum(n for h, n in near_va.items() if h in near_tr)
    total = sum(exact_va.values())
    if near and near / total >= 0.01:
        return [Finding.make("train_val_leakage",
                             f"{near} of {total} sampled validation samples ({near / total:.1%}) also "
                             f"appear in the sampled training data ({exact} exact copies).",
                             where="val_loader", evidence={"near_duplicates": near, "exact": exact,
                                                           "validation_samples": total})]
    return None


@check("preprocessing_mismatch", ["preprocessing_mismatch"])
def check_preprocessing_mismatch(ctx: CheckContext):
    mt, st = _channel_stats(_float_inputs(ctx.train_batches()))
    mv, sv = _channel_stats(_float_inputs(ctx.val_batches()))
    if mt.shape != mv.shape:
        return [Finding.make("preprocessing_mismatch",
                             f"Training inputs have {len(mt)} channels/features, validation inputs {len(mv)}.",
                             evidence={"train_channels": len(mt), "val_channels": len(mv)})]
    scale = np.maximum(st, 1e-8)
    shift = np.abs(mt - mv) / scale
    ratio = np.maximum(sv, 1e-8) / scale
    bad = (shift > 1.0) | (ratio > 3) | (ratio < 1 / 3)
    if bad.mean() >= 0.5:
        return [Finding.make("preprocessing_mismatch",
                             f"Validation inputs differ from training inputs in {int(bad.sum())} of "
                             f"{len(bad)} channels/features: mean shift up to {shift.max():.3g} training "
                             f"stds, std ratio {ratio.min():.3g} to {ratio.max():.3g}.", where="val_loader",
                             evidence={"train_mean": mt.round(4).tolist()[:64], "val_mean": mv.round(4).tolist()[:64],
                                       "train_std": st.round(4).tolist()[:64], "val_std": sv.round(4).tolist()[:64]})]
    return None


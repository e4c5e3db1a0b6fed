"""Data and label sanity: what the model is fed, before anything is trained."""

from __future__ import annotations

import numpy as np
import torch

from trainmedic.checks.base import CheckContext, Skip, check
from trainmedic.findings import Finding


def _float_inputs(batches) -> list[torch.Tensor]:
    xs = [x for x, _ in batches if torch.is_tensor(x)]
    if not xs or not xs[0].is_floating_point():
        raise Skip("inputs are not floating-point tensors (token ids or structured inputs)")
    return xs


def channel_rows(x: torch.Tensor) -> torch.Tensor:
    """(rows, channels) view of a float input: (N, F) features, (N, L, F) sequences by their
    last dim, (N, C, ...) images by channel."""
    x = x.detach().float()
    if x.dim() <= 1:
        return x.reshape(-1, 1)
    if x.dim() == 2:
        return x
    if x.dim() == 3:
        return x.reshape(-1, x.shape[-1])
    return x.transpose(0, 1).reshape(x.shape[1], -1).t()


def _channel_stats(xs: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std per channel (dim 1 of N,C,... inputs) or per feature (last dim)."""
    x = torch.cat([t.detach().float().cpu() for t in xs])
    x = x[torch.isfinite(x).all(dim=tuple(range(1, x.dim())))] if x.dim() > 1 else x
    flat = channel_rows(x)
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
    if big_std < 1e-4 and worst_mean < 1e-2:
        problems.append(f"inputs are almost constant: std at most {big_std:.3g}, mean at most {worst_mean:.3g}")
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


@check("target_not_normalized", ["target_not_normalized"], cheap=True)
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
        ignore = ctx.ignore_index()
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
    y = y[(y >= 0) & (y < c) & (y != ctx.ignore_index())]
    return np.bincount(y.cpu().numpy(), minlength=c), c


def imbalance_finding(counts: np.ndarray, unit: str, predicted_share: float | None = None,
                      weighted: bool = False) -> "list[Finding] | None":
    """One class dominates the labels: its share is >= 90%, or >= 10x the rarest class's.
    ``predicted_share``: the share of the dominant class among the model's predictions, when
    known (a watched run); the finding then needs the accuracy paradox to be happening (the
    model predicts the dominant class at least as often as it occurs, >= 95%) and no class
    weights in the loss (``weighted``)."""
    share = counts / max(counts.sum(), 1)
    present = share[share > 0]
    if len(present) < 2 or weighted:
        return None
    top, low = int(share.argmax()), int(np.flatnonzero(share > 0)[share[share > 0].argmin()])
    if not (share[top] >= 10 * share[low] or share[top] >= 0.9):
        return None
    if predicted_share is not None and (predicted_share < 0.95 or predicted_share < share[top]
                                        or share[top] < 0.5):
        return None
    also = (f"; the model predicts class {top} for {predicted_share:.1%} of its outputs"
            if predicted_share is not None else "")
    return [Finding.make("class_imbalance",
                         f"Class {top} has {share[top]:.1%} of the sampled {unit}, class {low} "
                         f"{share[low]:.2%}: a model predicting class {top} everywhere scores "
                         f"{share[top]:.1%} accuracy{also}.", where="targets",
                         evidence={"class_share": share.round(4).tolist()[:100], "unit": unit,
                                   "predicted_share": predicted_share})]


@check("class_imbalance", ["class_imbalance"])
def check_class_imbalance(ctx: CheckContext):
    counts, c = _label_counts(ctx)
    if counts.sum() < 10 * c:
        raise Skip(f"only {int(counts.sum())} labels sampled for {c} classes")
    unit = "pixels" if any(torch.is_tensor(y) and y.dim() > 1 for _, y in ctx.train_batches()) else "samples"
    return imbalance_finding(counts, unit)


def expected_batch_entropy(p: np.ndarray, batch: int, draws: int = 64) -> float:
    """Mean label entropy of a batch of ``batch`` labels drawn at random from ``p``."""
    rng = np.random.default_rng(0)
    q = rng.multinomial(batch, p / p.sum(), size=draws) / batch
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.mean(-np.nansum(np.where(q > 0, q * np.log(q), 0.0), axis=1)))


def unshuffled_finding(counts: np.ndarray, per_batch: float, batch: int) -> "list[Finding] | None":
    """Batches hold far fewer classes than random batches of the same size would: their mean
    label entropy ``per_batch`` is below half of what shuffled batches give."""
    expected = expected_batch_entropy(counts, batch)
    if expected > 0.1 and per_batch < 0.5 * expected:
        return [Finding.make("unshuffled_data",
                             f"Each batch holds few classes: label entropy {per_batch:.3f} per batch "
                             f"vs {expected:.3f} for shuffled batches of {batch}, as when data is "
                             f"sorted by label.", where="train_loader",
                             evidence={"batch_entropy": per_batch, "shuffled_batch_entropy": expected,
                                       "batch_size": batch})]
    return None


def label_entropy(y: torch.Tensor, classes: int) -> float:
    p = np.bincount(y.reshape(-1).long().cpu().numpy(), minlength=classes) / max(y.numel(), 1)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


@check("unshuffled_data", ["unshuffled_data"])
def check_unshuffled_data(ctx: CheckContext):
    counts, c = _label_counts(ctx)
    batches = ctx.train_batches()
    if len(batches) < 3:
        raise Skip("fewer than 3 training batches")
    ys = [y[(y >= 0) & (y < c)] for _, y in batches]
    per_batch = float(np.mean([label_entropy(y, c) for y in ys]))
    return unshuffled_finding(counts, per_batch, int(np.median([y.numel() for y in ys])))


FINGERPRINT_PROJECTIONS = 4


_PROJECTIONS: dict[tuple[int, str], torch.Tensor] = {}


def _projection(d: int, device: torch.device) -> torch.Tensor:
    """The fixed random projection for samples of ``d`` values (same on every call)."""
    key = (d, str(device))
    if key not in _PROJECTIONS:
        g = torch.Generator(device="cpu").manual_seed(d)
        _PROJECTIONS[key] = torch.randn(d, FINGERPRINT_PROJECTIONS, generator=g).to(device)
    return _PROJECTIONS[key]


def fingerprints(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample fingerprints (N, 4) of a batch, on its device and without a host sync: four
    fixed random projections of each sample (one matmul, written into ``out`` when given).
    Exact copies get the same row; keys compare rows at a relative precision."""
    flat = x.detach().reshape(len(x), -1)
    if flat.dtype != torch.float32:
        flat = flat.float()
    r = _projection(flat.shape[1], flat.device)
    return torch.matmul(flat, r, out=out)


def fingerprint_keys(fp: np.ndarray) -> np.ndarray:
    """Host keys (int64) of fingerprint rows: each value's float32 bits without the 8 lowest
    mantissa bits (a relative precision of 3e-5, whatever the scale); rows of constant zeros
    (padding) and non-finite rows get -1."""
    ok = np.isfinite(fp).all(1) & (np.abs(fp).sum(1) > 0)
    q = (np.where(ok[:, None], fp, 0).astype(np.float32).view(np.int32) >> 8).astype(np.int64)
    keys = np.zeros(len(fp), dtype=np.int64)
    for j in range(q.shape[1]):
        keys = keys * np.int64(1_000_003) + q[:, j]
    return np.where(ok, keys & np.int64(0x7FFFFFFFFFFFFFFF), -1)


def leakage_finding(train_keys: np.ndarray, val_batches: "list[np.ndarray]") -> "list[Finding] | None":
    """Validation samples that also occur in training. Evaluation batches made entirely of
    training samples (>= 90%: an evaluation on the training set beside a real one) are set
    apart; the rest leak when >= 1% (and >= 3) of their samples are training samples, and all
    of them leak when every evaluation batch is training data."""
    train = np.unique(train_keys[train_keys >= 0])
    rows = [(int(np.isin(b[b >= 0], train).sum()), int((b >= 0).sum())) for b in val_batches]
    rows = [(m, n) for m, n in rows if n]
    total = sum(n for _, n in rows)
    if not rows or total < 16:
        return None
    own = [(m, n) for m, n in rows if m < 0.9 * n]
    if own:
        hits, seen = sum(m for m, _ in own), sum(n for _, n in own)
        if hits < 3 or hits < 0.01 * seen:
            return None
        msg = (f"{hits} of {seen} validation samples ({hits / seen:.1%}) also appear in the "
               f"training data.")
    else:
        hits = seen = total
        msg = (f"All {total} evaluated samples are training samples: the only validation data is "
               f"(a copy of) the training data.")
    return [Finding.make("train_val_leakage", msg, where="validation data",
                         evidence={"duplicates": hits, "validation_samples": seen,
                                   "share": hits / seen})]


@check("train_val_leakage", ["train_val_leakage"])
def check_train_val_leakage(ctx: CheckContext):
    val = ctx.val_batches()
    train = ctx.train_batches()
    if not all(torch.is_tensor(x) for x, _ in [*train, *val]):
        raise Skip("inputs are not tensors")
    train_keys = np.concatenate([fingerprint_keys(fingerprints(x).cpu().numpy()) for x, _ in train])
    return leakage_finding(train_keys, [fingerprint_keys(fingerprints(x).cpu().numpy()) for x, _ in val])


def mismatch_finding(mt: np.ndarray, st: np.ndarray, mv: np.ndarray, sv: np.ndarray,
                     batches: str = "") -> "list[Finding] | None":
    """Validation statistics (per channel/feature mean ``mv`` and std ``sv``) far from the
    training ones (``mt``, ``st``) in >= half the channels: a mean shift of more than one
    training std, or a std ratio beyond 3x."""
    if mt.shape != mv.shape:
        return [Finding.make("preprocessing_mismatch",
                             f"Training inputs have {len(mt)} channels/features, validation inputs {len(mv)}.",
                             evidence={"train_channels": len(mt), "val_channels": len(mv)})]
    scale = np.maximum(st, 1e-8)
    shift = np.abs(mt - mv) / scale
    ratio = np.maximum(sv, 1e-8) / scale
    bad = (shift > 1.0) | (ratio > 3) | (ratio < 1 / 3)
    if bad.mean() < 0.5:
        return None
    return [Finding.make("preprocessing_mismatch",
                         f"Validation inputs{batches} differ from training inputs in {int(bad.sum())} of "
                         f"{len(bad)} channels/features: mean shift up to {shift.max():.3g} training "
                         f"stds, std ratio {ratio.min():.3g} to {ratio.max():.3g}.", where="validation data",
                         evidence={"train_mean": mt.round(4).tolist()[:64], "val_mean": mv.round(4).tolist()[:64],
                                   "train_std": st.round(4).tolist()[:64], "val_std": sv.round(4).tolist()[:64]})]


@check("preprocessing_mismatch", ["preprocessing_mismatch"])
def check_preprocessing_mismatch(ctx: CheckContext):
    mt, st = _channel_stats(_float_inputs(ctx.train_batches()))
    mv, sv = _channel_stats(_float_inputs(ctx.val_batches()))
    return mismatch_finding(mt, st, mv, sv)

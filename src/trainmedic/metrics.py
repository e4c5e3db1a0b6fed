"""Evaluation metrics shaped for the report: accuracy, precision/recall, F1 and F-beta, PR
curve, confusion summary (the most-confused pairs; the dense matrix only for a few classes),
coverage (accuracy when abstaining below a confidence threshold), cost-weighted error; IoU for
segmentation; MSE/MAE/R2 for regression (scikit-learn where it stays O(samples + classes)).

Nothing here is O(classes^2) unless a dense matrix is asked for by having few classes: a
language model's 30,000-word vocabulary gives per-class counts (O(C)) and the observed
(true, predicted) pairs only."""

from __future__ import annotations

from typing import Any

import numpy as np

COVERAGE_THRESHOLDS = (0.0, 0.5, 0.7, 0.9, 0.95, 0.99)
DENSE_CONFUSION_MAX = 50   # the full confusion matrix is written only up to this many classes
PER_CLASS_MAX = 100        # per-class arrays for every class up to this many classes ...
TOP_CLASSES = 20           # ... beyond, for the TOP_CLASSES classes with the most support


def classification(target, pred, *, num_classes: int | None = None, confidence=None,
                   scores=None, beta: float = 1.0, cost_matrix=None, top_confused: int = 10,
                   ignore_index: int | None = None, counts: dict | None = None) -> dict[str, Any]:
    """Metrics of predicted classes ``pred`` against ``target`` (1-D int arrays).

    ``confidence``: the probability of each predicted class (for coverage). ``scores``:
    (N, C) probabilities, or (N,) positive-class scores for a binary task (for the PR curve).
    ``cost_matrix[t][p]``: the cost of predicting p when the truth is t. ``ignore_index``:
    targets with this value are left out. ``counts``: exact per-class counts
    ``{"support", "predicted", "true_positive"}`` when ``target``/``pred`` are only a sample of
    the evaluation: accuracy, precision/recall/F1 then come from the counts, the confusion
    pairs, coverage and PR curve from the sample (``sampled`` says how many).

    Macro averages are over the classes present in the targets or the predictions (as
    scikit-learn's default). ``confusion_matrix`` (dense, C x C) only for C <=
    DENSE_CONFUSION_MAX; ``most_confused`` always (the ``top_confused`` largest off-diagonal
    cells, computed from the observed pairs only)."""
    target, pred = np.asarray(target).astype(np.int64), np.asarray(pred).astype(np.int64)
    if target.shape != pred.shape or target.ndim != 1:
        raise ValueError(f"target and pred must be 1-D arrays of the same length; got shapes "
                         f"{target.shape} and {pred.shape}")
    if ignore_index is not None:
        keep = target != ignore_index
        target, pred = target[keep], pred[keep]
        confidence = None if confidence is None else np.asarray(confidence)[keep]
        scores = None if scores is None else np.asarray(scores)[keep]
    if len(target) and min(target.min(), pred.min()) < 0:
        raise ValueError("negative class labels; pass ignore_index= for padding targets")
    c = num_classes or int(max(target.max(initial=-1), pred.max(initial=-1)) + 1)
    if counts is not None:
        c = max(c, len(counts["support"]))
        support, predicted, tp = (_pad(np.asarray(counts[k], dtype=np.int64), c)
                                  for k in ("support", "predicted", "true_positive"))
    else:
        support, predicted, tp = class_counts(target, pred, c)
    out = from_counts(support, predicted, tp, beta=beta)
    if counts is not None:
        out["sampled"] = int(len(target))
    most, distinct, mistakes = confused_pairs(target, pred, c, top_confused)
    if c <= DENSE_CONFUSION_MAX:
        out["confusion_matrix"] = confusion_matrix(target, pred, c).tolist()
    out["most_confused"] = most
    out["confused_pairs"] = distinct
    out["mistakes"] = mistakes
    if confidence is not None:
        out["coverage"] = coverage(target, pred, confidence)
    if scores is not None:
        out["pr_curve"] = pr_curve(target, scores)
    if cost_matrix is not None:
        cost = np.asarray(cost_matrix, dtype=float)
        if cost.shape != (c, c):
            raise ValueError(f"cost_matrix has shape {cost.shape}; expected ({c}, {c})")
        out["cost_weighted_error"] = float(cost[target, pred].mean())
    return out


def _pad(a: np.ndarray, c: int) -> np.ndarray:
    return np.pad(a, (0, c - len(a))) if len(a) < c else a


def class_counts(target, pred, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class: support (true count), predicted count and true positives. O(N + C)."""
    target, pred = np.asarray(target, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    hit = target[target == pred]
    return (np.bincount(target, minlength=num_classes), np.bincount(pred, minlength=num_classes),
            np.bincount(hit, minlength=num_classes))


def from_counts(support, predicted, true_positive, *, beta: float = 1.0,
                max_classes: int = PER_CLASS_MAX, top_classes: int = TOP_CLASSES) -> dict[str, Any]:
    """Accuracy, macro precision/recall/F1/F-beta and per-class arrays from per-class counts.

    ``per_class`` holds every class when there are at most ``max_classes``; otherwise the
    ``top_classes`` classes with the most support, and ``omitted_classes``/``omitted_support``
    for the rest. ``per_class["class"]`` names the class of each position."""
    s, q, tp = (np.asarray(a, dtype=np.int64) for a in (support, predicted, true_positive))
    c, n = len(s), int(s.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(q > 0, tp / np.maximum(q, 1), 0.0)
        recall = np.where(s > 0, tp / np.maximum(s, 1), 0.0)
        f1 = np.where(s + q > 0, 2 * tp / np.maximum(s + q, 1), 0.0)
        b2 = beta * beta
        den = (1 + b2) * tp + b2 * (s - tp) + (q - tp)
        fb = np.where(den > 0, (1 + b2) * tp / np.maximum(den, 1), 0.0)
    present = (s > 0) | (q > 0)

    def macro(v):
        return float(v[present].mean()) if present.any() else 0.0

    if c <= max_classes:
        shown = np.arange(c)
    else:
        shown = np.argsort(-s, kind="stable")[:top_classes]
    per_class: dict[str, Any] = {"class": shown.tolist(), "precision": precision[shown].tolist(),
                                 "recall": recall[shown].tolist(), "f1": f1[shown].tolist(),
                                 "support": s[shown].tolist()}
    if len(shown) < c:
        per_class["omitted_classes"] = int(c - len(shown))
        per_class["omitted_support"] = int(n - s[shown].sum())
    return {"samples": n, "classes": c, "accuracy": float(tp.sum() / n) if n else 0.0,
            "precision_macro": macro(precision), "recall_macro": macro(recall), "f1_macro": macro(f1),
            f"f{beta:g}_macro": macro(fb), "per_class": per_class}


def confused_pairs(target, pred, num_classes: int, top: int = 10) -> tuple[list[dict[str, int]], int, int]:
    """The ``top`` most frequent (true, predicted) mistakes from the observed pairs only (no
    C x C matrix): ``([{"true", "predicted", "count"}], distinct mistaken pairs, mistakes)``."""
    target, pred = np.asarray(target, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    wrong = target != pred
    keys, cnt = np.unique(target[wrong] * num_classes + pred[wrong], return_counts=True)
    order = np.lexsort((keys, -cnt))[:top]          # most frequent first, then by (true, predicted)
    most = [{"true": int(keys[i] // num_classes), "predicted": int(keys[i] % num_classes),
             "count": int(cnt[i])} for i in order]
    return most, int(len(keys)), int(wrong.sum())


def confusion_matrix(target, pred, num_classes: int) -> np.ndarray:
    """Dense (C, C) counts, rows true, columns predicted. Only for small C (it is C^2)."""
    target, pred = np.asarray(target, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    return np.bincount(target * num_classes + pred, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def coverage(target, pred, confidence, thresholds=COVERAGE_THRESHOLDS) -> list[dict[str, float]]:
    """For each threshold: the share of samples answered (confidence >= threshold) and the
    accuracy on them (the model abstains on the rest)."""
    target, pred, conf = np.asarray(target), np.asarray(pred), np.asarray(confidence)
    rows = []
    for t in thresholds:
        keep = conf >= t
        rows.append({"threshold": float(t), "coverage": float(keep.mean()),
                     "accuracy": float((pred[keep] == target[keep]).mean()) if keep.any() else None})
    return rows


def pr_curve(target, scores, positive: int = 1, points: int = 50) -> dict[str, Any]:
    """Precision-recall curve and average precision for one class (``positive``): ``scores``
    is (N,) scores of that class or (N, C) probabilities. Thinned to about ``points`` points."""
    from sklearn import metrics as skm

    scores = np.asarray(scores)
    s = scores[:, positive] if scores.ndim == 2 else scores
    y = (np.asarray(target) == positive).astype(int)
    precision, recall, _ = skm.precision_recall_curve(y, s)
    step = max(1, len(precision) // points)
    return {"positive_class": positive, "precision": precision[::step].tolist(),
            "recall": recall[::step].tolist(), "average_precision": float(skm.average_precision_score(y, s))}


def segmentation(target, pred, num_classes: int, ignore_index: int | None = None) -> dict[str, Any]:
    """Per-class IoU and mean IoU over pixels (classes absent from both are left out)."""
    from sklearn import metrics as skm

    t, p = np.asarray(target).reshape(-1), np.asarray(pred).reshape(-1)
    if ignore_index is not None:
        keep = t != ignore_index
        t, p = t[keep], p[keep]
    labels = list(range(num_classes))
    iou = skm.jaccard_score(t, p, labels=labels, average=None, zero_division=0)
    present = np.isin(labels, t) | np.isin(labels, p)
    return {"iou": [float(v) if ok else None for v, ok in zip(iou, present)],
            "mean_iou": float(np.mean(iou[present])) if present.any() else None,
            "pixel_accuracy": float((t == p).mean())}


def regression(target, pred) -> dict[str, float]:
    from sklearn import metrics as skm

    t, p = np.asarray(target, dtype=float).reshape(-1), np.asarray(pred, dtype=float).reshape(-1)
    return {"mse": float(skm.mean_squared_error(t, p)), "mae": float(skm.mean_absolute_error(t, p)),
            "r2": float(skm.r2_score(t, p))}

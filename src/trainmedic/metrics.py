"""Evaluation metrics from scikit-learn, shaped for the report: accuracy, precision/recall,
F1 and F-beta, PR curve, confusion matrix and the most-confused pairs, coverage (accuracy when
abstaining below a confidence threshold), cost-weighted error; IoU for segmentation;
MSE/MAE/R2 for regression."""

from __future__ import annotations

from typing import Any

import numpy as np

COVERAGE_THRESHOLDS = (0.0, 0.5, 0.7, 0.9, 0.95, 0.99)


def classification(target, pred, *, num_classes: int | None = None, confidence=None,
                   scores=None, beta: float = 1.0, cost_matrix=None, top_confused: int = 5) -> dict[str, Any]:
    """Metrics of predicted classes ``pred`` against ``target`` (1-D int arrays).

    ``confidence``: the probability of each predicted class (for coverage). ``scores``:
    (N, C) probabilities, or (N,) positive-class scores for a binary task (for the PR curve).
    ``cost_matrix[t][p]``: the cost of predicting p when the truth is t."""
    from sklearn import metrics as skm

    target, pred = np.asarray(target).astype(int), np.asarray(pred).astype(int)
    if target.shape != pred.shape or target.ndim != 1:
        raise ValueError(f"target and pred must be 1-D arrays of the same length; got shapes "
                         f"{target.shape} and {pred.shape}")
    c = num_classes or int(max(target.max(), pred.max()) + 1)
    labels = list(range(c))
    p, r, f1, support = skm.precision_recall_fscore_support(target, pred, labels=labels, zero_division=0)
    cm = skm.confusion_matrix(target, pred, labels=labels)
    off = [(int(cm[i, j]), i, j) for i in labels for j in labels if i != j and cm[i, j]]
    out: dict[str, Any] = {
        "samples": int(len(target)), "classes": c,
        "accuracy": float(skm.accuracy_score(target, pred)),
        "precision_macro": float(p.mean()), "recall_macro": float(r.mean()), "f1_macro": float(f1.mean()),
        f"f{beta:g}_macro": float(skm.fbeta_score(target, pred, beta=beta, labels=labels,
                                                   average="macro", zero_division=0)),
        "per_class": {"precision": p.tolist(), "recall": r.tolist(), "f1": f1.tolist(),
                      "support": support.tolist()},
        "confusion_matrix": cm.tolist(),
        "most_confused": [{"true": i, "predicted": j, "count": n} for n, i, j in sorted(off, reverse=True)[:top_confused]],
    }
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

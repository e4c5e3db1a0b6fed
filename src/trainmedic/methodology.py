"""The practical-methodology tools: learning curves ("will more data help?"), baselines that put
the network's numbers in context, and the spread over seeds ("is this improvement real?").

All three take a small training function of yours, so they work with any model and loop:

    def fit(x, y, seed):            # train on (x, y) from scratch, return a predict function
        ...
        return lambda x: model(x).argmax(1)
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch

Fit = Callable[[torch.Tensor, torch.Tensor, int], Callable[[torch.Tensor], torch.Tensor]]


def _error(predict, x, y, task: str) -> float:
    with torch.no_grad():
        p = predict(x)
    if task == "classification":
        return float((p.reshape(-1) != y.reshape(-1)).float().mean())
    return float(((p.reshape(-1).float() - y.reshape(-1).float()) ** 2).mean())


def learning_curve(fit: Fit, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor], *,
                   fractions: Sequence[float] = (0.1, 0.2, 0.4, 0.7, 1.0), task: str = "classification",
                   seed: int = 0) -> dict[str, Any]:
    """Train on growing fractions of the training set; fit val_error(n) = a + b * n^(-c) and say
    whether more data is likely to help and roughly how much: the fitted error now and at twice
    the data, and the gap between training and validation error."""
    if task not in ("classification", "regression"):
        raise ValueError(f"task={task!r} is not valid; expected 'classification' or 'regression'")
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f"fractions={list(fractions)!r} is not valid; expected values in (0, 1]")
    x, y = train
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    rows = []
    for f in sorted(fractions):
        n = max(2, int(round(f * len(x))))
        idx = perm[:n]
        predict = fit(x[idx], y[idx], seed)
        rows.append({"fraction": f, "samples": n, "train_error": _error(predict, x[idx], y[idx], task),
                     "val_error": _error(predict, *val, task)})
    out: dict[str, Any] = {"task": task, "error": "misclassification rate" if task == "classification" else "MSE",
                           "points": rows}
    out.update(_extrapolate(rows))
    return out


def _extrapolate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = np.array([r["samples"] for r in rows], dtype=float)
    e = np.array([r["val_error"] for r in rows], dtype=float)
    gap = rows[-1]["val_error"] - rows[-1]["train_error"]
    if len(rows) < 3:
        return {"verdict": "too few points to fit a trend", "gap": gap}
    try:
        from scipy.optimize import curve_fit
        (a, b, c), _ = curve_fit(lambda n, a, b, c: a + b * n ** (-c), n, e,
                                 p0=(max(e.min() * 0.5, 0.0), e.max() * n.min() ** 0.5, 0.5),
                                 bounds=([0, 0, 0.01], [max(e.max(), 1e-9), np.inf, 3]), maxfev=20000)
        now, at_double = float(a + b * n[-1] ** (-c)), float(a + b * (2 * n[-1]) ** (-c))
        floor = float(a)
    except (ImportError, RuntimeError, ValueError):
        slope, icept = np.polyfit(np.log(n), e, 1)
        now = float(icept + slope * math.log(n[-1]))
        at_double, floor = float(now + min(slope, 0) * math.log(2)), None
    gain = now - at_double
    helps = gain > max(0.01 * e[-1], 0.002) and gap > 0.1 * max(e[-1], 1e-9)
    verdict = (f"more data is likely to help: doubling it should bring the validation error from "
               f"{e[-1]:.4g} to about {at_double:.4g}" if helps else
               f"more data is unlikely to help much (doubling it: {e[-1]:.4g} -> about {at_double:.4g}); "
               f"look at capacity, optimisation or data quality instead")
    return {"val_error_fit": now, "val_error_at_double": at_double, "expected_gain": gain,
            "irreducible_error": floor,
            "gap": gap, "more_data_helps": bool(helps), "verdict": verdict}


def baselines(train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor], *,
              fit: Fit | None = None, task: str = "classification", seed: int = 0) -> dict[str, Any]:
    """Validation error of simple references: the majority class / mean target, a classical
    scikit-learn model on flattened inputs, and (with ``fit``) your network trained on zeroed
    inputs (what it learns without looking at the input) and on the real inputs."""
    from sklearn.dummy import DummyClassifier, DummyRegressor
    from sklearn.linear_model import LogisticRegression, Ridge

    if task not in ("classification", "regression"):
        raise ValueError(f"task={task!r} is not valid; expected 'classification' or 'regression'")
    (x, y), (xv, yv) = train, val
    flat, flat_v = x.reshape(len(x), -1).float().numpy(), xv.reshape(len(xv), -1).float().numpy()
    yn = y.numpy()
    rows = {}
    if task == "classification":
        models = {"majority class": DummyClassifier(strategy="most_frequent"),
                  "logistic regression": LogisticRegression(max_iter=2000)}
    else:
        models = {"mean target": DummyRegressor(), "ridge regression": Ridge()}
    for name, m in models.items():
        m.fit(flat, yn)
        p = torch.as_tensor(m.predict(flat_v))
        rows[name] = _error(lambda _: p, xv, yv, task)
    if fit is not None:
        zeros = fit(torch.zeros_like(x), y, seed)
        rows["network on zeroed inputs"] = _error(lambda v: zeros(torch.zeros_like(v)), xv, yv, task)
        rows["network"] = _error(fit(x, y, seed), xv, yv, task)
    out: dict[str, Any] = {"task": task, "val_error": rows}
    if "network" in rows:
        best_simple = min(v for k, v in rows.items() if k != "network")
        out["verdict"] = ("the network beats every baseline" if rows["network"] < best_simple else
                          "a baseline is as good as the network: check the network's training first")
    return out


def seed_spread(train_and_score: Callable[[int], float], seeds: int | Sequence[int] = 5) -> dict[str, Any]:
    """Run ``train_and_score(seed)`` for several seeds; an improvement smaller than about twice
    the standard deviation is indistinguishable from a lucky seed."""
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if len(seeds) < 2:
        raise ValueError(f"seeds={seeds!r} is not valid; expected at least 2 seeds")
    scores = np.array([float(train_and_score(s)) for s in seeds])
    std = float(scores.std(ddof=1))
    return {"seeds": seeds, "scores": scores.tolist(), "mean": float(scores.mean()), "std": std,
            "min": float(scores.min()), "max": float(scores.max()),
            "ci95": [float(scores.mean() - 1.96 * std / math.sqrt(len(scores))),
                     float(scores.mean() + 1.96 * std / math.sqrt(len(scores)))],
            "noise_level": 2 * std,
            "verdict": f"differences below {2 * std:.4g} are within seed-to-seed noise"}

"""Generalisation: validation awareness, the best epoch, goals, metrics against scikit-learn,
early stopping, learning curves, baselines, seed spread, and the JSON report's new fields."""

import contextlib
import importlib
import io
import json
import os
import time

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from torch import nn

import trainmedic
from trainmedic import metrics
from trainmedic.goals import Goal, assess
from trainmedic.methodology import baselines, learning_curve, seed_spread
from trainmedic.runner import run_script
from _common import digits

ZOO = os.path.join(os.path.dirname(__file__), "zoo")


def test_overfitting_reports_the_true_best_epoch(tmp_path):
    """The best epoch is computed independently, by re-running the seeded program and
    evaluating after each epoch without trainmedic."""
    mod = importlib.import_module("bug_overfitting")
    losses = []
    real = mod.evaluate

    def spy(model, val, *a):
        out = real(model, val, *a)
        losses.append(out[0])
        return out
    mod.evaluate = spy
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            mod.main()
    finally:
        mod.evaluate = real
    truth = int(np.argmin(losses)) + 1
    with contextlib.redirect_stdout(io.StringIO()):
        monitor = mod.main(watch=lambda m, o: trainmedic.watch(m, o, run_dir=tmp_path, on_finding=lambda f: None))
    report = monitor.report()
    assert abs(report.by_id("overfitting").evidence["best_epoch"] - truth) <= 1
    assert report.run["best_epoch"] == truth
    epochs = report.run["epochs"]
    assert len(epochs) == 60 and epochs[0]["val_loss"] == pytest.approx(losses[0], rel=1e-5)


def test_report_carries_curves_goal_metrics_and_worst_mistakes(tmp_path):
    code = run_script(os.path.join(ZOO, "bug_overfitting.py"), json_path=str(tmp_path / "r.json"),
                      goal="val_acc>=0.95")
    assert code == 0
    data = json.loads((tmp_path / "r.json").read_text())
    run = data["run"]
    assert [e["epoch"] for e in run["epochs"]] == list(range(1, 61))
    assert run["goal"]["met"] is False and run["goal"]["diagnosis"].startswith("overfitting")
    assert run["goal"]["gap"] == pytest.approx(0.95 - run["goal"]["value"])
    assert run["metrics"]["samples"] == 397 and len(run["metrics"]["confusion_matrix"]) == 10
    worst = run["worst_mistakes"]["lowest_true_class_probability"]
    assert len(worst["index"]) == 8 and np.array(worst["inputs"]).shape == (8, 64)
    assert worst["p_true"] == sorted(worst["p_true"])
    assert all(w["predicted"] != w["target"] for w in run["worst_mistakes"]["most_confident_wrong"])


def test_log_val_records_explicit_validation(tmp_path):
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = trainmedic.watch(model, opt, run_dir=tmp_path, on_finding=lambda f: None, goal="val_acc>=0.9")
    for epoch in range(3):
        for _ in range(5):
            opt.zero_grad()
            nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.zeros(8, dtype=torch.long)).backward()
            opt.step()
        monitor.log_val(loss=1.0 - 0.1 * epoch, acc=0.8 + 0.05 * epoch)
    report = monitor.report()
    assert [e["val_acc"] for e in report.run["epochs"]] == pytest.approx([0.8, 0.85, 0.9])
    assert report.run["goal"]["met"] and report.run["best_epoch"] == 3


def test_goal_parsing_and_decision_table():
    g = Goal.parse("val_acc>=0.95")
    assert (g.split, g.metric, g.op, g.target) == ("val", "acc", ">=", 0.95)
    with pytest.raises(ValueError, match="goal='accuracy 95' is not a goal"):
        Goal.parse("accuracy 95")
    over = assess(g, [{"epoch": 1, "val_acc": 0.8, "train_acc": 0.99}])
    under = assess(g, [{"epoch": 1, "val_acc": 0.8, "train_acc": 0.82}])
    met = assess(g, [{"epoch": 1, "val_acc": 0.97, "train_acc": 0.99}])
    assert over["diagnosis"].startswith("overfitting") and under["diagnosis"].startswith("underfitting")
    assert met["met"] and assess(Goal.parse("val_loss<=0.1"), [])["met"] is False


def test_classification_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 4, 500)
    pred = np.where(rng.random(500) < 0.7, target, rng.integers(0, 4, 500))
    conf = rng.random(500)
    cost = rng.random((4, 4))
    m = metrics.classification(target, pred, confidence=conf, beta=2.0, cost_matrix=cost)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(target, pred))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(target, pred, average="macro"))
    assert m["f2_macro"] == pytest.approx(skm.fbeta_score(target, pred, beta=2, average="macro"))
    assert m["precision_macro"] == pytest.approx(skm.precision_score(target, pred, average="macro"))
    assert m["confusion_matrix"] == skm.confusion_matrix(target, pred).tolist()
    cm = np.array(m["confusion_matrix"])
    np.fill_diagonal(cm, 0)
    top = m["most_confused"][0]
    assert top["count"] == cm.max() and cm[top["true"], top["predicted"]] == cm.max()
    assert m["cost_weighted_error"] == pytest.approx(np.mean([cost[t, p] for t, p in zip(target, pred)]))
    for row in m["coverage"]:                     # brute force: answer only when confident enough
        keep = [i for i in range(500) if conf[i] >= row["threshold"]]
        assert row["coverage"] == pytest.approx(len(keep) / 500)
        assert row["accuracy"] == pytest.approx(np.mean([pred[i] == target[i] for i in keep]))


def test_pr_curve_iou_and_regression_match_scikit_learn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = np.clip(y * 0.3 + rng.random(300) * 0.7, 0, 1)
    pr = metrics.pr_curve(y, s, points=10_000)
    p, r, _ = skm.precision_recall_curve(y, s)
    assert pr["precision"] == pytest.approx(p.tolist()) and pr["recall"] == pytest.approx(r.tolist())
    assert pr["average_precision"] == pytest.approx(skm.average_precision_score(y, s))
    t = rng.integers(0, 3, (4, 16, 16))
    q = np.where(rng.random((4, 16, 16)) < 0.6, t, rng.integers(0, 3, (4, 16, 16)))
    seg = metrics.segmentation(t, q, num_classes=3)
    ref = skm.jaccard_score(t.reshape(-1), q.reshape(-1), average=None)
    assert seg["iou"] == pytest.approx(ref.tolist()) and seg["mean_iou"] == pytest.approx(ref.mean())
    a, b = rng.normal(size=50), rng.normal(size=50)
    reg = metrics.regression(a, b)
    assert reg == pytest.approx({"mse": skm.mean_squared_error(a, b), "mae": skm.mean_absolute_error(a, b),
                                 "r2": skm.r2_score(a, b)})
    with pytest.raises(ValueError, match="same length"):
        metrics.classification([0, 1], [0])


def test_early_stopping_stops_and_restores_the_best():
    model = nn.Linear(2, 1)
    stopper = trainmedic.EarlyStopping(patience=2)
    values = [1.0, 0.8, 0.7, 0.75, 0.72, 0.9, 0.5]
    stopped_at = None
    for epoch, v in enumerate(values, 1):
        with torch.no_grad():
            model.weight.fill_(v)
        if stopper.step(v, model):
            stopped_at = epoch
            break
    assert stopped_at == 5 and stopper.best_epoch == 3       # two epochs without improvement and stopper.reason.value.startswith("no improvement for")
    assert stopper.restore(model) and model.weight[0, 0].item() == pytest.approx(0.7)
    with pytest.raises(ValueError, match="mode='median'"):
        trainmedic.EarlyStopping(mode="median")
    assert trainmedic.EarlyStopping().step(float("nan")) is True


def _fit_mlp(epochs=30):
    def fit(x, y, seed):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(epochs):
            for i in range(0, len(x), 64):
                opt.zero_grad()
                nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64]).backward()
                opt.step()
        return lambda v: model(v).argmax(1)
    return fit


def test_learning_curve_and_baselines_on_digits_in_under_a_minute():
    xtr, ytr, xva, yva = digits(flat=True)
    start = time.perf_counter()
    curve = learning_curve(_fit_mlp(), (xtr, ytr), (xva, yva))
    base = baselines((xtr, ytr), (xva, yva), fit=_fit_mlp())
    assert time.perf_counter() - start < 60
    errors = [p["val_error"] for p in curve["points"]]
    assert errors[0] > errors[-1]                     # more data helped along the curve
    assert curve["val_error_at_double"] <= curve["val_error_fit"] and "data" in curve["verdict"]
    v = base["val_error"]
    assert v["majority class"] > 0.8 and v["network on zeroed inputs"] > 0.8
    assert v["network"] < 0.1 and v["logistic regression"] < 0.1
    with pytest.raises(ValueError, match="fractions="):
        learning_curve(_fit_mlp(), (xtr, ytr), (xva, yva), fractions=[0, 1])


def test_seed_spread():
    out = seed_spread(lambda s: 0.9 + 0.01 * s, seeds=4)
    assert out["mean"] == pytest.approx(0.915) and out["std"] == pytest.approx(np.std([0.9, 0.91, 0.92, 0.93], ddof=1))
    assert out["ci95"][0] < out["mean"] < out["ci95"][1]
    with pytest.raises(ValueError, match="at least 2 seeds"):
        seed_spread(lambda s: 0.0, seeds=1)


def _epochs(shares, losses):
    return [{"epoch": i + 1, "step": 10 * (i + 1), "val_top_class_share": s, "val_samples": 64, "val_loss": v}
            for i, (s, v) in enumerate(zip(shares, losses))]


@pytest.mark.parametrize("shares, losses, fires", [
    ([0.5, 1.0, 1.0, 1.0], [0.9, 0.62, 0.62, 0.62], True),      # collapsed and stuck
    ([1.0, 1.0, 0.98, 0.97], [0.7, 0.69, 0.65, 0.6], False),    # a majority phase it learns past
    ([1.0, 1.0, 1.0, 1.0], [0.9, 0.8, 0.7, 0.6], False),        # still improving
])
def test_constant_predictions_on_validation(shares, losses, fires):
    from trainmedic.detectors.activations import ConstantPredictions
    from trainmedic.history import RunState
    from trainmedic.params import ParamTable
    run = RunState(ParamTable())
    run.epochs = _epochs(shares, losses)
    verdict = ConstantPredictions().evaluate(run, set(), final=False)
    assert (verdict is not None) == fires
    if fires:
        assert verdict.where == "validation" and verdict.evidence["epochs"] == [2, 3, 4]

"""The control channel: controls added with Monitor.add_control act between two steps (after each
tick, after each validation epoch); a failing control is dropped with one warning and training
goes on unchanged; StopTraining from a control ends the run."""

import json
import textwrap
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import trainmedic
from trainmedic.findings import Finding
from trainmedic.runner import run_script_outcome


class Recorder:
    """A control that records what it is shown (and the monitor's step at that moment)."""

    def __init__(self, monitor=None):
        self.monitor = monitor
        self.ticks, self.epochs = [], []

    def after_tick(self):
        self.ticks.append(self.monitor.step if self.monitor is not None else None)

    def after_epoch(self, record):
        self.epochs.append((self.monitor.step if self.monitor is not None else None, record))


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=g)
    return x[:160], (x[:160, 0] > 0).long(), x[160:], (x[160:, 0] > 0).long()


def _train(monitor_kwargs=(), controls=(), epochs=3, steps=10, evaluate=True):
    """``epochs`` x ``steps`` SGD steps on a fixed problem, an evaluation (eval mode, no grad)
    after each epoch; returns (monitor, model, the validation losses computed here)."""
    torch.manual_seed(0)
    xt, yt, xv, yv = _data()
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = trainmedic.watch(model, opt, every=5, on_finding=lambda f: None, **dict(monitor_kwargs))
    for c in controls:
        if hasattr(c, "monitor") and c.monitor is None:
            c.monitor = monitor
        monitor.add_control(c)
    val_losses = []
    for _ in range(epochs):
        model.train()
        for i in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[i * 16:(i + 1) * 16]), yt[i * 16:(i + 1) * 16]).backward()
            opt.step()
        if evaluate:
            model.eval()
            with torch.no_grad():
                val_losses.append(float(nn.functional.cross_entropy(model(xv), yv)))
    return monitor, model, val_losses


def test_a_control_sees_every_tick_and_every_epoch_with_its_metrics(tmp_path):
    rec = Recorder()
    monitor, _, val_losses = _train({"run_dir": tmp_path}, [rec])
    # ticks every 5 steps, between two steps: after steps 5, 10, ..., 30 (none for the final one)
    assert rec.ticks == [5, 10, 15, 20, 25, 30]
    # an evaluation closes at the next training step, before it is taken; the last one is open
    assert [(step, r["epoch"]) for step, r in rec.epochs] == [(10, 1), (20, 2)]
    report = monitor.report()                            # ... until close()
    assert [(step, r["epoch"]) for step, r in rec.epochs] == [(10, 1), (20, 2), (30, 3)]
    assert [r["val_loss"] for _, r in rec.epochs] == pytest.approx(val_losses, rel=1e-5)
    assert all(0 <= r["val_acc"] <= 1 and r["val_samples"] == 40 for _, r in rec.epochs)
    assert all(seen is stored for (_, seen), stored in zip(rec.epochs, report.run["epochs"]))


def test_after_epoch_for_log_val_and_end_validation(tmp_path):
    rec = Recorder()
    monitor, model, _ = _train({"run_dir": tmp_path}, [rec], epochs=1, evaluate=False)
    monitor.log_val(loss=0.5, acc=0.75)                   # the user's own evaluation
    assert [(r["epoch"], r["val_loss"], r["val_acc"]) for _, r in rec.epochs] == [(1, 0.5, 0.75)]
    _, _, xv, yv = _data()
    model.eval()
    with torch.no_grad():                                 # seen by the monitor: an open phase
        nn.functional.cross_entropy(model(xv), yv)
    monitor.end_validation(0.4, f1=0.6)                   # a framework's evaluation ended
    assert len(rec.epochs) == 2
    record = rec.epochs[1][1]
    assert record["epoch"] == 2 and record["val_f1"] == 0.6 and "val_acc" in record
    monitor.report()
    assert len(rec.epochs) == 2                           # nothing closes twice


class Failing(Recorder):
    def __init__(self, method, at=2):
        super().__init__()
        self.method, self.at, self.calls = method, at, 0

    def _maybe_fail(self):
        self.calls += 1
        if self.calls == self.at:
            raise ValueError("planted control failure")

    def after_tick(self):
        if self.method == "after_tick":
            self._maybe_fail()

    def after_epoch(self, record):
        if self.method == "after_epoch":
            self._maybe_fail()


@pytest.mark.parametrize("method", ["after_tick", "after_epoch"])
def test_a_failing_control_is_dropped_with_one_warning_and_training_is_unchanged(tmp_path, method):
    reference, ref_model, _ = _train({"run_dir": tmp_path / "ref"})
    ref_report = reference.report()
    failing, after = Failing(method), Recorder()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monitor, model, _ = _train({"run_dir": tmp_path / "run"}, [failing, after])
        report = monitor.report()
    ours = [str(w.message) for w in caught if "planted control failure" in str(w.message)]
    assert len(ours) == 1 and "Failing" in ours[0], [str(w.message) for w in caught]
    assert failing.calls == 2                             # dropped when it raised, never called again
    assert len(after.ticks) == 6 and len(after.epochs) == 3   # the next control still acts
    for a, b in zip(ref_model.parameters(), model.parameters()):
        assert torch.equal(a, b)
    assert np.array_equal(reference.run.loss_steps, monitor.run.loss_steps)
    assert [f.id for f in report.findings] == [f.id for f in ref_report.findings]
    assert report.run["disabled"] == {} and report.run["status"] == "completed"


def test_a_failing_control_with_abandon_is_told_and_warns_itself(tmp_path):
    class Undoable(Failing):
        def abandon(self, exc):
            self.abandoned = exc

    control = Undoable("after_tick", at=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monitor, _, _ = _train({"run_dir": tmp_path}, [control])
        monitor.report()
    assert isinstance(control.abandoned, ValueError) and control.calls == 1
    assert not [w for w in caught if "planted control failure" in str(w.message)]


def test_stop_training_takes_a_finding_or_a_reason():
    f = Finding.make("loss_diverging", "the loss rises", step=7)
    by_finding, by_reason = trainmedic.StopTraining(f), trainmedic.StopTraining("pruned: median pruner at epoch 3")
    assert by_finding.finding is f and by_finding.reason == "loss_diverging" and "step 7" in str(by_finding)
    assert by_reason.finding is None and by_reason.reason == str(by_reason) == "pruned: median pruner at epoch 3"
    assert not isinstance(by_reason, Exception)           # a script's `except Exception` lets it through


def test_a_control_stops_a_script_run(tmp_path, monkeypatch):
    import trainmedic.runner as runner

    class Prune:
        def after_tick(self):
            pass

        def after_epoch(self, record):
            if record["epoch"] == 2:
                raise trainmedic.StopTraining("x")

    class PrunedMonitor(runner.Monitor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_control(Prune())

    monkeypatch.setattr(runner, "Monitor", PrunedMonitor)
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        import torch
        from torch import nn
        torch.manual_seed(0)
        x = torch.randn(200, 8); y = (x[:, 0] > 0).long()
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for epoch in range(5):
            model.train()
            for i in range(10):
                opt.zero_grad()
                try:                                # a script's own handler does not stop it
                    nn.functional.cross_entropy(model(x[i * 16:(i + 1) * 16]), y[i * 16:(i + 1) * 16]).backward()
                    opt.step()
                except Exception:
                    pass
            model.eval()
            with torch.no_grad():
                nn.functional.cross_entropy(model(x[160:]), y[160:])
            print("epoch", epoch)
    """))
    out = tmp_path / "report.json"
    outcome = run_script_outcome(str(script), json_path=str(out), run_dir=str(tmp_path / "run"),
                                 live=False, every=5)
    assert outcome.status == "stopped" and outcome.code == 0
    run = json.loads(out.read_text())["run"]
    assert run["stopped_by"] == "x" and run["status"] == "stopped"
    assert run["steps"] == 20 and len(run["epochs"]) == 2      # stopped before the 21st step


def test_stop_on_acts_only_on_findings_this_rank_measured():
    """Another rank's finding in rank 0's report, or the comparison of ranks, does not stop rank 0
    (its peers would wait in DDP's collectives); the same finding measured here does."""
    from trainmedic.engine import StopOn
    theirs = Finding.make("loss_diverging", "On rank 1: the loss rises", step=7, evidence={"rank": 1})
    ranks = Finding.make("rank_divergence", "rank 1 diverges", step=7, evidence={"ranks": [1]})
    StopOn({"loss_diverging": theirs, "rank_divergence": ranks}, {"error"}).after_tick()
    ours = Finding.make("loss_diverging", "the loss rises", step=7)
    with pytest.raises(trainmedic.StopTraining):
        StopOn({"loss_diverging": ours}, {"error"}).after_tick()

"""Verified repair while training (trainmedic.repair): roll back in place to a healthy snapshot,
apply a remedy, keep it only when verified."""

import json
import textwrap
import warnings

import numpy as np
import pytest
import torch

import trainmedic
from trainmedic.repair import RepairController, SnapshotRing, find_schedulers
from trainmedic.repair import remedies as remedies_mod
from trainmedic.runner import run_script

_DATA = {}


def _digits():
    if not _DATA:
        from sklearn.datasets import load_digits
        d = load_digits()
        X = d.data.astype(np.float32)
        X = (X - X.mean(0)) / (X.std(0) + 1e-6)
        _DATA["xt"], _DATA["yt"] = torch.tensor(X[:1400]), torch.tensor(d.target[:1400])
        _DATA["xv"], _DATA["yv"] = torch.tensor(X[1400:]), torch.tensor(d.target[1400:])
    return _DATA["xt"], _DATA["yt"], _DATA["xv"], _DATA["yv"]


def _train(tmp_path, lr, *, watch=True, repair=True, zero_grad=True, epochs=6, **watch_kw):
    """A digits MLP under SGD(momentum 0.9); returns (val accuracy, report or None, opt, model)."""
    xt, yt, xv, yv = _digits()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    mon = trainmedic.watch(model, opt, repair=repair, run_dir=str(tmp_path / "run"),
                           on_finding=lambda f: None, **watch_kw) if watch else None
    gen = torch.Generator().manual_seed(1)
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 32):
            idx = perm[i:i + 32]
            if zero_grad:
                opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(xv).argmax(1) == yv).float().mean().item()
    return acc, (mon.report() if mon is not None else None), opt, model


def test_learning_rate_too_high_is_rolled_back_and_repaired_in_place(tmp_path):
    # lr=1.0 with momentum 0.9 diverges at once; x0.1 is the good lr. (At lr=3.0, x0.1 still
    # diverges and the first slice has no second scaling: that run is reported, not repaired.)
    good, _, _, _ = _train(tmp_path / "good", 0.1, watch=False)
    broken, _, _, _ = _train(tmp_path / "plain", 1.0, watch=False)
    assert broken < 0.7 * good                           # the fault is real
    acc, rep, opt, model = _train(tmp_path / "rep", 1.0)
    repairs = rep.run["repairs"]
    kept = [r for r in repairs if r["outcome"] == "kept"]
    assert kept and kept[0]["remedy"] == "lr_scale_0.1", repairs
    assert kept[0]["rolled_back_to_step"] < kept[0]["step"]
    assert kept[0]["loss_after"] < kept[0]["loss_before"]
    assert acc >= 0.9 * good, (acc, good)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)         # the user's own object
    assert all(p is q for p, q in zip(opt.param_groups[0]["params"], model.parameters()))
    fixed = {f.id: f for f in rep.findings}
    assert fixed[kept[0]["finding"]].status == "resolved"


def test_forgotten_zero_grad_is_repaired_by_clearing_each_step(tmp_path):
    good, _, _, _ = _train(tmp_path / "good", 0.1, watch=False)
    acc, rep, opt, _ = _train(tmp_path / "rep", 0.1, zero_grad=False)
    kept = [r for r in rep.run["repairs"] if r["outcome"] == "kept"]
    assert [r["remedy"] for r in kept] == ["zero_grad_each_step"], rep.run["repairs"]
    assert kept[0]["finding"] == "grads_not_cleared"
    assert acc >= 0.9 * good, (acc, good)
    assert opt.param_groups[0]["lr"] == 0.1                       # nothing else was changed


def test_clean_run_with_repair_is_bit_identical(tmp_path):
    _, _, _, plain = _train(tmp_path / "plain", 0.1, watch=False, epochs=3)
    _, rep, _, watched = _train(tmp_path / "rep", 0.1, epochs=3)
    assert rep.run["repairs"] == []
    assert not [f for f in rep.findings if f.severity.value == "error"]
    for a, b in zip(plain.parameters(), watched.parameters()):
        assert torch.equal(a, b)


def test_snapshot_ring_never_holds_more_than_configured(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ring = SnapshotRing(2)
    for step in range(5):
        ring.take(step, None, [model], [opt])
        assert len(ring) <= 2
    assert ring.taken == 5 and [s.step for s in ring] == [3, 4]
    with pytest.raises(ValueError):
        SnapshotRing(0)
    # inside a run: the controller's ring (capacity 2) after many healthy ticks
    xt, yt, _, _ = _digits()
    mon = trainmedic.watch(model := torch.nn.Linear(64, 10), opt := torch.optim.SGD(model.parameters(), lr=0.05),
                           repair=True, every=5, run_dir=str(tmp_path / "run"), on_finding=lambda f: None)
    mon.controller = RepairController(mon, capacity=2)
    sizes = []
    for i in range(0, 1400, 20):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt[i:i + 20]), yt[i:i + 20]).backward()
        opt.step()
        sizes.append(len(mon.controller.ring))
    mon.report()
    assert max(sizes) == 2 and mon.controller.ring.taken > 10


def test_restore_is_in_place_and_finds_schedulers():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    assert find_schedulers([opt]) == [sched]
    weight = model.weight
    ring = SnapshotRing()
    snap = ring.take(0, None, [model], [opt], [sched])
    before = model.weight.detach().clone()
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step()
    assert not torch.equal(model.weight, before) and opt.param_groups[0]["lr"] == 0.05
    ring.restore(snap, [model], [opt], [sched])
    assert model.weight is weight and torch.equal(model.weight, before)
    assert opt.param_groups[0]["lr"] == 0.1 and sched.last_epoch == 0 and not opt.state


def test_failing_remedy_is_abandoned_with_one_warning(tmp_path, monkeypatch):
    def broken(self, ctx):
        raise RuntimeError("planted remedy failure")
    monkeypatch.setattr(remedies_mod.ScaleLearningRate, "apply", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        acc, rep, opt, _ = _train(tmp_path, 1.0, epochs=2)
    ours = [w for w in caught if issubclass(w.category, RuntimeWarning) and "repair" in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    assert [r["outcome"] for r in rep.run["repairs"]] == ["abandoned"]
    assert "planted remedy failure" in rep.run["repair_disabled"]
    assert opt.param_groups[0]["lr"] == 1.0                       # the user's setting is back
    assert rep.run["status"] == "completed"


def test_run_script_with_repair(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        import numpy as np, torch
        from sklearn.datasets import load_digits
        d = load_digits()
        X = d.data.astype(np.float32); X = (X - X.mean(0)) / (X.std(0) + 1e-6)
        xt, yt = torch.tensor(X), torch.tensor(d.target)
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
        opt = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
        for epoch in range(3):
            for i in range(0, 1792, 32):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(xt[i:i + 32]), yt[i:i + 32]).backward()
                opt.step()
        print("final lr", opt.param_groups[0]["lr"])
    """))
    out = tmp_path / "report.json"
    code = run_script(str(script), json_path=str(out), run_dir=str(tmp_path / "run"), live=False,
                      repair=True)
    assert code == 0
    repairs = json.loads(out.read_text())["run"]["repairs"]
    assert [r["remedy"] for r in repairs if r["outcome"] == "kept"] == ["lr_scale_0.1"], repairs

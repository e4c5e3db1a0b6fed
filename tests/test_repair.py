"""Verified repair while training (trainmedic.repair): roll back in place to a healthy snapshot,
apply a remedy, keep it only when verified."""

import glob
import json
import os
import re
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


# -- remedies one by one: apply changes what they say, undo restores the user's setting -------
def _ctx(model, opt, **kw):
    from trainmedic.repair.remedies import RepairContext
    mon = type("M", (), {})()
    mon.models, mon.table = [model], type("T", (), {"optimizers": [opt], "params": list(model.parameters())})()
    mon.run = type("R", (), {"unowned_with_grad": set()})()
    for k, v in kw.items():
        setattr(mon, k, v)
    return RepairContext(monitor=mon, optimizer=opt, schedulers=find_schedulers([opt]))


def test_warmup_scales_the_step_and_leaves_the_scheduler_its_own_lr():
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []
    opt.register_step_pre_hook(lambda o, a, k: seen.append(o.param_groups[0]["lr"]))
    remedy = remedies_mod.Warmup(steps=4)
    remedy.apply(_ctx(model, opt))
    for _ in range(6):
        model(torch.randn(2, 4)).sum().backward()
        opt.step()
        assert opt.param_groups[0]["lr"] == 0.1                    # what a scheduler reads
    assert seen == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    remedy.undo(_ctx(model, opt))
    seen.clear()
    opt.step()
    assert seen == [0.1]


def test_sgd_to_adam_keeps_the_object_and_its_parameters_and_undoes():
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    hook_calls = []
    opt.register_step_post_hook(lambda o, a, k: hook_calls.append(1))
    params = opt.param_groups[0]["params"]
    remedy = remedies_mod.SgdToAdam()
    remedy.apply(_ctx(model, opt))
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == 1e-3
    assert opt.param_groups[0]["params"] is params or opt.param_groups[0]["params"] == params
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    assert "exp_avg" in opt.state[model.weight] and hook_calls == [1]
    remedy.undo(_ctx(model, opt))
    assert type(opt) is torch.optim.SGD and opt.param_groups[0]["momentum"] == 0.9
    assert opt.param_groups[0]["lr"] == 0.5 and not opt.state
    opt.step()
    assert hook_calls == [1, 1]
    with pytest.raises(remedies_mod.NotApplicable, match="not SGD"):
        remedies_mod.SgdToAdam().apply(_ctx(model, torch.optim.Adam(model.parameters())))


def test_leaky_relu_swaps_module_and_functional_relu_and_undoes():
    from trainmedic.repair.model_remedies import LeakyRelu

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.act, self.b = torch.nn.Linear(3, 3), torch.nn.ReLU(), torch.nn.Linear(3, 3)

        def forward(self, x):
            return torch.nn.functional.relu(self.b(self.act(self.a(x)))), self.act(self.a(x))

    torch.manual_seed(0)
    net, x = Net(), torch.randn(64, 3)
    before = [t.detach() for t in net(x)]
    assert all((t >= 0).all() for t in before)
    remedy = LeakyRelu()
    remedy.apply(_ctx(net, torch.optim.SGD(net.parameters(), lr=0.1)))
    out = net(x)
    assert all((t < 0).any() for t in out)                          # both kinds are leaky now
    assert isinstance(net.act, torch.nn.LeakyReLU)
    remedy.undo(None)
    assert type(net.act) is torch.nn.ReLU
    assert all(torch.equal(a, b) for a, b in zip(before, net(x)))


def test_reinit_touches_only_symmetric_layers_and_drops_their_optimizer_state():
    from trainmedic.repair.model_remedies import ReinitLayers
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    torch.nn.init.zeros_(model[2].weight)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    first = model[0].weight.detach().clone()
    remedy = ReinitLayers()
    remedy.apply(_ctx(model, opt))
    assert torch.equal(model[0].weight, first)                    # not symmetric: untouched
    assert model[2].weight.detach().std() > 0 and model[2].weight not in opt.state
    remedy.undo(None)
    assert (model[2].weight.detach() == model[2].weight.detach()[0]).all()
    with pytest.raises(remedies_mod.NotApplicable, match="no symmetric"):
        ReinitLayers().apply(_ctx(torch.nn.Linear(4, 3), opt))


def test_loss_transforms_weight_training_only_and_feed_log_probabilities():
    from trainmedic import _patches
    from trainmedic.repair.loss_remedies import ClassWeights, LossGetsLogits
    F = torch.nn.functional
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = trainmedic.watch(model, opt, run_dir=None, on_finding=lambda f: None)
    try:
        stream = type("S", (), {"label_counts": lambda self: np.array([90, 9, 1])})()
        weights = ClassWeights()
        weights.apply(_ctx(model, opt, stream=stream, validation=mon.validation))
        logits, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
        expected = F.cross_entropy.__wrapped__(logits, y, weight=torch.tensor([100 / 270, 100 / 27, 100 / 3]))
        assert torch.allclose(F.cross_entropy(logits, y), expected)                    # training call
        with torch.no_grad():
            model(torch.randn(2, 4))                                                  # an evaluation forward
            assert torch.allclose(F.cross_entropy(logits, y), F.cross_entropy.__wrapped__(logits, y))
        weights.undo(None)
        assert not _patches.loss_transforms
        logits.requires_grad_(True)
        fix = LossGetsLogits()
        fix.apply(None)
        probs = logits.softmax(1)
        repaired = F.cross_entropy(probs, y)
        assert torch.allclose(repaired, F.cross_entropy.__wrapped__(logits, y), atol=1e-5)
        assert torch.allclose(F.cross_entropy(logits, y), F.cross_entropy.__wrapped__(logits, y))  # logits untouched
        pred, target = torch.randn(8, 1), torch.randn(8)
        assert torch.allclose(F.mse_loss(pred, target), F.mse_loss.__wrapped__(pred.reshape(8), target))
        fix.undo(None)
    finally:
        _patches.loss_transforms.clear()
        mon.close()


def test_mode_switches_and_input_normalisation():
    from trainmedic.repair.model_remedies import EvalModeForEvaluation, NormalizeInputs, TrainModeForTraining
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ev = EvalModeForEvaluation()
    ev.apply(_ctx(model, opt))
    with torch.no_grad():
        model(torch.randn(3, 2))
    assert not model.training
    model(torch.randn(3, 2))
    assert model.training
    ev.undo(None)
    model.eval()
    tr = TrainModeForTraining()
    tr.apply(_ctx(model, opt))
    model(torch.randn(3, 2))
    assert model.training
    tr.undo(None)
    probe = torch.nn.Linear(2, 1)
    x = torch.randn(1000, 2) * torch.tensor([100.0, 0.01]) + torch.tensor([50.0, -3.0])
    rows = x.double()
    stream = type("S", (), {"_moments": torch.stack([torch.full((2,), 1000.0, dtype=torch.float64),
                                                       rows.sum(0), rows.pow(2).sum(0)])})()
    norm = NormalizeInputs()
    norm.apply(_ctx(probe, opt, stream=stream))
    seen = []
    probe.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))   # after the remedy's
    probe(x)
    assert torch.allclose(seen[0].mean(0), torch.zeros(2), atol=1e-4)
    assert torch.allclose(seen[0].std(0), torch.ones(2), atol=1e-2)
    norm.undo(None)
    probe(x)
    assert torch.equal(seen[1], x)                                    # undone: raw inputs again
    standard = type("S", (), {"_moments": torch.stack([torch.full((2,), 10.0, dtype=torch.float64),
                                                         torch.zeros(2, dtype=torch.float64),
                                                         torch.full((2,), 10.0, dtype=torch.float64)])})()
    with pytest.raises(remedies_mod.NotApplicable, match="standardised already"):
        NormalizeInputs().apply(_ctx(probe, opt, stream=standard))


def test_order_table_names_only_known_remedies_and_every_finding_has_a_priority():
    from trainmedic.catalog import CATALOG
    from trainmedic.repair import ORDER, PRIORITY, REMEDIES, make
    assert set(ORDER) <= set(CATALOG) and set(ORDER) <= set(PRIORITY)
    for ids in ORDER.values():
        for rid in ids:
            assert rid in REMEDIES
    assert make("lr_scale_0.003").factor == 0.003
    # every remedy the table lists is the one a planted-bug program of the repair benchmark keeps
    kept = {re.search(r'^REMEDY = "(\S+)"', open(f).read(), re.M)[1] for f in glob.glob(os.path.join(
        os.path.dirname(__file__), "..", "benchmarks", "repair_programs", "bug_*.py"))}
    assert {rid for ids in ORDER.values() for rid in ids} == kept
    with pytest.raises(ValueError, match="remedy='nope'"):
        make("nope")
    with pytest.raises(ValueError, match="capacity=0"):
        RepairController(type("M", (), {"extra_run_info": {}})(), capacity=0)


def test_stop_on_raises_between_two_steps_and_a_bad_value_is_named(tmp_path):
    from trainmedic import _patches
    for severity in ("error", "warning"):                 # "warning": a warning or worse
        with pytest.raises(trainmedic.StopTraining) as stopped:
            _train(tmp_path / severity, 1.0, repair=False, stop_on=severity)
        assert stopped.value.finding.severity.rank >= trainmedic.Severity(severity).rank
        for m in list(_patches._active):                  # the loop died: close its monitor
            m.close()
    with pytest.raises(ValueError, match="stop_on='nope'"):
        trainmedic.watch(torch.nn.Linear(2, 2), stop_on=["nope"])


def test_a_remedy_that_does_not_apply_is_skipped_and_repair_stays_on(tmp_path):
    order = {f: ["weight_decay_0.1", "lr_scale_0.1"] for f in ("learning_rate_too_high", "loss_diverging")}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, rep, opt, _ = _train(tmp_path, 1.0, repair={"order": order})
    outcomes = [(r["remedy"], r["outcome"]) for r in rep.run["repairs"]]
    assert outcomes[0] == ("weight_decay_0.1", "not applicable"), outcomes   # SGD without decay
    assert ("lr_scale_0.1", "kept") in outcomes
    kept = next(r for r in rep.run["repairs"] if r["outcome"] == "kept")
    assert kept["loss_unrepaired"] is not None        # the second attempt still has the bar
    assert "repair_disabled" not in rep.run
    assert not [w for w in caught if "repair" in str(w.message)]


def test_loss_trends_are_not_judged_once_learning_was_stopped_on_purpose():
    """Early stopping sets every LR to 0: a flat loss afterwards is no `loss_not_decreasing` and a
    rise before it no `loss_diverging` (RunState.frozen); the same curves fire otherwise. After a
    rollback the segment starts at the snapshot's loss (RunState.initial_hint), not at one batch."""
    from trainmedic.detectors.loss import LossDiverging, LossNotDecreasing
    from trainmedic.history import RunState
    from trainmedic.params import ParamTable
    flat = RunState(ParamTable())
    flat.loss_steps = np.stack([np.arange(400.0), np.full(400, 2.3)], axis=1)
    rising = RunState(ParamTable())
    rising.loss_steps = np.stack([np.arange(400.0), np.r_[np.linspace(2.3, 0.2, 200),
                                                          np.linspace(0.2, 2.0, 200)]], axis=1)
    assert LossNotDecreasing().evaluate(flat, set(), False) is not None
    assert LossDiverging().evaluate(rising, set(), False) is not None
    flat.frozen = rising.frozen = True
    flat._smoothed = rising._smoothed = None
    assert LossNotDecreasing().evaluate(flat, set(), False) is None
    assert LossDiverging().evaluate(rising, set(), False) is None
    # one batch of a trained model as the start (0.002), then the loss of a weighted loss: no
    # explosion once the start is the snapshot's smoothed loss
    spiky = RunState(ParamTable())
    values = np.full(50, 0.25)
    values[0], values[20] = 0.002, 0.35
    spiky.loss_steps = np.stack([np.arange(50.0), values], axis=1)
    assert "exploded" in LossDiverging().evaluate(spiky, set(), False).message
    spiky.initial_hint, spiky._smoothed = 0.25, None
    assert LossDiverging().evaluate(spiky, set(), False) is None


def test_a_remedy_never_turns_back_a_setting_a_kept_remedy_turned():
    """Weight decay raised against overfitting is not lowered again when the penalty then looks
    dominant (nor a learning rate lowered for divergence raised again): such a remedy is skipped."""
    from trainmedic.repair.order import make
    model = torch.nn.Linear(4, 2)
    monitor = trainmedic.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), repair=True,
                               on_finding=lambda f: None)
    try:
        ctl = monitor.controller
        assert ctl._undoes(make("weight_decay_0.1")) is None
        ctl.kept.append(make("weight_decay_up"))
        assert "weight_decay_up" in ctl._undoes(make("weight_decay_0.1"))
        assert ctl._undoes(make("lr_scale_0.1")) is None and ctl._undoes(make("dropout_up")) is None
        ctl.kept.append(make("lr_scale_0.1"))
        assert "lr_scale_0.1" in ctl._undoes(make("lr_to_healthy_updates"))
        assert ctl._undoes(make("lr_scale_0.01")) is None          # the same way: allowed
    finally:
        monitor.close()


def test_regularization_is_not_judged_dominant_once_learning_was_stopped_on_purpose():
    import importlib
    from trainmedic.detectors.parameters import RegularizationDominates
    program = importlib.import_module("bug_regularization_dominates")
    monitor = program.main(lambda m, o: trainmedic.watch(m, o, on_finding=lambda f: None))
    monitor.close()
    assert RegularizationDominates().evaluate(monitor.run, set(), True) is not None
    monitor.run.frozen = True
    assert RegularizationDominates().evaluate(monitor.run, set(), True) is None


def test_warmup_goes_first_only_for_an_early_fault_under_an_adaptive_optimizer():
    """order.arranged: the ORDER list as it is, except that a warmup it lists goes first when the
    finding is answered within EARLY_STEPS steps under an adaptive optimizer."""
    from trainmedic.repair.order import EARLY_STEPS, ORDER, arranged
    diverging = ORDER["loss_diverging"]
    assert diverging[0] != "warmup" and "warmup" in diverging
    early = arranged(diverging, step=EARLY_STEPS, adaptive=True)
    assert early[0] == "warmup" and sorted(early) == sorted(diverging)
    assert arranged(diverging, step=EARLY_STEPS + 1, adaptive=True) == diverging      # too late
    assert arranged(diverging, step=10, adaptive=False) == diverging                  # SGD
    assert arranged(ORDER["learning_rate_too_high"], step=10, adaptive=True) == ORDER["learning_rate_too_high"]


def test_a_warmup_is_verified_only_after_its_ramp_and_the_usual_window(tmp_path):
    """Adam at a learning rate that diverges at once, warmup the only remedy: it is judged no
    sooner than its ramp (a verdict halfway up the ramp judges a lower learning rate)."""
    xt, yt, _, _ = _digits()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.5)
    order = {f: ["warmup"] for f in ("learning_rate_too_high", "loss_diverging", "exploding_gradient",
                                      "nonfinite_loss", "nonfinite_gradient")}
    monitor = trainmedic.watch(model, opt, repair={"order": order}, on_finding=lambda f: None)
    ctl = monitor.controller
    verdicts = []
    seen = {}
    try:
        gen = torch.Generator().manual_seed(1)
        for _ in range(14):
            perm = torch.randperm(len(xt), generator=gen)
            for i in range(0, len(xt), 32):
                idx = perm[i:i + 32]
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
                opt.step()
                cur = ctl._current
                if cur is not None and cur["remedy"].id == "warmup":
                    seen = cur
                elif seen and not verdicts:
                    verdicts.append((seen["record"]["outcome"], monitor.step - seen["start_step"]))
    finally:
        monitor.close()
    rep = monitor.report()
    tried = [r["remedy"] for r in rep.run["repairs"]]
    assert tried and tried[0] == "warmup", rep.run["repairs"]
    assert verdicts, rep.run["repairs"]
    outcome, after = verdicts[0]
    assert outcome in ("kept", "failed"), verdicts
    # a loss verdict comes only once the ramp and the window are done; a finding that comes
    # back fails the warmup at once, ramp or not
    if outcome == "kept" or "came back" not in (seen["record"].get("reason") or ""):
        assert after >= seen["remedy"].ramp_steps + 1, (verdicts, seen["record"])


def test_an_attempt_answers_its_finding_and_its_symptoms_only():
    """The findings resolved while a remedy is verified are the one it answers and those that
    follow from it; an unrelated finding keeps its status."""
    from trainmedic.findings import Finding
    model = torch.nn.Linear(4, 2)
    monitor = trainmedic.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), repair=True,
                               on_finding=lambda f: None)
    try:
        found = {fid: Finding.make(fid, "planted") for fid in
                 ("learning_rate_too_high", "loss_diverging", "class_imbalance")}
        found["loss_diverging"].caused_by = "learning_rate_too_high"
        monitor.findings.update(found)
        ctl = monitor.controller
        follows = [fid for fid, f in found.items() if ctl._follows(f, "learning_rate_too_high")]
        assert follows == ["learning_rate_too_high", "loss_diverging"]
    finally:
        monitor.close()


def test_a_failing_loss_remedy_is_taken_out_with_one_warning_and_the_loss_is_untouched():
    from trainmedic import _patches
    model = torch.nn.Linear(4, 3)
    monitor = trainmedic.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), on_finding=lambda f: None)

    def broken(name, args, kwargs, evaluating):
        raise RuntimeError("planted")
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    expected = torch.nn.functional.cross_entropy(model(x), y)
    _patches.loss_transforms.append(broken)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = torch.nn.functional.cross_entropy(model(x), y)
            torch.nn.functional.cross_entropy(model(x), y)
    finally:
        if broken in _patches.loss_transforms:
            _patches.loss_transforms.remove(broken)
        monitor.close()
    assert torch.equal(got, expected)
    assert broken not in _patches.loss_transforms
    assert len([w for w in caught if "loss remedy failed" in str(w.message)]) == 1


def test_a_custom_order_takes_every_remedy_id_make_takes():
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = trainmedic.watch(model, opt, on_finding=lambda f: None,
                               repair={"order": {"learning_rate_too_high": ["lr_scale_0.5"]}})
    monitor.close()
    with pytest.raises(ValueError, match=r"order\['learning_rate_too_high'\].*remedy='nope'"):
        trainmedic.watch(model, opt, repair={"order": {"learning_rate_too_high": ["nope"]}})


def test_repair_acts_only_on_findings_this_rank_measured():
    """Another rank's finding taken into rank 0's report is not repaired on rank 0 (rolling back
    one rank of a DDP job would make the ranks diverge); the same finding measured here is."""
    from trainmedic.findings import Finding
    model = torch.nn.Linear(4, 2)
    monitor = trainmedic.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), repair=True,
                               on_finding=lambda f: None)
    try:
        ctl = monitor.controller
        monitor.engine.emit(Finding.make("loss_diverging", "On rank 1: the loss rises", step=3,
                                         evidence={"rank": 1}))
        ctl.after_tick()
        assert ctl.attempts == [] and "repairs_given_up" not in monitor.extra_run_info
        monitor.findings["loss_diverging"].evidence.pop("rank")
        ctl.after_tick()
        assert ctl.attempts or monitor.extra_run_info.get("repairs_given_up")
    finally:
        monitor.close()


def test_a_rise_of_the_loss_is_judged_on_enough_steps():
    """A segment of 25 noisy steps (just after a rollback, windows of five batches) whose loss ends
    above its best is no `loss_diverging`; the same shape stretched over 100 steps is."""
    from trainmedic.detectors.loss import RISE_STEPS, LossDiverging
    from trainmedic.history import RunState
    from trainmedic.params import ParamTable

    def run(n):
        state = RunState(ParamTable())
        state.loss_steps = np.stack([np.arange(float(n)), np.r_[np.linspace(0.47, 0.36, n // 4),
                                                               np.linspace(0.36, 0.65, n - n // 4)]], axis=1)
        return state
    assert LossDiverging().evaluate(run(RISE_STEPS // 2), set(), False) is None
    assert LossDiverging().evaluate(run(4 * RISE_STEPS), set(), False) is not None


def test_an_overfitting_remedy_is_watched_with_dense_ticks():
    """While a val-verified remedy waits for its epochs the ticks come every `every` steps (so the
    verdict is not 8x late); afterwards, and for other remedies, the clock's sparse pace."""
    from trainmedic.repair.order import make
    from trainmedic.step_clock import DENSE_TICKS
    model = torch.nn.Linear(4, 2)
    monitor = trainmedic.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), repair=True,
                               every=5, on_finding=lambda f: None)
    try:
        ctl, clock = monitor.controller, monitor.clock
        for _ in range(DENSE_TICKS):
            clock.ticked()
        assert clock.interval == clock.window > clock.every
        ctl._current = {"remedy": make("dropout_up")}
        ctl._pace()
        assert clock.interval == clock.every
        ctl._current = {"remedy": make("lr_scale_0.1")}
        ctl._pace()
        assert clock.interval == clock.window
        ctl._current = None
    finally:
        monitor.close()


def test_a_cause_only_rank_0_knows_does_not_change_what_its_repair_answers():
    """rank_divergence (rank 0's comparison of the ranks) as the cause of rank 0's own
    learning_rate_too_high: rank 0 answers learning_rate_too_high, as every other rank does, so
    the ranks of a job roll back and apply alike."""
    from trainmedic.findings import Finding
    model = torch.nn.Linear(4, 2)
    monitor = trainmedic.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), repair=True,
                               on_finding=lambda f: None)
    lr = Finding.make("learning_rate_too_high", "too high", step=10)
    lr.caused_by = "rank_divergence"
    monitor.findings.update(learning_rate_too_high=lr, rank_divergence=Finding.make(
        "rank_divergence", "rank 1 went NaN first", evidence={"ranks": [1]}))
    assert monitor.controller._root(lr) == "learning_rate_too_high"
    grads = Finding.make("grads_not_cleared", "never cleared")       # a cause measured here still is one
    monitor.findings["grads_not_cleared"] = grads
    lr.caused_by = "grads_not_cleared"
    assert monitor.controller._root(lr) == "grads_not_cleared"
    monitor.close()


def test_clipping_covers_param_groups_added_after_it():
    """A group added later (add_missing_params) is clipped too: the norm is over every group."""
    from trainmedic.repair.remedies import ClipGradNorm
    a, b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    opt = torch.optim.SGD(a.parameters(), lr=0.0)
    clip = ClipGradNorm(1.0)
    clip.apply(_ctx(a, opt))
    opt.add_param_group({"params": list(b.parameters())})
    for p in [*a.parameters(), *b.parameters()]:
        p.grad = torch.full_like(p, 10.0)
    opt.step()
    total = torch.stack([p.grad.norm() for p in [*a.parameters(), *b.parameters()]]).norm()
    assert float(total) == pytest.approx(1.0, rel=1e-4)
    clip.undo(_ctx(a, opt))


def test_an_overfitting_remedy_with_a_nan_validation_loss_is_not_kept():
    model = torch.nn.Linear(4, 2)
    monitor = trainmedic.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), repair=True,
                               on_finding=lambda f: None)
    ctl, outcomes = monitor.controller, []
    ctl._keep = lambda cur, evidence: outcomes.append("kept")
    ctl._fail = lambda why: outcomes.append("failed")
    ref = [(0.30, 0.10, None)] * 4                                   # the unrepaired run: gap 0.2
    for val in (0.15, float("nan")):                                 # the gap closes either way
        monitor.validation.epochs[:] = [{"val_loss": v, "train_loss": 0.12} for v in (0.15, 0.15, val, 0.15)]
        ctl._verify_val({"epochs": 0, "unrepaired_epochs": ref, "record": {}, "best_val": 0.25,
                         "remedy": remedies_mod.Remedy()})
    assert outcomes == ["kept", "failed"]
    monitor.close()


def test_augment_inputs_shifts_training_images_only_positional_or_keyword():
    """Training forwards get shifted images, as the first argument or as ``pixel_values=``;
    evaluation forwards are left alone; inputs that are not images make it not applicable,
    known before any rollback."""
    from trainmedic.repair.input_remedies import AugmentInputs

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(64, 2)
            self.seen = []

        def forward(self, x=None, pixel_values=None):
            self.seen.append(x if x is not None else pixel_values)
            return self.fc(self.seen[-1].flatten(1))

    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    images = torch.randn(16, 1, 8, 8)
    ctx = _ctx(model, opt, hooks=type("H", (), {"train_input_kind": (images.shape, images.dtype)})())
    remedy = AugmentInputs()
    remedy.apply(ctx)
    model(images)
    model(pixel_values=images)
    with torch.no_grad():
        model.eval()
        model(images)
    remedy.undo(ctx)
    model.train()
    model(images)
    shifted, by_keyword, evaluated, after = model.seen
    assert not torch.equal(shifted, images) and not torch.equal(by_keyword, images)
    assert evaluated is images and after is images
    flat = _ctx(model, opt, hooks=type("H", (), {"train_input_kind": (torch.Size([16, 64]), torch.float32)})())
    with pytest.raises(remedies_mod.NotApplicable, match="not batches of images"):
        AugmentInputs().check(flat)

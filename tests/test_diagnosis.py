"""Diagnosis that generalises: root causes, lifecycle, the stream's probes and the run-time
robustness cases (losses without gradients inside training, fp16 norms, two optimizers,
sequential models, ignore_index)."""

import contextlib
import io
import textwrap

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

import trainmedic
from trainmedic.detectors.base import Detector, Verdict
from trainmedic.findings import Finding, Report, assign_causes, ordered
from trainmedic.params import ParamTable
from trainmedic.quantities.gradients import GradNormRecorder
from trainmedic.runner import run_script


def _quiet_watch(model, opt, **kw):
    return trainmedic.watch(model, opt, on_finding=lambda f: None, **kw)


# -- root causes and the report's order ----------------------------------------------------------

def test_consequences_follow_their_root_cause_in_the_guide_order():
    found = [Finding.make("loss_not_decreasing", "flat"), Finding.make("dead_relu", "dead"),
             Finding.make("learning_rate_too_high", "big steps"), Finding.make("class_imbalance", "skewed")]
    assign_causes(found)
    by = {f.id: f for f in found}
    assert by["dead_relu"].caused_by == "learning_rate_too_high"
    assert by["loss_not_decreasing"].caused_by == "learning_rate_too_high"   # first active candidate
    assert by["class_imbalance"].caused_by is None
    # data before dynamics; each root followed by what it causes
    assert [f.id for f in ordered(found)] == ["class_imbalance", "learning_rate_too_high",
                                             "dead_relu", "loss_not_decreasing"]
    text = str(Report(found, run={"name": "x"}))
    assert "root cause: class_imbalance" in text and "consequences: dead_relu, loss_not_decreasing" in text


class _Blip(Detector):
    """Fires while the run is young (a warmup symptom), then clears."""
    id = "loss_oscillating"

    def evaluate(self, run, reported, final):
        return Verdict("swinging during warmup") if run.step <= 50 else None


def _train(model, opt, steps, x, y):
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def test_a_finding_whose_condition_cleared_is_resolved_and_fail_on_ignores_it(tmp_path, monkeypatch):
    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    model = nn.Linear(8, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = _quiet_watch(model, opt, run_dir=tmp_path / "a", every=10)
    mon.detectors = [_Blip()]
    _train(model, opt, 200, x, y)
    rep = mon.report()
    f = rep.by_id("loss_oscillating")
    assert f.status == "resolved" and f.step <= 50 < f.resolved_step
    assert rep.at_least("warning", include_resolved=False) == [] and rep.at_least("warning") == [f]
    assert "resolved during the run" in str(rep)

    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        import torch, torch.nn.functional as F
        torch.manual_seed(0)
        x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
        model = torch.nn.Linear(8, 3)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        for _ in range(200):
            opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step()
    """))
    monkeypatch.setattr("trainmedic.monitor.default_detectors", lambda: [_Blip()])
    with contextlib.redirect_stderr(io.StringIO()):
        assert run_script(str(script), json_path=str(tmp_path / "r.json"), fail_on="warning", every=10) == 0
        assert run_script(str(script), json_path=str(tmp_path / "r2.json"), fail_on="warning", every=10,
                          count_resolved=True) == 3


# -- robustness --------------------------------------------------------------------------------

class _Aux(torch.autograd.Function):
    """A custom op whose forward computes a loss (gradients are off inside forward)."""

    @staticmethod
    def forward(ctx, h):
        ctx.penalty = float(F.l1_loss(h, torch.zeros_like(h)))
        return h * 1.0

    @staticmethod
    def backward(ctx, g):
        return g


class _Checkpointed(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 16), nn.Linear(16, 3)

    def block(self, x):
        h = torch.relu(self.a(x))
        self.penalty = F.mse_loss(h, torch.zeros_like(h))    # no gradients inside a reentrant checkpoint
        return h

    def forward(self, x):
        h = checkpoint(self.block, x, use_reentrant=True)
        return self.b(_Aux.apply(h))


def test_losses_without_gradients_inside_training_are_not_validation(tmp_path):
    torch.manual_seed(0)
    x, y = torch.randn(64, 8, requires_grad=True), torch.randint(0, 3, (64,))
    model = _Checkpointed()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    mon = _quiet_watch(model, opt, run_dir=tmp_path)
    _train(model, opt, 60, x, y)
    model.eval()
    with torch.no_grad():
        F.cross_entropy(model(x), y)                          # one real evaluation
    model.train()
    _train(model, opt, 5, x, y)
    rep = mon.report()
    assert len(rep.run["epochs"]) == 1


def test_fp16_gradient_norms_do_not_overflow():
    table = ParamTable()
    p = torch.zeros(10_000, dtype=torch.float16, requires_grad=True)
    table.add(p, "w")
    p.grad = torch.full_like(p, 1000.0)                       # norm 1e5 > fp16's 65504
    rec = GradNormRecorder(table, 4)
    rec.record([p], [0], 0)
    norm = rec.take(1)[0, 0]
    assert np.isfinite(norm) and abs(norm - 1e5) < 10


def test_two_optimizers_taking_turns_keep_the_primary_loss_curve(tmp_path):
    d, g = nn.Linear(4, 1), nn.Linear(4, 1)
    opt_d, opt_g = torch.optim.SGD(d.parameters(), lr=0.0), torch.optim.SGD(g.parameters(), lr=0.0)
    mon = _quiet_watch([d, g], [opt_d, opt_g], run_dir=tmp_path, every=10)
    x = torch.randn(8, 4)
    for _ in range(40):
        opt_d.zero_grad()
        (d(x).sum() * 0 + 1.0).backward()                     # the discriminator's loss: 1
        opt_d.step()
        opt_g.zero_grad()
        (g(x).sum() * 0 + 5.0).backward()                     # the generator's loss: 5
        opt_g.step()
    mon.close()
    _, losses = mon.run.loss_curve()
    assert len(losses) == 40 and np.all(losses == 1.0)
    assert mon.run.adversarial                                # trends of such losses are not judged
    mon.report()


def test_ignore_index_padding_is_not_a_label_out_of_range(tmp_path):
    torch.manual_seed(0)
    vocab = 12
    model = nn.Sequential(nn.Embedding(vocab, 16), nn.Linear(16, vocab))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    mon = _quiet_watch(model, opt, run_dir=tmp_path)
    for _ in range(30):
        x = torch.randint(0, vocab, (4, 10))
        y = torch.roll(x, -1, 1)
        y[:, -3:] = -1                                        # padding
        opt.zero_grad()
        F.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1), ignore_index=-1).backward()
        opt.step()
    rep = mon.report()
    assert "label_out_of_range" not in rep.ids()
    checks = {c["name"]: c["status"] for c in rep.run["first_batch_checks"]}
    assert checks["label_out_of_range"] == "passed" and checks["loss_at_init_unexpected"] == "passed"


def test_discovery_listens_only_until_the_models_are_known(tmp_path):
    """The zero-code runner's hook on every module call is removed once each optimizer's
    parameters belong to a known model, and comes back for the next trial's model."""
    script = tmp_path / "trials.py"
    script.write_text(textwrap.dedent("""
        import torch, torch.nn.functional as F
        from torch.nn.modules import module
        x, y = torch.randn(32, 6), torch.randint(0, 2, (32,))
        hooks = []
        for trial in range(2):
            model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            for _ in range(20):
                opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step()
            hooks.append(len(module._global_forward_pre_hooks))
        print("hooks", hooks)
    """))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert run_script(str(script), json_path=str(tmp_path / "r.json")) == 0
    assert "hooks [0, 0]" in out.getvalue()
    rep = Report.read_json(tmp_path / "r.json")
    assert rep.run["models"] == ["Sequential", "Sequential"] and rep.run["steps"] == 40


def _run_with_update_ratio(opt_cls, ratio):
    from trainmedic.history import RunState
    table = ParamTable()
    model = nn.Linear(64, 64)
    table.add_model(model)
    table.add_optimizer(opt_cls(model.parameters(), lr=6e-4))
    run = RunState(table)
    for step in range(25, 250, 25):
        run.ticks.append(step=step, lr=6e-4, update_median=ratio, rel_grad_peak=1.0,
                         rel_grad_param="weight", sample_finite=True)
    return run


def test_update_ratio_thresholds_depend_on_the_optimizer():
    """A GPT-style std-0.02 init at lr 6e-4 moves weights by ~3e-2 per step under Adam: healthy
    there, too big under SGD (with an overshooting symptom either way)."""
    from trainmedic.detectors.learning_rate import LearningRateTooHigh
    det, symptom = LearningRateTooHigh(), {"loss_diverging"}
    assert det.evaluate(_run_with_update_ratio(torch.optim.SGD, 3e-2), symptom, False) is not None
    assert det.evaluate(_run_with_update_ratio(torch.optim.AdamW, 3e-2), symptom, False) is None
    assert det.evaluate(_run_with_update_ratio(torch.optim.AdamW, 3e-1), symptom, False) is not None


def test_training_after_a_forgotten_model_train_is_not_validation(tmp_path):
    """Training losses after model.eval() (never undone) carry a graph and are backwarded:
    they are training, not one validation epoch each; and the fault itself is named."""
    import bug_train_in_eval_mode as prog
    with contextlib.redirect_stdout(io.StringIO()):
        rep = prog.main(watch=lambda m, o: _quiet_watch(m, o, run_dir=tmp_path)).report()
    assert len(rep.run["epochs"]) == 5
    assert rep.findings and ordered(rep.findings)[0].id == "train_in_eval_mode"

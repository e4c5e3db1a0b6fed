"""Lightning 2.x: TrainmedicCallback names planted bugs, stays silent on a clean run, leaves the
numbers unchanged, stops on request and survives manual optimisation, LBFGS and accumulation."""

import csv
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("lightning.pytorch")
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

from trainmedic.integrations.lightning import TrainmedicCallback  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    y = torch.tensor(d.target)
    return TensorDataset(x[:1400], y[:1400]), TensorDataset(x[1400:], y[1400:])


class Net(pl.LightningModule):
    """A digits MLP; ``bug`` plants "softmax" (probabilities into cross_entropy) or "missing"
    (a trainable layer left out of the optimizer)."""

    def __init__(self, lr=0.05, bug=None, opt="sgd", val_loss=True):
        super().__init__()
        self.lr, self.bug, self.opt, self.val_loss = lr, bug, opt, val_loss
        self.net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 10))
        self.extra = nn.Linear(64, 10) if bug == "missing" else None

    def forward(self, x):
        out = self.net(x) + (self.extra(x) if self.extra is not None else 0)
        return out.softmax(-1) if self.bug == "softmax" else out

    def training_step(self, batch, _i):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, _i):
        x, y = batch
        out = self(x)
        if self.val_loss:
            self.log("val_loss", F.cross_entropy(out, y))
        self.log("val_acc", (out.argmax(1) == y).float().mean())

    def test_step(self, batch, _i):
        x, y = batch
        self.log("test_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        params = self.net.parameters() if self.bug == "missing" else self.parameters()
        if self.opt == "lbfgs":
            return torch.optim.LBFGS(params, lr=1, max_iter=4, line_search_fn="strong_wolfe")
        return torch.optim.SGD(params, lr=self.lr, momentum=0.9)


class Manual(Net):
    """Manual optimisation: Lightning's optimizer wrapper, or the raw LBFGS with a closure."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.automatic_optimization = False

    def training_step(self, batch, _i):
        opt = self.optimizers(use_pl_optimizer=self.opt != "lbfgs")

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(self(batch[0]), batch[1])
            self.manual_backward(loss)
            return loss
        if self.opt == "lbfgs":
            opt.step(closure)
        else:
            closure()
            opt.step()


class Direct(Net):
    """training_step calls the submodule, never self(x)."""

    def training_step(self, batch, _i):
        out = self.net(batch[0])
        return F.cross_entropy(out.softmax(-1) if self.bug == "softmax" else out, batch[1])


def _fit(data, model, callback=None, epochs=3, batch_size=64, **trainer_kw):
    trainer_kw = {"logger": False, "callbacks": [callback] if callback else [], **trainer_kw}
    trainer = pl.Trainer(accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, max_epochs=epochs, deterministic=True, **trainer_kw)
    trainer.fit(model, DataLoader(data[0], batch_size=batch_size, shuffle=True),
                DataLoader(data[1], batch_size=128))
    return trainer


def _callback(tmp_path, **kw):
    return TrainmedicCallback(every=5, run_dir=str(tmp_path / "run"), on_finding=lambda f: None, **kw)


def _loud(report):
    return [f.id for f in report.findings if f.severity.value in ("warning", "error")]


@pytest.mark.parametrize("module", [Net, Direct])
def test_clean_run_is_silent_and_counts_only_fit_validation(digits, tmp_path, module):
    pl.seed_everything(0)
    cb = _callback(tmp_path)
    model = module()
    trainer = _fit(digits, model, cb)                       # a sanity check runs first
    trainer.test(model, DataLoader(digits[1], batch_size=128), verbose=False)
    rep = cb.report
    assert _loud(rep) == [] and rep.run["disabled"] == {}
    assert rep.run["steps"] == trainer.global_step and rep.run["status"] == "completed"
    assert [e["epoch"] for e in rep.run["epochs"]] == [1, 2, 3]
    assert rep.run["epochs"][-1]["val_acc"] > 0.85
    assert (tmp_path / "run" / "report.json").is_file()


@pytest.mark.parametrize("module, bug, lr, expected", [
    (Net, None, 5.0, {"learning_rate_too_high", "loss_diverging", "nonfinite_loss"}),
    (Net, "missing", 0.05, {"params_not_in_optimizer"}),
    (Net, "softmax", 0.05, {"loss_input_mismatch"}),
    (Direct, "softmax", 0.05, {"loss_input_mismatch"}),
])
def test_planted_bugs_are_named_and_logged(digits, tmp_path, module, bug, lr, expected):
    pl.seed_everything(0)
    cb = _callback(tmp_path)
    trainer = _fit(digits, module(lr=lr, bug=bug), cb, logger=CSVLogger(str(tmp_path / "logs")))
    found = {f.id for f in cb.report.findings}
    assert found & expected, found
    with open(f"{trainer.logger.log_dir}/metrics.csv") as fh:
        columns = next(csv.reader(fh))
    assert {f"trainmedic/{i}" for i in found & expected} <= set(columns)


def test_gradients_are_measured_after_the_closure(digits, tmp_path):
    """Lightning runs training_step inside optimizer.step(closure): the step's own gradients,
    once per step, not the previous step's."""
    class Probe(pl.Callback):
        norms = []

        def on_before_optimizer_step(self, trainer, module, optimizer):
            first = module.net[0]
            self.norms.append(float(torch.cat([first.weight.grad.flatten(), first.bias.grad]).norm()))
    pl.seed_everything(0)
    cb = TrainmedicCallback(every=1, run_dir=str(tmp_path / "run"), on_finding=lambda f: None)
    _fit(digits, Net(), cb, callbacks=[Probe(), cb], max_steps=4)
    ticks = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [t["layers"]["net.0"]["grad"] for t in ticks] == pytest.approx(Probe.norms, rel=1e-5)


def test_callback_leaves_the_numbers_unchanged(digits, tmp_path):
    runs = []
    for cb in (None, _callback(tmp_path)):
        pl.seed_everything(0)
        model = Net()
        trainer = _fit(digits, model, cb)
        runs.append((model.state_dict(), {k: float(v) for k, v in trainer.callback_metrics.items()}))
    (plain, plain_metrics), (watched, watched_metrics) = runs
    assert plain_metrics == watched_metrics
    assert all(torch.equal(plain[k], watched[k]) for k in plain)


def test_stop_on_error_stops_early(digits, tmp_path):
    pl.seed_everything(0)
    cb = _callback(tmp_path, stop_on="error")
    trainer = _fit(digits, Net(lr=5.0), cb, epochs=5)
    assert trainer.global_step < 5 * 22 and cb.report.at_least("error")
    with pytest.raises(ValueError, match="stop_on"):
        TrainmedicCallback(stop_on="fatal")


@pytest.mark.parametrize("module, opt, kw, steps", [
    (Manual, "sgd", {}, 66),
    (Manual, "lbfgs", {"batch_size": 1400}, 3),          # a raw LBFGS: Lightning's global_step stays 0
    (Net, "lbfgs", {"batch_size": 1400}, 3),
    (Net, "sgd", {"accumulate_grad_batches": 4}, 18),
], ids=["manual", "manual-raw-lbfgs", "lbfgs", "accumulate"])
def test_manual_optimisation_lbfgs_and_accumulation(digits, tmp_path, module, opt, kw, steps):
    pl.seed_everything(0)
    cb = _callback(tmp_path)
    _fit(digits, module(opt=opt), cb, **kw)
    rep = cb.report
    assert rep.run["steps"] == steps and rep.run["disabled"] == {}
    assert _loud(rep) == []
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["layers"]["net.0"]["grad"] > 0
    losses = [e["train_loss"] for e in rep.run["epochs"]]
    assert len(losses) == 3 and losses[-1] < losses[0]


def test_logged_validation_metrics_without_a_loss_function(digits, tmp_path):
    """validation_step logs accuracy only: the epoch comes from trainer.callback_metrics."""
    pl.seed_everything(0)
    cb = _callback(tmp_path)
    trainer = _fit(digits, Net(val_loss=False), cb)
    epochs = cb.report.run["epochs"]
    assert len(epochs) == 3 and epochs[-1]["val_acc"] == pytest.approx(float(trainer.callback_metrics["val_acc"]))
    assert epochs[-1]["val_loss"] is None


def test_repair_passes_through(digits, tmp_path):
    pl.seed_everything(0)
    cb = _callback(tmp_path, repair=True)
    trainer = _fit(digits, Net(lr=0.5), cb, epochs=10)
    repairs = cb.report.run["repairs"]
    assert repairs and repairs[0]["remedy"] == "lr_scale_0.1" and repairs[0]["outcome"] == "kept"
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.05)


def test_crash_writes_a_crashed_report(digits, tmp_path):
    class Boom(Net):
        def training_step(self, batch, i):
            if self.global_step == 7:
                raise ValueError("boom")
            return super().training_step(batch, i)
    cb = _callback(tmp_path)
    with pytest.raises(ValueError, match="boom"):
        _fit(digits, Boom(), cb)
    assert cb.report.run["status"] == "crashed" and cb.report.run["steps"] == 7


def test_package_is_lazy_and_a_missing_library_names_the_extra(monkeypatch):
    code = ("import sys, trainmedic.integrations; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'lightning', 'transformers'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.delitem(sys.modules, "trainmedic.integrations.lightning")
    with pytest.raises(ImportError, match=r"pip install 'trainmedic\[lightning\]'"):
        import trainmedic.integrations.lightning  # noqa: F401

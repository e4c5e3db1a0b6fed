"""Each check fails on its planted bug and passes on clean setups; checkup() leaves the model,
the optimizer and every RNG exactly as it found them."""

import copy
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import trainmedic
from trainmedic.checks import REGISTRY
from _common import SmallCNN, diabetes, digits


def _loaders(xtr, ytr, xva=None, yva=None, shuffle=True, batch=32):
    train = DataLoader(TensorDataset(xtr, ytr), batch_size=batch, shuffle=shuffle,
                       generator=torch.Generator().manual_seed(0))
    val = DataLoader(TensorDataset(xva, yva), batch_size=128) if xva is not None else None
    return train, val


def _status(report, name):
    return next(c for c in report.run["checks"] if c["name"] == name)


def _run(name, model=None, data=None, loss_fn=None, opt_kwargs=None, opt_cls=torch.optim.SGD,
         shuffle=True, optimizer_params=None):
    torch.manual_seed(0)
    xtr, ytr, xva, yva = data if data is not None else digits()
    model = model if model is not None else SmallCNN()
    train, val = _loaders(xtr, ytr, xva, yva, shuffle=shuffle)
    params = optimizer_params(model) if optimizer_params else model.parameters()
    opt = opt_cls(params, **(opt_kwargs or {"lr": 0.05, "momentum": 0.9}))
    report = trainmedic.checkup(model, train, loss_fn or nn.CrossEntropyLoss(), optimizer=opt,
                                val_loader=val, checks=[name])
    return _status(report, name), report


def test_clean_digits_cnn_passes_every_check():
    torch.manual_seed(0)
    xtr, ytr, xva, yva = digits()
    train, val = _loaders(xtr, ytr, xva, yva)
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    report = trainmedic.checkup(model, train, nn.CrossEntropyLoss(), optimizer=opt, val_loader=val)
    statuses = {c["name"]: c["status"] for c in report.run["checks"]}
    assert set(statuses) == set(REGISTRY)
    assert [n for n, s in statuses.items() if s not in ("passed", "skipped")] == []
    skipped = {n for n, s in statuses.items() if s == "skipped"}
    assert skipped == {"target_not_normalized", "gradient_check"}   # regression-only, custom-op-only
    assert report.findings == []


def test_checkup_leaves_model_optimizer_and_rng_untouched():
    torch.manual_seed(0)
    xtr, ytr, xva, yva = digits()
    train, val = _loaders(xtr, ytr, xva, yva)
    model = nn.Sequential(SmallCNN(), nn.Dropout(0.1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    F.cross_entropy(model(xtr[:8]), ytr[:8]).backward()
    opt.step()                                   # the optimizer has state to preserve
    model.eval()
    before = (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()),
              [p.grad.clone() for p in model.parameters()], torch.get_rng_state(),
              np.random.get_state()[1].copy(), random.getstate(), train.generator.get_state())
    trainmedic.checkup(model, train, nn.CrossEntropyLoss(), optimizer=opt, val_loader=val)
    sd, osd, grads, trng, nrng, prng, grng = before
    assert all(torch.equal(sd[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))
    assert not model.training and not any(m.training for m in model.modules())
    assert str(opt.state_dict()) == str(osd)
    assert torch.equal(torch.get_rng_state(), trng) and torch.equal(train.generator.get_state(), grng)
    assert (np.random.get_state()[1] == nrng).all() and random.getstate() == prng


# -- data -----------------------------------------------------------------------------------------
def test_nonfinite_input():
    xtr, ytr, xva, yva = digits()
    xtr = xtr.clone()
    xtr[5, 0, 3, 3] = float("nan")
    assert _run("nonfinite_input", data=(xtr, ytr, xva, yva), shuffle=False)[0]["status"] == "failed"
    assert _run("nonfinite_input")[0]["status"] == "passed"


def test_input_not_normalized():
    xtr, ytr, xva, yva = digits(scale=False)
    assert _run("input_not_normalized", data=(xtr * 16, ytr, xva, yva))[0]["status"] == "failed"
    assert _run("input_not_normalized")[0]["status"] == "passed"


def test_target_not_normalized():
    xtr, ytr, xva, yva = diabetes()
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 1), nn.Flatten(0))
    raw = (xtr, ytr * 77 + 152, xva, yva * 77 + 152)
    assert _run("target_not_normalized", model=model, data=raw, loss_fn=nn.MSELoss())[0]["status"] == "failed"
    assert _run("target_not_normalized", model=model, data=(xtr, ytr, xva, yva),
                loss_fn=nn.MSELoss())[0]["status"] == "passed"


def test_label_out_of_range():
    xtr, ytr, xva, yva = digits()
    res, rep = _run("label_out_of_range", data=(xtr, ytr + 1, xva, yva + 1))
    assert res["status"] == "failed" and rep.findings[0].evidence["max"] == 10
    assert _run("label_out_of_range")[0]["status"] == "passed"


def test_class_imbalance():
    xtr, ytr, xva, yva = digits()
    keep = (ytr == 0) | (torch.arange(len(ytr)) % 40 == 0)
    assert _run("class_imbalance", data=(xtr[keep], ytr[keep], xva, yva))[0]["status"] == "failed"
    assert _run("class_imbalance")[0]["status"] == "passed"


def test_unshuffled_data():
    xtr, ytr, xva, yva = digits()
    order = torch.argsort(ytr, stable=True)
    sorted_data = (xtr[order], ytr[order], xva, yva)
    assert _run("unshuffled_data", data=sorted_data, shuffle=False)[0]["status"] == "failed"
    assert _run("unshuffled_data", data=sorted_data, shuffle=True)[0]["status"] == "passed"


def test_train_val_leakage():
    xtr, ytr, xva, yva = digits()
    leaky = (xtr, ytr, torch.cat([xva[:200], xtr[:197]]), torch.cat([yva[:200], ytr[:197]]))
    res, rep = _run("train_val_leakage", data=leaky, shuffle=False)
    assert res["status"] == "failed" and rep.findings[0].evidence["duplicates"] > 0
    assert _run("train_val_leakage")[0]["status"] == "passed"


def test_preprocessing_mismatch():
    xtr, ytr, xva, yva = digits()
    assert _run("preprocessing_mismatch", data=(xtr, ytr, xva * 0.4 * 16 + 5, yva))[0]["status"] == "failed"
    assert _run("preprocessing_mismatch")[0]["status"] == "passed"


# -- wiring ---------------------------------------------------------------------------------------
def test_params_not_in_optimizer():
    res, rep = _run("params_not_in_optimizer",
                    optimizer_params=lambda m: m.features.parameters())
    assert res["status"] == "failed" and "classifier.1.weight" in rep.findings[0].evidence["parameters"]
    assert _run("params_not_in_optimizer")[0]["status"] == "passed"


class CutGraph(SmallCNN):
    def forward(self, x):
        return self.classifier(self.features(x).detach())


def test_params_without_gradient():
    res, rep = _run("params_without_gradient", model=CutGraph())
    assert res["status"] == "failed" and "features.0.weight" in rep.findings[0].evidence["parameters"]
    assert _run("params_without_gradient")[0]["status"] == "passed"


class SoftmaxOut(SmallCNN):
    def forward(self, x):
        return super().forward(x).softmax(1)


def test_loss_input_mismatch():
    assert _run("loss_input_mismatch", model=SoftmaxOut())[0]["status"] == "failed"
    assert _run("loss_input_mismatch")[0]["status"] == "passed"
    xtr, ytr, xva, yva = digits(flat=True)
    reg = nn.Sequential(nn.Linear(64, 1), nn.Flatten(0))
    res, _ = _run("loss_input_mismatch", model=reg, data=(xtr, ytr, xva, yva), loss_fn=nn.MSELoss())
    assert res["status"] == "failed"            # class indices into a regression loss


class BatchCentred(SmallCNN):
    def forward(self, x):
        return super().forward(x - x.mean(0, keepdim=True))


def test_batch_mixing():
    assert _run("batch_mixing", model=BatchCentred())[0]["status"] == "failed"
    assert _run("batch_mixing", model=SmallCNN(bn=True))[0]["status"] == "passed"


class AlwaysDropout(SmallCNN):
    def forward(self, x):
        return self.classifier(F.dropout(self.features(x), 0.3))   # training=True by default


def test_eval_in_train_mode():
    assert _run("eval_in_train_mode", model=AlwaysDropout())[0]["status"] == "failed"
    assert _run("eval_in_train_mode")[0]["status"] == "passed"


# -- initialisation -------------------------------------------------------------------------------
def test_symmetric_weights():
    model = SmallCNN()
    nn.init.constant_(model.features[0].weight, 0.1)
    assert _run("symmetric_weights", model=model)[0]["status"] == "failed"
    zero_head = SmallCNN()
    nn.init.zeros_(zero_head.classifier[-1].weight)           # a zero-initialised head is fine
    assert _run("symmetric_weights", model=zero_head)[0]["status"] == "passed"


def _deep_mlp(std):
    layers = []
    for _ in range(8):
        lin = nn.Linear(64, 64)
        if std is not None:                  # the "small random weights, zero biases" recipe
            nn.init.normal_(lin.weight, std=std)
            nn.init.zeros_(lin.bias)
        layers += [lin, nn.ReLU()]
    return nn.Sequential(nn.Flatten(), *layers, nn.Linear(64, 10))


def test_bad_init_scale():
    data = digits()
    assert _run("bad_init_scale", model=_deep_mlp(0.01))[0]["status"] == "failed"
    assert _run("bad_init_scale", model=_deep_mlp(1.0))[0]["status"] == "failed"
    he = _deep_mlp(None)
    for m in he:
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight)
    assert _run("bad_init_scale", model=he, data=data)[0]["status"] == "passed"


def test_loss_at_init_unexpected():
    model = SmallCNN()
    with torch.no_grad():
        model.classifier[-1].weight.mul_(100)
    res, rep = _run("loss_at_init_unexpected", model=model)
    assert res["status"] == "failed" and rep.findings[0].evidence["observed"] > 5
    assert _run("loss_at_init_unexpected")[0]["status"] == "passed"


# -- training -------------------------------------------------------------------------------------
class InputKilled(SmallCNN):
    def forward(self, x):
        return super().forward(x * 0)


def test_cannot_overfit_small_batch():
    assert _run("cannot_overfit_small_batch", model=InputKilled())[0]["status"] == "failed"
    assert _run("cannot_overfit_small_batch")[0]["status"] == "passed"


def test_learning_rate_check():
    res, rep = _run("learning_rate", opt_kwargs={"lr": 5.0, "momentum": 0.9})
    assert res["status"] == "failed" and rep.ids() == ["learning_rate_too_high"]
    res, rep = _run("learning_rate", opt_kwargs={"lr": 1e-5, "momentum": 0.9})
    assert res["status"] == "failed" and rep.ids() == ["learning_rate_too_low"]
    res, _ = _run("learning_rate")
    assert res["status"] == "passed"
    d = res["details"]
    assert len(d["curve"]["lr"]) == len(d["curve"]["loss"]) >= 20
    assert d["largest_stable"] < d["diverged_at"]


def test_regularization_dominates():
    res, _ = _run("regularization_dominates", opt_kwargs={"lr": 0.05, "momentum": 0.9, "weight_decay": 0.5})
    assert res["status"] == "failed"
    res, _ = _run("regularization_dominates", opt_kwargs={"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4})
    assert res["status"] == "passed" and res["details"]["reg_to_loss"] < 0.1


class Square(torch.autograd.Function):
    wrong = False

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * x * (3 if Square.wrong else 2)


class WithCustomOp(SmallCNN):
    def forward(self, x):
        return self.classifier(Square.apply(self.features(x)))


def test_gradient_check(monkeypatch):
    res, _ = _run("gradient_check", model=WithCustomOp())
    assert res["status"] == "passed" and res["details"]["Square"]["passed"]
    monkeypatch.setattr(Square, "wrong", True)
    res, rep = _run("gradient_check", model=WithCustomOp())
    assert res["status"] == "failed"
    assert rep.findings[0].evidence["max_relative_error"][0] == pytest.approx(0.5, rel=1e-3)
    assert _run("gradient_check")[0]["status"] == "skipped"


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"checks=\['nope'\] are not known checks"):
        trainmedic.checkup(SmallCNN(), [], nn.CrossEntropyLoss(), checks=["nope"])
    with pytest.raises(TypeError, match="loss_fn=None is not callable"):
        trainmedic.checkup(SmallCNN(), [])


# -- the command and the first batch of `trainmedic run` ------------------------------------------
FACTORY = '''
import sys
sys.path.insert(0, {zoo!r})
import torch
from torch import nn
from _common import SmallCNN, digits, loaders

def make():
    torch.manual_seed(0)
    train, val = loaders(*digits(), batch=32)
    model = SmallCNN()
    return {{"model": model, "loss_fn": nn.CrossEntropyLoss(), "train_loader": train,
            "val_loader": val, "optimizer": torch.optim.SGD(model.parameters(), lr={lr})}}

def broken():
    return (1, 2)
'''


def test_checkup_command(tmp_path):
    import json
    import os
    import subprocess
    import sys
    zoo = os.path.join(os.path.dirname(__file__), "zoo")
    (tmp_path / "fac.py").write_text(FACTORY.format(zoo=zoo, lr=5.0))
    res = subprocess.run([sys.executable, "-m", "trainmedic.cli", "checkup", "fac.py:make", "--json",
                          "r.json", "--fail-on", "error"], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 3, res.stderr
    assert "learning_rate                failed" in res.stdout
    data = json.loads((tmp_path / "r.json").read_text())
    assert {c["name"] for c in data["run"]["checks"]} == set(REGISTRY)
    assert "learning_rate_too_high" in [f["id"] for f in data["findings"]]
    res = subprocess.run([sys.executable, "-m", "trainmedic.cli", "checkup", "fac.py:broken"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 2 and "expected a dict" in res.stderr


FIRST_BATCH = '''
import torch
from torch import nn
torch.manual_seed(0)
x = torch.rand(512, 20) * {scale}
y = (x[:, 0] > x[:, 1]).long() + {offset}
model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, {classes}))
opt = torch.optim.SGD(model.parameters(), lr=1e-3)
for step in range(40):
    opt.zero_grad()
    nn.functional.cross_entropy(model(x[step % 16 * 32:][:32]), y[step % 16 * 32:][:32]).backward()
    opt.step()
'''


@pytest.mark.parametrize("scale, offset, classes, expect, code", [
    (255.0, 0, 2, "input_not_normalized", 0),
    (1.0, 1, 2, "label_out_of_range", 1),          # cross_entropy then crashes: explained first
    (1.0, 0, 2, None, 0)])
def test_first_batch_checks_in_run(tmp_path, capsys, scale, offset, classes, expect, code):
    from trainmedic.runner import run_script
    script = tmp_path / "train.py"
    script.write_text(FIRST_BATCH.format(scale=scale, offset=offset, classes=classes))
    assert run_script(str(script), json_path=str(tmp_path / "r.json")) == code
    err = capsys.readouterr().err
    if expect:
        assert err.index(expect) < (err.index("Traceback") if code else len(err))
    report = trainmedic.Report.read_json(tmp_path / "r.json")
    ran = {c["name"]: c["status"] for c in report.run["first_batch_checks"]}
    assert ran["nonfinite_input"] == "passed"
    if expect is None:
        assert [c for c, s in ran.items() if s not in ("passed", "skipped")] == []
    else:
        assert report.by_id(expect).step == 0 and ran[expect] == "failed"


class SequenceFirstLSTM(nn.Module):
    """nn.LSTM without batch_first=True fed (batch, time, features): it runs along the batch."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(8, 16)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        out, _ = self.lstm(x.reshape(len(x), 8, 8))
        return self.head(out[:, -1])


def test_batch_mixing_flowing_one_way_through_the_batch():
    """Sample 0 of a sequence-first RNN depends on nobody else; a middle sample depends on all
    before it. The probe must see that direction too."""
    assert _run("batch_mixing", model=SequenceFirstLSTM())[0]["status"] == "failed"

"""An internal error disables the failing piece with one warning; training completes and the
report is still written."""

import json
import warnings

import pytest
import torch
from torch import nn

import trainmedic
from trainmedic.quantities.gradients import GradNormRecorder
from trainmedic.quantities.activations import ActivationSampler


def _train(monitor_kwargs, steps=80):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = trainmedic.watch(model, opt, every=10, on_finding=lambda f: None, **monitor_kwargs)
    for _ in range(steps):
        x = torch.randn(32, 8)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), (x[:, 0] > 0).long()).backward()
        opt.step()
    return monitor, model


@pytest.mark.parametrize("target", [(GradNormRecorder, "record"), (ActivationSampler, "observe_activation")])
def test_exception_in_hook_disables_piece_with_one_warning(monkeypatch, tmp_path, target):
    def boom(*a, **k):
        raise RuntimeError("planted failure")
    monkeypatch.setattr(*target, boom)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monitor, model = _train({"run_dir": tmp_path})
        report = monitor.report()
    ours = [w for w in caught if "trainmedic: internal error" in str(w.message)]
    assert len(ours) == 1 and "planted failure" in str(ours[0].message)
    assert monitor.step == 80                       # training ran to the end
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["run"]["disabled"] and data["run"]["steps"] == 80
    assert report.run["status"] == "completed"


def test_warning_as_error_does_not_reach_user_code(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(GradNormRecorder, "record", lambda *a, **k: 1 / 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        monitor, _ = _train({"run_dir": tmp_path})
    monitor.report()
    assert "internal error in gradients" in capsys.readouterr().err


def test_report_written_when_the_script_raises(tmp_path):
    with pytest.raises(ValueError):
        with trainmedic.watch(nn.Linear(2, 1), run_dir=tmp_path, on_finding=lambda f: None):
            raise ValueError("user bug")
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["run"]["status"] == "crashed"

"""Same numbers bit-for-bit with and without trainmedic (CPU), and the same printed output."""

import contextlib
import importlib
import io
import os
import subprocess
import sys

import torch

import trainmedic
from trainmedic.runner import run_script

HERE = os.path.dirname(__file__)
SCRIPT = os.path.join(HERE, "_train.py")


def _fresh_train(watch):
    sys.modules.pop("_train", None)
    sys.path.insert(0, HERE)
    try:
        mod = importlib.import_module("_train")
    finally:
        sys.path.remove(HERE)
    out = io.StringIO()
    monitor = trainmedic.watch(mod.model, mod.opt, every=5, on_finding=lambda f: None) if watch else None
    with contextlib.redirect_stdout(out):
        mod.train()
    if monitor:
        monitor.report()
    return {k: v.clone() for k, v in mod.model.state_dict().items()}, out.getvalue()


def test_watch_is_bit_identical():
    plain, out_plain = _fresh_train(watch=False)
    watched, out_watched = _fresh_train(watch=True)
    assert out_plain == out_watched
    for k in plain:
        assert torch.equal(plain[k], watched[k]), k


def test_runner_is_bit_identical(tmp_path):
    env = dict(os.environ, PYTHONHASHSEED="0")
    plain = subprocess.run([sys.executable, SCRIPT, str(tmp_path / "plain.pt")],
                           capture_output=True, text=True, env=env, check=True)
    watched = subprocess.run([sys.executable, "-m", "trainmedic.cli", "run", "--every", "5",
                              SCRIPT, str(tmp_path / "watched.pt")],
                             capture_output=True, text=True, env=env, check=True)
    assert plain.stdout == watched.stdout
    a, b = torch.load(tmp_path / "plain.pt"), torch.load(tmp_path / "watched.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_runner_in_process_is_bit_identical(tmp_path, capsys):
    subprocess.run([sys.executable, SCRIPT, str(tmp_path / "plain.pt")], check=True,
                   capture_output=True)
    assert run_script(SCRIPT, [str(tmp_path / "watched.pt")], every=5) == 0
    a, b = torch.load(tmp_path / "plain.pt"), torch.load(tmp_path / "watched.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_instrumentation_is_removed_after_close():
    backward = torch.Tensor.backward
    model = torch.nn.Linear(3, 1)
    monitor = trainmedic.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), on_finding=lambda f: None)
    assert torch.Tensor.backward is not backward
    monitor.report()
    assert torch.Tensor.backward is backward
    assert not model._forward_hooks and not model._forward_pre_hooks
    assert torch._C._len_torch_function_stack() == 0


def test_closure_step_is_measured_after_its_closure_and_numbers_are_unchanged(tmp_path):
    """step(closure) computes its gradients inside the closure: the monitor measures them right
    after the closure's first call (not the previous step's), and LBFGS ends bit-identical."""
    import trainmedic
    torch.manual_seed(0)
    x = torch.randn(64, 5)
    y = x @ torch.randn(5, 1)

    def train(watch):
        torch.manual_seed(1)
        model = torch.nn.Linear(5, 1)
        opt = torch.optim.LBFGS(model.parameters(), lr=0.5)
        mon = trainmedic.watch(model, opt, every=2, run_dir=str(tmp_path / "run"),
                               on_finding=lambda f: None) if watch else None
        first = []
        for _ in range(6):
            def closure():
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(model(x), y)
                loss.backward()
                return loss
            opt.step(closure)
            if mon is not None and not first:
                first.append(mon.grads.buf[0].clone())
        if mon is not None:
            mon.report()
        return model.weight.detach().clone(), first

    plain, _ = train(False)
    watched, first = train(True)
    assert torch.equal(plain, watched)
    assert (first[0] > 0).all()           # step 0's own gradients, measured inside the step

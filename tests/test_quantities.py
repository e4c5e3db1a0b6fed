"""Each quantity against a brute-force reference computed by hand."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import trainmedic
from trainmedic.quantities.activations import ActivationSampler
from trainmedic._safety import Guard


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 3))


def test_grad_norms_loss_lr_and_update_ratio_match_reference(tmp_path):
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.5)
    monitor = trainmedic.watch(model, opt, every=4, run_dir=tmp_path, on_finding=lambda f: None)
    ref_grads, ref_losses, ref_update = [], [], None
    for step in range(4):
        x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        ref_losses.append(loss.item())
        ref_grads.append([p.grad.norm().item() for p in model.parameters()])
        before = [p.detach().clone() for p in model.parameters()]
        opt.step()
        if step == 0:
            ref_update = [((p.detach() - b).norm() / b.norm()).item()
                          for p, b in zip(model.parameters(), before)]
    monitor.close()
    row = monitor.run.ticks.rows[-1]
    np.testing.assert_allclose(row["grad_median"], np.median(ref_grads, axis=0), rtol=1e-5)
    np.testing.assert_allclose(row["grad_max"], np.max(ref_grads, axis=0), rtol=1e-5)
    np.testing.assert_allclose(monitor.run.loss_curve()[1], ref_losses, rtol=1e-6)
    np.testing.assert_allclose(row["update_ratio"], ref_update, rtol=1e-4)
    assert row["lr"] == 0.05


def test_activation_stats_match_reference():
    model = _net()
    sampler = ActivationSampler(Guard())
    sampler.name_modules(model)
    x = torch.randn(80, 6)
    sampler.begin(model)
    out = model(x)
    sampler.forward_done(out)
    sampler.end()
    acts, preds, _ = sampler.take()
    h = torch.relu(model[0](x))
    assert acts["1/relu0"]["dead_fraction"] == pytest.approx((h == 0).all(0).float().mean().item())
    assert acts["1/relu0"]["zero_fraction"] == pytest.approx((h == 0).float().mean().item())
    assert acts["3/tanh0"]["saturated_fraction"] == pytest.approx((model[2](h).abs() >= 2.5).float().mean().item(), abs=1e-6)
    assert not acts["1/relu0"]["output"]
    top = torch.bincount(out.argmax(1), minlength=3).max().item() / 80
    assert preds[0]["top_share"] == pytest.approx(top)
    assert torch._C._len_torch_function_stack() == 0


def test_functional_and_method_activations_are_seen():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 8)

        def forward(self, x):
            x = F.relu(self.a(x))
            x = self.b(x).relu()
            return torch.sigmoid(x)
    model = Net()
    sampler = ActivationSampler(Guard())
    sampler.name_modules(model)
    sampler.begin(model)
    sampler.forward_done(model(torch.randn(128, 4)))
    sampler.end()
    acts, _, _ = sampler.take()
    assert set(acts) == {"Net/relu0", "Net/relu1", "Net/sigmoid0"}
    # output-side: no parameterised layer runs after them, so they are not judged as hidden units
    assert acts["Net/sigmoid0"]["output"] and acts["Net/relu1"]["output"]
    assert not acts["Net/relu0"]["output"]


def test_stale_gradient_probe_distinguishes_accumulation(tmp_path):
    def run(clear_every_step, accumulate):
        model = _net()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        monitor = trainmedic.watch(model, opt, every=5, run_dir=tmp_path, on_finding=lambda f: None)
        for step in range(20):
            for _ in range(accumulate):
                F.cross_entropy(model(torch.randn(8, 6)), torch.randint(0, 3, (8,))).backward()
            opt.step()
            if clear_every_step:
                opt.zero_grad(set_to_none=step % 2 == 0)     # both ways of clearing
        monitor.close()
        return monitor.run.stale[0]
    assert run(True, accumulate=3) == [0, 19]
    assert run(False, accumulate=1) == [19, 19]

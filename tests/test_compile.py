"""torch.compile: a compiled model (``torch.compile(model)`` and in-place ``model.compile()``)
trains to the same numbers with and without trainmedic, trainmedic adds no graph break, the
gradients, losses and learning rate are still measured (a planted learning rate too high is
named), and the report says what compiled code hides. Dynamo's graph breaks do not depend on
the backend: the fast ``eager`` backend keeps these tests quick."""

import pytest
import torch
import torch._dynamo
from torch import nn

import trainmedic


def _train(lr, *, watch, inplace, steps=40):
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    if inplace:
        model.compile(backend="eager")
        run = model
    else:
        run = torch.compile(model, backend="eager")
    monitor = trainmedic.watch(model, opt, every=5, on_finding=lambda f: None) if watch else None
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(256, 16, generator=gen), torch.randint(0, 4, (256,), generator=gen)
    losses = []
    for i in range(steps):
        b = slice(32 * (i % 8), 32 * (i % 8 + 1))
        opt.zero_grad()
        loss = nn.functional.cross_entropy(run(x[b]), y[b])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    breaks = sum(torch._dynamo.utils.counters["graph_break"].values())
    if monitor is not None:
        monitor.close()
    return losses, breaks, monitor


@pytest.mark.parametrize("inplace", [False, True])
def test_compiled_model_is_measured_without_graph_breaks_or_changed_numbers(inplace):
    plain, plain_breaks, _ = _train(0.05, watch=False, inplace=inplace)
    watched, breaks, monitor = _train(0.05, watch=True, inplace=inplace)
    assert watched == plain
    assert breaks == plain_breaks == 0
    assert len(monitor.run.loss_steps) == 40 and len(monitor.run.ticks) >= 8
    assert monitor.run.lr_max == pytest.approx(0.05)
    notes = [f for f in monitor.findings.values() if f.id == "monitoring_limited"]
    assert notes and "torch.compile" in notes[0].message
    assert not [f for f in monitor.findings.values() if f.severity.value in ("warning", "error")]


def test_a_planted_bug_is_named_under_compile():
    _, breaks, monitor = _train(30.0, watch=True, inplace=False, steps=60)
    assert breaks == 0
    assert "learning_rate_too_high" in monitor.findings or "loss_diverging" in monitor.findings, \
        sorted(monitor.findings)

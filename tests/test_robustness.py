"""Unusual but legitimate training code: no crash, no false alarm."""

import os

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import trainmedic


def _xy(n=64, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, (x[:, 0] + x[:, 1] > 0).long()


def _assert_silent(monitor):
    report = monitor.report()
    bad = [(f.id, f.message) for f in report.at_least("warning")]
    assert bad == []
    assert not report.run["disabled"]
    return report


class DictOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(8, 16)
        self.head = nn.Linear(16, 2)
        self.aux = nn.Linear(16, 1)
        self.unused = nn.Linear(16, 16)            # never called

    def forward(self, x):
        h = torch.relu(self.body(x))
        return {"logits": self.head(h), "aux": self.aux(h)}


class TupleOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(8, 16)
        self.dec = nn.Linear(16, 8)
        self.dec.weight = nn.Parameter(self.enc.weight.t().detach().clone())
        self.cls = nn.Linear(16, 2)
        self.tied = nn.Linear(16, 16)
        self.tied2 = nn.Linear(16, 16)
        self.tied2.weight = self.tied.weight      # shared parameter

    def forward(self, x):
        h = torch.tanh(self.enc(x))
        h = self.tied2(torch.relu(self.tied(h)))
        return self.cls(h), self.dec(h)


@pytest.mark.parametrize("model_cls", [DictOut, TupleOut])
def test_structured_outputs_unused_and_shared_params(model_cls, tmp_path):
    torch.manual_seed(0)
    model = model_cls()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    monitor = trainmedic.watch(model, opt, run_dir=tmp_path, every=10, on_finding=lambda f: None)
    x, y = _xy(512)
    for i in range(150):
        b = slice((i * 32) % 512, (i * 32) % 512 + 32)
        out = model(x[b])
        logits = out["logits"] if isinstance(out, dict) else out[0]
        loss = nn.functional.cross_entropy(logits, y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    _assert_silent(monitor)


def test_two_optimizers(tmp_path):
    torch.manual_seed(0)
    body, head = nn.Linear(8, 32), nn.Linear(32, 2)
    model = nn.Sequential(body, nn.ReLU(), head)
    opt_body = torch.optim.SGD(body.parameters(), lr=0.05, momentum=0.9)
    opt_head = torch.optim.Adam(head.parameters(), lr=1e-2)
    monitor = trainmedic.watch(model, [opt_body, opt_head], run_dir=tmp_path, every=10,
                               on_finding=lambda f: None)
    x, y = _xy(512)
    for i in range(150):
        b = slice((i * 32) % 512, (i * 32) % 512 + 32)
        for o in (opt_body, opt_head):
            o.zero_grad()
        nn.functional.cross_entropy(model(x[b]), y[b]).backward()
        opt_body.step()
        opt_head.step()
    report = _assert_silent(monitor)
    assert report.run["optimizers"] == ["SGD", "Adam"]


def test_manual_sgd_without_optimizer(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
    monitor = trainmedic.watch(model, run_dir=tmp_path, every=10, on_finding=lambda f: None)
    x, y = _xy(512)
    for i in range(150):
        b = slice((i * 32) % 512, (i * 32) % 512 + 32)
        loss = nn.functional.cross_entropy(model(x[b]), y[b])
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-0.1)
    report = _assert_silent(monitor)
    assert report.run["steps"] == 150


def test_lbfgs_with_closure(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=5)
    monitor = trainmedic.watch(model, opt, run_dir=tmp_path, every=5, on_finding=lambda f: None)
    x, _ = _xy(128)
    t = x[:, :1] * 2 - x[:, 1:2]

    def closure():
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), t)
        loss.backward()
        return loss
    for _ in range(30):
        opt.step(closure)
    _assert_silent(monitor)


class ResidualLN(nn.Module):
    def __init__(self, width=32, depth=8):
        super().__init__()
        self.inp = nn.Linear(8, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width),
                                                  nn.GELU(), nn.Linear(width, width))
                                    for _ in range(depth))
        self.out = nn.Linear(width, 2)

    def forward(self, x):
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


class CellRNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.cell = nn.GRUCell(2, 32)
        self.lstm_cell = nn.LSTMCell(32, 32)
        self.head = nn.Linear(32, 2)

    def forward(self, x):
        seq = x.reshape(len(x), 4, 2)
        h = x.new_zeros(len(x), 32)
        hc = (h, h)
        for t in range(4):
            h = self.cell(seq[:, t], h)
            hc = self.lstm_cell(h, hc)
        return self.head(hc[0])


@pytest.mark.parametrize("model_cls", [ResidualLN, CellRNN])
def test_residual_layernorm_and_rnn_cells(model_cls, tmp_path):
    torch.manual_seed(0)
    model = model_cls()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    monitor = trainmedic.watch(model, opt, run_dir=tmp_path, every=10, on_finding=lambda f: None)
    x, y = _xy(512)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    for epoch in range(10):
        model.train()
        for xb, yb in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
        model.eval()
        with torch.no_grad():           # evaluation passes are not training steps
            model(x)
    report = _assert_silent(monitor)
    assert report.run["steps"] == 160


def test_torch_compile_is_reported_as_limited(tmp_path):
    torch.manual_seed(0)
    model = torch.compile(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)), backend="eager")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = trainmedic.watch(model, opt, run_dir=tmp_path, every=10, on_finding=lambda f: None)
    x, y = _xy(256)
    for i in range(40):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[:64]), y[:64]).backward()
        opt.step()
    report = _assert_silent(monitor)
    assert "monitoring_limited" in report.ids()


def test_empty_dataloader_and_no_training(tmp_path):
    model = nn.Linear(8, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = trainmedic.watch(model, opt, run_dir=tmp_path, on_finding=lambda f: None)
    for _ in DataLoader(TensorDataset(torch.empty(0, 8), torch.empty(0)), batch_size=4):
        raise AssertionError("no batches expected")
    report = _assert_silent(monitor)
    assert report.run["steps"] == 0 and report.findings == []


def test_grad_scaler_losses_are_unscaled(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(8, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    monitor = trainmedic.watch(model, opt, run_dir=tmp_path, every=5, on_finding=lambda f: None)
    x, y = _xy(64)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        losses.append(loss.item())
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    monitor.close()
    _, recorded = monitor.run.loss_curve()
    assert len(recorded) == len(losses)
    assert recorded == pytest.approx(losses, rel=1e-5)


@pytest.mark.parametrize("every", [0, -3, 2.5, "10", 10**9])
def test_bad_every_is_a_clear_error(every):
    with pytest.raises(ValueError, match=r"every=.*expected an int from 1 to 10000"):
        trainmedic.watch(nn.Linear(2, 2), every=every)


def test_bad_model_and_optimizer_are_clear_errors():
    with pytest.raises(TypeError, match="model=.*torch.nn.Module"):
        trainmedic.watch("not a model")
    with pytest.raises(TypeError, match="optimizer=.*torch.optim.Optimizer"):
        trainmedic.watch(nn.Linear(2, 2), optimizer=[object()])


class HFStyle(nn.Module):
    """Keyword-only forward, loss computed inside, a dict-like output: the Hugging Face shape."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.head = nn.Linear(16, 2)

    def forward(self, input_ids=None, labels=None):
        logits = self.head(torch.relu(self.emb(input_ids).mean(1)))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits}


def test_keyword_forward_with_internal_loss(tmp_path):
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (512, 6))
    labels = ((ids > 25).float().mean(1) > 0.5).long()      # learnable from mean embeddings
    model = HFStyle()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    monitor = trainmedic.watch(model, opt, run_dir=tmp_path, every=10, on_finding=lambda f: None)
    for epoch in range(8):
        model.train()
        for i in range(0, 448, 32):
            out = model(input_ids=ids[i:i + 32], labels=labels[i:i + 32])
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            model(input_ids=ids[448:], labels=labels[448:])
    report = _assert_silent(monitor)
    assert len(report.run["epochs"]) == 8 and report.run["epochs"][-1]["val_acc"] > 0.8


def test_dataloader_workers_under_the_runner(tmp_path):
    import subprocess
    import sys
    import textwrap
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        import torch
        from torch import nn
        from torch.utils.data import DataLoader, TensorDataset
        if __name__ == "__main__":
            torch.manual_seed(0)
            x = torch.randn(512, 8)
            data = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=32, shuffle=True, num_workers=2)
            model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            for epoch in range(3):
                for xb, yb in data:
                    opt.zero_grad()
                    nn.functional.cross_entropy(model(xb), yb).backward()
                    opt.step()
            print("done")
    """))
    res = subprocess.run([sys.executable, "-m", "trainmedic.cli", "run", "--run-dir", "run", str(script)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "done\n" and res.stderr.count("trainmedic summary") == 1
    assert sorted(os.listdir(tmp_path / "run")) == ["metrics.jsonl", "report.json"]

"""Clean: a long run of 20,000 tiny steps: 2-layer MLP on generated 16-dim regression data,
SGD with momentum and a StepLR schedule stepped per iteration."""
import torch
from torch import nn
from torch.nn import functional as F

EXPECT = None


def main(watch=None):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    w_true = torch.randn(16, 1, generator=g) / 4
    n = 4096
    x = torch.randn(n, 16, generator=g)
    y = torch.tanh(x @ w_true) + 0.3 * torch.sin(x[:, :1] * 2) + 0.05 * torch.randn(n, 1, generator=g)
    xtr, ytr, xva, yva = x[:3584], y[:3584], x[3584:], y[3584:]
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7000, gamma=0.3)
    monitor = watch(model, opt) if watch else None
    steps, batch = 20000, 16
    with torch.no_grad():
        print(f"step 0 val_mse {F.mse_loss(model(xva), yva).item():.4f} "
              f"(predict-mean baseline {yva.var().item():.4f})")
    order = torch.randperm(len(xtr), generator=g)
    pos = 0
    for step in range(1, steps + 1):
        if pos + batch > len(order):
            order, pos = torch.randperm(len(xtr), generator=g), 0
        idx = order[pos:pos + batch]
        pos += batch
        loss = F.mse_loss(model(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 5000 == 0:
            model.eval()
            with torch.no_grad():
                vl = F.mse_loss(model(xva), yva)
            model.train()
            print(f"step {step} val_mse {vl.item():.4f} lr {sched.get_last_lr()[0]:.4f}")
    return monitor


if __name__ == "__main__":
    main()

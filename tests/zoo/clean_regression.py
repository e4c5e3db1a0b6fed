"""Clean: MLP regression on diabetes with MSE, Adam and ReduceLROnPlateau."""
import torch
from torch import nn
from _common import diabetes, loaders

EXPECT = None


def main(watch=None):
    torch.manual_seed(0)
    xtr, ytr, xva, yva = diabetes()
    train, _ = loaders(xtr, ytr, xva, yva, batch=32)
    model = nn.Sequential(nn.Linear(10, 64), nn.Tanh(), nn.Linear(64, 1))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=2)
    monitor = watch(model, opt) if watch else None
    for epoch in range(25):
        model.train()
        for x, y in train:
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x).squeeze(1), y)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val = nn.functional.mse_loss(model(xva).squeeze(1), yva).item()
        sched.step(val)
    print(f"val_mse {val:.3f}")
    return monitor


if __name__ == "__main__":
    main()

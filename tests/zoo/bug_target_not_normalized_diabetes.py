"""Bug: the diabetes regression targets (disease progression, 25..346) are fed to the MSE loss on
their raw scale; the MLP's outputs start near 0 and with Adam's small steps it spends the run
chasing the target scale instead of fitting, ending far worse than with standardised targets.
Expect target_not_normalized (root cause)."""
import torch
from sklearn.datasets import load_diabetes
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

EXPECT = "target_not_normalized"


def main(watch=None):
    torch.manual_seed(0)
    data = load_diabetes()
    x = torch.tensor(data.data, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0)
    y = torch.tensor(data.target, dtype=torch.float32)
    perm = torch.randperm(len(y))
    xtr, ytr, xva, yva = x[perm[:350]], y[perm[:350]], x[perm[350:]], y[perm[350:]]
    train = DataLoader(TensorDataset(xtr, ytr), batch_size=32, shuffle=True)
    model = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    monitor = watch(model, opt) if watch else None
    for epoch in range(12):
        model.train()
        for xb, yb in train:
            opt.zero_grad()
            loss = F.mse_loss(model(xb).squeeze(1), yb)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            pred = model(xva).squeeze(1)
            val_mse = F.mse_loss(pred, yva).item()
        if epoch % 3 == 2:
            print(f"epoch {epoch} val_rmse {val_mse ** 0.5:.1f} val_r2 {1 - val_mse / yva.var().item():.3f}")
    return monitor


if __name__ == "__main__":
    main()

"""Clean twin of bug_mse_broadcast.py: predictions are squeezed to (N,) before the loss.
Metric: validation R^2 (1 - MSE / variance of the targets; higher is better)."""
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from _data import diabetes

FINDING = None
REMEDY = None
warnings.filterwarnings("ignore", message="Using a target size")

torch.manual_seed(0)
xtr, ytr, xva, yva = diabetes()
model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 1), nn.Flatten(0))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

for epoch in range(25):
    model.train()
    perm = torch.randperm(len(ytr))
    for i in range(0, len(ytr), 16):
        b = perm[i:i + 16]
        optimizer.zero_grad()
        loss = F.mse_loss(model(xtr[b]), ytr[b])
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        pred = model(xva)
        val_loss = F.mse_loss(pred, yva).item()
    r2 = 1 - ((pred.reshape(-1) - yva) ** 2).mean().item() / yva.var().item()
    print(f"epoch {epoch + 1}: val loss {val_loss:.4f}, val R^2 {r2:.4f}")
print(f"FINAL val_r2={r2:.4f}")

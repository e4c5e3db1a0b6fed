"""Planted bug: dropout p=0.05 (a token amount) in a 256-wide two-layer MLP regressor trained
for 100 epochs on only 200 diabetes patients with Adam: the validation MSE bottoms out within a
few epochs and then climbs while the training MSE keeps falling. The clean twin uses p=0.5, the
usual rate for hidden units.
FINDING = "overfitting"; REMEDY = "dropout_up" (weight_decay_up, tried first, adds 5e-4 of
Adam's coupled L2, which does not hold the validation loss down).
Metric: validation R^2 (1 - MSE / variance of the targets; higher is better)."""
import torch
import torch.nn.functional as F
from torch import nn

from _data import diabetes

FINDING = "overfitting"
REMEDY = "dropout_up"
DROPOUT = 0.05

torch.manual_seed(0)
xtr, ytr, xva, yva = diabetes()
xtr, ytr = xtr[:200], ytr[:200]
model = nn.Sequential(nn.Linear(10, 256), nn.ReLU(), nn.Dropout(DROPOUT),
                      nn.Linear(256, 256), nn.ReLU(), nn.Dropout(DROPOUT), nn.Linear(256, 1))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

for epoch in range(100):
    model.train()
    perm = torch.randperm(len(ytr))
    for i in range(0, len(ytr), 16):
        b = perm[i:i + 16]
        optimizer.zero_grad()
        loss = F.mse_loss(model(xtr[b]).squeeze(1), ytr[b])
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        val_loss = F.mse_loss(model(xva).squeeze(1), yva).item()
        r2 = 1 - val_loss / yva.var(unbiased=False).item()
    print(f"epoch {epoch + 1}: val loss {val_loss:.4f}, val R^2 {r2:.4f}")
print(f"FINAL val_r2={r2:.4f}")

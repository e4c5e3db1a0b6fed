"""Planted bug: SGD(momentum=0.9) with lr=1.0 on a digits MLP (meant: 0.1).
FINDING = "learning_rate_too_high"; REMEDY = "lr_scale_0.1". Metric: validation accuracy
(higher is better)."""
import torch
import torch.nn.functional as F
from torch import nn

from _data import digits

FINDING = "learning_rate_too_high"
REMEDY = "lr_scale_0.1"
LR = 1.0

torch.manual_seed(0)
xtr, ytr, xva, yva = digits()
model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)

for epoch in range(6):
    model.train()
    perm = torch.randperm(len(ytr))
    for i in range(0, len(ytr), 32):
        b = perm[i:i + 32]
        optimizer.zero_grad()
        loss = F.cross_entropy(model(xtr[b]), ytr[b])
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        out = model(xva)
        val_loss = F.cross_entropy(out, yva).item()
        acc = (out.argmax(1) == yva).float().mean().item()
    print(f"epoch {epoch + 1}: val loss {val_loss:.4f}, val accuracy {acc:.4f}")
print(f"FINAL val_acc={acc:.4f}")

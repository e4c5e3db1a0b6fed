"""Clean twin of bug_lr_very_high.py: SGD(momentum=0.9) with lr=0.03 on a digits CNN.
Metric: validation accuracy (higher is better)."""
import torch
import torch.nn.functional as F
from torch import nn

from _data import digits

FINDING = None
REMEDY = None
LR = 0.03

torch.manual_seed(0)
xtr, ytr, xva, yva = digits()
xtr, xva = xtr.reshape(-1, 1, 8, 8), xva.reshape(-1, 1, 8, 8)
model = nn.Sequential(
    nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)

for epoch in range(10):
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

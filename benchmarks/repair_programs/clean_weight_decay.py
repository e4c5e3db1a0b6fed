"""Clean twin of bug_weight_decay.py: Adam with weight_decay=1e-3.
Metric: validation accuracy (higher is better)."""
import torch
import torch.nn.functional as F
from torch import nn

from _data import breast_cancer

FINDING = None
REMEDY = None
WEIGHT_DECAY = 1e-3

torch.manual_seed(0)
xtr, ytr, xva, yva = breast_cancer()
model = nn.Sequential(nn.Linear(30, 32), nn.ReLU(), nn.Linear(32, 1))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=WEIGHT_DECAY)

for epoch in range(20):
    model.train()
    perm = torch.randperm(len(ytr))
    for i in range(0, len(ytr), 16):
        b = perm[i:i + 16]
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model(xtr[b]).squeeze(1), ytr[b])
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        logits = model(xva).squeeze(1)
        val_loss = F.binary_cross_entropy_with_logits(logits, yva).item()
        acc = ((logits > 0).float() == yva).float().mean().item()
    print(f"epoch {epoch + 1}: val loss {val_loss:.4f}, val accuracy {acc:.4f}")
print(f"FINAL val_acc={acc:.4f}")

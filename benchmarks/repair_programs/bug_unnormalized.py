"""Planted bug: the breast-cancer features go into the MLP raw (the standardisation step was
left out): their means reach 880 and their scales differ by 10^5.
FINDING = "input_not_normalized"; REMEDY = "normalize_inputs".
Metric: validation accuracy (higher is better)."""
import torch
import torch.nn.functional as F
from torch import nn

from _data import breast_cancer

FINDING = "input_not_normalized"
REMEDY = "normalize_inputs"

torch.manual_seed(0)
xtr, ytr, xva, yva = breast_cancer(raw=True)
model = nn.Sequential(nn.Linear(30, 32), nn.ReLU(), nn.Linear(32, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

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

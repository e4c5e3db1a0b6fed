"""Planted bug: a "deterministic" initialisation sets every Linear weight to 0.01 and every bias
to 0, so all hidden units of a layer compute the same thing and stay identical.
FINDING = "symmetric_weights"; REMEDY = "reinit_layers".
Metric: validation accuracy (higher is better)."""
import torch
import torch.nn.functional as F
from torch import nn

from _data import digits

FINDING = "symmetric_weights"
REMEDY = "reinit_layers"

torch.manual_seed(0)
xtr, ytr, xva, yva = digits()
model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
for layer in model:
    if isinstance(layer, nn.Linear):
        nn.init.constant_(layer.weight, 0.01)
        nn.init.zeros_(layer.bias)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

for epoch in range(8):
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

"""Planted bug: a wide MLP (with only light dropout) trained for 60 epochs on just 150 digit
images, with no early stopping: the validation loss bottoms out early and then climbs while
the training loss goes to zero. The clean twin stops after 12 epochs.
FINDING = "overfitting"; REMEDY = "early_stopping" (weight_decay_up and dropout_up are tried
first and fail: neither brings the validation loss back to its best within the verification).
Metric: validation accuracy (higher is better)."""
import torch
import torch.nn.functional as F
from torch import nn

from _data import digits

FINDING = "overfitting"
REMEDY = "early_stopping"
EPOCHS = 60

torch.manual_seed(0)
xtr, ytr, xva, yva = digits()
xtr, ytr = xtr[:150], ytr[:150]
model = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Dropout(0.1),
                      nn.Linear(512, 512), nn.ReLU(), nn.Dropout(0.1), nn.Linear(512, 10))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

for epoch in range(EPOCHS):
    model.train()
    perm = torch.randperm(len(ytr))
    for i in range(0, len(ytr), 16):
        b = perm[i:i + 16]
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

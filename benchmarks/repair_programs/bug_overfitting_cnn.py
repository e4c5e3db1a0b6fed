"""Planted bug: a small CNN trained for 60 epochs on only 200 digit images (8x8) with no data
augmentation and no regulariser: the validation loss bottoms out around epoch 10 and then
climbs while the training loss goes to zero. The clean twin shifts each training image by up to
one pixel (trainmedic.augment.translate), the usual augmentation for small image sets.
FINDING = "overfitting"; REMEDY = "augment_inputs".
Metric: validation accuracy (higher is better)."""
import torch
import torch.nn.functional as F
from torch import nn

from _data import digits

FINDING = "overfitting"
REMEDY = "augment_inputs"

torch.manual_seed(0)
xtr, ytr, xva, yva = digits()
xtr, ytr, xva = xtr[:200].reshape(-1, 1, 8, 8), ytr[:200], xva.reshape(-1, 1, 8, 8)
model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                      nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 16, 256), nn.ReLU(), nn.Linear(256, 10))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

for epoch in range(60):
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

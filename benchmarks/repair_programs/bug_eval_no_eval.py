"""Planted bug: validation runs under torch.no_grad() but model.eval() was forgotten, so the
digits MLP is evaluated with dropout on and BatchNorm normalising by the validation batch (and
updating its running statistics with it).
FINDING = "eval_in_train_mode"; REMEDY = "eval_mode_for_evaluation".
Metric: validation accuracy (higher is better)."""
import torch
import torch.nn.functional as F
from torch import nn

from _data import digits

FINDING = "eval_in_train_mode"
REMEDY = "eval_mode_for_evaluation"

torch.manual_seed(0)
xtr, ytr, xva, yva = digits()
model = nn.Sequential(nn.Linear(64, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Dropout(0.5),
                      nn.Linear(128, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Dropout(0.5),
                      nn.Linear(128, 10))
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
    with torch.no_grad():
        out = torch.cat([model(xva[i:i + 100]) for i in range(0, len(yva), 100)])
        val_loss = F.cross_entropy(out, yva).item()
        acc = (out.argmax(1) == yva).float().mean().item()
    print(f"epoch {epoch + 1}: val loss {val_loss:.4f}, val accuracy {acc:.4f}")
print(f"FINAL val_acc={acc:.4f}")

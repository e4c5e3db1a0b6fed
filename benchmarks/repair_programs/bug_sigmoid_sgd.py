"""Planted bug: plain SGD(lr=0.03, momentum=0.9) on a deep MLP with six 256-wide sigmoid hidden
layers (digits). Each sigmoid layer passes back at most a quarter of the gradient, so the first
layers get relative gradients ~1e-5 of the last layer's: no single learning rate suits both
ends, and the loss sits at chance. Adam's per-parameter step sizes are the fix; the clean twin
uses Adam(lr=1e-3), what SgdToAdam switches to.
FINDING = "vanishing_gradient"; REMEDY = "sgd_to_adam" (reinit_all_layers, tried first, does not
help: Xavier init cannot undo the sigmoid's 1/4 per layer).
Metric: validation accuracy (higher is better)."""
import torch
import torch.nn.functional as F
from torch import nn

from _data import digits

FINDING = "vanishing_gradient"
REMEDY = "sgd_to_adam"
ADAM = False

torch.manual_seed(0)
xtr, ytr, xva, yva = digits()
layers, width = [], 64
for _ in range(6):
    layers += [nn.Linear(width, 256), nn.Sigmoid()]
    width = 256
model = nn.Sequential(*layers, nn.Linear(width, 10))
if ADAM:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
else:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9)

for epoch in range(40):
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

"""Planted bug: a 6-layer tanh MLP whose weights are drawn from N(0, 1) ("randn init", no
fan-in scaling): the pre-activations are in the tens, most tanh units sit in their flat ends
and the gradient hardly reaches the first layers. The clean twin uses Xavier initialisation.
FINDING = "saturated_activation"; REMEDY = "reinit_all_layers".
Metric: validation accuracy (higher is better)."""
import torch
import torch.nn.functional as F
from torch import nn

from _data import digits

FINDING = "saturated_activation"
REMEDY = "reinit_all_layers"

torch.manual_seed(0)
xtr, ytr, xva, yva = digits()
sizes = [64, 128, 128, 128, 128, 128, 10]
layers = []
for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
    layers += [nn.Linear(fan_in, fan_out), nn.Tanh()]
model = nn.Sequential(*layers[:-1])
for layer in model:
    if isinstance(layer, nn.Linear):
        nn.init.normal_(layer.weight, std=1.0)
        nn.init.zeros_(layer.bias)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

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

"""Clean twin of bug_imbalance.py: the training loss is weighted by inverse class frequency,
n / (2 * count_c). Metric: validation balanced accuracy (mean per-class recall; higher is better)."""
import torch
import torch.nn.functional as F
from sklearn.datasets import make_classification
from torch import nn

FINDING = None
REMEDY = None

x, y = make_classification(n_samples=3000, n_features=20, n_informative=5, weights=[0.96],
                           class_sep=0.8, flip_y=0.0, random_state=0)
x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
xtr, ytr, xva, yva = x[:2000], y[:2000], x[2000:], y[2000:]
counts = torch.bincount(ytr, minlength=2).float()
class_weight = counts.sum() / (2 * counts)

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 2))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

for epoch in range(8):
    model.train()
    perm = torch.randperm(len(ytr))
    for i in range(0, len(ytr), 32):
        b = perm[i:i + 32]
        optimizer.zero_grad()
        loss = F.cross_entropy(model(xtr[b]), ytr[b], weight=class_weight)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        out = model(xva)
        val_loss = F.cross_entropy(out, yva).item()
        pred = out.argmax(1)
        recall = [(pred[yva == c] == c).float().mean().item() for c in (0, 1)]
        bal_acc = sum(recall) / 2
    print(f"epoch {epoch + 1}: val loss {val_loss:.4f}, recall {recall[0]:.3f}/{recall[1]:.3f}, "
          f"balanced accuracy {bal_acc:.4f}")
print(f"FINAL val_balanced_acc={bal_acc:.4f}")

"""The tuning benchmark's program: a small CNN on scikit-learn's 8x8 digits (1400 training,
397 validation images), SGD with momentum, 8 epochs, validation loss every epoch. The tuner
sets lr and weight_decay through the optimizer and batch_size through the DataLoader."""
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)
digits = load_digits()
x = torch.tensor(digits.data, dtype=torch.float32)
x = (x - x.mean()) / x.std()
y = torch.tensor(digits.target)
perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
xtr, ytr, xva, yva = x[perm[:1400]], y[perm[:1400]], x[perm[1400:]], y[perm[1400:]]
train = DataLoader(TensorDataset(xtr.view(-1, 1, 8, 8), ytr), batch_size=64, shuffle=True)
val = DataLoader(TensorDataset(xva.view(-1, 1, 8, 8), yva), batch_size=256)
model = nn.Sequential(
    nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(32 * 2 * 2, 64), nn.ReLU(), nn.Linear(64, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)

for epoch in range(8):
    model.train()
    for x, y in train:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in val:
            out = model(x)
            nn.functional.cross_entropy(out, y)
            correct += (out.argmax(1) == y).sum().item()
    print(f"epoch {epoch + 1}: val accuracy {correct / len(yva):.4f}")

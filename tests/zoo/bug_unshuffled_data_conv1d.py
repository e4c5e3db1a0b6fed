"""Bug: the generated waveform dataset is built class by class (all sines, then all squares, ...)
and the DataLoader has shuffle=False, so each epoch the 1-D CNN is trained on one class at a
time and ends biased toward the last one. Expect unshuffled_data (root cause)."""
import math

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

EXPECT = "unshuffled_data"
KINDS = ["sine", "square", "triangle", "sawtooth"]


def waves(kind, n, length=64, g=None):
    t = torch.arange(length, dtype=torch.float32)
    freq = 0.5 + 2.5 * torch.rand(n, 1, generator=g)
    phase = torch.rand(n, 1, generator=g)
    cycles = freq * t / length * 4 + phase
    frac = cycles - cycles.floor()
    if kind == "sine":
        x = torch.sin(2 * math.pi * cycles)
    elif kind == "square":
        x = torch.where(frac < 0.5, 1.0, -1.0)
    elif kind == "triangle":
        x = 4 * (frac - 0.5).abs() - 1
    else:
        x = 2 * frac - 1
    return (x + 0.3 * torch.randn(n, length, generator=g)).unsqueeze(1)


def build(n_per_class, g):
    xs, ys = [], []
    for label, kind in enumerate(KINDS):
        xs.append(waves(kind, n_per_class, g=g))
        ys.append(torch.full((n_per_class,), label))
    return torch.cat(xs), torch.cat(ys)


def main(watch=None):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    xtr, ytr = build(250, g)
    xva, yva = build(60, g)
    train = DataLoader(TensorDataset(xtr, ytr), batch_size=25)
    val = DataLoader(TensorDataset(xva, yva), batch_size=120)
    model = nn.Sequential(
        nn.Conv1d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(16, 32, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
        nn.Flatten(), nn.Linear(32, len(KINDS)))
    criterion = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    monitor = watch(model, opt) if watch else None
    for epoch in range(5):
        model.train()
        for x, y in train:
            opt.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            opt.step()
        model.eval()
        losses, correct = [], 0
        with torch.no_grad():
            for x, y in val:
                out = model(x)
                losses.append(criterion(out, y).item())
                correct += (out.argmax(1) == y).sum().item()
        print(f"epoch {epoch} val_loss {sum(losses) / len(losses):.3f} val_acc {correct / len(yva):.3f}")
    return monitor


if __name__ == "__main__":
    main()

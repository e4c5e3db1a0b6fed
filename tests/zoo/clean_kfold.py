"""Clean: 4-fold cross-validation of a digits MLP; each fold trains a fresh model and optimizer
and validates on samples that were training data in the other folds."""
import torch
from torch import nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from _common import digits

EXPECT = None


def main(watch=None):
    torch.manual_seed(0)
    xtr, ytr, xva, yva = digits(flat=True)
    x, y = torch.cat([xtr, xva]), torch.cat([ytr, yva])
    folds = torch.randperm(len(y), generator=torch.Generator().manual_seed(1)).chunk(4)
    monitor, scores = None, []
    for k, held_out in enumerate(folds):
        train_idx = torch.cat([f for j, f in enumerate(folds) if j != k])
        model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        if watch and monitor is None:
            monitor = watch(model, opt)
        loader = DataLoader(TensorDataset(x[train_idx], y[train_idx]), batch_size=64, shuffle=True)
        for epoch in range(3):
            model.train()
            for xb, yb in loader:
                opt.zero_grad()
                F.cross_entropy(model(xb), yb).backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                out = model(x[held_out])
                loss = F.cross_entropy(out, y[held_out]).item()
            acc = (out.argmax(1) == y[held_out]).float().mean().item()
        scores.append(acc)
        print(f"fold {k} val_loss {loss:.4f} val_acc {acc:.3f}")
    print(f"mean val_acc {sum(scores) / len(scores):.3f}")
    return monitor


if __name__ == "__main__":
    main()

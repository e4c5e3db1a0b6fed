"""Bug: 60 training images, a wide MLP and 60 epochs without regularisation or early stopping.
Expect overfitting (validation loss lowest early, then rising)."""
import torch
from torch import nn
from _common import digits, evaluate, loaders

EXPECT = "overfitting"


def main(watch=None):
    torch.manual_seed(0)
    xtr, ytr, xva, yva = digits(flat=True)
    train, val = loaders(xtr[:60], ytr[:60], xva, yva, batch=20)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    monitor = watch(model, opt) if watch else None
    for epoch in range(60):
        model.train()
        for x, y in train:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        val_loss, val_acc = evaluate(model, val)
        if epoch % 10 == 9:
            print(f"epoch {epoch} val_loss {val_loss:.3f} val_acc {val_acc:.3f}")
    return monitor


if __name__ == "__main__":
    main()

"""Bug: for a quick small-data experiment the programmer kept 1% of the training images but kept
every image of digit 0 ("the class we study must not get lost"), so about nine in ten training
labels are 0 while validation is balanced: the MLP learns to answer 0.
Expect class_imbalance (root cause)."""
import torch
from torch import nn
from _common import digits, loaders

EXPECT = "class_imbalance"


def main(watch=None):
    torch.manual_seed(0)
    xtr, ytr, xva, yva = digits(flat=True)
    keep = (torch.rand(len(ytr)) < 0.01) | (ytr == 0)
    xtr, ytr = xtr[keep], ytr[keep]
    print(f"training on {len(ytr)} images, {(ytr == 0).float().mean():.0%} of them zeros")
    train, val = loaders(xtr, ytr, xva, yva, batch=16)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    monitor = watch(model, opt) if watch else None
    for epoch in range(10):
        model.train()
        for x, y in train:
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            out = model(xva)
            val_loss = loss_fn(out, yva).item()
            val_acc = (out.argmax(1) == yva).float().mean().item()
        print(f"epoch {epoch} train_loss {loss.item():.3f} val_loss {val_loss:.3f} val_acc {val_acc:.3f}")
    return monitor


if __name__ == "__main__":
    main()

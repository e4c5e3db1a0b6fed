"""Clean: a small learning-rate sweep: three reasonable LRs, each with a fresh model and
optimizer trained one after another; the best validation accuracy is reported."""
import torch
from torch import nn
from torch.nn import functional as F
from _common import digits, loaders, mlp

EXPECT = None


def main(watch=None):
    torch.manual_seed(0)
    xtr, ytr, xva, yva = digits(flat=True)
    monitor = None
    results = {}
    for lr in (3e-4, 1e-3, 3e-3):
        torch.manual_seed(0)
        train, val = loaders(xtr, ytr, xva, yva, batch=64)
        model = mlp([64, 128, 10])
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        if watch and monitor is None:
            monitor = watch(model, opt)
        for epoch in range(4):
            model.train()
            for x, y in train:
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            logits = model(xva)
            vl = F.cross_entropy(logits, yva).item()
        acc = (logits.argmax(1) == yva).float().mean().item()
        results[lr] = acc
        print(f"lr {lr:g}: val_loss {vl:.4f} val_acc {acc:.3f}")
    best = max(results, key=results.get)
    print(f"best lr {best:g} val_acc {results[best]:.3f}")
    return monitor


if __name__ == "__main__":
    main()

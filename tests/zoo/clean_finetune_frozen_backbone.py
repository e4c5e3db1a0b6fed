"""Clean: pretrain a small CNN on digits 0-4, then fine-tune a new head on digits 5-9 with the
backbone frozen (requires_grad=False) and a small learning rate."""
import torch
from torch import nn
from torch.nn import functional as F
from _common import digits, loaders

EXPECT = None


def backbone():
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(128, 64), nn.ReLU())


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        logits = model(x)
        loss = F.cross_entropy(logits, y)
    model.train()
    return loss.item(), (logits.argmax(1) == y).float().mean().item()


def main(watch=None):
    torch.manual_seed(0)
    xtr, ytr, xva, yva = digits()
    lo_tr, lo_va = ytr < 5, yva < 5
    hi_tr, hi_va = ~lo_tr, ~lo_va

    # stage 1: pretrain on classes 0-4
    features = backbone()
    model = nn.Sequential(features, nn.Linear(64, 5))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    monitor = watch(model, opt) if watch else None
    train, _ = loaders(xtr[lo_tr], ytr[lo_tr], xva[lo_va], yva[lo_va], batch=32)
    for epoch in range(3):
        for x, y in train:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        vl, acc = accuracy(model, xva[lo_va], yva[lo_va])
        print(f"pretrain epoch {epoch} val_loss {vl:.4f} val_acc {acc:.3f}")

    # stage 2: freeze the backbone, new head for classes 5-9
    for p in features.parameters():
        p.requires_grad = False
    finetuned = nn.Sequential(features, nn.Linear(64, 5))
    head_opt = torch.optim.Adam((p for p in finetuned.parameters() if p.requires_grad), lr=1e-3)
    train, _ = loaders(xtr[hi_tr], ytr[hi_tr] - 5, xva[hi_va], yva[hi_va] - 5, batch=32)
    vl0, acc0 = accuracy(finetuned, xva[hi_va], yva[hi_va] - 5)
    print(f"fine-tune start val_loss {vl0:.4f} val_acc {acc0:.3f}")
    for epoch in range(4):
        finetuned.train()
        for x, y in train:
            head_opt.zero_grad()
            F.cross_entropy(finetuned(x), y).backward()
            head_opt.step()
        vl, acc = accuracy(finetuned, xva[hi_va], yva[hi_va] - 5)
        print(f"fine-tune epoch {epoch} val_loss {vl:.4f} val_acc {acc:.3f}")
    return monitor


if __name__ == "__main__":
    main()

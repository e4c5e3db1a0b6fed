"""Bug: Adam with weight_decay=0.5 (meant 5e-4; Adam's weight decay is a coupled L2 penalty) on a
binary breast-cancer classifier with BCEWithLogits: the penalty pulls every weight to zero, the
logits collapse toward 0 (probabilities ~0.5) and the validation loss stays near ln 2.
Expect regularization_dominates (root cause)."""
import torch
from torch import nn
from _common import breast_cancer, loaders

EXPECT = "regularization_dominates"


def main(watch=None):
    torch.manual_seed(0)
    xtr, ytr, xva, yva = breast_cancer()
    train, val = loaders(xtr, ytr, xva, yva, batch=32)
    model = nn.Sequential(nn.Linear(30, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=0.5)
    criterion = nn.BCEWithLogitsLoss()
    monitor = watch(model, opt) if watch else None
    for epoch in range(8):
        model.train()
        for x, y in train:
            opt.zero_grad()
            loss = criterion(model(x).squeeze(1), y)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(x).squeeze(1) for x, _ in val])
            targets = torch.cat([y for _, y in val])
            val_loss = criterion(logits, targets).item()
        val_acc = ((logits > 0).float() == targets).float().mean().item()
        print(f"epoch {epoch} val_loss {val_loss:.3f} val_acc {val_acc:.3f} "
              f"mean |logit| {logits.abs().mean():.3f}")
    return monitor


if __name__ == "__main__":
    main()

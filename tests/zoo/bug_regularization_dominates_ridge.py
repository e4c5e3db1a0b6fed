"""Bug: "alpha=1.0" from a scikit-learn Ridge notebook became SGD(weight_decay=1.0) for an MLP on
the diabetes regression: the decay term shrinks every weight far faster than the data loss can
grow it, so predictions collapse to the mean and the validation R^2 stays near 0.
Expect regularization_dominates (root cause)."""
import torch
from torch import nn
from torch.nn import functional as F
from _common import diabetes, loaders

EXPECT = "regularization_dominates"


def main(watch=None):
    torch.manual_seed(0)
    xtr, ytr, xva, yva = diabetes()
    train, val = loaders(xtr, ytr, xva, yva, batch=16)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1.0)
    monitor = watch(model, opt) if watch else None
    for epoch in range(10):
        model.train()
        for x, y in train:
            opt.zero_grad()
            loss = F.mse_loss(model(x).squeeze(1), y)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val_mse = sum(F.mse_loss(model(x).squeeze(1), y, reduction="sum").item()
                          for x, y in val) / len(yva)
        if epoch % 2 == 1:
            print(f"epoch {epoch} train_loss {loss.item():.3f} val_mse {val_mse:.3f} "
                  f"val_r2 {1 - val_mse / yva.var().item():.3f}")
    return monitor


if __name__ == "__main__":
    main()

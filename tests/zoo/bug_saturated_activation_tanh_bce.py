"""Bug: a deep tanh MLP for the binary breast-cancer task with a BCEWithLogits head, its hidden
layers initialised with nn.init.normal_(std=3.0) ("bigger weights learn faster"): the tanh units
are pinned at +-1, gradients through them vanish, and the classifier is much worse than with the
default init. Expect saturated_activation (root cause)."""
import torch
from torch import nn
from _common import breast_cancer, loaders

EXPECT = "saturated_activation"


def main(watch=None):
    torch.manual_seed(0)
    xtr, ytr, xva, yva = breast_cancer()
    train, val = loaders(xtr, ytr, xva, yva, batch=32)
    model = nn.Sequential(nn.Linear(30, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                          nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                          nn.Linear(64, 1))
    for m in model[:-1]:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=3.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    monitor = watch(model, opt) if watch else None
    for epoch in range(5):
        model.train()
        for x, y in train:
            opt.zero_grad()
            loss = loss_fn(model(x).squeeze(1), y)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            logits = model(xva).squeeze(1)
            val_loss = loss_fn(logits, yva).item()
        val_acc = ((logits > 0).float() == yva).float().mean().item()
        print(f"epoch {epoch} train_loss {loss.item():.3f} val_loss {val_loss:.3f} val_acc {val_acc:.3f}")
    return monitor


if __name__ == "__main__":
    main()

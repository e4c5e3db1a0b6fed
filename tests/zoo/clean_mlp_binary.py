"""Clean: MLP with Adam on breast cancer, BCEWithLogits, dropout, sigmoid only at evaluation."""
import torch
from torch import nn
from _common import breast_cancer, loaders

EXPECT = None


def main(watch=None):
    torch.manual_seed(0)
    xtr, ytr, xva, yva = breast_cancer()
    train, _ = loaders(xtr, ytr, xva, yva, batch=32)
    model = nn.Sequential(nn.Linear(30, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 32),
                          nn.ReLU(), nn.Linear(32, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    monitor = watch(model, opt) if watch else None
    for epoch in range(15):
        model.train()
        for x, y in train:
            opt.zero_grad()
            loss = loss_fn(model(x).squeeze(1), y)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = ((torch.sigmoid(model(xva).squeeze(1)) > 0.5).float() == yva).float().mean()
        if epoch % 5 == 4:
            print(f"epoch {epoch} val_acc {acc:.3f}")
    return monitor


if __name__ == "__main__":
    main()

"""Bug: the customer table was assembled from two overlapping exports, so most rows appear twice,
and it was split into train/validation only after concatenating: most validation rows are exact
copies of training rows, and the validation accuracy of the memorising MLP is far above what it
gets on new customers. Expect train_val_leakage (root cause)."""
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

EXPECT = "train_val_leakage"


def customers(n, g):
    x = torch.randn(n, 8, generator=g)
    score = x[:, 0] - 0.8 * x[:, 1] + 0.5 * x[:, 2] * x[:, 3]
    y = (score + 1.0 * torch.randn(n, generator=g) > 0).float()   # churn labels are noisy
    return x, y


def main(watch=None):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x, y = customers(700, g)
    export_a = (x[:500], y[:500])
    export_b = (x[100:], y[100:])            # the second export repeats rows 100..499
    x = torch.cat([export_a[0], export_b[0]])
    y = torch.cat([export_a[1], export_b[1]])
    perm = torch.randperm(len(y))
    tr, va = perm[:900], perm[900:]
    train = DataLoader(TensorDataset(x[tr], y[tr]), batch_size=32, shuffle=True)
    val = DataLoader(TensorDataset(x[va], y[va]), batch_size=300)
    model = nn.Sequential(nn.Linear(8, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Linear(256, 1))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    monitor = watch(model, opt) if watch else None
    for epoch in range(20):
        model.train()
        for xb, yb in train:
            opt.zero_grad()
            loss = loss_fn(model(xb).squeeze(1), yb)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for xb, yb in val:
                logits = model(xb).squeeze(1)
                val_loss = loss_fn(logits, yb).item()
                val_acc = ((logits > 0).float() == yb).float().mean().item()
        if epoch % 4 == 3:
            print(f"epoch {epoch} val_loss {val_loss:.3f} val_acc {val_acc:.3f}")
    return monitor


if __name__ == "__main__":
    main()

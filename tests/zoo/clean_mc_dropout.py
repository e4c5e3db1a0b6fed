"""Clean: Monte-Carlo dropout. A dropout MLP (no BatchNorm) is evaluated with dropout left on
(model.train() under no_grad), averaging several stochastic passes for predictive uncertainty."""
import torch
from torch import nn
from torch.nn import functional as F
from _common import digits, loaders

EXPECT = None


def mc_predict(model, x, passes=20):
    model.train()                      # keep dropout active on purpose
    with torch.no_grad():
        probs = torch.stack([F.softmax(model(x), 1) for _ in range(passes)])
    return probs.mean(0), probs.std(0)


def main(watch=None):
    torch.manual_seed(0)
    xtr, ytr, xva, yva = digits(flat=True)
    train, val = loaders(xtr, ytr, xva, yva, batch=64)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Dropout(0.3),
                          nn.Linear(256, 256), nn.ReLU(), nn.Dropout(0.3),
                          nn.Linear(256, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    monitor = watch(model, opt) if watch else None
    for epoch in range(6):
        model.train()
        for x, y in train:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        mean, std = mc_predict(model, xva)
        nll = F.nll_loss(torch.log(mean + 1e-8), yva)
        acc = (mean.argmax(1) == yva).float().mean()
        right = mean.argmax(1) == yva
        unc = std.gather(1, mean.argmax(1, keepdim=True)).squeeze(1)
        print(f"epoch {epoch} mc_val_nll {nll.item():.4f} mc_val_acc {acc.item():.3f} "
              f"uncertainty right {unc[right].mean().item():.3f} "
              f"wrong {unc[~right].mean().item() if (~right).any() else 0:.3f}")
    return monitor


if __name__ == "__main__":
    main()

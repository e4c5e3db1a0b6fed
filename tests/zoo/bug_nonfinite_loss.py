"""Bug: an RMSLE-style loss takes log of raw predictions, some of which are negative. Expect
nonfinite_loss."""
import torch
from _common import diabetes, loaders, mlp

EXPECT = "nonfinite_loss"


def main(watch=None):
    torch.manual_seed(0)
    xtr, ytr, xva, yva = diabetes()
    train, _ = loaders(xtr, ytr * 50 + 150, xva, yva, batch=32)   # back to disease-progression units
    model = mlp([10, 32, 1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    monitor = watch(model, opt) if watch else None
    for epoch in range(10):
        for x, y in train:
            opt.zero_grad()
            pred = model(x).squeeze(1)
            loss = ((torch.log(pred) - torch.log(y)) ** 2).mean()
            loss.backward()
            opt.step()
        print(f"epoch {epoch} loss {loss.item():.4f}")
    return monitor


if __name__ == "__main__":
    main()
